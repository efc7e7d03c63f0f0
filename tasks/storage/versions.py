"""Versions and the publish protocol.

Every run writes a new folder `versions/<id>/` (models, spaces, indexes, similarity rows, each
with a manifest). Nothing reads it until `publish` has fsynced all of it and atomically
replaced `CURRENT`, the one small file naming the live version, its components and the
watermark (the partitions that are in). A crash at any point leaves the old CURRENT, and so
the old version, serving. Old versions beyond `keep_versions` are deleted after a publish.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

from shardvec.tasks.storage.atomic import fsync_dir, fsync_tree, sha256_file, write_json
from shardvec.errors import ShardvecError
from shardvec.tasks.storage.layout import COMPONENTS, Layout

FORMAT = 1


class NotPublishedError(FileNotFoundError, ShardvecError):
    pass


class LockedError(RuntimeError, ShardvecError):
    pass


def new_version_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)


class DamagedCurrentError(ValueError, ShardvecError):
    """CURRENT cannot be trusted: nothing is read or written through it."""


VERSION_ID = re.compile(r"^\d{8}T\d{6}-[0-9a-f]{6}$")
_RECOVER = ("move it aside and run `shardvec backfill --mode rebuild` (the ledger keeps every "
            "acknowledged add, replace and delete), or restore CURRENT from a backup")


def read_current(data: Path) -> dict | None:
    """The live CURRENT document, validated: its version id has the form this shardvec writes,
    and every path it names stays inside the data directory (symlinks resolved)."""
    path = Layout(data).current
    if not path.exists():
        return None
    try:
        current = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise DamagedCurrentError(f"{path} is not valid JSON ({exc}); {_RECOVER}.") from None
    if not isinstance(current, dict) or current.get("format") != FORMAT:
        got = current.get("format") if isinstance(current, dict) else None
        raise DamagedCurrentError(f"{path} has format {got}, this shardvec reads {FORMAT}; upgrade shardvec, "
                                  f"or {_RECOVER}.")
    problem = _current_problem(Path(data), current)
    if problem:
        raise DamagedCurrentError(f"{path} {problem}; {_RECOVER}.")
    return current


def _current_problem(data: Path, current: dict) -> str | None:
    version = current.get("version")
    if not isinstance(version, str) or not VERSION_ID.match(version):
        return f"names {version!r} as its version, which is not a version id"
    seq = current.get("ledger", 0)
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < 10 ** 15:
        return f"names {current.get('ledger')!r} as its ledger position"
    comps = current.get("components")
    if not isinstance(comps, dict) or set(comps) != set(COMPONENTS):
        return "does not name the components of a version"
    segments = (current.get("additions") or {}).get("segments", [])
    where = Layout(data)
    for rel, under in [(c, where.versions) for c in comps.values()] + [(s, where.additions) for s in segments]:
        if not inside(data, rel, under.name):
            return f"names {rel!r}, which is not inside {under}"
    return None


def inside(data: Path, rel: object, under: str = "") -> bool:
    """True if `rel` is a relative path that stays inside data/under, symlinks resolved."""
    if not isinstance(rel, str) or not rel or os.path.isabs(rel):
        return False
    root = Path(data).resolve() / under  # a symlinked `under` that leads outside fails too
    return (Path(data) / rel).resolve().is_relative_to(root)


def require_current(data: Path) -> dict:
    current = read_current(data)
    if current is None:
        raise NotPublishedError(f"Nothing is published in {data} yet; run `shardvec nightly --data {data}` first.")
    return current


def read_manifest(data: Path, version: str) -> dict:
    """The manifest `prepare` wrote for `version` (counts, checksums, config, quality, ledger)."""
    return json.loads(Layout(data).version(version).manifest.read_text())


def prepare(data: Path, version: str, components: dict[str, str], watermark: dict, summary: dict) -> dict:
    """Write the version's manifest and fsync all of it; returns the CURRENT that would name it."""
    data = Path(data)
    v = Layout(data).version(version)
    missing = [c for c in COMPONENTS if c not in components]
    if missing:
        raise ValueError(f"cannot publish {version}: components {missing} missing")
    rel = {name: os.path.relpath(path, data) for name, path in components.items()}
    shutil.rmtree(v.work, ignore_errors=True)  # build scratch (the statement plan)
    files = {str(p.relative_to(v.root)): sha256_file(p) for p in sorted(v.root.rglob("*"))
             if p.is_file() and p != v.manifest}
    write_json(v.manifest, {"format": FORMAT, "version": version, "components": rel,
                            "watermark": watermark, **summary, "files": files})
    fsync_tree(v.root)
    fsync_dir(v.root.parent)  # the entries naming the new folder, and versions/ on a first run
    fsync_dir(data)
    return {"format": FORMAT, "version": version, "components": rel, "watermark": watermark,
            "published_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


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


def were_live(data: Path, current: dict) -> set[str]:
    """The kept versions (with a manifest) that have been live: CURRENT's and those versions.live
    names; every version with a manifest where nothing has been recorded yet."""
    path = Layout(data).live_log
    manifested = _manifested(data)
    if not path.exists():
        return manifested
    with open(path, encoding="ascii", errors="replace") as f:
        logged = {line.strip() for line in f if VERSION_ID.match(line.strip())}
    return manifested & (logged | {current["version"]})


def sweep_leftovers(data: Path) -> list[str]:
    """Delete the version folders that runs which failed or were killed (a full disk, SIGKILL) left
    without a manifest: nothing can read or roll back to them. Call it holding the RunLock (no other
    run is building one). `retain` would only remove them after a later publish, and a run that
    keeps failing on a full disk must not keep the space its predecessors filled. A whole version
    that never went live (killed between its manifest and its swap) stays: rollback can name it."""
    where = Layout(data)
    if not where.versions.is_dir():
        return []
    current = read_current(data)
    gone = []
    for p in sorted(where.versions.iterdir()):
        if VERSION_ID.match(p.name) and not where.version(p.name).manifest.exists() \
                and not (current and p.name == current["version"]):
            shutil.rmtree(p, ignore_errors=True)
            gone.append(p.name)
    return gone


def swap(data: Path, current: dict) -> None:
    """The publish point: atomically replace CURRENT (readers see the old or the new, whole)."""
    write_json(Layout(data).current, current)


def retain(data: Path, keep_versions: int) -> list[str]:
    """Delete versions other than the newest `keep_versions` that were live (CURRENT's always
    kept), and the leftovers older than the live version of runs that never went live (killed
    before or after writing their manifest)."""
    where = Layout(data)
    current = read_current(data)
    root = where.versions
    if current is None or not root.exists():
        return []
    live = current["version"]
    keep = set(sorted(were_live(data, current))[-keep_versions:]) | {live}
    keep |= {Path(c).parts[1] for c in current["components"].values() if Path(c).parts[0] == root.name}
    removed = []
    for p in sorted(root.iterdir()):
        if p.name not in keep and p.name < live:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
    additions = where.additions
    live_base = (current.get("additions") or {}).get("base")
    if additions.exists():  # additions of replaced versions were folded in by the run that replaced them
        for p in additions.iterdir():
            if p.name != live_base and p.name < live and not p.name.startswith("."):
                shutil.rmtree(p, ignore_errors=True)
    return removed


class PublishLock:
    """Held while CURRENT changes (an add batch, a run's final swap, a rollback): short, blocking."""

    def __init__(self, data: Path):
        self.path = Layout(data).publish_lock

    def __enter__(self) -> "PublishLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)


class RunLock:
    """One run at a time per data directory (an advisory flock the OS drops if the process dies).

    A run that finds the lock held waits up to `wait_seconds` for it (a nightly that meets a long
    backfill runs after it instead of failing), telling `say` who holds it when it starts waiting
    and every `say_every` seconds after; then it gives up with LockedError."""

    def __init__(self, data: Path, wait_seconds: float = 0.0, say=None, say_every: float = 60.0):
        self.path = Layout(data).run_lock
        self.wait_seconds = wait_seconds
        self.say, self.say_every = say, say_every
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        began = time.monotonic()
        said = None
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another run"
                waited = time.monotonic() - began
                if waited >= self.wait_seconds:
                    os.close(fd)
                    raise LockedError(f"Another shardvec run holds {self.path} ({holder}); "
                                      + (f"waited {waited:.0f} s for it; " if self.wait_seconds else "")
                                      + "wait for it to finish, then run again.") from None
                if self.say and (said is None or time.monotonic() - said >= self.say_every):
                    self.say(f"waiting for the run that holds {self.path} ({holder}) to finish: "
                             f"{waited:.0f} s so far, at most {self.wait_seconds:.0f} s")
                    said = time.monotonic()
                time.sleep(0.5)
        if said is not None and self.say:
            self.say(f"the run lock is free after {time.monotonic() - began:.0f} s; starting")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {datetime.now(timezone.utc).isoformat(timespec='seconds')}".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
