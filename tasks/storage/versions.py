"""Versions and the publish protocol.

Every run writes a new folder `versions/<id>/` (models, spaces, indexes, similarity rows, each
with a manifest). Nothing reads it until `publish` has fsynced all of it and atomically
replaced `CURRENT`, the one small file naming the live version, its components and the
watermark (the partitions that are in). A crash at any point leaves the old CURRENT, and so
the old version, serving. Old versions beyond `keep_versions` are deleted after a publish.
Here: a version's manifest written (`prepare`), the log of versions made live, retention. The
documents themselves are tasks/storage/documents.py's, the locks tasks/storage/locks.py's, and
code reaches all three through `DataDir` (tasks/storage/datadir.py).
"""

from __future__ import annotations

import os
import secrets
import shutil
from datetime import datetime, timezone
from pathlib import Path

from shardvec.tasks.storage.atomic import fsync_dir, fsync_tree, sha256_file, write_json
from shardvec.tasks.storage.datadir import DataDir
from shardvec.tasks.storage.documents import (
    FORMAT,
    VERSION_ID,
    Current,
    DamagedCurrentError,
    Manifest,
    NotPublishedError,
    inside,
)
from shardvec.tasks.storage.layout import COMPONENTS, Layout
from shardvec.tasks.storage.locks import LockedError, PublishLock, RunLock

# where they were before documents.py and locks.py; importers keep working
__all__ = [
    "FORMAT",
    "VERSION_ID",
    "Current",
    "DamagedCurrentError",
    "NotPublishedError",
    "inside",
    "LockedError",
    "PublishLock",
    "RunLock",
    "new_version_id",
    "prepare",
    "record_live",
    "were_live",
    "sweep_leftovers",
    "retain",
]


def new_version_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)


def prepare(data: Path, version: str, components: dict[str, str], watermark: dict, summary: dict) -> Current:
    """Write the version's manifest and fsync all of it; returns the CURRENT that would name it."""
    data = Path(data)
    v = Layout(data).version(version)
    missing = [c for c in COMPONENTS if c not in components]
    if missing:
        raise ValueError(f"cannot publish {version}: components {missing} missing")
    rel = {name: os.path.relpath(path, data) for name, path in components.items()}
    shutil.rmtree(v.work, ignore_errors=True)  # build scratch (the statement plan)
    files = {
        str(p.relative_to(v.root)): sha256_file(p) for p in sorted(v.root.rglob("*")) if p.is_file() and p != v.manifest
    }
    write_json(v.manifest, Manifest(version, rel, watermark, summary, files).to_json())
    fsync_tree(v.root)
    fsync_dir(v.root.parent)  # the entries naming the new folder, and versions/ on a first run
    fsync_dir(data)
    return Current(version, rel, watermark, published_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def record_live(data: Path, version: str) -> None:
    """Append `version` to versions.live just before its swap (publish lock held), so that every
    version ever live is in it: what rollback and retention count as published is a version that
    was live, not every version with a manifest (a run killed between its manifest and its swap
    leaves a whole version nobody served). The log is apart from CURRENT: a CURRENT moved aside
    or restored from a backup does not forget it. Its first write (a new data directory, or one
    from before the log) records every version with a manifest, as was counted then."""
    path = Layout(data).live_log
    first = not path.exists()
    names = [v for v in sorted(_manifested(data)) if v != version] if first else []
    with open(path, "ab") as f:
        f.seek(0, os.SEEK_END)
        # a line a kill cut short (no swap followed it) is left alone, never joined to this one
        torn = f.tell() > 0 and _last_byte(path) != b"\n"
        f.write(("\n" if torn else "").encode() + "".join(f"{v}\n" for v in [*names, version]).encode())
        f.flush()
        os.fsync(f.fileno())
    if first:
        fsync_dir(path.parent)


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1)


def _manifested(data: Path) -> set[str]:
    where = Layout(data)
    root = where.versions
    return {p.name for p in root.iterdir() if where.version(p.name).manifest.exists()} if root.is_dir() else set()


def were_live(data: Path, current: Current) -> set[str]:
    """The kept versions (with a manifest) that have been live: CURRENT's and those versions.live
    names; every version with a manifest where nothing has been recorded yet."""
    path = Layout(data).live_log
    manifested = _manifested(data)
    if not path.exists():
        return manifested
    with open(path, encoding="ascii", errors="replace") as f:
        logged = {line.strip() for line in f if VERSION_ID.match(line.strip())}
    return manifested & (logged | {current.version})


def sweep_leftovers(data: Path) -> list[str]:
    """Delete the version folders that runs which failed or were killed (a full disk, SIGKILL) left
    without a manifest: nothing can read or roll back to them. Call it holding the RunLock (no other
    run is building one). `retain` would only remove them after a later publish, and a run that
    keeps failing on a full disk must not keep the space its predecessors filled. A whole version
    that never went live (killed between its manifest and its swap) stays: rollback can name it."""
    where = Layout(data)
    if not where.versions.is_dir():
        return []
    current = DataDir(data).current()
    gone = []
    for p in sorted(where.versions.iterdir()):
        if (
            VERSION_ID.match(p.name)
            and not where.version(p.name).manifest.exists()
            and not (current and p.name == current.version)
        ):
            shutil.rmtree(p, ignore_errors=True)
            gone.append(p.name)
    return gone


def retain(data: Path, keep_versions: int) -> list[str]:
    """Delete versions other than the newest `keep_versions` that were live (CURRENT's always
    kept), and the leftovers older than the live version of runs that never went live (killed
    before or after writing their manifest)."""
    where = Layout(data)
    current = DataDir(data).current()
    root = where.versions
    if current is None or not root.exists():
        return []
    live = current.version
    keep = set(sorted(were_live(data, current))[-keep_versions:]) | {live}
    keep |= {Path(c).parts[1] for c in current.components.values() if Path(c).parts[0] == root.name}
    removed = []
    for p in sorted(root.iterdir()):
        if p.name not in keep and p.name < live:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
    additions = where.additions
    live_base = current.additions.base if current.additions else None
    if additions.exists():  # additions of replaced versions were folded in by the run that replaced them
        for p in additions.iterdir():
            if p.name != live_base and p.name < live and not p.name.startswith("."):
                shutil.rmtree(p, ignore_errors=True)
    return removed
