"""The statement space: which cached records it holds (one per id), projected shard by shard.

`plan_statements` walks the caches in partition order, settles duplicate ids (reject: the
first stays and later ones go to quarantine; update: the last one wins) and writes the plan,
an (N, 2) array of (cache number, row in cache) per statement row. `project_shard` then
embeds the rows of one shard with the LSI model and writes them; shards run in parallel.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shardvec.tasks.storage.atomic import save_npy
from shardvec.tasks.inputs.corpus import Quarantine, SourceFile
from shardvec.tasks.search.embed import Embedder
from shardvec.tasks.storage.keys import key_hashes
from shardvec.tasks.storage.spaces import ShardWriter
from shardvec.tasks.inputs.tokenize import iter_batches, open_cache


def _cache_table(path: str, columns: list[str]) -> pa.Table:
    return open_cache(Path(path)).read_all().select(columns)


def plan_statements(
    caches: list[dict],
    plan_path: Path,
    data_dir: Path,
    quarantine_dir: Path,
    *,
    on_duplicate: str,
    ledger_ops: Path | None = None,
    ledger_caches: int = 0,
) -> dict:
    """`caches`: tokenize summaries in partition order (sources are relative to data_dir/root),
    the last `ledger_caches` of them the ledger's puts. Corpus records whose id the
    ledger decides (`ledger_ops`: the last op of each id) are left out first: an acknowledged
    operation always wins (tasks/storage/ledger.py). Writes the plan; returns counts.

    Linear in the records, however many share an id: each cache is read a fixed number of times
    (its ids once, the rows it needs a second look at once per pass), never once per duplicate."""
    sizes = [c["records"] for c in caches]
    where = np.empty((sum(sizes), 2), dtype=np.int64)
    hashes = np.empty(len(where), dtype=np.uint64)
    start = 0
    for ci, c in enumerate(caches):
        hashes[start : start + sizes[ci]] = key_hashes(
            i for b in iter_batches([c["cache"]], ["id"]) for i in b.column(0).to_pylist()
        )
        where[start : start + sizes[ci], 0] = ci
        where[start : start + sizes[ci], 1] = np.arange(sizes[ci])
        start += sizes[ci]
    keep = np.ones(len(where), dtype=bool)
    rejects = _Rejects()
    to_quarantine = rejects if on_duplicate == "reject" else None
    corpus_rows = sum(sizes[: len(caches) - ledger_caches])
    decided = (
        _mask_ledger_ids(caches, where, hashes[:corpus_rows], ledger_ops, keep, to_quarantine) if ledger_ops else 0
    )
    dropped = _duplicates(caches, where, np.flatnonzero(keep), hashes, on_duplicate, to_quarantine)
    keep[dropped] = False
    rejects.write(caches, where, data_dir, quarantine_dir)
    save_npy(Path(plan_path), where[keep])
    return {
        "plan": str(plan_path),
        "statements": int(keep.sum()),
        "duplicates_rejected": len(rejects),
        "duplicates_superseded": 0 if on_duplicate == "reject" else len(dropped),
        "decided_by_ledger": decided,
    }


def _mask_ledger_ids(
    caches: list[dict],
    where: np.ndarray,
    corpus_hashes: np.ndarray,
    ledger_ops: Path,
    keep: np.ndarray,
    rejects: _Rejects | None,
) -> int:
    """Drop the corpus rows whose id has an op in the ledger; a row whose id was added with other
    text goes to `rejects` (when given). Returns how many rows the ledger decided."""
    ops = pa.ipc.open_file(pa.memory_map(str(ledger_ops), "r")).read_all()
    op_hashes = key_hashes(ops.column("id").to_pylist())
    cand = np.flatnonzero(np.isin(corpus_hashes, op_hashes))
    if not cand.size:
        return 0
    near = np.flatnonzero(np.isin(op_hashes, corpus_hashes[cand]))  # only these ids can match
    decided = {
        i: (o, t) for i, o, t in zip(*(ops.column(c).take(pa.array(near)).to_pylist() for c in ("id", "op", "text")))
    }
    count = 0
    for rows, batch in _take(caches, where, cand, ["id", "text"]):
        clash, reasons = [], []
        for r, id_, text in zip(rows.tolist(), batch.column("id").to_pylist(), batch.column("text").to_pylist()):
            if id_ not in decided:  # a 64-bit hash collision
                continue
            keep[r] = False
            count += 1
            op, acknowledged = decided[id_]
            if op == "add" and acknowledged != text:
                clash.append(r)
                reasons.append(
                    f"duplicate id {id_!r}: added with other text by `shardvec add`, "
                    "which wins; use `shardvec add --replace` to take this record's text instead"
                )
        if rejects is not None and clash:
            rejects.add(clash, np.arange(len(clash)), reasons)
    return count


def _duplicates(
    caches: list[dict],
    where: np.ndarray,
    live: np.ndarray,
    hashes: np.ndarray,
    on_duplicate: str,
    rejects: _Rejects | None,
) -> np.ndarray:
    """The `live` rows a later (reject) or earlier (update) row with the same id leaves out; the
    rejected ones go to `rejects` (when given) with the row their id was first seen in."""
    order = live[np.argsort(hashes[live], kind="stable")]
    twin = hashes[order[1:]] == hashes[order[:-1]]
    cand = np.union1d(order[1:][twin], order[:-1][twin])  # the rows sharing a hash, in corpus order
    if not cand.size:
        return cand
    # group on the ids themselves, not their hashes: a 64-bit collision must not merge two statements
    ids = pc.dictionary_encode(pa.concat_arrays([b.column(0) for _, b in _take(caches, where, cand, ["id"])]))
    codes = ids.indices.to_numpy()
    by_id = np.argsort(codes, kind="stable")  # corpus order within each id
    sorted_codes = codes[by_id]
    head = np.r_[True, sorted_codes[1:] != sorted_codes[:-1]]
    drop = by_id[~head] if on_duplicate == "reject" else by_id[~np.r_[head[1:], True]]
    if rejects is not None and drop.size:
        first = np.empty(len(ids.dictionary), dtype=np.int64)
        first[sorted_codes[head]] = cand[by_id[head]]
        names = ids.dictionary.to_pylist()
        dropped_ids, which = np.unique(codes[drop], return_inverse=True)
        rejects.add(
            cand[drop],
            which,
            [
                f"duplicate id {names[k]!r}: first seen in {caches[where[first[k], 0]]['source']}"
                for k in dropped_ids.tolist()
            ],
        )
    return cand[drop]


def _take(
    caches: list[dict], where: np.ndarray, rows: np.ndarray, columns: list[str]
) -> Iterator[tuple[np.ndarray, pa.RecordBatch]]:
    """`columns` of the plan rows `rows` (ascending), one cache batch at a time: (those rows, their
    values). Each cache is opened once and RAM holds one batch's worth (at most BATCH_BYTES of text)."""
    cis = where[rows, 0]
    for ci in np.unique(cis).tolist():
        mine = rows[cis == ci]
        reader = open_cache(Path(caches[ci]["cache"]))
        bounds = np.cumsum([0] + [reader.get_batch(b).num_rows for b in range(reader.num_record_batches)])
        local = where[mine, 1]
        in_batch = np.searchsorted(bounds, local, side="right") - 1
        for b in np.unique(in_batch).tolist():
            sel = in_batch == b
            batch = reader.get_batch(b).select(columns)
            yield mine[sel], batch.take(pa.array(local[sel] - bounds[b]))


class _Rejects:
    """Plan rows to quarantine with their reasons, written at the end in one pass per cache, in
    corpus order: each source file is opened once, however many of its records go."""

    def __init__(self):
        self.rows: list[np.ndarray] = []
        self.why: list[np.ndarray] = []
        self.reasons: dict[str, int] = {}

    def __len__(self) -> int:
        return sum(map(len, self.rows))

    def add(self, rows, which: np.ndarray, reasons: list[str]) -> None:
        """Quarantine `rows`, row i for the reason `reasons[which[i]]`."""
        index = np.array([self.reasons.setdefault(r, len(self.reasons)) for r in reasons], dtype=np.int64)
        self.rows.append(np.asarray(rows, dtype=np.int64))
        self.why.append(index[which])

    def write(self, caches: list[dict], where: np.ndarray, data_dir: Path, quarantine_dir: Path) -> None:
        if not self.rows:
            return
        rows, why = np.concatenate(self.rows), np.concatenate(self.why)
        order = np.argsort(rows, kind="stable")
        rows, why = rows[order], why[order]
        text = list(self.reasons)
        qs: dict[str, Quarantine] = {}
        done = 0
        with ExitStack() as stack:
            sources: dict[int, BinaryIO] = {}
            for part, batch in _take(caches, where, rows, ["id", "text", "line", "offset", "length"]):
                ci = int(where[part[0], 0])
                src = caches[ci]["source"]
                q = qs.setdefault(src, Quarantine(Path(quarantine_dir), _dup_source(src)))
                for rec, w in zip(batch.to_pylist(), why[done : done + len(part)].tolist()):
                    if rec["offset"] >= 0:
                        if ci not in sources:
                            path = Path(data_dir) / caches[ci].get("root", "corpus") / src
                            sources[ci] = stack.enter_context(open(path, "rb"))
                        sources[ci].seek(rec["offset"])
                        q.reject(rec["line"], text[w], raw=sources[ci].read(rec["length"]))
                    else:
                        q.reject(rec["line"], text[w], row={"id": rec["id"], "text": rec["text"]})
                done += len(part)
        for q in qs.values():
            q.commit()


def _dup_source(source: str) -> SourceFile:
    return SourceFile(partition="", name=f"{source}.duplicates", format="", size=0, mtime_ns=0)


def project_shard(
    plan_path: Path,
    caches: list[str],
    shard: int,
    rows_per_shard: int,
    models_dir: Path,
    space_dir: Path,
    batch_rows: int = 8192,
) -> dict:
    """Embed the statements of one shard (LSI, unit length) and write the shard, `batch_rows`
    at a time: RAM holds one batch's tokens, whatever the shard's size."""
    plan = np.load(plan_path, mmap_mode="r")[shard * rows_per_shard : (shard + 1) * rows_per_shard]
    embedder = Embedder(models_dir, vocab_in_ram=True)
    tables: dict[int, pa.Table] = {}  # memory-mapped: only the rows taken are read
    empty = 0
    with ShardWriter(space_dir, shard, rows=len(plan), dim=embedder.dim, extra={"text": pa.string()}) as w:
        for start in range(0, len(plan), batch_rows):
            ids, texts, tokens = _plan_rows(plan[start : start + batch_rows], caches, tables)
            vectors = embedder.embed(tokens.to_pylist())
            empty += int((np.abs(vectors).sum(axis=1) == 0).sum())
            w.write(vectors, ids, {"text": texts})
    return {**w.entry, "empty_vectors": empty}


def _plan_rows(plan: np.ndarray, caches: list[str], tables: dict[int, pa.Table]):
    """The id, text and tokens columns of these plan rows, in plan order. The plan is in corpus
    order (cache number, then row), so taking each cache's rows in turn keeps that order."""
    parts = []
    for ci in np.unique(plan[:, 0]).tolist():
        if ci not in tables:
            tables[ci] = _cache_table(caches[ci], ["id", "text", "tokens"])
        parts.append(tables[ci].take(pa.array(plan[plan[:, 0] == ci, 1])))
    table = pa.concat_tables(parts)
    return table.column("id"), table.column("text"), table.column("tokens")


def shard_count(statements: int, rows_per_shard: int) -> int:
    return max(1, -(-statements // rows_per_shard))
