"""The add-statements flow: new statements in, searchable and related, without a rebuild."""

from __future__ import annotations

from prefect import flow

from shardvec.flows.artifacts import publish_add_report
from shardvec.flows.params import Overrides, run_settings
from shardvec.flows.watchdog import watch_parent
from shardvec.flows import skins
from shardvec.flows.executors import OnPrefect
from shardvec.tasks.changes.additions import add_options


@flow(name="add-statements", log_prints=True)
def add_statements(
    records: list[dict] | None = None,
    delete: list[str] | None = None,
    replace: bool = False,
    drain_inbox: bool = True,
    overrides: Overrides | None = None,
) -> dict:
    """Add statements, delete statements, then apply every file waiting in <data>/inbox: searchable
    and related when the run ends, without a rebuild.

    Args:
        records: Statements to add, each {"id": ..., "text": ...}.
        delete: Ids of live statements to delete, for good.
        replace: A record whose id is live gets the new text (otherwise it is quarantined, unless
            corpus.on_duplicate is "update").
        drain_inbox: Also apply the files waiting in <data>/inbox.
        overrides: Tuning knobs for this run only, by section of config/default.toml, e.g.
            {"corpus": {"max_record_bytes": 10000}}; the rest as configured.
    """
    watch_parent()  # a run whose worker is killed ends too (flows/watchdog.py)
    s = run_settings(overrides)
    kw = add_options(s)
    run = OnPrefect().call
    report = {
        "records": run(skins.add_task, s.data, records, replace=replace, **kw) if records else None,
        "delete": run(skins.delete_task, s.data, delete) if delete else None,
        "inbox": run(skins.drain_task, s.data, **kw) if drain_inbox else None,
    }
    publish_add_report(report)
    return report
