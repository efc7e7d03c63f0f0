"""The deployments users run on a schedule: nightly (cron), backfill (ad hoc), add-statements
(ad hoc, and on an interval draining the inbox), all served by one long-running process."""

from __future__ import annotations

from prefect import serve
from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule

from shardvec.config import Settings
from shardvec.flows.add_statements import add_statements
from shardvec.flows.backfill import backfill
from shardvec.flows.nightly import nightly

NAMES = {"nightly": "nightly/shardvec-nightly", "backfill": "backfill/shardvec-backfill",
         "add-statements": "add-statements/shardvec-add-statements"}


def deployments(s: Settings) -> list:
    params = {"overrides": {"data_dir": str(s.data)}}
    sched = s.schedule
    inbox = [IntervalSchedule(interval=sched.inbox_interval_seconds)] if sched.inbox_interval_seconds else []
    return [
        nightly.to_deployment(name="shardvec-nightly", parameters=params,
                              schedules=[CronSchedule(cron=sched.nightly_cron, timezone=sched.timezone)],
                              description="New partitions in, models updated, a new version published."),
        backfill.to_deployment(name="shardvec-backfill", parameters=params,
                               description="Reprocess a range of partitions (start, end) or rebuild all."),
        add_statements.to_deployment(name="shardvec-add-statements", parameters=params, schedules=inbox,
                                     description="Add statements given as parameters and drain the inbox."),
    ]


def serve_all(s: Settings) -> None:
    """Register the deployments with the Prefect server and run their flow runs until stopped.
    Their runs are bound to this data directory (flows/params.py)."""
    import os
    os.environ["SHARDVEC_DATA_DIR"] = str(s.data)
    serve(*deployments(s), print_starting_message=True)
