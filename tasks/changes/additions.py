"""Statements added, replaced and deleted between nightly runs: searchable and related within one call.

A batch of operations is screened (one net operation per id; bad records quarantined), its new
statements are embedded with the published models (tokenize, TF-IDF, LSI) and scored against
every live statement with one matrix product per block of the space (or, into a version with
partitioned rows and at most `segments.PROBED_MAX` new statements, against the statements the
nightly's clusters pair them with: `segments.Statements.scored`); tasks/search/repair.py works out the
rows it changes, and it is committed as an immutable segment (tasks/changes/segments.py, two files).

The commit, under the publish lock: the batch is appended to the ledger (tasks/storage/ledger.py), both
segment files are fsynced and renamed into place, then CURRENT is atomically replaced with one
that names the segment: an add is acknowledged only once CURRENT names it, and a reader sees
all of a segment or none of it. In a version with exact rows, rows stay exact: after any
sequence of adds they equal a full exact recompute (up to ties in the last float bit). Segments
merge like a binary counter, so about log2(adds) of them are live. Files and the inbox come in
through tasks/changes/intake.py.

Long because: add, replace and delete are one ledger-then-segment protocol with one lock and
one repair of the rows; split, the order of its durable writes would be spread out.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shardvec.errors import UsageError
from shardvec.tasks.storage.atomic import unique_stamp
from shardvec.tasks.inputs.corpus import check_op, inside_quarantine, short_repr
from shardvec.tasks.search.embed import Embedder
from shardvec.tasks.storage.datadir import DataDir
from shardvec.tasks.storage.documents import Additions, Current
from shardvec.tasks.storage.ledger import OPS, Ledger, Op, ops_from
from shardvec.tasks.search.repair import refilled, repair_rows
from shardvec.tasks.changes.segments import Segment, Statements, compact, sweep, write_segment
from shardvec.tasks.inputs.tokenize import Tokenizer


# what an AddResult counts, and what batches and files add up
COUNTS = ("added", "replaced", "deleted", "unchanged", "missing", "quarantined", "rows_updated")


@dataclass
class AddResult:
    added: int = 0
    replaced: int = 0
    deleted: int = 0
    unchanged: int = 0
    missing: int = 0  # deletes of ids that were not live
    quarantined: int = 0
    rows_updated: int = 0
    segment: str | None = None
    ledger_seq: int | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def absorb(self, other: "AddResult") -> None:
        for f in (*COUNTS, "seconds"):
            setattr(self, f, getattr(self, f) + getattr(other, f))


_NOT_AN_OBJECT = object()


def _fields(rec) -> tuple:
    """(id, text, raw bytes) of one record given to `add`."""
    if isinstance(rec, bytes):
        return _NOT_AN_OBJECT, "bytes", rec
    raw = _json_line(rec)
    if not isinstance(rec, dict):
        return _NOT_AN_OBJECT, type(rec).__name__, raw
    return rec.get("id"), rec.get("text"), raw


def _json_line(value) -> bytes:
    """A value given to `add` or `delete` as the line kept in quarantine; one that cannot be
    written as JSON (nested too deep, an int over Python's digit limit) is kept by its type."""
    try:
        return json.dumps(value, ensure_ascii=False, default=repr).encode() + b"\n"
    except Exception:  # noqa: BLE001 - RecursionError, ValueError
        return f"{short_repr(value)}\n".encode()


@dataclass(frozen=True)
class Item:
    """One operation asked for: an add (or replace) with its text, or a delete; raw for quarantine."""

    op: str
    id: object
    text: object = None
    raw: bytes = b""
    at: object = None  # where the caller found it (intake: the file's record), for its `reject`


class Adder:
    """Adds, replaces and deletes statements in what `data` publishes. Keep one open to change
    many batches fast. Every acknowledged operation is appended to the ledger (tasks/storage/ledger.py)
    in the same step that makes it visible, so every later night and rollback replays it."""

    current: Current  # what it builds on: the CURRENT it last wrote or read (`_load`)

    def __init__(
        self,
        data: Path,
        *,
        on_duplicate: str | None = None,
        max_record_bytes: int | None = None,
        state: Current | None = None,
    ):
        """`on_duplicate`, `max_record_bytes`: how new adds are screened (the caller's corpus.* settings);
        an adder that only deletes or replays needs neither. `state`: a CURRENT to build on instead
        of the live one (a new version being published)."""
        self.data = Path(data).resolve()
        self.dir = DataDir(self.data)
        self.layout = self.dir.layout
        self.on_duplicate = on_duplicate
        self.max_record_bytes = max_record_bytes  # the screening of new ops only: replays are never screened
        self._seen: bytes | None = None  # CURRENT's bytes as this adder last wrote or checked them
        self._swept = -np.inf
        self._load(state or self.dir.require_current())

    def _load(self, current: Current) -> None:
        self.current = current
        self.view = Statements(self.data, current)
        self.k, self.width = self.view.k, self.view.width
        self.valid, self.last = self.view.fill()
        models = self.data / current.components["models"]
        self.embedder = Embedder(models, vocab_in_ram=True)
        self.tokenizer = Tokenizer.from_settings(self.dir.manifest(current.version).tokenizer)

    def add(self, records: Iterable[dict], *, replace: bool = False) -> AddResult:
        """Validate, embed and commit one batch; returns once it is durable and visible.
        `replace`: a live id gets the new text (else `on_duplicate` decides)."""
        _require(self.on_duplicate, self.max_record_bytes)
        if isinstance(records, dict):  # one record
            records = [records]
        elif isinstance(records, (str, bytes, bytearray, os.PathLike)):
            raise UsageError(
                "An Adder adds records (dicts with id and text), not a file or text: shardvec.add(path) adds a file's."
            )
        op = "replace" if replace or self.on_duplicate == "update" else "add"
        return self.commit(Item(op, *_fields(rec)) for rec in records)

    def delete(self, ids: Iterable[str] | str) -> AddResult:
        """Delete statements by id (one id, or many); the rows that held them are recomputed exactly."""
        if isinstance(ids, str):  # one id, not its characters
            ids = [ids]
        elif isinstance(ids, (bytes, bytearray)):
            raise UsageError("Ids are text: decode them first.")
        return self.commit(Item("delete", i, None, _json_line(i)) for i in ids)

    def commit(self, items: Iterable[Item], reject=None, then=None, before=None) -> AddResult:
        """Screen, apply and acknowledge a batch of operations: ledger, segment, then CURRENT.
        `reject(item, reason)`: where refused items go (a file's own quarantine, which keeps
        their bytes and lines) instead of quarantine/additions/. Under the publish lock,
        `before(seq)` runs just before the batch is written to the ledger as `seq`, and `then()`
        once it is acknowledged (the inbox records its progress with them)."""
        t = time.perf_counter()
        with self.dir.publish_lock():
            ledger = Ledger(self.data)
            behind = self._catch_up(ledger)
            result, ops = self._stage(items, replay=False, reject=reject)
            if ops:
                seq = self.current.ledger + 1
                if before:
                    before(seq)
                ledger.append(seq, ops)
                self.current = dataclasses.replace(self.current, ledger=seq)
                result.ledger_seq = seq
            if ops or behind:
                self._acknowledge(ledger, behind)
            if then:
                then()
        result.seconds = round(time.perf_counter() - t, 4)
        return result

    def _catch_up(self, ledger: Ledger) -> bool:
        """Build on what CURRENT and the ledger hold now; True if CURRENT lacked acknowledged
        batches, which are replayed onto `self.current` (the caller writes CURRENT)."""
        try:
            seen = self.layout.current.read_bytes()
        except FileNotFoundError:
            seen = None
        if seen is not None and seen == self._seen and not ledger.holds(self.current.ledger + 1):
            # CURRENT is the one this adder wrote, so it is valid and its pending batch confirmed;
            # a crashed writer's pending batch above it was never acknowledged and is overwritten
            return False
        # CURRENT moved since this adder last wrote it (or was put back while others wrote)
        latest = self.dir.require_current()
        if latest != self.current:  # a nightly, another adder, a rollback
            self._load(latest)
        acknowledged = ledger.settle(self.current.ledger)
        behind = acknowledged > self.current.ledger
        if behind:  # CURRENT was restored from an older copy: what it lacks is replayed first
            self.replay(ops_from(ledger.net(acknowledged, after=self.current.ledger)))
            self.current = dataclasses.replace(self.current, ledger=acknowledged)
        self._seen = seen
        return behind

    def _acknowledge(self, ledger: Ledger, behind: bool) -> None:
        """Replace CURRENT with `self.current`, confirm the ledger up to it, and now and then
        sweep the segment files no CURRENT names."""
        self.dir.swap(self.current)  # the acknowledgement
        self._seen = self.layout.current.read_bytes()
        if behind:
            ledger.confirm(self.current.ledger)
        else:
            ledger.confirm_one(self.current.ledger)
        if time.monotonic() - self._swept > 60:
            sweep(self.layout, self.current.version, self.current.segments)
            self._swept = time.monotonic()

    def replay(self, ops: list[Op]) -> AddResult:
        """Apply ops already in the ledger on top of `self.current` (a new version, a rollback):
        every put upserts, whatever the version holds (an acknowledged op always wins); deletes
        of ids not live do nothing. The caller writes CURRENT."""
        result, _ = self._stage(
            (Item("delete" if o.op == "delete" else "replace", o.id, o.text) for o in ops), replay=True
        )
        return result

    def _stage(self, items: Iterable[Item], *, replay: bool, reject=None) -> tuple[AddResult, list[Op]]:
        result = AddResult()
        ops, dead, rejected = _screen(self.view, items, result, replay=replay, max_record_bytes=self.max_record_bytes)
        if rejected:
            result.quarantined = len(rejected)
            if reject is not None:
                for item, reason in rejected:
                    reject(item, reason)
            else:
                _quarantine(self.layout.quarantine_additions, [(item.raw, reason) for item, reason in rejected])
        if ops:
            puts = [(o.id, o.text) for o in ops if o.is_put]
            self.current, result.segment, result.rows_updated = self.apply(puts, dead)
        return result, ops

    def apply(self, accepted: list[tuple[str, str]], dead: list[int]) -> tuple[Current, str, int]:
        """Write the segment for `accepted` and the deaths in `dead`; return (new CURRENT, its
        path, rows updated). `repair.repair_rows` works out the rows it writes: every stored row
        stays the exact best `width` (or fewer) of the live statements."""
        view = self.view
        ids, texts = [a[0] for a in accepted], [a[1] for a in accepted]
        n0 = len(view)
        vecs = (
            self.embedder.embed([self.tokenizer(t) for t in texts])
            if accepted
            else np.empty((0, view.base.dim), np.float32)
        )  # a batch of deletes only
        dead_a = np.asarray(dead, dtype=np.int64)
        changes = repair_rows(view, vecs, dead_a, self.valid, self.last)
        row_ids, rows, scores = changes.written()
        adds = self.current.additions or Additions(self.current.version)
        seg_rel, npz = write_segment(
            self.layout,
            self.current.version,
            adds.next_seq,
            ids,
            texts,
            vecs,
            row_ids,
            rows,
            scores.astype(np.float32),
            dead_a,
        )
        view.append(Segment(self.data / seg_rel, n0, npz))
        self.valid, self.last = refilled(self.valid, self.last, len(accepted), row_ids, rows, scores)
        adds = Additions(adds.base, (*adds.segments, seg_rel), adds.next_seq + 1, view.live)
        return (
            dataclasses.replace(self.current, additions=compact(self.layout, self.current.version, view, adds)),
            seg_rel,
            len(changes.row_ids),
        )


def _screen(
    view: Statements, items: Iterable[Item], result: AddResult, *, replay: bool, max_record_bytes: int
) -> tuple[list[Op], list[int], list[tuple[Item, str]]]:
    """The batch's net op per id (in order of last touch), the live rows it kills, and the
    items it refuses (with why); counts what it does in `result`."""
    batch: dict[str, Op] = {}
    dead: set[int] = set()
    rejected: list[tuple[Item, str]] = []
    for item in items:
        reason = _check(item, replay, max_record_bytes)
        if reason:
            rejected.append((item, reason))
            continue
        id_, existing = item.id, view.find(item.id)
        if id_ in batch:
            live_text = batch[id_].text
        else:
            live_text = None if existing is None else view.text(existing)
        if item.op == "delete":
            if live_text is None:
                result.missing += 1
                continue
            if existing is None:  # put earlier in this very batch: the two cancel out
                batch.pop(id_)
                continue
        elif live_text == item.text:
            result.unchanged += 1  # re-adding the same record is a no-op
            continue
        elif live_text is not None and item.op == "add":
            rejected.append(
                (
                    item,
                    f"duplicate id {short_repr(id_)}: already live with other text; use "
                    '`shardvec add --replace` (or corpus.on_duplicate = "update") to replace it',
                )
            )
            continue
        if existing is not None:
            dead.add(existing)
        kind = "delete" if item.op == "delete" else ("replace" if live_text is not None else "add")
        batch.pop(id_, None)
        batch[id_] = Op(kind, id_, item.text)
    ops = list(batch.values())
    result.added, result.replaced, result.deleted = (sum(o.op == kind for o in ops) for kind in OPS)
    return ops, sorted(dead), rejected


def _check(item: Item, replay: bool, max_record_bytes: int) -> str | None:
    if replay:  # acknowledged: applied as it is, whatever today's settings
        return None
    if item.id is _NOT_AN_OBJECT:
        return f"not a JSON object: got {item.text}"
    if max_record_bytes is None:  # an adder made for deletes: an id is not screened for size
        if item.op != "delete":
            _require(None, None)
        max_record_bytes = len(item.raw)
    return check_op(item.op, item.id, item.text, max_record_bytes, len(item.raw))


def _require(on_duplicate, max_record_bytes) -> None:
    if on_duplicate is None or max_record_bytes is None:
        raise UsageError(
            "An Adder that adds needs on_duplicate and max_record_bytes (the settings' corpus.* ones): "
            "open it with shardvec.adder(data), which passes them."
        )


def _quarantine(folder: Path, rejected: list[tuple[bytes, str]]) -> None:
    inside_quarantine(folder).mkdir(parents=True, exist_ok=True)
    stamp = unique_stamp()
    with open(folder / f"{stamp}.rejected", "wb") as raw, open(folder / f"{stamp}.reasons.jsonl", "w") as why:
        for i, (data, reason) in enumerate(rejected, 1):
            why.write(
                json.dumps(
                    {"source": "add", "line": i, "offset_in_rejected": raw.tell(), "bytes": len(data), "reason": reason}
                )
                + "\n"
            )
            raw.write(data)
        for f in (raw, why):
            f.flush()
            os.fsync(f.fileno())


def add_options(settings) -> dict:
    """How a deployment screens and batches its adds (settings.corpus): the keyword arguments of
    every add path, `add_records`, intake's add_file and drain_inbox, and `adder_of`. shardvec.add,
    `shardvec add FILE|-` and the add-statements flow with its inbox drain all take them from here."""
    c = settings.corpus
    return {"batch_size": c.batch_size, "on_duplicate": c.on_duplicate, "max_record_bytes": c.max_record_bytes}


def adder_of(data: Path, *, batch_size: int | None = None, on_duplicate: str, max_record_bytes: int) -> Adder:
    """The Adder that screens by `add_options` (batch_size is for files: an Adder commits what it is given)."""
    return Adder(data, on_duplicate=on_duplicate, max_record_bytes=max_record_bytes)


def add_records(
    data: Path,
    records: Iterable[dict] | dict,
    *,
    on_duplicate: str,
    max_record_bytes: int,
    batch_size: int | None = None,
    replace: bool = False,
) -> dict:
    """Records given in Python, committed as one batch (`add_options`' batch_size is for files)."""
    adder = adder_of(data, on_duplicate=on_duplicate, max_record_bytes=max_record_bytes)
    return adder.add(records, replace=replace).to_dict()


def delete_ids(data: Path, ids: list[str]) -> dict:
    return Adder(data).delete(ids).to_dict()
