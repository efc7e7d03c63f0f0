"""The backfill flow: reprocess a range of partitions, or rebuild everything from scratch.

What it trains, and whether it rebuilds instead, is its plan's (tasks/models/plan.py)."""

from __future__ import annotations

from datetime import date
from typing import Literal

from prefect import flow

from shardvec.flows.operate import operated
from shardvec.flows.params import Overrides, run_settings
from shardvec.flows.executors import OnPrefect
from shardvec.flows.pipeline import build_and_publish
from shardvec.flows.runtime import SettingsTaskRunner


@flow(name="backfill", log_prints=True, task_runner=SettingsTaskRunner)
def backfill(
    start: date | None = None,
    end: date | None = None,
    partitions: list[str] | None = None,
    mode: Literal["update", "rebuild"] = "update",
    overrides: Overrides | None = None,
    force: bool = False,
) -> dict:
    """Bring a range of partitions (or the named ones, or all) into a new published version.
    Running the same backfill twice publishes the same vectors.

    Args:
        start: The first partition of the range (a corpus/YYYY-MM-DD folder); none: from the first.
        end: The last partition of the range, inclusive; none: to the last.
        partitions: Partitions by folder name, instead of a range; none: all of them.
        mode: "update" trains the published models further on the partitions not yet in and
            re-reads changed files; "rebuild" trains new models from scratch on everything.
        overrides: Tuning knobs for this run only, by section of config/default.toml, e.g.
            {"lsi": {"num_topics": 100}}; the rest as configured.
        force: Publish even if the quality gate refuses the new models.
    """
    s = run_settings(overrides)
    start, end = (day.isoformat() if day else None for day in (start, end))  # partitions are named by day
    with operated(s, "backfill") as run:
        return run.keep(
            build_and_publish(
                s,
                flow="backfill",
                mode=mode,
                partitions=partitions,
                start=start,
                end=end,
                skip_if_nothing_new=False,
                force=force,
                executor=OnPrefect(),
            )
        )
