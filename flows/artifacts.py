"""The run report and the add-statements counts as Prefect artifacts (the run's page in the UI)."""

from __future__ import annotations

from pathlib import Path

from shardvec.tasks.quality.report import quarantine_markdown, render_markdown, report_table


def publish_artifacts(report: dict) -> None:
    """The run report as Prefect artifacts (shown on the flow run's page in the UI)."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    create_markdown_artifact(
        markdown=f"# shardvec {report['flow']}: {report['status']}\n\n" + render_markdown(report),
        key=f"shardvec-{report['flow']}-summary",
        description="Run summary",
    )
    create_table_artifact(
        table=report_table(report),
        key=f"shardvec-{report['flow']}-report",
        description="Run report: figures, recall@10, time and peak memory per step",
    )


def publish_quarantine_warning(flow: str, files: list[dict], folder: Path) -> None:
    """The input records a run quarantined, as a markdown artifact of its own on the run's page."""
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(
        markdown=quarantine_markdown(files, folder),
        key=f"shardvec-{flow}-quarantine",
        description="Warning: input records quarantined",
    )


def publish_add_report(report: dict) -> None:
    """An add-statements run's counts (adds, replaces, deletes, rows repaired) as a table artifact
    and a line in the run's log."""
    counts = ("added", "replaced", "deleted", "unchanged", "missing", "quarantined", "rows_updated")
    table = [{"source": source, **{c: (r or {}).get(c, 0) for c in counts}} for source, r in report.items() if r]
    print(
        "shardvec add-statements: "
        + "; ".join(f"{row['source']}: " + " ".join(f"{c}={row[c]}" for c in counts) for row in table)
        or "nothing to do"
    )
    try:
        from prefect.artifacts import create_table_artifact

        create_table_artifact(
            table=table or [{"source": "-", **{c: 0 for c in counts}}],
            key="shardvec-add-statements",
            description="Adds, replaces and deletes of this run",
        )
    except Exception as exc:  # artifacts are a view; a run never fails for them
        print(f"(could not create Prefect artifacts: {exc})")
