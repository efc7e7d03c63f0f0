"""What a run measures and reports: time and peak memory per step, counts, recall.

`PeakRSS` samples a process's memory (flows/skins.py `measured` puts it in every step's
summary). `render_*` turn the run report into the terminal text and the rows of the table and
markdown artifacts that flows/artifacts.py publishes.
"""

from __future__ import annotations

import textwrap
import threading
from contextvars import ContextVar
from pathlib import Path

import psutil

MB = 1 << 20
# What the run around the report adds to its summary (flows/operate.py): the data directory,
# whose history is drawn as a chart, and a markdown line on the run's Dask performance report.
EXTRAS: ContextVar[dict] = ContextVar("shardvec_report_extras")
# What a report's wall_seconds covers (flows/pipeline.py build_and_publish): deploy/README.md
# explains it beside the UI's and the CLI's durations.
WALL_COVERS = "from asking for the run lock, waiting included, to this report; not the Dask cluster's start or stop"
MEASURED = ("seconds", "cpu_seconds", "peak_rss_mb", "peak_anon_mb", "rss_growth_mb", "worker", "began", "ended")


class PeakRSS:
    """Samples this process's RSS in a thread; `peak` is the highest seen, `peak_anon` the
    highest private (anonymous) part: RSS also counts the pages of memmapped files a scan has
    touched, which the page cache shares between processes and can take back."""

    def __init__(self, interval: float = 0.01):
        self.interval = interval
        self.proc = psutil.Process()
        self.peak = self.peak_anon = 0
        self._sample()
        self.start_rss = self.peak
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        m = self.proc.memory_info()
        self.peak = max(self.peak, m.rss)
        self.peak_anon = max(self.peak_anon, m.rss - m.shared)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def step_rows(steps: dict[str, list[dict]]) -> list[dict]:
    """One table row per step: how many tasks, total and longest time, highest peak RSS."""
    rows = []
    for name, results in steps.items():
        if not results:
            continue
        rows.append(
            {
                "step": name,
                "tasks": len(results),
                "seconds": round(sum(r.get("seconds", 0) for r in results), 2),
                "cpu_seconds": round(sum(r.get("cpu_seconds", 0) for r in results), 2),
                "longest_task_s": round(max(r.get("seconds", 0) for r in results), 2),
                # first start to last end, over every worker: what parallelism shortens
                "wall_s": round(max(r.get("ended", 0) for r in results) - min(r.get("began", 0) for r in results), 2),
                "peak_rss_mb": max(r.get("peak_rss_mb", 0) for r in results),
                "peak_anon_mb": max(r.get("peak_anon_mb", 0) for r in results),
                "began": min(r.get("began", 0) for r in results),
                "ended": max(r.get("ended", 0) for r in results),
            }
        )
    return rows


def render_text(report: dict) -> str:
    lines = [
        f"shardvec {report['flow']}: {report['status']}"
        + (f" -> version {report['version']}" if report.get("version") else "")
    ]
    if report.get("message"):
        lines.append(f"  {report['message']}")
    for key, label in [
        ("partitions", "partitions"),
        ("files", "files"),
        ("records", "records read"),
        ("quarantined", "records quarantined"),
        ("ledger_ops", "ids decided by the ledger"),
        ("ledger_new_ops", "ledger batches since last version"),
        ("tokens", "tokens"),
        ("statements", "statements"),
        ("terms", "LSI vocabulary"),
        ("words", "word vectors"),
        ("topics", "LSI topics"),
        ("similarity_rows", "similarity rows"),
        ("rows_method", "similarity rows method"),
        ("wall_seconds", "wall time (s)"),
        ("peak_rss_mb", "peak RSS of any process (MB)"),
    ]:
        if key in report:
            value = report[key]
            lines.append(f"  {label:<30} {', '.join(value) if isinstance(value, list) else value}")
    if "wall_seconds" in report:  # wrapped: the UI's artifact pane shows about 75 columns
        lines += textwrap.wrap(f"(wall time: {WALL_COVERS})", 72, initial_indent="    ", subsequent_indent="     ")
    for reason, n in sorted(report.get("quarantine_reasons", {}).items()):
        lines.append(f"    quarantined: {reason}: {n}")
    for name, r in report.get("recall", {}).items():
        lines.append(
            f"  recall@{r['k']} {name:<20} {r.get('recall_at_k', r.get('rows_recall_at_k'))}"
            + (f" (nprobe={r['nprobe']} of {r['nlist']} lists, {r['queries_per_second']} q/s)" if "nprobe" in r else "")
        )
    for key, label in QUALITY:
        value = report.get("quality", {}).get(key)
        if value is not None:
            lines.append(f"  {label:<30} {value}")
    for e in report.get("quality", {}).get("evaluation", []):  # which sets scored the words, and their coverage
        lines.append(f"  evaluation set {e['set'] + ' (' + e['kind'] + ')':<30} {e['summary']}")
    for word in [w for w in report.get("quality", {}).get("words_moved_most", []) if w["jaccard"] < 1][:5]:
        lines.append(f"    neighbours moved: {word['word']} (jaccard {word['jaccard']})")
    for reason in report.get("gate", []) + report.get("forced_past_gate", []):
        lines.append(f"  quality gate: {reason}")
    if report.get("steps"):
        lines.append(f"  {'step':<22}{'tasks':>6}{'seconds':>10}{'peak MB':>10}")
        for row in report["steps"]:
            lines.append(f"  {row['step']:<22}{row['tasks']:>6}{row['seconds']:>10}{row['peak_rss_mb']:>10}")
    return "\n".join(lines)


QUALITY = [
    ("analogy_accuracy", "analogy accuracy"),
    ("analogy_coverage", "analogy coverage"),
    ("wordsim353_spearman", "WordSim-353 Spearman"),
    ("simlex999_spearman", "SimLex-999 Spearman"),
    ("lsi_energy_top10", "LSI energy in top 10 topics"),
    ("rows_changed_share", "rows changed (share)"),
    ("rows_mean_jaccard", "rows mean Jaccard vs last"),
]


def render_markdown(report: dict) -> str:
    text = "```\n" + render_text(report) + "\n```\n"
    extras = EXTRAS.get({})
    if extras.get("dask_report"):  # a markdown line: a link, or where the file is
        text += f"\n{extras['dask_report']}\n"
    if extras.get("data") is not None:
        from shardvec.tasks.quality.evaluation import read_history

        entries = read_history(extras["data"], last=TREND_RUNS)
        if entries:
            text += _trend_markdown(entries)
            last = entries[-HISTORY_RUNS:]
            text += f"\n## History (last {len(last)} runs)\n\n" + history_markdown(last) + "\n"
    return text


TREND_RUNS = 30
HISTORY_RUNS = 10


def _trend_markdown(entries: list[dict]) -> str:
    """The chart of the last runs, embedded as an image."""
    from shardvec.tasks.quality.trends import chart_data_uri

    return f"\n## Trend (last {len(entries)} runs)\n\n![shardvec trend chart]({chart_data_uri(entries)})\n"


# The summary's history as two narrow tables, (metric, column, decimals) each: Prefect's UI
# neither wraps a table's cells nor scrolls it, so a table wider than the artifact pane loses its
# right-hand columns (one table of everything did, even at 1400 px). `shardvec history` prints
# every column in one.
HISTORY_RUNS_COLUMNS = [("rows_recall_at_10", "rows r@10", 4), ("statements_index_recall_at_10", "index r@10", 4)]
HISTORY_QUALITY_COLUMNS = [
    ("wordsim353_spearman", "ws353", 3),
    ("simlex999_spearman", "simlex", 3),
    ("analogy_accuracy", "analogy", 3),
    ("rows_mean_jaccard", "rows jaccard", 3),
]
STATUS_WORDS = {"refused by the quality gate": "refused"}


def _markdown_table(head: list[str], rows: list[list[str]]) -> str:
    return "\n".join("| " + " | ".join(r) + " |" for r in [head, ["---"] * len(head), *rows])


def _metric_cells(entry: dict, columns) -> list[str]:
    m = entry.get("metrics", {})
    return ["" if m.get(key) is None else f"{m[key]:.{places}f}" for key, _, places in columns]


def history_markdown(entries: list[dict]) -> str:
    """The last runs as two narrow markdown tables: when (UTC), flow, status, statements and
    recall; then word quality and drift (the version and the gate's reasons: `shardvec history`)."""
    when = [e["at"][5:16].replace("T", " ") for e in entries]
    runs = _markdown_table(
        ["UTC", "flow", "status", "statements"] + [c[1] for c in HISTORY_RUNS_COLUMNS],
        [
            [
                w,
                e.get("flow", ""),
                STATUS_WORDS.get(e.get("status", ""), e.get("status", "")),
                str(e.get("statements", "")),
            ]
            + _metric_cells(e, HISTORY_RUNS_COLUMNS)
            for w, e in zip(when, entries)
        ],
    )
    quality = _markdown_table(
        ["UTC"] + [c[1] for c in HISTORY_QUALITY_COLUMNS],
        [[w] + _metric_cells(e, HISTORY_QUALITY_COLUMNS) for w, e in zip(when, entries)],
    )
    return f"{runs}\n\nWord quality and drift, the same runs:\n\n{quality}"


FIGURES = [
    ("records", "records read"),
    ("quarantined", "records quarantined"),
    ("statements", "statements"),
    ("terms", "LSI vocabulary"),
    ("words", "word vectors"),
    ("similarity_rows", "similarity rows"),
    ("rows_method", "similarity rows method"),
    ("wall_seconds", "wall time (s), run lock to report"),
    ("peak_rss_mb", "peak RSS (MB)"),
]


def report_table(report: dict) -> list[dict]:
    """The run report as table rows: the figures, recall@10, then time and peak memory per step."""
    rows = [
        {"item": label, "value": report[key], "seconds": None, "peak_rss_mb": None}
        for key, label in FIGURES
        if key in report
    ]
    for reason, n in sorted(report.get("quarantine_reasons", {}).items()):
        rows.append({"item": f"quarantined: {reason}", "value": n, "seconds": None, "peak_rss_mb": None})
    for name, r in report.get("recall", {}).items():
        rows.append(
            {
                "item": f"recall@{r['k']} {name}",
                "value": r.get("recall_at_k", r.get("rows_recall_at_k")),
                "seconds": None,
                "peak_rss_mb": None,
            }
        )
    for key, label in QUALITY:
        value = report.get("quality", {}).get(key)
        if value is not None:
            rows.append({"item": label, "value": value, "seconds": None, "peak_rss_mb": None})
    for step in report.get("steps", []):
        rows.append(
            {
                "item": f"step {step['step']} ({step['tasks']} tasks)",
                "value": None,
                "seconds": step["seconds"],
                "peak_rss_mb": step["peak_rss_mb"],
            }
        )
    return rows


def _why(reasons: dict[str, int]) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items()))


def quarantine_message(files: list[dict], folder: Path) -> str:
    """One sentence on the input records a run quarantined (`files`: the report's
    `quarantined_input`, one {source, records, reasons} a file) and where they are."""
    n = sum(f["records"] for f in files)
    where = "; ".join(f"{f['source']}: {_why(f['reasons'])}" for f in files)
    return (
        f"{n} input record{'s' * (n != 1)} quarantined ({where}), left out of the version; "
        f"the records and the reasons are under {folder}."
    )


def quarantine_markdown(files: list[dict], folder: Path) -> str:
    """The warning artifact of a run that quarantined input: how many records, from which files,
    why, and where the quarantine keeps them."""
    n = sum(f["records"] for f in files)
    rows = "\n".join(f"| `{f['source']}` | {f['records']} | {_why(f['reasons'])} |" for f in files)
    first = files[0]["source"]
    return (
        f"# Warning: {n} input record{'s' * (n != 1)} quarantined\n\n"
        f"The run completed without them: they are not in the version it published.\n\n"
        f"| file | records | why |\n| --- | --- | --- |\n{rows}\n\n"
        f"The quarantine folder is `{folder}`: each file's rejected records, byte for byte, are in "
        f"`<file>.rejected` (Parquet rows: `<file>.rejected.jsonl`) and why, one line each, in `<file>.reasons.jsonl` (e.g. "
        f"`{Path(folder) / first}.reasons.jsonl`). Fix them in the source file, then backfill its "
        "partition to take them in.\n"
    )
