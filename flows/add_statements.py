"""The add-statements flow: new statements in, searchable and related, without a rebuild."""

from __future__ import annotations

from prefect import flow

from config import load_settings
from tasks import skins


@flow(name="add-statements", log_prints=True)
def add_statements(records: list[dict] | None = None, drain_inbox: bool = True,
                   overrides: dict | None = None) -> dict:
    """Add `records` ({"id", "text"} each), then every file waiting in <data>/inbox."""
    s = load_settings(**(overrides or {}))
    kw = dict(on_duplicate=s.corpus.on_duplicate, max_record_bytes=s.corpus.max_record_bytes)
    report = {"records": skins.add_task(s.data, records, **kw) if records else None,
              "inbox": skins.drain_task(s.data, batch_size=s.corpus.batch_size, **kw) if drain_inbox else None}
    print(f"shardvec add-statements: {report}")
    return report
