"""The deployments users run on a schedule: nightly (cron), backfill (ad hoc), add-statements
(ad hoc, and on an interval draining the inbox), all served by one long-running process."""

from __future__ import annotations

from prefect import serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule

from shardvec.config import Settings
from shardvec.flows.add_statements import add_statements
from shardvec.flows.backfill import backfill
from shardvec.flows.nightly import nightly

NAMES = {
    "nightly": "nightly/shardvec-nightly",
    "backfill": "backfill/shardvec-backfill",
    "add-statements": "add-statements/shardvec-add-statements",
}


# One run of a deployment at a time; a second one waits in the UI ("AwaitingConcurrencySlot")
# instead of failing. Runs of different deployments on one data directory queue on its run lock
# (`[publish] wait_for_run_seconds`).
ONE_AT_A_TIME = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)


def deployments(s: Settings) -> list:
    sched = s.schedule
    inbox = [IntervalSchedule(interval=sched.inbox_interval_seconds)] if sched.inbox_interval_seconds else []
    return [
        nightly.to_deployment(
            name="shardvec-nightly",
            schedules=[CronSchedule(cron=sched.nightly_cron, timezone=sched.timezone)],
            concurrency_limit=ONE_AT_A_TIME,
            description="New partitions in, models updated, a new version published.",
        ),
        backfill.to_deployment(
            name="shardvec-backfill",
            concurrency_limit=ONE_AT_A_TIME,
            description="Reprocess a range of partitions (start, end) or rebuild all.",
        ),
        add_statements.to_deployment(
            name="shardvec-add-statements",
            schedules=inbox,
            concurrency_limit=ONE_AT_A_TIME,
            description="Add statements given as parameters and drain the inbox.",
        ),
    ]


def serve_all(s: Settings) -> None:
    """Register the deployments with the Prefect server and run their flow runs until stopped.
    Their runs inherit SHARDVEC_DATA_DIR from this process and are bound to it (flows/params.py)."""
    import os

    os.environ["SHARDVEC_DATA_DIR"] = str(s.data)
    serve(*deployments(s), print_starting_message=True)
