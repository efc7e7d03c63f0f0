"""The nightly flow: take the partitions after the watermark, update the models, publish.

What it trains, and whether it rebuilds instead, is its plan's (tasks/models/plan.py)."""

from __future__ import annotations

from prefect import flow

from shardvec.flows.operate import operated
from shardvec.flows.params import Overrides, run_settings
from shardvec.flows.executors import OnPrefect
from shardvec.flows.pipeline import build_and_publish
from shardvec.flows.runtime import SettingsTaskRunner


@flow(name="nightly", log_prints=True, task_runner=SettingsTaskRunner)
def nightly(overrides: Overrides | None = None, force: bool = False) -> dict:
    """Process new partitions (all of them on the first night) and publish a new version.

    Args:
        overrides: Tuning knobs for this run only, by section of config/default.toml, e.g.
            {"index": {"nprobe": 64}}; the rest as configured.
        force: Publish even if the quality gate refuses the new models.
    """
    s = run_settings(overrides)
    with operated(s, "nightly") as run:
        return run.keep(
            build_and_publish(
                s, flow="nightly", mode="update", skip_if_nothing_new=True, force=force, executor=OnPrefect()
            )
        )
