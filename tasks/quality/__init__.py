"""Judging a build before it is published and reporting on runs: evaluation sets, drift and the
quality gate, the run report, and the history chart.
"""

from shardvec.tasks.quality.evaluation import (
    QUESTIONS,
    analogies,
    append_history,
    drift,
    evaluate_models,
    evaluate_words,
    evaluation_sets,
    gate,
    history_table,
    lsi_spectrum,
    read_history,
)
from shardvec.tasks.quality.report import (
    EXTRAS,
    MB,
    MEASURED,
    PeakRSS,
    WALL_COVERS,
    quarantine_markdown,
    quarantine_message,
    render_markdown,
    render_text,
    report_table,
    step_rows,
)
from shardvec.tasks.quality.trends import PANELS, PlotFormatError, plot_history

__all__ = [
    "QUESTIONS",
    "analogies",
    "append_history",
    "evaluate_models",
    "evaluate_words",
    "gate",
    "history_table",
    "read_history",
    "MB",
    "MEASURED",
    "PeakRSS",
    "WALL_COVERS",
    "quarantine_markdown",
    "render_markdown",
    "render_text",
    "report_table",
    "step_rows",
    "PANELS",
    "PlotFormatError",
    "plot_history",
    "drift",
    "evaluation_sets",
    "lsi_spectrum",
    "EXTRAS",
    "quarantine_message",
]
