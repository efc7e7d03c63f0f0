"""Making a version live: publish a run's version, roll back to a kept one, list them.

Both end the same way: under the publish lock, the ledger's operations acknowledged after the
version was built are replayed on top of it (tasks/changes/additions.py), then CURRENT is replaced
atomically. So a publish or a rollback never drops an acknowledged add, replace or delete.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from shardvec.tasks.changes.additions import Adder
from shardvec.tasks.storage.atomic import sha256_file
from shardvec.tasks.storage.datadir import DataDir
from shardvec.tasks.storage.documents import Current, Manifest
from shardvec.tasks.storage.ledger import Ledger, ops_from
from shardvec.tasks.storage.versions import NotPublishedError, prepare, record_live, retain, were_live
from shardvec.tasks.changes.segments import Segment


def publish_version(
    data: Path, version: str, components: dict[str, str], watermark: dict, summary: dict, keep_versions: int
) -> dict:
    """Publish a run's version; `summary["ledger"]` is the last ledger op its shards hold."""
    new = prepare(data, version, components, watermark, summary)
    with DataDir(data).publish_lock():
        replayed = _go_live(data, new, summary.get("ledger", 0))
    return {"version": version, "removed_versions": retain(data, keep_versions), "ops_replayed": replayed}


def rollback(data: Path, version: str | None = None) -> dict:
    """Make an earlier kept version live again, with every operation acknowledged after it
    replayed on top. By default the newest kept version older than the live one that was itself
    live once (not one a killed run finished but never made live)."""
    data = Path(data)
    where = DataDir(data)
    with where.run_lock():
        current = where.current()
        if current is None:
            raise NotPublishedError(f"Nothing is published in {data} yet; there is nothing to roll back.")
        kept = [v["version"] for v in list_versions(data)]
        if version is None:
            older = sorted(v for v in were_live(data, current) if v < current.version)
            if not older:
                raise NotPublishedError(
                    f"No kept version older than the live {current.version} was ever live; "
                    "`shardvec versions` lists what is kept (name one to roll back to it)."
                )
            version = older[-1]
        if version == current.version:
            raise NotPublishedError(f"Version {version} is already live; `shardvec versions` lists the older ones.")
        if version not in kept:
            raise NotPublishedError(
                f"Version {version!r} is not kept in {data}; `shardvec versions` lists the ones you can roll back to."
            )
        damaged = verify_version(data, version)
        if damaged:
            raise NotPublishedError(
                f"Version {version} is damaged ({damaged[0]}); roll back to another kept "
                "version, or run `shardvec backfill --mode rebuild`."
            )
        manifest = where.manifest(version)
        target = Current(
            version,
            manifest.components,
            manifest.watermark,
            published_at=current.published_at,
            rolled_back_from=current.version,
            format=current.format,
        )
        with where.publish_lock():
            replayed = _go_live(data, target, manifest.ledger)
    return {"version": version, "from": current.version, "ops_replayed": replayed}


def _go_live(data: Path, new: Current, built_upto: int) -> int:
    """Replay the ops acknowledged after `built_upto` onto `new` and swap it in (publish lock held)."""
    where = DataDir(data)
    latest = where.current()
    # never behind the ledger: not the version's own position, nor batches a restored CURRENT lacks
    acknowledged = max(Ledger(data).settle(latest.ledger if latest else 0), built_upto)
    replayed = 0
    new = dataclasses.replace(new, ledger=acknowledged)
    if acknowledged > built_upto:
        adder = Adder(data, state=new)
        result = adder.replay(ops_from(Ledger(data).net(acknowledged, after=built_upto)))
        new, replayed = adder.current, result.added + result.replaced + result.deleted
    record_live(data, new.version)
    where.swap(new)
    return replayed


def list_versions(data: Path) -> list[dict]:
    """The kept versions, oldest first: when, how many statements, the run's quality line."""
    data_dir = DataDir(data)
    where, current = data_dir.layout, data_dir.current()
    live_once = were_live(data, current) if current else set()
    out = []
    for p in sorted(where.versions.iterdir()) if where.versions.is_dir() else []:
        if not where.version(p.name).manifest.exists():
            continue  # a run that never finished
        try:
            m = data_dir.manifest(p.name)
        except ValueError:
            out.append(
                {
                    "version": p.name,
                    "live": False,
                    "was_live": p.name in live_once,
                    "created_by": "damaged",
                    "statements": None,
                    "ledger": None,
                    "quality": {},
                }
            )
            continue
        q = m.quality
        out.append(
            {
                "version": p.name,
                "live": current is not None and current.version == p.name,
                "was_live": p.name in live_once,
                "created_by": m.created_by,
                "statements": m.counts.get("statements"),
                "ledger": m.ledger,
                "quality": {
                    k: q[k] for k in ("rows_recall_at_10", "wordsim353_spearman", "analogy_accuracy") if k in q
                },
            }
        )
    return out


def verify(data: Path) -> list[str]:
    """Problems with what CURRENT names (empty: it is whole): every file of the live version
    against its checksum in the version manifest, every addition segment it names, and every
    ledger file up to CURRENT's position."""
    _version, built, ledger = verify_parts(data)
    return built + ledger


def verify_parts(data: Path) -> tuple[str, list[str], list[str]]:
    """`verify`'s findings: (the version checked; the problems of it and its segments, which a
    rebuild makes again; those of the ledger, which nothing can: it is the only record of
    acknowledged operations)."""
    data = Path(data)
    current = DataDir(data).require_current()
    problems = verify_version(data, current.version)
    for rel in current.segments:
        try:
            Segment(data / rel, 0)
        except Exception as exc:  # any failure to open is the finding
            problems.append(f"addition segment {rel} cannot be read: {exc}")
    return current.version, problems, Ledger(data).check(current.ledger)


def verify_version(data: Path, version: str) -> list[str]:
    """Every file of one version against the checksums in its manifest."""
    v = DataDir(data).layout.version(version)
    try:
        manifest = Manifest.load(v.manifest)
    except (OSError, ValueError) as exc:
        return [f"{v.manifest} cannot be read ({exc})"]
    problems = []
    for rel, digest in manifest.files.items():
        path = v.root / rel
        if not path.exists():
            problems.append(f"{path} is missing")
        elif sha256_file(path) != digest:
            problems.append(f"{path} does not match its checksum")
    return problems
