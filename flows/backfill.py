"""The backfill flow: reprocess a range of partitions, or rebuild everything from scratch."""

from __future__ import annotations

from typing import Literal

from prefect import flow

from shardvec.flows.operate import operated
from shardvec.flows.params import run_settings
from shardvec.flows.pipeline import build_and_publish
from shardvec.flows.runtime import SettingsTaskRunner


@flow(name="backfill", log_prints=True, task_runner=SettingsTaskRunner)
def backfill(start: str | None = None, end: str | None = None, partitions: list[str] | None = None,
             mode: Literal["update", "rebuild"] = "update", overrides: dict | None = None,
             force: bool = False) -> dict:
    """Bring partitions `start`..`end` (inclusive; or the named `partitions`; or all) into a new
    published version. "update" trains the published models further on those not yet in and
    re-reads changed files; "rebuild" trains new models from scratch on everything. Running the
    same backfill twice publishes the same vectors."""
    s = run_settings(overrides)
    with operated(s, "backfill") as run:
        return run.keep(build_and_publish(s, flow="backfill", mode=mode, partitions=partitions, start=start,
                                          end=end, skip_if_nothing_new=False, force=force))
