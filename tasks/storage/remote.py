"""A published data directory on an object store, for readers on other machines.

    <prefix>/versions/<id>/...                      a version's files, as in the data directory
    <prefix>/additions/<base>/<sha256>/<seq>.*      addition segments, under their content's hash
    <prefix>/log/<seq:012d>.json                    the commits: CURRENT's document, each file the
                                                    reader needs with its key and SHA-256, who and when

`push` uploads the live version's immutable files (skipping those already there with the same
SHA-256), then commits by creating the next log entry with a conditional write; a push that loses
the race to another reads the log again and takes the next number. The newest entry is found by
probing numbers (never by listing). `sync` brings the newest entry's files into a local cache laid
out as a data directory (parallel, streamed, each checked by its SHA-256 and renamed into place),
then replaces the cache's CURRENT: the ordinary reader opens it, at memmap speed. Processes on one
host share the cache: one fetches (under a lock) while the others wait for it.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

from shardvec.tasks.storage.atomic import sha256_file, write_json
from shardvec.tasks.storage.layout import Layout
from shardvec.tasks.storage.objects import ObjectStore, ObjectStoreError
from shardvec.tasks.storage.datadir import DataDir
from shardvec.tasks.storage.documents import Current, NotPublishedError, inside

LOG = "log"
THREADS = 8


def log_key(seq: int) -> str:
    return f"{LOG}/{seq:012d}.json"


def latest(store: ObjectStore, after: int = 0) -> int:
    """The number of the newest log entry (0: none), probing from `after` (an entry known to
    exist, or 0): doubling steps until one is missing, then halving between. Entries are only
    ever added, so the numbers in use are 1..n."""
    lo, step = after, 1
    while store.exists(log_key(lo + step)):
        lo, step = lo + step, step * 2
    hi = lo + step  # missing; lo exists (or is 0)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if store.exists(log_key(mid)):
            lo = mid
        else:
            hi = mid
    return lo


def read_entry(store: ObjectStore, seq: int) -> dict:
    raw = store.get(log_key(seq))
    if raw is None:
        raise ObjectStoreError(
            f"{store.url}/{log_key(seq)} is gone; entries are never removed, so the "
            "bucket was changed by hand: push again."
        )
    return json.loads(raw)


# --- push ----------------------------------------------------------------------------------
def _files(data: Path, current: Current) -> dict[str, dict]:
    """What a reader of `current` needs: rel path -> {key, sha256, size}. A version's files take the
    SHA-256 its manifest holds (checked against the bytes only when they are sent, `_send`); the
    rest (the manifest itself, the segments) are hashed here."""
    where = Layout(data)
    root = where.version(current.version).root
    known = DataDir(data).manifest(current.version).files
    out = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.name.startswith("."):
            continue
        rel = p.relative_to(data).as_posix()
        sha = known.get(p.relative_to(root).as_posix()) or sha256_file(p)
        out[rel] = {"key": rel, "sha256": sha, "size": p.stat().st_size}
    for seg in current.segments:
        for p in sorted((data / seg).parent.glob(Path(seg).name + ".*")):
            rel = p.relative_to(data).as_posix()
            sha = sha256_file(p)
            # a segment's name can be reused after a rollback: its key carries its content's hash
            out[rel] = {"key": f"{Path(rel).parent.as_posix()}/{sha}/{p.name}", "sha256": sha, "size": p.stat().st_size}
    return out


def _send(store: ObjectStore, data: Path, rel: str, f: dict) -> bool:
    """Upload one file unless the store has it with its SHA-256 already; its bytes are checked
    against that SHA-256 first (a damaged local file is never pushed)."""
    if store.sha256(f["key"]) == f["sha256"]:
        return False
    if sha256_file(data / rel) != f["sha256"]:
        raise ObjectStoreError(
            f"{data / rel} does not match the SHA-256 its manifest names; run `shardvec verify "
            f"--data {data}` and repair the version before pushing it."
        )
    return store.upload(data / rel, f["key"], f["sha256"], skip_same=False)


def push(data: Path, to: str, **options) -> dict:
    """Upload the live version of `data` to the object store `to`, then commit it as the next log
    entry. Returns {seq, version, uploaded, skipped, committed}."""
    data = Path(data)
    store = ObjectStore(to, **options)
    store.probe()
    current = DataDir(data).require_current()
    files = _files(data, current)
    try:
        with ThreadPoolExecutor(THREADS) as pool:
            sent = list(pool.map(lambda f: _send(store, data, *f), files.items()))
    except FileNotFoundError as exc:  # a publish while pushing: retention removed what CURRENT named
        if DataDir(data).require_current() == current:
            raise
        raise ObjectStoreError(
            f"{data} published a new state while it was pushed ({exc.filename} went away); run the push again."
        ) from None
    uploaded = sum(sent)
    seq = latest(store)
    while True:
        if seq and read_entry(store, seq)["current"] == current.to_json():
            return {
                "seq": seq,
                "version": current.version,
                "uploaded": uploaded,
                "skipped": len(files) - uploaded,
                "committed": False,
            }
        entry = {
            "seq": seq + 1,
            "current": current.to_json(),
            "files": files,
            "written_by": f"{getpass.getuser()}@{socket.gethostname()} pid {os.getpid()}",
            "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        if store.put_if_absent(log_key(seq + 1), json.dumps(entry, indent=1).encode()):
            return {
                "seq": seq + 1,
                "version": current.version,
                "uploaded": uploaded,
                "skipped": len(files) - uploaded,
                "committed": True,
            }
        seq = latest(store, seq + 1)  # lost the race: read what won, commit after it


# --- readers' cache ------------------------------------------------------------------------
def default_cache(url: str) -> Path:
    """Where `sync` keeps `url`'s files: $SHARDVEC_CACHE_DIR, else ~/.cache/shardvec (XDG), then the
    URL's scheme, bucket and prefix."""
    base = (
        os.environ.get("SHARDVEC_CACHE_DIR")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "shardvec"
    )
    scheme, rest = url.rstrip("/").split("://", 1)
    return Path(base) / scheme / rest


def _cached(path: Path, f: dict) -> bool:
    """True if `path` holds the bytes `f` names. A version's files were renamed into place only
    after their SHA-256 was checked and never change, so their size is checked; anything else
    (a segment's name can be reused) is hashed."""
    try:
        if path.stat().st_size != f["size"]:
            return False
    except FileNotFoundError:
        return False
    return f["key"].startswith("versions/") or sha256_file(path) == f["sha256"]


def sync(url: str, cache: Path | None = None, **options) -> tuple[Path, dict]:
    """Bring the newest pushed version of `url` into the local data directory `cache` (see
    `default_cache`); returns it and its log entry. Files already there are not fetched again."""
    local = Path(cache) if cache else default_cache(url)
    local.mkdir(parents=True, exist_ok=True)
    store = ObjectStore(url, **options)
    lock = os.open(local / ".fetch.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one process of the host fetches; the others then find it here
        known = _seq(local)
        seq = latest(store, known)
        if seq == 0:
            raise NotPublishedError(
                f"Nothing is pushed to {url} yet; run `shardvec push --to {url}` where it is published first."
            )
        entry = read_entry(store, seq)
        cached = DataDir(local).current()
        if seq == known and cached is not None and cached.to_json() == entry["current"]:
            return local, entry
        bad = [rel for rel in entry["files"] if not inside(local, rel)]
        if bad:
            raise ObjectStoreError(
                f"{url}/{log_key(seq)} names {bad[0]!r}, outside a data directory; it was not "
                "written by shardvec: push again."
            )
        todo = [(rel, f) for rel, f in entry["files"].items() if not _cached(local / rel, f)]
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(lambda t: store.download(t[1]["key"], local / t[0], t[1]["sha256"]), todo))
        # the swap: readers see the old or the new (a document CURRENT would refuse is never written)
        write_json(Layout(local).current, Current.from_json(entry["current"], local).to_json())
        write_json(local / ".log-seq.json", {"seq": seq, "url": url})
        return local, entry
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        os.close(lock)


def _seq(local: Path) -> int:
    try:
        return int(json.loads((local / ".log-seq.json").read_text())["seq"])
    except (FileNotFoundError, ValueError, KeyError):
        return 0
