"""The segments of adds and deletes on top of a version, and the live statements they make.

A committed batch of adds, replaces and deletes is an immutable segment of two files:

  additions/<base version>/<seq>.arrow   the batch's ids, texts and vectors (Arrow IPC,
                                         memory-mapped; a build takes the same records from
                                         the ledger, never from here)
  additions/<base version>/<seq>.npz     the similarity rows the batch wrote, by row id (its
                                         own statements' rows, and the existing rows it
                                         entered or repaired), the rows it killed (`dead`:
                                         deleted or replaced) and its key index

CURRENT names the live segments of its version, oldest first. `Statements` is what they make
with the version: the live statements, its shards plus every segment less the dead rows, which
readers search and tasks/changes/additions.py changes. Here too the segment files' life: `write_segment`
writes both files durably before anything names them, `compact` merges the newest segments like
a binary counter (so about log2(adds) of them are live) and `sweep` deletes the files no CURRENT
names any more.

Long because: the segment files' format, their life (write, compact, sweep) and the Statements
view that reads them change together.
"""

from __future__ import annotations

import dataclasses
import os
import time
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from shardvec.tasks.storage.atomic import fsync_dir
from shardvec.tasks.storage.keys import key_hash, key_hashes
from shardvec.tasks.storage.layout import Layout
from shardvec.tasks.search.partitioned import Clusters
from shardvec.tasks.storage.documents import Additions, Current, DamagedCurrentError
from shardvec.tasks.search.repair import Holders, fill
from shardvec.tasks.search.similarity import SimilarityRows
from shardvec.tasks.storage.spaces import Space
from shardvec.tasks.search.topk import columns_for, score_blocks, unit_rows


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
            yield c, self.vectors[c : c + columns]

    def find_all(self, key: str) -> list[int]:
        h = np.uint64(key_hash(key))
        lo, hi = np.searchsorted(self._hash, h, "left"), np.searchsorted(self._hash, h, "right")
        return sorted(int(r) for r in self._row[lo:hi] if self.ids[int(r)].as_py() == key)

    def key(self, i: int) -> str:
        return self.ids[i].as_py()

    def _column(self, name: str) -> pa.Array:
        """ "key" or "id": the statements' ids; "text": their texts."""
        if name not in ("key", "id", "text"):
            raise KeyError(f"an addition segment has no column {name!r}")
        return self.texts if name == "text" else self.ids

    def column(self, name: str, i: int):
        return self._column(name)[i].as_py()

    def column_at(self, name: str, rows: np.ndarray) -> list:
        return self._column(name).take(pa.array(np.asarray(rows, np.int64))).to_pylist()

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

    def __init__(self, data: Path, current: Current, keep_mapped: bool = False):
        data = Path(data)
        self.base = Space(data / current.components["statements"], keep_mapped)
        self.base_rows = SimilarityRows(data / current.components["similarity"])
        self.k, self.width = self.base_rows.k, self.base_rows.width
        self.segments: list[Segment] = []
        self.dead = np.empty(0, dtype=np.int64)
        self._holders: Holders | None = None
        self._clusters: Clusters | None | bool = False  # opened on the first add that could use them
        for rel in current.segments:
            try:
                self.append(Segment(data / rel, len(self)))
            except (ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # pyarrow's ArrowInvalid too
                # (a missing file stays an OSError: readers retry it when CURRENT moved on)
                raise DamagedCurrentError(
                    f"The addition segment {rel} is damaged ({' '.join(str(exc).split())}); run `shardvec "
                    "backfill --mode rebuild`, which replays the ledger's copy of every acknowledged "
                    "add, replace and delete."
                ) from None

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
    def additions(self) -> "_Additions":
        """The segments' live statements alone, as a `topk.Scannable` (global rows): what a
        version's Annoy index (format 2) misses, scanned exactly beside it (a faiss index searches
        them itself: tasks/search/index.py `Added`)."""
        return _Additions(self)

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
            ids = cand[i : i + step]
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

    def column_at(self, name: str, rows: np.ndarray) -> list:
        """The ids (`name` "key") or texts ("text") of many rows, in their order: one Arrow take
        per shard or segment they fall in."""
        rows = np.asarray(rows, np.int64)
        out: list = [None] * len(rows)
        parts: list[tuple[int, int, Space | Segment]] = [(0, len(self.base), self.base)]
        parts += [(seg.start, len(seg), seg) for seg in self.segments]
        for start, n, part in parts:
            at = np.flatnonzero((rows >= start) & (rows < start + n))
            if len(at):
                for i, value in zip(at.tolist(), part.column_at(name, rows[at] - start)):
                    out[i] = value
        return out

    def vectors_at(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), self.base.dim), np.float32)
        for i, r in enumerate(rows):
            space, local = self._locate(int(r))
            out[i] = space.vector_at(local)
        return out

    def row(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        """The k neighbours readers see of statement row r."""
        rows, scores = self.full_row(r)
        return rows[: self.k], scores[: self.k]

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

    def full_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`full_row` of many rows at once: each from the newest segment that wrote it, else from
        the version's rows (a search per segment, a gather per stored shard; not one per row)."""
        rows = np.asarray(rows, np.int64)
        out_rows = np.empty((len(rows), self.width), np.int64)
        out_scores = np.empty((len(rows), self.width), np.float32)
        todo = np.arange(len(rows))
        for seg in reversed(self.segments):
            ids = np.asarray(seg.row_ids)
            if not len(todo) or not len(ids):
                continue
            at = np.minimum(np.searchsorted(ids, rows[todo]), len(ids) - 1)
            found = ids[at] == rows[todo]
            out_rows[todo[found]], out_scores[todo[found]] = seg.rows[at[found]], seg.scores[at[found]]
            todo = todo[~found]
        if len(todo):
            out_rows[todo], out_scores[todo] = self.base_rows.full_many(rows[todo])
        return out_rows, out_scores

    def current_rows_holding(self, cand: np.ndarray, targets: np.ndarray):
        """Of rows `cand`, those whose *current* row (a newer overlay may have replaced it) holds
        any of `targets`: (their ids, their full rows, their scores)."""
        rows, scores = self.full_rows(cand)
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
                found.append(
                    np.flatnonzero(np.isin(rows, targets).any(axis=1)) + s["shard"] * self.base_rows.rows_per_shard
                )
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


class _Additions:
    """Every segment's statements as one `topk.Scannable`, dead ones never returned."""

    normalized = True

    def __init__(self, statements: Statements):
        self.segments = statements.segments
        self.dead = statements.dead[statements.dead >= len(statements.base)]

    def blocks(self, columns: int):
        for seg in self.segments:
            for start, block in seg.blocks(columns):
                yield seg.start + start, block


def compact(layout: Layout, version: str, view: Statements, additions: Additions) -> Additions:
    """Merge the newest segments like a binary counter (while the last is at least as big as
    the one before): about log2(adds) segments stay, so searches touch few blocks.

    `additions`: CURRENT's entry naming `view`'s segments (`next_seq` the next free number);
    returns it naming the merged ones. `view.segments` is merged in step."""
    segs, next_seq = list(additions.segments), additions.next_seq
    while len(view.segments) >= 2 and view.segments[-1].weight >= view.segments[-2].weight:
        a, b = view.segments[-2], view.segments[-1]
        ids, texts = a.keys() + b.keys(), a.texts.to_pylist() + b.texts.to_pylist()
        vecs = np.concatenate([a.vectors, b.vectors])
        row_ids = np.union1d(a.row_ids, b.row_ids)
        rows = np.empty((len(row_ids), view.width), np.int64)
        scores = np.empty((len(row_ids), view.width), np.float32)
        for seg in (a, b):  # the newer segment's row wins
            at = np.searchsorted(row_ids, seg.row_ids)
            rows[at], scores[at] = seg.rows, seg.scores
        rel, npz = write_segment(
            layout, version, next_seq, ids, texts, vecs, row_ids, rows, scores, np.union1d(a.dead, b.dead)
        )
        next_seq += 1
        view.segments[-2:] = [Segment(layout.root / rel, a.start, npz)]
        segs[-2:] = [rel]
    return dataclasses.replace(additions, segments=tuple(segs), next_seq=next_seq)


def sweep(layout: Layout, version: str, segments: Iterable[str], grace_seconds: float = 300) -> None:
    """Delete the segment files of `version` that CURRENT's `segments` do not name (merged, or
    a crash's leftovers) once no reader can still be opening them."""
    folder = layout.segments_of(version)
    if not folder.is_dir():  # no segment was ever written on top of this version
        return
    named = {Path(s).name for s in segments}
    for p in folder.iterdir():
        if p.name.split(".")[0] not in named and time.time() - p.stat().st_mtime > grace_seconds:
            p.unlink(missing_ok=True)


def write_segment(
    layout: Layout, version: str, seq: int, ids, texts, vecs, row_ids, rows, scores, dead
) -> tuple[str, dict]:
    """Write segment `seq` of `version`, both files durably; (its path in the data directory, as
    CURRENT names it, and its .npz arrays)."""
    rel = layout.segment(version, seq)
    prefix = layout.root / rel
    if not prefix.parent.is_dir():  # a new folder's entry must survive a crash too
        prefix.parent.mkdir(parents=True)
        fsync_dir(prefix.parent.parent)
    vecs = np.ascontiguousarray(vecs, dtype=np.float32)
    table = pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "text": pa.array(texts, pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vecs.ravel()), vecs.shape[1]),
        }
    )
    hashes = key_hashes(ids)
    order = np.argsort(hashes, kind="stable")
    npz = dict(
        row_ids=row_ids, rows=rows, scores=scores, dead=dead, key_hash=hashes[order], key_row=order.astype(np.int64)
    )
    paths = []
    try:
        for suffix in (".npz", ".arrow"):  # a crash's leftovers under this name were never acknowledged
            final = Path(str(prefix) + suffix)
            tmp = final.with_name(f".{final.name}.tmp")
            paths.append((tmp, final))
            with open(tmp, "wb") as f:
                if suffix == ".arrow":
                    with pa.ipc.new_file(f, table.schema) as w:
                        w.write_table(table)
                else:
                    np.savez(f, **npz)
                f.flush()
                os.fsync(f.fileno())
    except BaseException:  # a full disk, a signal: nothing half-written stays (a kill's leftovers: `sweep`)
        for tmp, _ in paths:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, final in paths:
        os.replace(tmp, final)
    fsync_dir(prefix.parent)
    return rel, npz
