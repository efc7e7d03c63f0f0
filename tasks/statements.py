"""The statement space: which cached records it holds (one per id), projected shard by shard.

`plan_statements` walks the caches in partition order, settles duplicate ids (reject: the
first stays and later ones go to quarantine; update: the last one wins) and writes the plan,
an (N, 2) array of (cache number, row in cache) per statement row. `project_shard` then
embeds the rows of one shard with the LSI model and writes them; shards run in parallel.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa

from shardvec.tasks.atomic import save_npy
from shardvec.tasks.corpus import Quarantine, SourceFile
from shardvec.tasks.embed import Embedder
from shardvec.tasks.keys import key_hashes
from shardvec.tasks.store import ShardWriter
from shardvec.tasks.tokenize import open_cache


def _cache_table(path: str, columns: list[str]) -> pa.Table:
    return open_cache(Path(path)).read_all().select(columns)


def plan_statements(caches: list[dict], plan_path: Path, data_dir: Path, quarantine_dir: Path, *,
                    on_duplicate: str, ledger_ops: Path | None = None, ledger_caches: int = 0) -> dict:
    """`caches`: tokenize summaries in partition order (sources are relative to data_dir/root),
    the last `ledger_caches` of them the ledger's puts. Corpus records whose id the
    ledger decides (`ledger_ops`: the last op of each id) are left out first: an acknowledged
    operation always wins (tasks/ledger.py). Writes the plan; returns counts."""
    sizes = [c["records"] for c in caches]
    where = np.empty((sum(sizes), 2), dtype=np.int64)
    hashes = np.empty(len(where), dtype=np.uint64)
    start = 0
    for ci, c in enumerate(caches):
        ids = _cache_table(c["cache"], ["id"]).column("id").to_pylist()
        hashes[start:start + len(ids)] = key_hashes(ids)
        where[start:start + len(ids)] = np.column_stack([np.full(len(ids), ci), np.arange(len(ids))])
        start += len(ids)
    keep = np.ones(len(where), dtype=bool)
    rejected = superseded = 0
    q_by_source: dict[str, Quarantine] = {}

    def quarantine(r: int, reason: str) -> None:
        ci, local = where[r]
        src = caches[ci]["source"]
        if src not in q_by_source:
            q_by_source[src] = Quarantine(Path(quarantine_dir), _dup_source(src))
        _quarantine_duplicate(q_by_source[src], caches, ci, int(local), data_dir, reason)

    corpus_rows = sum(sizes[:len(caches) - ledger_caches])
    overridden = _mask_ledger_ids(caches, where, hashes[:corpus_rows], ledger_ops, keep) if ledger_ops else []
    for r, op, same_text in overridden:
        if op == "add" and not same_text and on_duplicate == "reject":
            rejected += 1
            quarantine(r, f"duplicate id {_id_at(caches, where, r)!r}: added with other text by `shardvec add`, "
                          "which wins; use `shardvec add --replace` to take this record's text instead")
    live = np.flatnonzero(keep)
    order = live[np.argsort(hashes[live], kind="stable")]  # equal hashes stay in corpus order
    runs = _equal_runs(hashes[order])
    for run in runs:
        rows = order[run]  # corpus order within the run
        by_id: dict[str, list[int]] = defaultdict(list)
        for r in rows:  # verify the ids, a 64-bit hash collision must not merge two statements
            ci, local = where[r]
            by_id[_cache_table(caches[ci]["cache"], ["id"]).column("id")[int(local)].as_py()].append(int(r))
        for id_, same in by_id.items():
            if len(same) < 2:
                continue
            drop = same[1:] if on_duplicate == "reject" else same[:-1]
            first = where[same[0]]
            for r in drop:
                keep[r] = False
                if on_duplicate == "reject":
                    rejected += 1
                    quarantine(r, f"duplicate id {id_!r}: first seen in {caches[first[0]]['source']}")
                else:
                    superseded += 1
    for q in q_by_source.values():
        q.commit()
    save_npy(Path(plan_path), where[keep])
    return {"plan": str(plan_path), "statements": int(keep.sum()), "duplicates_rejected": rejected,
            "duplicates_superseded": superseded, "decided_by_ledger": len(overridden)}


def _id_at(caches: list[dict], where: np.ndarray, r: int) -> str:
    ci, local = where[r]
    return _cache_table(caches[ci]["cache"], ["id"]).column("id")[int(local)].as_py()


def _mask_ledger_ids(caches: list[dict], where: np.ndarray, corpus_hashes: np.ndarray, ledger_ops: Path,
                     keep: np.ndarray) -> list[tuple[int, str, bool]]:
    """Drop the corpus rows whose id has an op in the ledger: (row, its op, same text?) each."""
    ops = pa.ipc.open_file(pa.memory_map(str(ledger_ops), "r")).read_all()
    op_hashes = key_hashes(ops.column("id").to_pylist())
    cand = np.flatnonzero(np.isin(corpus_hashes, op_hashes))
    if not cand.size:
        return []
    near = np.flatnonzero(np.isin(op_hashes, corpus_hashes[cand]))  # only these ids can match
    decided = {i: (o, t) for i, o, t in zip(*(ops.column(c).take(pa.array(near)).to_pylist()
                                             for c in ("id", "op", "text")))}
    out = []
    for r in cand.tolist():
        ci, local = where[r]
        rec = _cache_table(caches[ci]["cache"], ["id", "text"]).slice(int(local), 1).to_pylist()[0]
        if rec["id"] in decided:  # not a 64-bit hash collision
            op, text = decided[rec["id"]]
            keep[r] = False
            out.append((r, op, text == rec["text"]))
    return out


def _equal_runs(sorted_hashes: np.ndarray) -> list[np.ndarray]:
    """Index runs (length >= 2) of equal values in a sorted array."""
    if len(sorted_hashes) < 2:
        return []
    same = sorted_hashes[1:] == sorted_hashes[:-1]
    runs, i = [], 0
    idx = np.flatnonzero(same)
    while i < len(idx):
        j = i
        while j + 1 < len(idx) and idx[j + 1] == idx[j] + 1:
            j += 1
        runs.append(np.arange(idx[i], idx[j] + 2))
        i = j + 1
    return runs


def _dup_source(source: str) -> SourceFile:
    return SourceFile(partition="", name=f"{source}.duplicates", format="", size=0, mtime_ns=0)


def _quarantine_duplicate(q: Quarantine, caches: list[dict], ci: int, local: int, data_dir: Path,
                          reason: str) -> None:
    row = _cache_table(caches[ci]["cache"], ["id", "text", "line", "offset", "length"]).slice(local, 1)
    rec = row.to_pylist()[0]
    if rec["offset"] >= 0:
        with open(Path(data_dir) / caches[ci].get("root", "corpus") / caches[ci]["source"], "rb") as f:
            f.seek(rec["offset"])
            q.reject(rec["line"], reason, raw=f.read(rec["length"]))
    else:
        q.reject(rec["line"], reason, row={"id": rec["id"], "text": rec["text"]})


def project_shard(plan_path: Path, caches: list[str], shard: int, rows_per_shard: int, models_dir: Path,
                  space_dir: Path, batch_rows: int = 8192) -> dict:
    """Embed the statements of one shard (LSI, unit length) and write the shard, `batch_rows`
    at a time: RAM holds one batch's tokens, whatever the shard's size."""
    plan = np.load(plan_path, mmap_mode="r")[shard * rows_per_shard:(shard + 1) * rows_per_shard]
    embedder = Embedder(models_dir, vocab_in_ram=True)
    tables: dict[int, pa.Table] = {}  # memory-mapped: only the rows taken are read
    empty = 0
    with ShardWriter(space_dir, shard, rows=len(plan), dim=embedder.dim, extra={"text": pa.string()}) as w:
        for start in range(0, len(plan), batch_rows):
            ids, texts, tokens = _plan_rows(plan[start:start + batch_rows], caches, tables)
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

