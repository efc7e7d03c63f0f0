"""Changing a published version between builds: statements added, replaced and deleted
(segments on top of a version, searchable within one call), files taken in from `shardvec add`
and the inbox, and releasing versions (publish, roll back, list, verify).
"""

from shardvec.tasks.changes.segments import PROBED_MAX, Segment, Statements, write_segment
from shardvec.tasks.changes.additions import Adder, add_options, add_records, adder_of, delete_ids
from shardvec.tasks.changes.intake import add_file, drain_inbox, text_id
from shardvec.tasks.changes.release import list_versions, publish_version, rollback, verify, verify_parts

__all__ = [
    "PROBED_MAX",
    "Segment",
    "Statements",
    "write_segment",
    "Adder",
    "add_options",
    "add_records",
    "adder_of",
    "delete_ids",
    "add_file",
    "drain_inbox",
    "text_id",
    "list_versions",
    "publish_version",
    "rollback",
    "verify",
    "verify_parts",
]
