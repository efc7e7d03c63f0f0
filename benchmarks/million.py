"""Benchmark: the whole nightly at up to a million statements, beside the plain script.

The corpus is real text that Debian packages ship: the sentences of every English man page
installed here and of gensim's Wikipedia sample (`rows_scale.bench_statements`: ~380k distinct
sentences, shuffled with a fixed seed, then runs of 2 and 3 of them), written once as 40 parts
of 25,000 statements under benchmarks/work/million/million/part-NN/. A size is the first
n/25,000 parts.

Each run is `shardvec nightly` from an empty data directory (2 Dask workers, shardvec's defaults
with CBOW and 5 epochs, as in benchmarks/scale.py) or the plain script (benchmarks/plain.py)
on the same files, measured as a process tree by `scale.measure`: wall, CPU, peak RSS of the
largest process, summed PSS of all of them, and per stage (the run report's steps) wall, peak
RSS and the summed PSS sampled while that stage ran. Results are kept per run in
results/million.json, so an interrupted benchmark resumes where it stopped (`--fresh` starts over).

    python -m benchmarks.million                       # every size (~90 min on 2 cores)
    python -m benchmarks.million --sizes 300000        # one size, shardvec and plain
    python -m benchmarks.million --no-plain            # shardvec only
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.common import RESULTS, WORK, save
from benchmarks.scale import BENCH, plain_recall, run_plain, run_shardvec, settings_files

PART = 25_000
FULL = 1_000_000
# (statements, with the plain script beside it): 1/8, 1/4, 1/2 and all of the corpus for the
# growth table; 300k and 800k for the ratio to the plain script.
SIZES = {FULL: True, 300_000: True, 800_000: True, 125_000: False, 250_000: False, 500_000: False}


def prepare(work: Path, n: int = FULL) -> dict:
    """The corpus as work/million/part-NN/statements.jsonl, written once."""
    src = work / "million"
    done = src / "done.json"
    if not done.exists():
        from benchmarks.rows_scale import bench_statements

        src.mkdir(parents=True, exist_ok=True)
        t, f, words = time.perf_counter(), None, 0
        for i, text in enumerate(bench_statements(n)):
            if i % PART == 0:
                if f:
                    f.close()
                (src / f"part-{i // PART}").mkdir(exist_ok=True)
                f = open(src / f"part-{i // PART}" / "statements.jsonl", "w", encoding="utf-8")
            f.write(json.dumps({"id": f"m/{i}", "text": text}) + "\n")
            words += len(text.split())
        f.close()
        done.write_text(
            json.dumps(
                {"statements": n, "words": words, "parts": -(-n // PART), "seconds": round(time.perf_counter() - t)}
            )
        )
    return json.loads(done.read_text())


def growth_table(runs: dict) -> list[str]:
    """Markdown: per stage, wall / peak RSS / summed PSS at each size shardvec ran."""
    sizes = sorted((int(k.split("/")[1]) for k in runs if k.startswith("shardvec/")))
    if not sizes:
        return []
    head = (
        "| stage | " + " | ".join(f"{n // 1000}k" for n in sizes) + f" | {sizes[-1] // 1000}k / {sizes[0] // 1000}k |"
    )
    lines = [head, "| --- " * (len(sizes) + 2) + "|"]
    for stage in runs[f"shardvec/{sizes[-1]}"]["stage_wall_seconds"]:  # in the order they ran
        cells, walls = [], []
        for n in sizes:
            r = runs[f"shardvec/{n}"]
            w = r["stage_wall_seconds"].get(stage)
            walls.append(w)
            cells.append(
                ""
                if w is None
                else f"{w:.1f} s, {r['stage_peak_rss_mb'][stage]} MB, {r['stage_peak_pss_tree_mb'].get(stage, 0)} MB"
            )
        growth = f"{walls[-1] / walls[0]:.1f}x" if walls[0] and walls[-1] else ""
        lines.append(f"| {stage} | " + " | ".join(cells) + f" | {growth} |")
    total = [runs[f"shardvec/{n}"] for n in sizes]
    lines.append(
        "| **whole nightly** | "
        + " | ".join(f"{r['wall_seconds']:.0f} s, {r['peak_rss_mb']} MB, {r['peak_pss_tree_mb']} MB" for r in total)
        + f" | {total[-1]['wall_seconds'] / total[0]['wall_seconds']:.1f}x |"
    )
    rows = ("similarity-rows", "merge-rows")
    for key, label in (("stage_task_seconds", "task-seconds"), ("stage_cpu_seconds", "CPU-seconds")):
        if all(key in r for r in total):
            cost = [sum(r[key].get(k) or 0 for k in rows) for r in total]
            lines.append(
                f"| rows: {label} of similarity-rows + merge-rows | "
                + " | ".join(f"{c:.0f} s" for c in cost)
                + (f" | {cost[-1] / cost[0]:.1f}x |" if cost[0] else " | |")
            )
    lines.append("| rows recall@10 | " + " | ".join(f"{r['rows_recall_at_10']}" for r in total) + " | |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="*", type=int, default=list(SIZES))
    ap.add_argument("--no-plain", action="store_true")
    ap.add_argument("--fresh", action="store_true", help="forget the runs already in results/million.json")
    args = ap.parse_args()
    if not args.sizes or any(n % PART or not 0 < n <= FULL for n in args.sizes):
        ap.error(f"sizes are multiples of {PART:,} up to {FULL:,}")
    work = WORK / "million"
    work.mkdir(parents=True, exist_ok=True)
    old = RESULTS / "million.json"
    runs = {} if args.fresh or not old.exists() else json.loads(old.read_text()).get("runs", {})
    figures = {"corpus": prepare(work), "settings": BENCH, "runs": runs}
    print("corpus:", figures["corpus"], flush=True)
    toml, settings = settings_files(work, "bench", BENCH)
    from shardvec.flows.runtime import local_prefect

    with local_prefect():
        for n in args.sizes:
            parts = n // PART
            runs[f"shardvec/{n}"] = run_shardvec(work, parts, toml, source="million")
            print(f"shardvec {n:,}:", json.dumps(runs[f"shardvec/{n}"]), flush=True)
            save("million", figures)
            if SIZES.get(n) and not args.no_plain:
                runs[f"plain/{n}"] = run_plain(work, settings, parts=parts, source="million")
                runs[f"plain/{n}"]["rows_recall_at_10"] = plain_recall(work)
                print(f"plain {n:,}:", json.dumps(runs[f"plain/{n}"]), flush=True)
            figures["ratios"] = {
                n: {
                    "wall_vs_plain": round(
                        runs[f"shardvec/{n}"]["wall_seconds"] / runs[f"plain/{n}"]["wall_seconds"], 3
                    ),
                    "pss_vs_plain": round(
                        runs[f"shardvec/{n}"]["peak_pss_tree_mb"] / runs[f"plain/{n}"]["peak_pss_tree_mb"], 3
                    ),
                }
                for n in SIZES
                if f"plain/{n}" in runs and f"shardvec/{n}" in runs
            }
            figures["growth_table"] = growth_table(runs)
            path = save("million", figures)
    print("\n".join(figures["growth_table"]))
    print(json.dumps(figures["ratios"], indent=1))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
