"""Statements that arrive as files: `shardvec add FILE` and the files dropped into DATA/inbox/.

A file is streamed in batches, each committed by an `additions.Adder` (durable and visible
when it returns); rejected records are quarantined beside the adds' own. `drain_inbox` applies
every file waiting in the inbox and moves it to inbox/.done/ (never over an earlier one), or
moves what it cannot take to quarantine/inbox/ with its reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import hashlib
import itertools
import json
import os
from pathlib import Path

from shardvec.tasks.changes.additions import COUNTS, AddResult, Adder, Item, adder_of
from shardvec.tasks.storage.atomic import fit_name, fsync_dir, unique_stamp, write_json
from shardvec.tasks.inputs.corpus import (
    BATCH_BYTES,
    FORMATS,
    BadInputError,
    Quarantine,
    SourceFile,
    batched,
    one_line,
    read_records,
)
from shardvec.tasks.storage.layout import Layout, not_a_link
from shardvec.tasks.storage.ledger import Ledger
from shardvec.tasks.storage.datadir import DataDir


def add_file(
    data: Path,
    path: Path,
    *,
    batch_size: int,
    on_duplicate: str,
    max_record_bytes: int,
    replace: bool = False,
    adder: Adder | None = None,
    name: str | None = None,
    skip: int = 0,
    progress: _Progress | None = None,
    pending: tuple[int, int] | None = None,
) -> dict:
    """Stream a JSON Lines, text or Parquet file into the published store, batch by batch (of
    `batch_size` records and at most BATCH_BYTES of text). JSON Lines records may say
    `"op": "replace"` or `"op": "delete"` (a delete needs only the id). `name`: the file name the
    ids of a text file's lines carry (`text_id`), if not its own. `skip`: records already
    acknowledged by an earlier attempt; `progress` records how far the file is acknowledged, under
    the same publish lock as each commit. `pending` (upto, seq): an earlier attempt was killed
    while it committed records skip..upto as ledger batch `seq`; of those, the ids with an op
    acknowledged at `seq` or later are left alone (that batch itself, or something acknowledged
    after it, which wins: re-applying the file must not undo a delete made since)."""
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise BadInputError(f"{path} is not .jsonl, .ndjson, .txt or .parquet; rename it to say its format.")
    if not path.is_file():
        raise BadInputError(f"No file at {path}; give the path of a .jsonl, .txt or .parquet file, or - for stdin.")
    adder = adder or adder_of(data, batch_size=batch_size, on_duplicate=on_duplicate, max_record_bytes=max_record_bytes)
    put = "replace" if replace or on_duplicate == "update" else "add"
    st = path.stat()
    src = SourceFile("additions", path.name, fmt, st.st_size, st.st_mtime_ns, root=str(path.parent))
    # a folder of its own: two adds of files with one name in one second would replace each other's
    q = Quarantine(Layout(data).quarantine_additions / unique_stamp(), src)
    total = AddResult()

    def refuse(item: Item, reason: str) -> None:  # a duplicate id: its own bytes, file and line
        rec = item.at
        if rec.offset < 0:  # Parquet: the row
            q.reject(rec.line, reason, row={"id": rec.id, "text": rec.text})
            return
        with open(path, "rb") as f:
            f.seek(rec.offset)
            q.reject(rec.line, reason, raw=f.read(rec.length), offset=rec.offset, length=rec.length)

    try:
        records = read_records(path.parent, src, q, batch_size=batch_size, max_record_bytes=max_record_bytes, ops=True)
        if fmt == "text":
            records = (dataclasses.replace(rec, id=text_id(name or path.name, rec.text)) for rec in records)
        failed: list[str] = []
        upto, settled = (pending[0], _acknowledged_since(data, pending[1])) if pending else (0, frozenset())
        applied = skip
        for batch in batched(
            itertools.islice(_to_its_end(records, failed), skip, None),
            batch_size,
            max_bytes=BATCH_BYTES,
            weigh=lambda rec: len(rec.text or ""),
        ):
            start, applied = applied, applied + len(batch)
            items = [
                Item(put if rec.op == "add" else rec.op, rec.id, rec.text, _raw(rec), rec)
                for i, rec in enumerate(batch, start)
                if i >= upto or rec.id not in settled
            ]
            total.absorb(
                adder.commit(
                    items,
                    reject=refuse,
                    before=progress and functools.partial(progress.intend, start, applied),
                    then=progress and functools.partial(progress.save, applied),
                )
            )
    finally:
        q.commit()
    if failed:
        raise BadInputError(
            f"{path} cannot be read to its end ({failed[0]}); the records before that point were "
            "applied: fix the file and add it again."
        )
    total.quarantined = q.counts.records  # what the reader refused and what the adder did
    total.seconds = round(total.seconds, 4)
    return {"file": str(path), **{k: v for k, v in total.to_dict().items() if k not in ("segment", "ledger_seq")}}


def text_id(name: str, text: str) -> str:
    """The id of a line added from a text file: its file's name and a hash of the line, never its
    line number, so a later file of the same name (another day's daily.txt) never meets its ids,
    and adding a file again after an unknown outcome is a no-op."""
    # 64 bits: 10^8 lines added under one file name collide with a chance of 3e-4 (48 bits: likely)
    return f"{name}:{hashlib.sha256(text.encode()).hexdigest()[:16]}"


_NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)


def _to_its_end(records, failed: list[str]):
    """The records of a file up to a failure to read on (the file itself, not one record: those
    the reader quarantines), which goes into `failed`; the records before it are still applied."""
    try:
        yield from records
    except OSError as exc:
        if exc.errno in _NO_ROOM:  # writing its quarantine failed: not the file's fault, it stays for a retry
            raise
        failed.append(one_line(exc)[:200])
    except Exception as exc:  # noqa: BLE001 - whatever the reader met, the file is unusable from here
        failed.append(one_line(exc)[:200] or type(exc).__name__)


def _raw(rec) -> bytes:
    # ensure_ascii: a lone surrogate (which check_record refuses) stays an escape, not an error
    return json.dumps({"id": rec.id, "text": rec.text}).encode() + b"\n"


def drain_inbox(data: Path, *, batch_size: int, on_duplicate: str, max_record_bytes: int) -> dict:
    """Apply every file waiting in <data>/inbox (oldest name first), then move it to inbox/.done/.

    The drop protocol: write `name.jsonl.part` (or any name starting with a dot), then rename
    it to `name.jsonl`; names ending in `.part` or starting with `.` are left alone. A symlink,
    a file of an unknown format or one that cannot be read (at all, or to its end) moves to
    quarantine/inbox/ with its reason, and the other files are still applied; a bad record costs
    only itself (quarantined with the file's other rejects). A file moves to .done only after all its
    operations are acknowledged; a crash in between goes on next time after the records already
    acknowledged (`_Progress`).
    """
    where = Layout(data)
    inbox, done, refused = where.inbox, where.inbox_done, where.quarantine_inbox
    for folder in (inbox, done, where.inbox_progress):
        not_a_link(folder, BadInputError)
    waiting = (
        sorted(p for p in inbox.iterdir() if not p.name.startswith(".") and not p.name.endswith(".part"))
        if inbox.is_dir()
        else []
    )
    totals = {"files": 0, "refused": 0, **{f: 0 for f in COUNTS}}
    adder = None
    for path in waiting:
        if not os.path.lexists(
            path
        ):  # another drain took it (the deployment runs one at a time; a hand-run one may not)
            continue
        reason = _inbox_problem(path, FORMATS)
        if reason:
            totals["refused"] += _refuse(path, refused, reason)
            continue
        adder = adder or adder_of(
            data, batch_size=batch_size, on_duplicate=on_duplicate, max_record_bytes=max_record_bytes
        )
        try:
            mark = _Progress(where.inbox_progress, path)
            result = add_file(
                data,
                path,
                batch_size=batch_size,
                on_duplicate=on_duplicate,
                max_record_bytes=max_record_bytes,
                adder=adder,
                skip=mark.applied,
                progress=mark,
                pending=mark.pending,
            )
        except BadInputError as exc:  # this file cannot be used: the later ones still are
            totals["refused"] += _refuse(path, refused, str(exc))
            mark.clear()
            continue
        except FileNotFoundError:
            if os.path.lexists(path):
                raise
            continue  # another drain took it while this one looked at it
        moved = _keep_done(path, done)
        mark.clear()
        if not moved:
            continue
        totals["files"] += 1
        for f in COUNTS:
            totals[f] += result[f]
    with contextlib.suppress(OSError):  # empty once every file is through (kept while one is not)
        where.inbox_progress.rmdir()
    return totals


def _acknowledged_since(data: Path, seq: int) -> frozenset[str]:
    """The ids with an op acknowledged at ledger batch `seq` or later."""
    ledger = Ledger(data)
    upto = max(DataDir(data).require_current().ledger, ledger.last_confirmed())
    return frozenset(ledger.net(upto, after=seq - 1).column("id").to_pylist()) if upto >= seq else frozenset()


class _Progress:
    """How many records of an inbox file are acknowledged, kept beside the inbox while it is
    drained: a drain killed inside a file goes on after them next time instead of applying the
    file again from its first line, over what was acknowledged since (a delete of one of its ids
    would be undone). Under each batch's publish lock it is saved twice: before the batch goes to
    the ledger (`intend`: the records and the ledger seq in flight) and once it is acknowledged
    (`save`). A kill in between leaves `pending`, and the next drain re-applies those records
    except the ids acknowledged at that seq or later (`add_file`). Bound to the file's size and
    mtime: another file of the name starts afresh."""

    def __init__(self, folder: Path, path: Path):
        st = path.stat()
        self.file = folder / f"{fit_name(path.name)}.json"
        self.identity = {"name": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        try:
            saved = json.loads(self.file.read_text())
        except (OSError, ValueError):
            saved = {}
        ok = isinstance(saved, dict) and all(saved.get(k) == v for k, v in self.identity.items())
        self.applied = saved["applied"] if ok and isinstance(saved.get("applied"), int) else 0
        pending = saved.get("pending") if ok else None
        self.pending = (
            (pending["upto"], pending["seq"])
            if isinstance(pending, dict) and all(isinstance(pending.get(k), int) for k in ("upto", "seq"))
            else None
        )

    def intend(self, applied: int, upto: int, seq: int) -> None:
        write_json(self.file, {**self.identity, "applied": applied, "pending": {"upto": upto, "seq": seq}})

    def save(self, applied: int) -> None:
        write_json(self.file, {**self.identity, "applied": applied})

    def clear(self) -> None:
        self.file.unlink(missing_ok=True)


def _keep_done(path: Path, done: Path) -> bool:
    """Move an applied file to inbox/.done/, under a stamped name if one of its name is there;
    False if another drain, which applied it too, moved it first."""
    done.mkdir(parents=True, exist_ok=True)
    target = done / path.name
    if os.path.lexists(target):
        target = done / f"{unique_stamp()}-{fit_name(path.name)}"
    return _move(path, target)


def _move(path: Path, target: Path) -> bool:
    """os.replace, or False if `path` is gone: a drain beside this one took it."""
    try:
        os.replace(path, target)
    except FileNotFoundError:
        if os.path.lexists(path):
            raise
        return False
    return True


def _inbox_problem(path: Path, formats: dict) -> str | None:
    if path.is_symlink():
        return "a symlink: the inbox takes files, not links (copy the file in instead)"
    if not path.is_file():
        return "not a regular file"
    if path.suffix.lower() not in formats:
        return f"not {', '.join(formats)}: rename it to say its format"
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        return f"cannot be read: {exc.strerror}"
    return None


def _refuse(path: Path, folder: Path, reason: str) -> bool:
    """Move a refused inbox entry (the link itself, not its target) to quarantine/inbox/ with its
    reason; False if another drain took it first."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = unique_stamp()
    target = folder / f"{stamp}-{fit_name(path.name)}"
    if not _move(path, target):
        return False
    with open(str(target) + ".reason.json", "w") as f:
        json.dump({"source": f"inbox/{path.name}", "reason": reason}, f)
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(folder)
    return True
