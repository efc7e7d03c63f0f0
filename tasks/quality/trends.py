"""The run history as a chart: quality, drift, time and memory of the last runs, night by night.

`plot_history` draws the entries of `<data>/history.jsonl` (tasks/quality/evaluation.py) into a PNG or SVG
file; `chart_data_uri` gives the same chart as a data: URI, which a Prefect markdown artifact
shows as an image. Refused runs are drawn as red crosses on the quality panels, crashed runs
(which measured nothing) as a dotted vertical line across every panel.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

from shardvec.errors import ShardvecError

# panel title -> (history metric key, legend label); "" keys are the run's own figures
PANELS = {
    "recall@10": [
        ("rows_recall_at_10", "similarity rows"),
        ("statements_index_recall_at_10", "statements index"),
        ("words_index_recall_at_10", "words index"),
    ],
    "word quality": [
        ("wordsim353_spearman", "WordSim-353 ρ"),
        ("simlex999_spearman", "SimLex-999 ρ"),
        ("analogy_accuracy", "analogy accuracy"),
    ],
    "drift vs last version": [("rows_mean_jaccard", "rows mean Jaccard"), ("rows_changed_share", "rows changed")],
    "cost": [("wall_seconds", "wall time (s)"), ("peak_rss_mb", "peak RSS (MB)")],
}
FORMATS = (".png", ".svg")
# The recall axis always spans at least this much below 1.0: on an axis fitted to the data,
# 0.9995 and 1.0 would be its bottom and top, a cliff where nothing happened.
RECALL_SPAN = 0.1


class PlotFormatError(ValueError, ShardvecError):
    """The chart file's name does not end in a format we draw."""


def _value(entry: dict, key: str):
    v = entry.get("metrics", {}).get(key, entry.get(key))
    return v if isinstance(v, (int, float)) else None


def _figure(entries: list[dict]):
    import matplotlib

    matplotlib.use("Agg")  # no screen here, nor on servers
    import matplotlib.pyplot as plt
    from matplotlib.ticker import EngFormatter

    x = list(range(1, len(entries) + 1))
    labels = [e["at"][5:16].replace("T", " ") for e in entries]
    refused = [e.get("status", "").startswith("refused") for e in entries]
    crashed = [xi for xi, e in zip(x, entries) if e.get("status") == "crashed"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 6.5), sharex=True)
    for ax, (title, series) in zip(axes.flat, PANELS.items()):
        twin = ax.twinx() if title == "cost" else None
        for i, (key, label) in enumerate(series):
            target = twin if (twin is not None and i == 1) else ax
            pts = [(xi, _value(e, key)) for xi, e in zip(x, entries) if _value(e, key) is not None]
            if not pts:
                continue
            # series that coincide (three recalls of 1.0) all show: each later line thinner (nested
            # stripes), each later marker a larger hollow shape around the ones before
            target.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                marker="osD"[i % 3],
                ms=6 + 3 * i,
                lw=3.0 - 0.8 * i,
                mfc=f"C{i}" if i == 0 else "none",
                mew=1.8,
                label=label,
                color=f"C{i}",
            )
            bad = [(xi, v) for xi, v in pts if refused[xi - 1]]
            if bad:
                target.plot([b[0] for b in bad], [b[1] for b in bad], "x", color="red", ms=9, mew=2)
        for xi in crashed:
            ax.axvline(
                xi, color="black", ls=":", lw=1.5, label="crashed" if (title, xi) == ("recall@10", crashed[0]) else None
            )
        ax.set_title(title, fontsize=10)
        if title == "recall@10":
            low = min([1.0] + [v for key, _ in series for e in entries if (v := _value(e, key)) is not None])
            ax.set_ylim(min(1 - RECALL_SPAN, low - 0.02), 1 + RECALL_SPAN / 20)
        if twin is None:  # plain values on the axis, never "+1" and offsets from it
            ax.ticklabel_format(axis="y", style="plain", useOffset=False)
        if twin is not None:
            ax.set_ylabel("seconds", fontsize=8)
            twin.set_ylabel("MB", fontsize=8)
            for cost in (ax, twin):  # "12k", "1.5M": tick labels of bounded width fit the fixed margins
                cost.yaxis.set_major_formatter(EngFormatter(sep=""))
        handles = ax.get_legend_handles_labels()
        if twin is not None:
            th = twin.get_legend_handles_labels()
            handles = (handles[0] + th[0], handles[1] + th[1])
        if handles[0]:
            ax.legend(*handles, fontsize=8, loc="best")
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=7)
    fig.suptitle(
        f"shardvec: the last {len(entries)} runs (red x: refused by the quality gate; dotted line: crashed)",
        fontsize=11,
    )
    # fixed margins, the ones tight_layout finds for this figure: it measured every label again
    # on each run, a third of the chart's cost
    fig.subplots_adjust(left=0.065, right=0.93, top=0.9, bottom=0.115, hspace=0.18, wspace=0.16)
    return fig


def plot_history(entries: list[dict], path: Path) -> Path:
    """Draw `entries` into `path` (.png or .svg)."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise PlotFormatError(f"{path.name} is neither .png nor .svg; name the chart file FILE.png or FILE.svg.")
    import matplotlib.pyplot as plt

    fig = _figure(entries)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def chart_data_uri(entries: list[dict]) -> str:
    """The chart as a PNG data: URI (for a markdown image)."""
    import matplotlib.pyplot as plt

    fig = _figure(entries)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=72)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
