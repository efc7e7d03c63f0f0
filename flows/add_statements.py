"""The add-statements flow: new statements in, searchable and related, without a rebuild."""

from __future__ import annotations

from prefect import flow

from shardvec.flows.params import run_settings
from shardvec.tasks import skins
from shardvec.flows.artifacts import publish_add_report


@flow(name="add-statements", log_prints=True)
def add_statements(records: list[dict] | None = None, delete: list[str] | None = None, replace: bool = False,
                   drain_inbox: bool = True, overrides: dict | None = None) -> dict:
    """Add `records` ({"id", "text"} each; `replace`: live ids get the new text), delete the
    ids in `delete`, then apply every file waiting in <data>/inbox."""
    s = run_settings(overrides)
    kw = dict(on_duplicate=s.corpus.on_duplicate, max_record_bytes=s.corpus.max_record_bytes)
    report = {"records": skins.add_task(s.data, records, replace=replace, **kw) if records else None,
              "delete": skins.delete_task(s.data, delete) if delete else None,
              "inbox": skins.drain_task(s.data, batch_size=s.corpus.batch_size, **kw) if drain_inbox else None}
    publish_add_report(report)
    return report
