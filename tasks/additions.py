"""Statements added between nightly runs: searchable and related within one call.

A batch of new statements is embedded with the published models (tokenize, TF-IDF, LSI),
scored against every live statement with one matrix product per block of the space (or, into a
version with partitioned rows and at most PROBED_MAX new statements, against the statements the
nightly's clusters pair them with: `Statements.scored`), and committed as an immutable segment
of two files:

  additions/<base version>/<seq>.arrow   the batch's ids, texts and vectors (Arrow IPC,
                                         memory-mapped; the nightly run folds these records in)
  additions/<base version>/<seq>.npz     the similarity rows the batch wrote (its own
                                         statements' rows and the existing rows it entered,
                                         by row id), rows it replaced (on_duplicate =
                                         "update") and its key index

Both files are fsynced and renamed into place, then CURRENT is atomically replaced with one
that names the segment: an add is acknowledged only once CURRENT names it, and a reader sees
all of a segment or none of it. In a version with exact rows, rows stay exact: after any
sequence of adds they equal a full exact recompute (up to ties in the last float bit). Segments merge like a binary counter, so
about log2(adds) of them are live.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from shardvec.tasks.atomic import fsync_dir, unique_stamp
from shardvec.tasks.corpus import check_record
from shardvec.tasks.embed import Embedder
from shardvec.tasks.keys import key_hash, key_hashes
from shardvec.tasks.layout import Layout
from shardvec.tasks.ledger import OPS, Ledger, Op, ops_from
from shardvec.tasks.partitioned import Clusters
from shardvec.tasks.publish import PublishLock, require_current, swap
from shardvec.tasks.similarity import SimilarityRows
from shardvec.tasks.store import Space
from shardvec.tasks.tokenize import Tokenizer
from shardvec.tasks.topk import columns_for, exact_topk, fold_block, merge_topk, score_blocks, unit_rows


class Segment:
    """One committed batch of added statements (see the module docstring), opened with mmap."""

    def __init__(self, prefix: Path, start: int, npz: dict | None = None):
        """`npz`: the .npz file's arrays when the caller just wrote them (saves reading them back)."""
        self.prefix, self.start = Path(prefix), start  # start: global row of its first statement
        table = pa.ipc.open_file(pa.memory_map(str(self.prefix) + ".arrow", "r")).read_all()
        self.ids, self.texts, vec = (_array(table.column(c)) for c in ("id", "text", "vector"))
        self.vectors = vec.values.to_numpy(zero_copy_only=True).reshape(len(vec), vec.type.list_size)
        if npz is None:
            with np.load(str(self.prefix) + ".npz") as z:
                npz = {name: z[name] for name in z.files}
        self.row_ids, self.rows, self.scores, self.dead = npz["row_ids"], npz["rows"], npz["scores"], npz["dead"]
        self._hash, self._row = npz["key_hash"], npz["key_row"]

    @property
    def weight(self) -> int:
        """What merging it costs: its statements plus the rows it wrote (a batch of deletes
        holds no statements but rewrites rows)."""
        return len(self) + len(self.row_ids)

    def __len__(self) -> int:
        return len(self.ids)

    def blocks(self, columns: int) -> Iterator[tuple[int, np.ndarray]]:
        for c in range(0, len(self), columns):
            yield c, self.vectors[c:c + columns]

    def find_all(self, key: str) -> list[int]:
        h = np.uint64(key_hash(key))
        lo, hi = np.searchsorted(self._hash, h, "left"), np.searchsorted(self._hash, h, "right")
        return sorted(int(r) for r in self._row[lo:hi] if self.ids[int(r)].as_py() == key)

    def key(self, i: int) -> str:
        return self.ids[i].as_py()

    def column(self, name: str, i: int):
        return (self.ids if name == "id" else self.texts)[i].as_py()

    def vector_at(self, i: int) -> np.ndarray:
        return self.vectors[i]

    def keys(self) -> list[str]:
        return self.ids.to_pylist()


def _array(column: pa.ChunkedArray) -> pa.Array:
    """One array (zero-copy when the file holds one batch; a batch of deletes holds none)."""
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


class Statements:
    """The live statements of a published state: the version's shards plus its additions."""

    normalized = True

    def __init__(self, data: Path, current: dict):
        data = Path(data)
        self.base = Space(data / current["components"]["statements"])
        self.base_rows = SimilarityRows(data / current["components"]["similarity"])
        self.k, self.width = self.base_rows.k, self.base_rows.width
        self.segments: list[Segment] = []
        self.dead = np.empty(0, dtype=np.int64)
        self._holders: Holders | None = None
        self._clusters: Clusters | None | bool = False  # opened on the first add that could use them
        for rel in (current.get("additions") or {}).get("segments", []):
            self.append(Segment(data / rel, len(self)))

    def append(self, segment: Segment) -> None:
        self.segments.append(segment)
        if len(segment.dead):
            self.dead = np.union1d(self.dead, segment.dead)

    def __len__(self) -> int:
        return len(self.base) + sum(len(s) for s in self.segments)

    @property
    def live(self) -> int:
        return len(self) - len(self.dead)

    def is_dead(self, r: int) -> bool:
        i = np.searchsorted(self.dead, r)
        return bool(i < len(self.dead) and self.dead[i] == r)

    def blocks(self, columns: int) -> Iterator[tuple[int, np.ndarray]]:
        yield from self.base.blocks(columns)
        for seg in self.segments:
            for start, block in seg.blocks(columns):
                yield seg.start + start, block

    @property
    def clusters(self) -> "Clusters | None":
        """The partitioned rows' clusters, or None (exact rows, or clusters files missing or
        damaged: then adds scan every row, and `shardvec verify` names the damage)."""
        if self._clusters is False:
            try:
                self._clusters = Clusters.open(self.base_rows.dir)
            except (OSError, ValueError, KeyError):
                self._clusters = None
        return self._clusters

    def scored(self, vecs: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(rows, scores of vecs x those rows) over the statements a new one is compared with,
        rows ascending; dead rows score -inf or are left out. Every row, unless the version's
        rows are partitioned and the batch is small (`PROBED_MAX`): then the rows its clusters
        pair it with (`partitioned.Clusters`: the pairs the nightly scored, so the same
        recall; about 2 x probes x cluster_rows, 10-20k with the defaults, instead of all) and
        every added statement. They are gathered through the mapping: fast, but a long-lived
        Adder ends up with much of the space's pages resident (shared page cache, not private
        memory)."""
        if len(vecs) > PROBED_MAX or self.clusters is None:
            yield from self._every_row(vecs)
            return
        vecs = unit_rows(vecs)
        cand = self.clusters.candidates(vecs)
        live = cand[~np.isin(cand, self.dead)] if len(self.dead) else cand
        if len(live) < max(THINNED * len(cand), 4 * self.width):  # deletes thinned these clusters
            yield from self._every_row(vecs)
            return
        cand = live
        step = columns_for(len(vecs))
        for i in range(0, len(cand), step):
            ids = cand[i:i + step]
            block = self.base.vectors_at(ids)
            yield ids, vecs @ (block if self.base.normalized else unit_rows(block)).T
        for seg in self.segments:
            for start, block, scores in score_blocks(_Alone(seg, self.dead), vecs):
                yield np.arange(seg.start + start, seg.start + start + len(block)), scores

    def _every_row(self, vecs: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start, block, scores in score_blocks(self, vecs):
            yield np.arange(start, start + len(block)), scores

    def _locate(self, r: int) -> tuple[Space | Segment, int]:
        if r < len(self.base):
            return self.base, r
        for seg in self.segments:
            if r < seg.start + len(seg):
                return seg, r - seg.start
        raise IndexError(r)

    def find(self, key: str) -> int | None:
        """The live row of a statement id (newest first), or None."""
        for seg in reversed(self.segments):
            for r in reversed(seg.find_all(key)):
                if not self.is_dead(seg.start + r):
                    return seg.start + r
        r = self.base.find(key)
        return None if r is None or self.is_dead(r) else r

    def key(self, r: int) -> str:
        space, local = self._locate(r)
        return space.key(local)

    def text(self, r: int) -> str:
        space, local = self._locate(r)
        return space.column("text", local)

    def vectors_at(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), self.base.dim), np.float32)
        for i, r in enumerate(rows):
            space, local = self._locate(int(r))
            out[i] = space.vector_at(local)
        return out

    def row(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        """The k neighbours readers see of statement row r."""
        rows, scores = self.full_row(r)
        return rows[:self.k], scores[:self.k]

    def full_row(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        """All `width` stored neighbours of statement row r: the newest segment that wrote it wins."""
        for seg in reversed(self.segments):
            i = int(np.searchsorted(seg.row_ids, r))
            if i < len(seg.row_ids) and seg.row_ids[i] == r:
                return np.asarray(seg.rows[i]), np.asarray(seg.scores[i])
        return self.base_rows.full(r)

    def fill(self) -> tuple[np.ndarray, np.ndarray]:
        """Per row: how many neighbours it holds, and its last one's score (-inf if none)."""
        parts = [fill(*self.base_rows.shard(s["shard"])) for s in self.base_rows.manifest["shards"]]
        extra = sum(len(s) for s in self.segments)
        valid = np.concatenate([p[0] for p in parts] + [np.zeros(extra, np.int64)])
        last = np.concatenate([p[1] for p in parts] + [np.full(extra, -np.inf, np.float32)])
        for seg in self.segments:
            valid[np.asarray(seg.row_ids)], last[np.asarray(seg.row_ids)] = fill(seg.rows, seg.scores)
        return valid, last

    def current_rows_holding(self, cand: np.ndarray, targets: np.ndarray):
        """Of rows `cand`, those whose *current* row (a newer overlay may have replaced it) holds
        any of `targets`: (their ids, their full rows, their scores)."""
        w = self.width
        rows, scores = np.empty((len(cand), w), np.int64), np.empty((len(cand), w), np.float32)
        for i, r in enumerate(cand):
            rows[i], scores[i] = self.full_row(int(r))
        hit = np.isin(rows, targets).any(axis=1)
        return np.asarray(cand, np.int64)[hit], rows[hit], scores[hit]

    def rows_holding(self, targets: np.ndarray):
        """Every row whose current row holds any of `targets`, with its full row and scores."""
        targets = np.asarray(targets, np.int64)
        if len(targets) <= 64:  # a few: look them up in the reverse index of the base rows
            found = [self._base_holders().holding(targets)]
        else:  # many: one pass over the base rows costs less than the lookups
            found = []
            for s in self.base_rows.manifest["shards"]:
                rows = self.base_rows.shard(s["shard"])[0]
                found.append(np.flatnonzero(np.isin(rows, targets).any(axis=1))
                             + s["shard"] * self.base_rows.rows_per_shard)
        for seg in self.segments:
            found.append(np.asarray(seg.row_ids)[np.isin(seg.rows, targets).any(axis=1)])
        cand = np.unique(np.concatenate(found)) if found else np.empty(0, np.int64)
        return self.current_rows_holding(cand, targets)

    def _base_holders(self) -> "Holders":
        if self._holders is None:
            self._holders = Holders(self.base_rows)
        return self._holders


# Batches up to this many new statements are scored against the rows their clusters pair them
# with when the version's rows are partitioned; larger ones scan every row, exactly (one pass
# serves the whole batch, and a thousand probes would touch most rows anyway).
PROBED_MAX = 64
# Below this share of live statements among the candidates (deletes since the nightly built
# the clusters), a small add scans every row instead: a withdrawn source left a probed row
# with 1 of its 10 true neighbours.
THINNED = 0.9


class _Alone:
    """One segment as a `topk.Scannable`, its dead rows (global numbers) made local."""
    normalized = True

    def __init__(self, seg: Segment, dead: np.ndarray):
        self.seg = seg
        self.dead = dead[(dead >= seg.start) & (dead < seg.start + len(seg))] - seg.start

    def blocks(self, columns: int):
        return self.seg.blocks(columns)


class Holders:
    """Reverse index of a version's stored rows: which rows hold a given statement. Built once
    per version in RAM (two int32 arrays of rows x width when they fit), so a single delete
    finds the rows to repair without a pass over every row."""

    def __init__(self, base_rows: SimilarityRows):
        itype = np.int32 if base_rows.manifest.get("rows", 2 ** 31) < 2 ** 31 - 1 else np.int64
        held, holder = [], []
        for s in base_rows.manifest["shards"]:
            rows = np.asarray(base_rows.shard(s["shard"])[0])
            r, c = np.nonzero(rows >= 0)
            held.append(rows[r, c].astype(itype))
            holder.append((r + s["shard"] * base_rows.rows_per_shard).astype(itype))
        held = np.concatenate(held) if held else np.empty(0, itype)
        order = np.argsort(held, kind="stable")
        self.held = held[order]
        self.holder = np.concatenate(holder)[order] if holder else np.empty(0, itype)

    def holding(self, targets: np.ndarray) -> np.ndarray:
        # targets in held's dtype: searching int64 in int32 converts all of held first (14M
        # entries at 1M statements: 30 ms a call)
        targets = np.asarray(targets).astype(self.held.dtype)
        lo, hi = np.searchsorted(self.held, targets, "left"), np.searchsorted(self.held, targets, "right")
        if not len(targets):
            return np.empty(0, np.int64)
        return np.concatenate([self.holder[a:b] for a, b in zip(lo, hi)]).astype(np.int64)


def fill(rows: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(neighbours held, last held score or -inf) of each row of a rows/scores pair."""
    scores = np.asarray(scores)
    valid = np.isfinite(scores).sum(axis=1).astype(np.int64)
    last = np.where(valid > 0, scores[np.arange(len(scores)), np.maximum(valid - 1, 0)], -np.inf)
    return valid, last.astype(np.float32)


def _shifted(rows: np.ndarray, scores: np.ndarray, gone: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows without the neighbours in `gone`: the next ones move up, -1 / -inf pad the ends.
    Returns the rows, their scores and how many neighbours each now holds."""
    keep = (rows >= 0) & ~np.isin(rows, gone)
    order = np.argsort(~keep, axis=1, kind="stable")  # kept first, in their order
    rows, scores = np.take_along_axis(rows, order, axis=1), np.take_along_axis(scores, order, axis=1)
    held = keep.sum(axis=1)
    pad = np.arange(rows.shape[1])[None, :] >= held[:, None]
    rows[pad], scores[pad] = -1, -np.inf
    return rows, scores, held


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
        for f in ("added", "replaced", "deleted", "unchanged", "missing", "quarantined", "rows_updated", "seconds"):
            setattr(self, f, getattr(self, f) + getattr(other, f))


_NOT_AN_OBJECT = object()


def _fields(rec) -> tuple:
    """(id, text, raw bytes) of one record given to `add`."""
    if isinstance(rec, bytes):
        return _NOT_AN_OBJECT, "bytes", rec
    raw = json.dumps(rec, ensure_ascii=False, default=repr).encode() + b"\n"
    if not isinstance(rec, dict):
        return _NOT_AN_OBJECT, type(rec).__name__, raw
    return rec.get("id"), rec.get("text"), raw


@dataclass(frozen=True)
class _Item:
    """One operation asked for: an add (or replace) with its text, or a delete; raw for quarantine."""
    op: str
    id: object
    text: object = None
    raw: bytes = b""


class Adder:
    """Adds, replaces and deletes statements in what `data` publishes. Keep one open to change
    many batches fast. Every acknowledged operation is appended to the ledger (tasks/ledger.py)
    in the same step that makes it visible, so every later night and rollback replays it."""

    def __init__(self, data: Path, *, on_duplicate: str = "reject", max_record_bytes: int = 1_000_000,
                 state: dict | None = None):
        """`state`: a CURRENT to build on instead of the live one (a new version being published)."""
        self.data = Path(data).resolve()
        self.layout = Layout(self.data)
        self.on_duplicate = on_duplicate
        self.max_record_bytes = max_record_bytes
        self.current: dict | None = None
        self._seen: bytes | None = None  # CURRENT's bytes as this adder last wrote or checked them
        self._swept = -np.inf
        self._load(state or require_current(self.data))

    def _load(self, current: dict) -> None:
        self.current = current
        self.view = Statements(self.data, current)
        self.k, self.width = self.view.k, self.view.width
        self.valid, self.last = self.view.fill()
        models = self.data / current["components"]["models"]
        self.embedder = Embedder(models, vocab_in_ram=True)
        cfg = json.loads(self.layout.version(current["version"]).manifest.read_text())["config"]
        t = cfg["tokenize"]
        self.tokenizer = Tokenizer(t["min_len"], t["max_len"], t["deaccent"])

    def add(self, records: Iterable[dict], *, replace: bool = False) -> AddResult:
        """Validate, embed and commit one batch; returns once it is durable and visible.
        `replace`: a live id gets the new text (else `on_duplicate` decides)."""
        op = "replace" if replace or self.on_duplicate == "update" else "add"
        return self.commit(_Item(op, *_fields(rec)) for rec in records)

    def delete(self, ids: Iterable[str]) -> AddResult:
        """Delete statements by id; the rows that held them are recomputed exactly."""
        return self.commit(_Item("delete", i, None, (json.dumps(i, default=repr) + "\n").encode()) for i in ids)

    def commit(self, items: Iterable[_Item]) -> AddResult:
        """Screen, apply and acknowledge a batch of operations: ledger, segment, then CURRENT."""
        t = time.perf_counter()
        with PublishLock(self.data):
            ledger = Ledger(self.data)
            try:
                seen = self.layout.current.read_bytes()
            except FileNotFoundError:
                seen = None
            behind = False
            if seen is None or seen != self._seen or ledger.holds(self.current.get("ledger", 0) + 1):
                # CURRENT moved since this adder last wrote it (or was put back while others wrote)
                latest = require_current(self.data)
                if latest != self.current:  # a nightly, another adder, a rollback
                    self._load(latest)
                acknowledged = ledger.settle(self.current.get("ledger", 0))
                behind = acknowledged > self.current.get("ledger", 0)
                if behind:  # CURRENT was restored from an older copy: what it lacks is replayed first
                    self.replay(ops_from(ledger.net(acknowledged, after=self.current.get("ledger", 0))))
                    self.current = {**self.current, "ledger": acknowledged}
                self._seen = seen
            # else: CURRENT is the one this adder wrote, so it is valid and its pending batch confirmed;
            # a crashed writer's pending batch above it was never acknowledged and is overwritten
            result, ops = self._stage(items, replay=False)
            if ops:
                seq = self.current.get("ledger", 0) + 1
                ledger.append(seq, ops)
                self.current = {**self.current, "ledger": seq}
                result.ledger_seq = seq
            if ops or behind:
                swap(self.data, self.current)  # the acknowledgement
                self._seen = self.layout.current.read_bytes()
                if behind:
                    ledger.confirm(self.current["ledger"])
                else:
                    ledger.confirm_one(self.current["ledger"])
                if time.monotonic() - self._swept > 60:
                    self._sweep()
                    self._swept = time.monotonic()
        result.seconds = round(time.perf_counter() - t, 4)
        return result

    def replay(self, ops: list[Op]) -> AddResult:
        """Apply ops already in the ledger on top of `self.current` (a new version, a rollback):
        every put upserts, whatever the version holds (an acknowledged op always wins); deletes
        of ids not live do nothing. The caller writes CURRENT."""
        result, _ = self._stage((_Item("delete" if o.op == "delete" else "replace", o.id, o.text) for o in ops),
                                replay=True)
        return result

    def _stage(self, items: Iterable[_Item], *, replay: bool) -> tuple[AddResult, list[Op]]:
        result = AddResult()
        ops, dead = self._screen(items, result, replay)
        if ops:
            puts = [(o.id, o.text) for o in ops if o.is_put]
            self.current, result.segment, result.rows_updated = self.apply(puts, dead)
        return result, ops

    # -- screening ------------------------------------------------------------------------
    def _screen(self, items: Iterable[_Item], result: AddResult, replay: bool) -> tuple[list[Op], list[int]]:
        """The batch's net op per id (in order of last touch) and the live rows it kills."""
        batch: dict[str, Op] = {}
        dead: set[int] = set()
        rejected: list[tuple[bytes, str]] = []
        for item in items:
            reason = self._check(item, replay)
            if reason:
                rejected.append((item.raw, reason))
                continue
            id_, existing = item.id, self.view.find(item.id)
            if id_ in batch:
                live_text = batch[id_].text
            else:
                live_text = None if existing is None else self.view.text(existing)
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
                rejected.append((item.raw, f"duplicate id {id_!r}: already live with other text; use "
                                           "`shardvec add --replace` (or corpus.on_duplicate = \"update\") to replace it"))
                continue
            if existing is not None:
                dead.add(existing)
            kind = "delete" if item.op == "delete" else ("replace" if live_text is not None else "add")
            batch.pop(id_, None)
            batch[id_] = Op(kind, id_, item.text)
        if rejected:
            result.quarantined = len(rejected)
            _quarantine(self.layout.quarantine_additions, rejected)
        ops = list(batch.values())
        result.added, result.replaced, result.deleted = (sum(o.op == kind for o in ops) for kind in OPS)
        return ops, sorted(dead)

    def _check(self, item: _Item, replay: bool) -> str | None:
        if replay:
            return None
        if item.op == "delete":
            if not isinstance(item.id, str) or not item.id.strip():
                return f"a delete needs a non-empty string id, got {item.id!r}"
            return None
        if item.id is _NOT_AN_OBJECT:
            return f"not a JSON object: got {item.text}"
        return check_record(item.id, item.text, self.max_record_bytes, len(item.raw))

    # -- the numerics -------------------------------------------------------------------------
    def apply(self, accepted: list[tuple[str, str]], dead: list[int]) -> tuple[dict, str, int]:
        """Write the segment for `accepted` and the deaths in `dead`; return (new CURRENT, its
        path, rows updated).

        Every stored row stays the exact best `width` (or fewer) of the live statements:
        - a row that held a statement dying now drops it and its next neighbours move up; only
          a row left with fewer than k (and not holding every live statement) is rescanned;
        - a new statement enters a row if it beats the row's last neighbour, or anywhere in a
          row that is not full only if that row holds every other live statement (else a
          statement the row never kept could lie between)."""
        view, k, w = self.view, self.k, self.width
        ids = [a[0] for a in accepted]
        texts = [a[1] for a in accepted]
        B, n0 = len(accepted), len(view)
        vecs = (self.embedder.embed([self.tokenizer(t) for t in texts]) if B
                else np.empty((0, view.base.dim), np.float32))  # a batch of deletes only
        new_rows = np.arange(n0, n0 + B, dtype=np.int64)
        dead_a = np.asarray(dead, dtype=np.int64)
        saved_dead = view.dead
        view.dead = np.union1d(view.dead, dead_a)
        n_live = n0 - len(view.dead)  # the old statements that stay
        try:
            changed: dict[int, tuple[np.ndarray, np.ndarray]] = {}
            redo = []
            if len(dead_a):
                hit, hit_r, hit_s = view.rows_holding(dead_a)
                alive = ~np.isin(hit, view.dead)
                hit, (hit_r, hit_s, held) = hit[alive], _shifted(hit_r[alive], hit_s[alive], view.dead)
                short = (held < k) & (held < n_live - 1)
                redo = hit[short].tolist()
                changed.update((int(r), (rr, ss)) for r, rr, ss in zip(hit[~short], hit_r[~short], hit_s[~short]))
            valid, last = self.valid.copy(), self.last.copy()
            if changed:
                moved = np.fromiter(changed, np.int64, len(changed))
                valid[moved], last[moved] = fill(np.stack([changed[r][0] for r in moved.tolist()]),
                                                 np.stack([changed[r][1] for r in moved.tolist()]))
            threshold = np.where(valid >= n_live - 1, -np.inf, last)  # a row holding all takes anyone
            threshold[view.dead] = np.inf  # dead rows take no new entries
            threshold[np.asarray(redo, np.int64)] = np.inf  # recomputed below
            best_r = np.full((B, w), -1, dtype=np.int64)
            best_s = np.full((B, w), -np.inf, dtype=np.float32)
            for at, scores in view.scored(vecs) if B else ():  # one product per (batch x block)
                best_r, best_s = fold_block(best_r, best_s, 0, scores, w, ids=at)
                enter = scores > threshold[at][None, :]
                cols = np.flatnonzero(enter.any(axis=0))
                if cols.size:
                    cand_s = np.where(enter[:, cols], scores[:, cols], -np.inf).T
                    old = [changed.get(int(at[c])) or view.full_row(int(at[c])) for c in cols]
                    merged_r, merged_s = merge_topk(np.stack([o[0] for o in old]), np.stack([o[1] for o in old]),
                                                    np.broadcast_to(new_rows, cand_s.shape), cand_s, w)
                    for c, r, s in zip(cols, merged_r, merged_s):
                        changed[int(at[c])] = (r, s)
            # the batch against itself
            within = vecs @ vecs.T
            np.fill_diagonal(within, -np.inf)
            best_r, best_s = merge_topk(best_r, best_s, np.broadcast_to(new_rows, within.shape), within, w)
            # rows left with fewer than k neighbours are recomputed exactly, to the full width
            if redo:
                redo_a = np.asarray(redo, np.int64)
                rv = view.vectors_at(redo_a)
                r_r, r_s = exact_topk(view, rv, w, exclude=redo_a)
                cross = rv @ vecs.T
                r_r, r_s = merge_topk(r_r, r_s, np.broadcast_to(new_rows, cross.shape), cross.astype(np.float32), w)
                for r, rr, ss in zip(redo, r_r, r_s):
                    changed[int(r)] = (rr, ss)
        finally:
            view.dead = saved_dead
        best_r[~np.isfinite(best_s)] = -1
        order = sorted(changed)
        row_ids = np.concatenate([np.array(order, dtype=np.int64), new_rows])
        rows = np.concatenate([np.array([changed[r][0] for r in order], dtype=np.int64).reshape(-1, w), best_r])
        scores = np.concatenate([np.array([changed[r][1] for r in order], dtype=np.float32).reshape(-1, w), best_s])
        rows[~np.isfinite(scores)] = -1
        seg_rel, npz = self._write_segment(ids, texts, vecs, row_ids, rows, scores.astype(np.float32), dead_a)
        segment = Segment(self.data / seg_rel, n0, npz)
        view.append(segment)
        self.valid = np.concatenate([self.valid, np.zeros(B, np.int64)])
        self.last = np.concatenate([self.last, np.full(B, -np.inf, np.float32)])
        self.valid[row_ids], self.last[row_ids] = fill(rows, scores)
        adds = self._additions()
        new_current = {**self.current, "additions": {**adds, "segments": adds["segments"] + [seg_rel],
                                                     "next_seq": adds["next_seq"] + 1, "statements": view.live}}
        return self._compact(new_current), seg_rel, len(changed)

    def _additions(self) -> dict:
        adds = self.current.get("additions") or {"base": self.current["version"], "segments": []}
        return {"next_seq": len(adds["segments"]) + 1, **adds}

    def _compact(self, current: dict) -> dict:
        """Merge the newest segments like a binary counter (while the last is at least as big as
        the one before): about log2(adds) segments stay, so searches touch few blocks."""
        adds = dict(current["additions"])
        segs, view = list(adds["segments"]), self.view
        while len(view.segments) >= 2 and view.segments[-1].weight >= view.segments[-2].weight:
            a, b = view.segments[-2], view.segments[-1]
            ids, texts = a.keys() + b.keys(), a.texts.to_pylist() + b.texts.to_pylist()
            vecs = np.concatenate([a.vectors, b.vectors])
            row_ids = np.union1d(a.row_ids, b.row_ids)
            rows = np.empty((len(row_ids), self.width), np.int64)
            scores = np.empty((len(row_ids), self.width), np.float32)
            for seg in (a, b):  # the newer segment's row wins
                at = np.searchsorted(row_ids, seg.row_ids)
                rows[at], scores[at] = seg.rows, seg.scores
            rel, npz = self._write_segment(ids, texts, vecs, row_ids, rows, scores, np.union1d(a.dead, b.dead),
                                           seq=adds["next_seq"])
            adds["next_seq"] += 1
            view.segments[-2:] = [Segment(self.data / rel, a.start, npz)]
            segs[-2:] = [rel]
        adds["segments"] = segs
        return {**current, "additions": adds}

    def _sweep(self, grace_seconds: float = 300) -> None:
        """Delete segment files no CURRENT names any more (merged, or a crash's leftovers) once
        no reader can still be opening them."""
        folder = self.layout.segments_of(self.current["version"])
        named = {Path(s).name for s in self.current["additions"]["segments"]}
        for p in folder.iterdir():
            if p.name.split(".")[0] not in named and time.time() - p.stat().st_mtime > grace_seconds:
                p.unlink(missing_ok=True)

    def _write_segment(self, ids, texts, vecs, row_ids, rows, scores, dead, seq: int | None = None) -> tuple[str, dict]:
        """Write a segment's two files durably; (its path in the data directory, its .npz arrays)."""
        seq = seq or self._additions()["next_seq"]
        rel = self.layout.segment(self.current["version"], seq)
        prefix = self.data / rel
        if not prefix.parent.is_dir():  # a new folder's entry must survive a crash too
            prefix.parent.mkdir(parents=True)
            fsync_dir(prefix.parent.parent)
        vecs = np.ascontiguousarray(vecs, dtype=np.float32)
        table = pa.table({"id": pa.array(ids, pa.string()), "text": pa.array(texts, pa.string()),
                          "vector": pa.FixedSizeListArray.from_arrays(pa.array(vecs.ravel()), vecs.shape[1])})
        hashes = key_hashes(ids)
        order = np.argsort(hashes, kind="stable")
        npz = dict(row_ids=row_ids, rows=rows, scores=scores, dead=dead, key_hash=hashes[order],
                   key_row=order.astype(np.int64))
        paths = []
        for suffix in (".npz", ".arrow"):  # a crash's leftovers under this name were never acknowledged
            final = Path(str(prefix) + suffix)
            tmp = final.with_name(f".{final.name}.tmp")
            with open(tmp, "wb") as f:
                if suffix == ".arrow":
                    with pa.ipc.new_file(f, table.schema) as w:
                        w.write_table(table)
                else:
                    np.savez(f, **npz)
                f.flush()
                os.fsync(f.fileno())
            paths.append((tmp, final))
        for tmp, final in paths:
            os.replace(tmp, final)
        fsync_dir(prefix.parent)
        return rel, npz


def _quarantine(folder: Path, rejected: list[tuple[bytes, str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    stamp = unique_stamp()
    with open(folder / f"{stamp}.rejected", "wb") as raw, open(folder / f"{stamp}.reasons.jsonl", "w") as why:
        for i, (data, reason) in enumerate(rejected, 1):
            why.write(json.dumps({"source": "add", "line": i, "offset_in_rejected": raw.tell(),
                                  "bytes": len(data), "reason": reason}) + "\n")
            raw.write(data)
        for f in (raw, why):
            f.flush()
            os.fsync(f.fileno())


def add_records(data: Path, records: list[dict], *, on_duplicate: str, max_record_bytes: int,
                replace: bool = False) -> dict:
    adder = Adder(data, on_duplicate=on_duplicate, max_record_bytes=max_record_bytes)
    return adder.add(records, replace=replace).to_dict()


def delete_ids(data: Path, ids: list[str]) -> dict:
    return Adder(data).delete(ids).to_dict()


def add_file(data: Path, path: Path, *, batch_size: int, on_duplicate: str, max_record_bytes: int,
             replace: bool = False, adder: Adder | None = None) -> dict:
    """Stream a JSON Lines, text or Parquet file into the published store, batch by batch.
    JSON Lines records may say `"op": "replace"` or `"op": "delete"` (a delete needs only the id)."""
    from shardvec.tasks.corpus import FORMATS, BadInputError, Quarantine, SourceFile, batched, read_records
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise BadInputError(f"{path} is not .jsonl, .ndjson, .txt or .parquet; rename it to say its format.")
    if not path.is_file():
        raise BadInputError(f"No file at {path}; give the path of a .jsonl, .txt or .parquet file, or - for stdin.")
    adder = adder or Adder(data, on_duplicate=on_duplicate, max_record_bytes=max_record_bytes)
    put = "replace" if replace or on_duplicate == "update" else "add"
    st = path.stat()
    src = SourceFile("additions", path.name, fmt, st.st_size, st.st_mtime_ns, root=str(path.parent))
    q = Quarantine(Layout(data).quarantine_additions / time.strftime("%Y%m%dT%H%M%S"), src)
    total = AddResult()
    try:
        records = read_records(path.parent, src, q, batch_size=batch_size, max_record_bytes=max_record_bytes,
                               ops=True)
        for batch in batched(records, batch_size):
            total.absorb(adder.commit(_Item(put if rec.op == "add" else rec.op, rec.id, rec.text,
                                            _raw(rec)) for rec in batch))
    finally:
        q.commit()
    total.quarantined += q.counts.records
    total.seconds = round(total.seconds, 4)
    return {"file": str(path), **{k: v for k, v in total.to_dict().items() if k not in ("segment", "ledger_seq")}}


def _raw(rec) -> bytes:
    # ensure_ascii: a lone surrogate (which check_record refuses) stays an escape, not an error
    return json.dumps({"id": rec.id, "text": rec.text}).encode() + b"\n"


COUNTS = ("added", "replaced", "deleted", "unchanged", "missing", "quarantined", "rows_updated")


def drain_inbox(data: Path, *, batch_size: int, on_duplicate: str, max_record_bytes: int) -> dict:
    """Apply every file waiting in <data>/inbox (oldest name first), then move it to inbox/.done/.

    The drop protocol: write `name.jsonl.part` (or any name starting with a dot), then rename
    it to `name.jsonl`; names ending in `.part` or starting with `.` are left alone. A symlink,
    a file of an unknown format or one that cannot be read moves to quarantine/inbox/ with its
    reason, and the other files are still applied. A file moves to .done only after all its
    operations are acknowledged; a crash in between applies it again next time, which is a
    no-op for what was already in.
    """
    from shardvec.tasks.corpus import FORMATS, BadInputError
    where = Layout(data)
    inbox, done, refused = where.inbox, where.inbox_done, where.quarantine_inbox
    for folder in (inbox, done):
        if folder.is_symlink():
            raise BadInputError(f"{folder} is a symlink; make it a folder inside the data directory and move the "
                                "files into it.")
    waiting = sorted(p for p in inbox.iterdir() if not p.name.startswith(".") and not p.name.endswith(".part")
                     ) if inbox.is_dir() else []
    totals = {"files": 0, "refused": 0, **{f: 0 for f in COUNTS}}
    adder = None
    for path in waiting:
        reason = _inbox_problem(path, FORMATS)
        if reason:
            _refuse(path, refused, reason)
            totals["refused"] += 1
            continue
        adder = adder or Adder(data, on_duplicate=on_duplicate, max_record_bytes=max_record_bytes)
        result = add_file(data, path, batch_size=batch_size, on_duplicate=on_duplicate,
                          max_record_bytes=max_record_bytes, adder=adder)
        done.mkdir(parents=True, exist_ok=True)
        os.replace(path, done / path.name)
        totals["files"] += 1
        for f in COUNTS:
            totals[f] += result[f]
    return totals


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


def _refuse(path: Path, folder: Path, reason: str) -> None:
    """Move a refused inbox entry (the link itself, not its target) to quarantine/inbox/ with its reason."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = unique_stamp()
    target = folder / f"{stamp}-{path.name[-200:]}"  # a name's limit is 255 bytes; keep its end (the format)
    os.replace(path, target)
    with open(str(target) + ".reason.json", "w") as f:
        json.dump({"source": f"inbox/{path.name}", "reason": reason}, f)
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(folder)
