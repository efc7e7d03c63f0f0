"""The nightly flow: take the partitions after the watermark, update the models, publish."""

from __future__ import annotations

from prefect import flow

from shardvec.flows.operate import operated
from shardvec.flows.params import run_settings
from shardvec.flows.pipeline import build_and_publish
from shardvec.flows.runtime import SettingsTaskRunner


@flow(name="nightly", log_prints=True, task_runner=SettingsTaskRunner)
def nightly(overrides: dict | None = None, force: bool = False) -> dict:
    """Process new partitions (all of them on the first night) and publish a new version.

    `overrides` are configuration values for this run, e.g. {"data_dir": "/srv/shardvec"};
    `force` publishes even if the quality gate refuses the new models.
    """
    s = run_settings(overrides)
    with operated(s, "nightly") as run:
        return run.keep(build_and_publish(s, flow="nightly", mode="update", force=force))
