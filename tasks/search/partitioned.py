"""Similarity rows that scale: k-means partitions, exact scores inside each, one row per statement.

Exact rows cost n^2 products. Here each statement is scored only against the statements of
the clusters it is near, so the cost is about n * probes * cluster_rows, linear in n:
  1. `train_centroids`: spherical k-means (seeded, on a bounded sample, a few Lloyd iterations);
  2. `assign_shard`: each statement's `probes` nearest centroids, per shard of the space;
  3. `group`: inverted lists on disk. A cluster's members are every statement assigned to it
     (any probe); its queries are the statements whose nearest centroid it is (each once);
  4. `own_task`: units of (cluster, slice of its queries), each query against every query of
     its cluster: its best k there, and so a lower bound of the k-th best score its row ends
     with (`bounds`: bounds.npy, one float per statement);
  5. `score_task`: the same units against the cluster's other members. Each product serves
     both sides (cosine is symmetric) and is kept only if it reaches the query's bound or the
     member's: a compare per product, and the few that can still enter a row are written;
  6. `merge_tiles`: per statement, its best k of steps 4 and 5, written in the format of exact
     rows (rows-NNNNN.npy / scores-NNNNN.npy, `tile_rows` a shard), a group of tiles a task
     (`merge_groups`).
A true neighbour j of statement i is found when i's nearest cluster is among j's `probes`
nearest, or j's nearest among i's; recall is measured, not promised (`similarity.rows_recall`).
`keep_clusters` copies the centroids and inverted lists into the rows' folder (`Clusters`), so
that a statement added later is scored against the same pairs (`Clusters.candidates`).
Every step holds a bounded number of rows in RAM: the sample, one shard, one block, the
candidates of one task or tile; never the corpus. Scores run in blocks sized from a memory
budget, and rows spread over the space are read from its files, not through its mapping
(`Space.read`), so a process does not end up holding the whole space.

Long because: the steps above are one algorithm whose files (centroids, lists, bounds) only it
reads and writes; split by step, the file formats would be spread over several modules.
"""

from __future__ import annotations

import heapq
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from shardvec.errors import DamagedFileError
from shardvec.tasks.storage.atomic import atomic_path, map_npy, save_npy, write_json
from shardvec.tasks.search.similarity import write_tile
from shardvec.tasks.storage.spaces import Space, shard_name
from shardvec.tasks.search.topk import empty_topk, nonzero2d, top_in_order, unit_rows

MB = 1 << 20
# Resident before any rows are touched: the interpreter, numpy/scipy/gensim, a Dask worker and
# its Prefect client (measured 250-330 MB); the rest of the budget is working memory.
BASELINE_MB = 384
# Bytes per score cell at the kernel's peak, with room to spare: the float32 score, the boolean
# masks of the bounds and their union (`_cross`), or the group maxima (`_keep`).
CELL_BYTES = 24
# Above 4M cells (the exact search's block) a block is no faster: BLAS already runs at full
# speed, and the block's masks only get larger.
MAX_CELLS = 1 << 22


def score_cells(memory_budget_mb: int) -> int:
    """Score cells (queries x candidates) one block may hold within the process budget."""
    free = max(memory_budget_mb - BASELINE_MB, 16) * MB
    return int(min(MAX_CELLS, max(1 << 16, free // CELL_BYTES)))


def clusters_for(statements: int, cluster_rows: int) -> int:
    return max(1, -(-statements // cluster_rows))


def _sample(space: Space, size: int, rng: np.random.Generator) -> np.ndarray:
    picks = np.sort(rng.choice(len(space), size=min(size, len(space)), replace=False))
    return unit_rows(space.read(picks))  # read, not mapped: a sample spread over the space


def nearest(vecs: np.ndarray, centroids: np.ndarray, probes: int, cells: int) -> np.ndarray:
    """(n, probes) indices of each row's most similar centroids, best first (ties: the lower
    index). The top `probes` by `_keep` (an argpartition over a row of 1,000 centroids cost
    10x more than the product that made it)."""
    probes = min(probes, len(centroids))
    out = np.empty((len(vecs), probes), dtype=np.int32)
    step = max(1, cells // len(centroids))
    for s in range(0, len(vecs), step):
        scores = vecs[s : s + step] @ centroids.T
        if probes == 1:
            out[s : s + step, 0] = scores.argmax(axis=1)
        else:
            out[s : s + step] = _keep(*empty_topk(len(scores), probes), scores, 0, probes)[0]
    return out


def train_centroids(
    space_dir: Path, work_dir: Path, *, clusters: int, sample: int, iterations: int, seed: int, memory_budget_mb: int
) -> dict:
    """Spherical k-means on a sample; centroids saved as work_dir/centroids.npy."""
    rng, space = np.random.default_rng(seed), Space(space_dir)
    x = _sample(space, max(sample, clusters), rng)
    c = x[rng.choice(len(x), size=min(clusters, len(x)), replace=False)].copy()
    cells = score_cells(memory_budget_mb)
    for _ in range(iterations):
        label = nearest(x, c, 1, cells)[:, 0]
        sums, sizes = _cluster_sums(x, label, len(c))
        empty = np.flatnonzero(sizes == 0)
        sums[empty] = x[rng.choice(len(x), size=len(empty), replace=False)]  # re-seed empty clusters
        c = unit_rows(sums)
    path = save_npy(Path(work_dir) / "centroids.npy", c.astype(np.float32))
    return {"centroids": str(path), "clusters": len(c), "sample": len(x)}


def _cluster_sums(x: np.ndarray, label: np.ndarray, clusters: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(label, kind="stable")
    sizes = np.bincount(label, minlength=clusters)
    sums = np.zeros((clusters, x.shape[1]), dtype=np.float32)
    used = np.flatnonzero(sizes)
    sums[used] = np.add.reduceat(x[order], np.concatenate([[0], np.cumsum(sizes)[:-1]])[used], axis=0)
    return sums, sizes


def assign_shard(space_dir: Path, shard: int, work_dir: Path, *, probes: int, memory_budget_mb: int) -> dict:
    """The `probes` nearest clusters of every statement of one space shard (assign-NNNNN.npy),
    and how many statements each cluster gets as candidates and as queries."""
    space, work_dir = Space(space_dir), Path(work_dir)
    centroids = np.load(work_dir / "centroids.npy")
    probes = min(probes, len(centroids))
    vecs = unit_rows(np.asarray(space.shard_vectors(shard), dtype=np.float32))
    space.release()
    near = nearest(vecs, centroids, probes, score_cells(memory_budget_mb))
    save_npy(work_dir / shard_name("assign", shard, "npy"), near)
    np.save(
        work_dir / shard_name("counts", shard, "npy"),
        np.stack(
            [np.bincount(near.ravel(), minlength=len(centroids)), np.bincount(near[:, 0], minlength=len(centroids))]
        ),
    )
    return {"shard": shard, "rows": len(near)}


def group(space_dir: Path, work_dir: Path) -> dict:
    """Inverted lists, written through memmaps one shard at a time (RAM: one shard):
    members.npy / members_offsets.npy (candidates per cluster, ascending rows) and
    queries.npy / queries_offsets.npy (each statement once, under its nearest cluster)."""
    space, work_dir = Space(space_dir), Path(work_dir)
    shards, rows_per_shard = space.n_shards, space.rows_per_shard
    counts = sum(np.load(work_dir / shard_name("counts", s, "npy")).astype(np.int64) for s in range(shards))
    offsets = {name: np.concatenate([[0], np.cumsum(c)]) for name, c in zip(("members", "queries"), counts)}
    out = {
        name: np.lib.format.open_memmap(work_dir / f"{name}.tmp.npy", mode="w+", dtype=np.int64, shape=(int(off[-1]),))
        for name, off in offsets.items()
    }
    cursor = {name: off[:-1].copy() for name, off in offsets.items()}
    for s in range(shards):
        near = np.load(work_dir / shard_name("assign", s, "npy"))
        rows = np.arange(len(near), dtype=np.int64) + s * rows_per_shard
        _scatter(out["members"], cursor["members"], near.ravel(), np.repeat(rows, near.shape[1]))
        _scatter(out["queries"], cursor["queries"], near[:, 0], rows)
    for name in list(out):
        out.pop(name).flush()  # the memmap closes as its last reference goes
        (work_dir / f"{name}.tmp.npy").replace(work_dir / f"{name}.npy")
        np.save(work_dir / f"{name}_offsets.npy", offsets[name])
    sizes = counts[0]
    return {
        "clusters": len(sizes),
        "members": int(sizes.sum()),
        "largest_cluster": int(sizes.max()),
        "pairs_scored": int((counts[0] * counts[1]).sum()),
    }


CLUSTER_FILES = ("centroids", "members", "members_offsets", "queries", "queries_offsets")


def keep_clusters(work_dir: Path, out_dir: Path, *, probes: int) -> dict:
    """Copy the centroids and inverted lists (`group`) into the rows' folder as
    clusters-*.npy with clusters.json, for `Clusters`. Rows fit int32 below 2^31 statements (the
    members list, statements x probes, is half the size); copied through memmaps a piece at a
    time."""
    work_dir, out_dir = Path(work_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in CLUSTER_FILES:
        src = np.load(work_dir / f"{name}.npy", mmap_mode="r")
        dtype = np.int32 if name in ("members", "queries") and len(src) and src.max() < 2**31 - 1 else src.dtype
        with atomic_path(out_dir / f"clusters-{name}.npy") as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=src.shape)
            for i in range(0, len(src), 1 << 20):
                out[i : i + (1 << 20)] = src[i : i + (1 << 20)]
            out.flush()
            del out
    summary = {
        "format": 1,
        "probes": probes,
        "clusters": int(len(np.load(work_dir / "centroids.npy", mmap_mode="r"))),
        "files": {name: f"clusters-{name}.npy" for name in CLUSTER_FILES},
    }
    write_json(out_dir / "clusters.json", summary)
    return summary


class Clusters:
    """The clusters the partitioned rows were built with, kept in the rows' folder: which
    statements a new one would have been scored against (`candidates`). Memmapped."""

    def __init__(self, rows_dir: Path):
        rows_dir = Path(rows_dir)
        meta = json.loads((rows_dir / "clusters.json").read_text())
        self.probes = meta["probes"]
        for name, file in meta["files"].items():
            setattr(self, name, map_npy(rows_dir / file))

    @classmethod
    def open(cls, rows_dir: Path) -> "Clusters | None":
        """The clusters of a rows folder, or None when its rows are exact (or older)."""
        return cls(rows_dir) if (Path(rows_dir) / "clusters.json").exists() else None

    def candidates(self, vecs: np.ndarray) -> np.ndarray:
        """Sorted rows that the pairs of the partitioned rows join to any of `vecs` (unit
        vectors): the members of each one's nearest cluster (they have it among their probes)
        and the queries of its `probes` nearest (theirs is among its probes)."""
        near = nearest(np.atleast_2d(vecs).astype(np.float32), self.centroids, self.probes, cells=1 << 22)
        m, mo, q, qo = self.members, self.members_offsets, self.queries, self.queries_offsets
        parts = [m[mo[c] : mo[c + 1]] for c in np.unique(near[:, 0]).tolist()]
        parts += [q[qo[c] : qo[c + 1]] for c in np.unique(near).tolist()]
        return np.unique(np.concatenate(parts)).astype(np.int64) if parts else np.empty(0, np.int64)


def _scatter(out: np.ndarray, cursor: np.ndarray, cluster: np.ndarray, rows: np.ndarray) -> None:
    """Append rows (ascending) to their clusters' lists at the running cursors, order kept."""
    order = np.argsort(cluster, kind="stable")
    cluster, rows = cluster[order], rows[order]
    rank = np.arange(len(cluster)) - np.searchsorted(cluster, cluster, side="left")
    out[cursor[cluster] + rank] = rows
    np.add.at(cursor, cluster, 1)


def plan_tasks(work_dir: Path, *, tasks: int, max_queries: int) -> list[list[tuple[int, int, int]]]:
    """Units (cluster, first query, end query) dealt into exactly `tasks` lists of about equal
    cost (queries x candidates), largest first to the least loaded; a cluster with more than
    `max_queries` queries is split. Deterministic: every score task computes the same plan."""
    work_dir = Path(work_dir)
    m_off, q_off = np.load(work_dir / "members_offsets.npy"), np.load(work_dir / "queries_offsets.npy")
    units, costs = [], []
    for c in range(len(q_off) - 1):
        q, m = int(q_off[c + 1] - q_off[c]), int(m_off[c + 1] - m_off[c])
        for lo in range(0, q, max_queries):
            units.append((c, lo, min(q, lo + max_queries)))
            costs.append((units[-1][2] - lo) * m)
    plan: list[list[tuple[int, int, int]]] = [[] for _ in range(tasks)]
    load = [(0, t) for t in range(tasks)]  # a heap of (cost so far, task)
    for i in sorted(range(len(units)), key=lambda i: -costs[i]):
        cost, t = heapq.heappop(load)
        plan[t].append(units[i])
        heapq.heappush(load, (cost + costs[i], t))
    return [sorted(p) for p in plan]


def score_tasks_for(statements: int, tile_rows: int, workers: int) -> int:
    """About a tile of queries per score task, and at least two tasks per worker."""
    return max(2 * workers, -(-statements // tile_rows))


def _units(work_dir: Path, task: int, tasks: int, max_queries: int):
    """This task's units as (cluster's queries, first query, end query, cluster's members)."""
    members, m_off = np.load(work_dir / "members.npy", mmap_mode="r"), np.load(work_dir / "members_offsets.npy")
    queries, q_off = np.load(work_dir / "queries.npy", mmap_mode="r"), np.load(work_dir / "queries_offsets.npy")
    for c, lo, hi in plan_tasks(work_dir, tasks=tasks, max_queries=max_queries)[task]:
        yield np.asarray(queries[q_off[c] : q_off[c + 1]]), lo, hi, members[m_off[c] : m_off[c + 1]]


def own_task(
    space_dir: Path, work_dir: Path, task: int, tasks: int, *, k: int, max_queries: int, memory_budget_mb: int
) -> dict:
    """Each query of this task's units against every query of its cluster: its best k there
    (itself excluded), written sorted by statement as own-TTTTT-{stmt,rows,scores}.npy. Each
    statement is a query once, so over all tasks every statement gets one such row; its k-th
    score bounds the row it will end with from below (`bounds`)."""
    space, work_dir = Space(space_dir), Path(work_dir)
    cells = score_cells(memory_budget_mb)
    stmt, rows, scores = [np.empty(0, np.int64)], [np.empty((0, k), np.int64)], [np.empty((0, k), np.float32)]
    for everyone, lo, hi, _ in _units(work_dir, task, tasks, max_queries):
        r, s = _best(space, everyone, everyone[lo:hi], np.arange(lo, hi), k, cells)
        stmt.append(everyone[lo:hi])
        rows.append(_global(everyone, r, s))
        scores.append(s)
    stmt = np.concatenate(stmt)
    order = np.argsort(stmt, kind="stable")
    for name, arr in (("stmt", stmt), ("rows", np.concatenate(rows)), ("scores", np.concatenate(scores))):
        save_npy(work_dir / f"own-{task:05d}-{name}.npy", arr[order])
    return {"task": task, "queries": len(stmt)}


def _best(space: Space, cands: np.ndarray, queries: np.ndarray, own: np.ndarray, k: int, cells: int):
    """Each query's best k among `cands` (local indices, -1 / -inf padding), candidate own[i]
    excluded for query i. Candidates are gathered a block at a time, once each."""
    rows, best = empty_topk(len(queries), k)
    block = min(len(queries), max(1, cells // min(len(cands), LANE)))
    cols = min(len(cands), max(1, cells // block))
    qv = _gather(space, queries) if len(queries) == block else None  # one block: read once
    for m0 in range(0, len(cands), cols):
        m1 = min(m0 + cols, len(cands))
        cv = _gather(space, cands[m0:m1])
        for b in range(0, len(queries), block):
            b1 = min(b + block, len(queries))
            scores = (qv if qv is not None else _gather(space, queries[b:b1])) @ cv.T
            mine = np.flatnonzero((own[b:b1] >= m0) & (own[b:b1] < m1))
            scores[mine, own[b:b1][mine] - m0] = -np.inf  # never itself
            rows[b:b1], best[b:b1] = _keep(rows[b:b1], best[b:b1], scores, m0, k)
    return rows, best


def bounds(work_dir: Path, tasks: int, statements: int) -> dict:
    """bounds.npy: every statement's k-th best score within its cluster (`own_task`), -inf
    where its cluster has too few statements; written through a memmap, one task at a time."""
    work_dir = Path(work_dir)
    out = np.lib.format.open_memmap(work_dir / "bounds.tmp.npy", mode="w+", dtype=np.float32, shape=(statements,))
    seen = 0
    for t in range(tasks):
        stmt = np.load(work_dir / f"own-{t:05d}-stmt.npy")
        out[stmt] = np.load(work_dir / f"own-{t:05d}-scores.npy", mmap_mode="r")[:, -1]
        seen += len(stmt)
    out.flush()
    del out
    if seen != statements:
        raise RuntimeError(f"rows bounds: {seen} of the {statements} statements have a row within their cluster")
    (work_dir / "bounds.tmp.npy").replace(work_dir / "bounds.npy")
    return {"statements": statements}


def score_task(
    space_dir: Path, work_dir: Path, task: int, tasks: int, *, k: int, max_queries: int, memory_budget_mb: int
) -> dict:
    """The queries of this task's units against the other members of their cluster (those
    whose nearest cluster is another). One product serves both sides (cosine is symmetric): it
    is a candidate for the query if it reaches the query's bound (`bounds`) and for the member
    if it reaches the member's. A row ends at or above its bound, so nothing below can enter
    it: a compare per product instead of a top-k, and only the products that can still enter
    a row are kept, at most the best k per statement (the held candidates are cut to that
    whenever they outgrow an eighth of a score block, so RAM stays bounded whatever the
    bounds). Written as flat (statement, neighbour, score), sorted by statement:
    cross-TTTTT-{stmt,rows,scores}.npy."""
    space, work_dir = Space(space_dir), Path(work_dir)
    bound = np.load(work_dir / "bounds.npy", mmap_mode="r")
    cells = score_cells(memory_budget_mb)
    parts, products, reached, held = [(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32))], 0, 0, 0
    limit = cells // 8  # candidates held before they are cut to each statement's best k (~20 B each)
    for everyone, lo, hi, members in _units(work_dir, task, tasks, max_queries):
        members = np.asarray(members)
        at = np.minimum(np.searchsorted(everyone, members), len(everyone) - 1)
        others = members[everyone[at] != members]  # their own pairs were scored by own_task
        queries = everyone[lo:hi]
        products += len(queries) * len(others)
        for found in _cross(space, queries, others, np.asarray(bound[queries]), np.asarray(bound[others]), cells):
            parts.append(found)
            held += len(found[0])
            reached += len(found[0])
            if held > limit:
                parts = [_top_per_statement(*parts, k=k)]
                held = len(parts[0][0])
                limit = max(limit, 2 * held)  # at most k each: cut again once doubled
    stmt, cand, score = _top_per_statement(*parts, k=k)
    for name, arr in (("stmt", stmt), ("rows", cand), ("scores", score)):
        save_npy(work_dir / f"cross-{task:05d}-{name}.npy", arr)
    return {"task": task, "products": products, "reached_bound": reached, "candidates": len(stmt)}


def _descending(scores: np.ndarray) -> np.ndarray:
    """uint64 keys of finite float32 scores that sort the best first (an integer sort key:
    a stable sort of (statement << 32 | key) costs a twentieth of a 3-key lexsort)."""
    bits = (scores.astype(np.float32) + np.float32(0)).view(np.uint32)  # + 0: -0.0 ties 0.0
    ascending = np.where(bits >> np.uint32(31), ~bits, bits | np.uint32(1 << 31))
    return (~ascending).astype(np.uint64)


def _top_per_statement(*parts: tuple[np.ndarray, np.ndarray, np.ndarray], k: int):
    """(statement, neighbour, score) triples: each pair once, then each statement's best k by
    score then neighbour, sorted by statement."""
    stmt, cand, score = (np.concatenate(x) for x in zip(*parts))
    first = np.unique(stmt * (int(cand.max(initial=0)) + 1) + cand, return_index=True)[1]  # found both ways
    stmt, cand, score = stmt[first], cand[first], score[first]  # by statement, then neighbour
    order = np.argsort((stmt.astype(np.uint64) << np.uint64(32)) | _descending(score), kind="stable")
    stmt, cand, score = stmt[order], cand[order], score[order]
    keep = np.arange(len(stmt)) - np.searchsorted(stmt, stmt, side="left") < k
    return stmt[keep], cand[keep], score[keep]


def _cross(
    space: Space, queries: np.ndarray, members: np.ndarray, q_bound: np.ndarray, m_bound: np.ndarray, cells: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(statement, neighbour, score) of every product of queries x members that reaches the
    statement's bound, both ways, a block at a time. Members are gathered once each."""
    if not len(queries) or not len(members):
        return
    block = min(len(queries), max(1, cells // min(len(members), LANE)))
    cols = min(len(members), max(1, cells // block))
    qv = _gather(space, queries) if len(queries) == block else None  # one block: read once
    for m0 in range(0, len(members), cols):
        m1 = min(m0 + cols, len(members))
        mv, mb = _gather(space, members[m0:m1]), m_bound[m0:m1]
        for b in range(0, len(queries), block):
            b1 = min(b + block, len(queries))
            scores = (qv if qv is not None else _gather(space, queries[b:b1])) @ mv.T
            q, c = nonzero2d((scores >= q_bound[b:b1, None]) | (scores >= mb[None, :]))
            s, q_rows, m_rows = scores[q, c], queries[b + q], members[m0 + c]
            for_q, for_m = s >= q_bound[b + q], s >= mb[c]
            yield (
                np.concatenate([q_rows[for_q], m_rows[for_m]]),
                np.concatenate([m_rows[for_q], q_rows[for_m]]),
                np.concatenate([s[for_q], s[for_m]]),
            )


def _gather(space: Space, rows: np.ndarray) -> np.ndarray:
    """Unit rows, read from the space's files (`Space.read`): gathers spread over the space
    through its mapping would leave this process holding most of it."""
    x = space.read(rows)
    return x if space.normalized else unit_rows(x)


# Scores grouped this many at a time for the bound of `_keep`, fewer in lanes shorter than
# 4 k groups of them (a group's max is a candidate bound: the more groups, the tighter).
GROUP = 16
# Scores a query's lane should run along in one block: 4 k groups of GROUP.
LANE = 4096
# Lower than any score: a bound at least this keeps -inf (itself, padding) out of the candidates.
FLOOR = np.finfo(np.float32).min


def _bound(scores: np.ndarray, k: int) -> np.ndarray:
    """Per row of scores, a lower bound of its k-th best: the k-th best of the maxima of groups
    of GROUP scores (each of the k groups at or above it holds a score at least that high).
    -inf where a row has fewer than k groups (every score of it is then a candidate)."""
    n = scores.shape[1]
    size = min(GROUP, n // (4 * k)) or min(1, n // k)
    if size < 1:
        return np.full(len(scores), -np.inf, dtype=np.float32)
    g = n // size
    # group j holds scores j, j + g, j + 2g, ... of a row: a reduction over whole rows, fast
    top = scores[:, : g * size].reshape(len(scores), size, g).max(axis=1)
    return np.partition(top, g - k, axis=1)[:, g - k]


def _keep(rows: np.ndarray, best: np.ndarray, scores: np.ndarray, start: int, k: int):
    """Fold one block of scores (queries x candidates from local index `start`) into each
    query's best k (by score, then candidate). Only scores at or above a query's bound (its
    k-th best so far, or `_bound` of this block if higher) are candidates: a compare and a
    `flatnonzero` per score instead of an argpartition. Equal to an exact top-k."""
    bound = np.maximum(np.maximum(_bound(scores, k), best[:, -1]), FLOOR)
    q, c = nonzero2d(scores >= bound[:, None])
    if not len(q):
        return rows, best
    touched = np.unique(q)
    held = np.isfinite(best[touched])
    local = np.concatenate([np.nonzero(held)[0], np.searchsorted(touched, q)])
    rows, best = rows.copy(), best.copy()
    # held candidates come from earlier blocks (lower indices), in order: ties stay by candidate
    rows[touched], best[touched] = _best_k(
        local,
        np.concatenate([rows[touched][held], c + start]),
        np.concatenate([best[touched][held], scores[q, c]]),
        len(touched),
        k,
    )
    return rows, best


def _best_k(local: np.ndarray, cand: np.ndarray, scores: np.ndarray, n: int, k: int):
    """`topk.best_per_row` for candidates given in ascending order of candidate among
    equal (query, score): (n, k) best of each query by score then candidate, -1 / -inf padded.
    One stable integer sort (`_descending`) instead of a 3-key lexsort."""
    order = np.argsort((local.astype(np.uint64) << np.uint64(32)) | _descending(scores), kind="stable")
    return top_in_order(local, cand, scores, order, n, k)


def _global(rows: np.ndarray, local: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Local indices -> statement rows; -1 where no candidate was found (score -inf)."""
    return np.where(np.isfinite(scores), rows[np.maximum(local, 0)], -1)


class _Slices:
    """One .npy file of a task's candidates, read a slice at a time: its header parsed once, each
    slice read by offset (no mapping kept, so a merge's RAM is one tile's candidates; no file
    held open between slices, so a merge's descriptors do not grow with the score tasks)."""

    def __init__(self, path: Path):
        mapped = np.load(path, mmap_mode="r")  # numpy reads the header (any format version); the map is dropped
        if mapped.ndim > 1 and not mapped.flags.c_contiguous:
            raise ValueError(f"{path}: Fortran order (shardvec writes C order)")
        self.path, self.start, self.shape, self.dtype = path, mapped.offset, mapped.shape, mapped.dtype
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def read(self, a: int, b: int) -> np.ndarray:
        fd = os.open(self.path, os.O_RDONLY)
        try:
            data = os.pread(fd, (b - a) * self.row_bytes, self.start + a * self.row_bytes)
        finally:
            os.close(fd)
        if len(data) != (b - a) * self.row_bytes:
            raise DamagedFileError(f"{self.path}: rows {a}..{b} are past its end (a truncated file: rerun the nightly)")
        return np.frombuffer(data, dtype=self.dtype).reshape((b - a, *self.shape[1:]))


def merge_groups(tiles: int, workers: int) -> list[tuple[int, int]]:
    """The merge tasks' plan: tiles dealt into contiguous (first, end) groups, one merge task
    each, at most two per worker. A merge reads every score task's files; one merge task per
    tile parsed their headers tiles x tasks times (0.1 ms each): at 1M statements, a quarter of
    the merge's time."""
    assert workers >= 1
    edges = np.linspace(0, tiles, min(tiles, 2 * workers) + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def merge_tiles(
    work_dir: Path, first: int, end: int, tasks: int, out_dir: Path, *, k: int, tile_rows: int, statements: int
) -> dict:
    """Rows of tiles first..end-1, a tile at a time: every task's candidates for its statements
    (`own_task`, `score_task`), each neighbour once, best k by score then row; written durably in
    the format of exact rows. Returns the tiles' shard entries."""
    work_dir = Path(work_dir)
    bounds = np.arange(first, end + 1, dtype=np.int64) * tile_rows  # the group's tiles' first statements
    parts = []
    for t in range(tasks):
        for kind, per_statement in (("own", k), ("cross", 1)):
            stmt, rows, scores = (
                _Slices(work_dir / f"{kind}-{t:05d}-{name}.npy") for name in ("stmt", "rows", "scores")
            )
            at = np.searchsorted(np.load(stmt.path, mmap_mode="r"), bounds)  # each tile's slice of them
            parts.append(_Part(kind == "own", per_statement, at, stmt, rows, scores))
    shards = [
        _merge_tile(parts, tile - first, tile, out_dir, k=k, tile_rows=tile_rows, statements=statements)
        for tile in range(first, end)
    ]
    return {"shards": shards, "rows": sum(s["rows"] for s in shards)}


class _Part(NamedTuple):
    """One task's candidates of one kind, for a merge: where each tile's statements start."""

    own: bool
    per_statement: int  # candidates per statement: k (own) or 1 (cross)
    at: np.ndarray
    stmt: _Slices
    rows: _Slices
    scores: _Slices


def _merge_tile(
    parts: list[_Part], i: int, tile: int, out_dir: Path, *, k: int, tile_rows: int, statements: int
) -> dict:
    """Tile `tile` (the group's i-th): its candidates from every part, best k, written."""
    lo = tile * tile_rows
    n = min(tile_rows, statements - lo)
    local, cand, score, scored = [], [], [], 0
    for part in parts:
        a, b = int(part.at[i]), int(part.at[i + 1])
        if b > a:
            local.append(np.repeat(part.stmt.read(a, b) - lo, part.per_statement))
            cand.append(part.rows.read(a, b).ravel())
            score.append(part.scores.read(a, b).ravel())
            scored += (b - a) * part.own
    if scored != n:
        raise RuntimeError(f"rows tile {tile}: {scored} of its {n} statements were scored")
    local, cand, score = (np.concatenate(x) for x in (local, cand, score))
    keep = cand >= 0
    local, cand, score = local[keep], cand[keep], score[keep]
    once = np.unique(local * statements + cand, return_index=True)[1]  # each pair once, by neighbour
    return write_tile(out_dir, tile, *_best_k(local[once], cand[once], score[once], n, k))


def partitioned_rows(
    space_dir: Path,
    work_dir: Path,
    out_dir: Path,
    *,
    k: int,
    tile_rows: int,
    cluster_rows: int,
    probes: int,
    kmeans_sample: int,
    kmeans_iterations: int,
    seed: int,
    memory_budget_mb: int,
    tasks: int = 1,
) -> list[dict]:
    """Every step above in this process, in order (the flows run them as Dask tasks): the rows'
    shard entries, for `similarity.finish_rows`."""
    space, budget = Space(space_dir), dict(memory_budget_mb=memory_budget_mb)
    train_centroids(
        space_dir,
        work_dir,
        clusters=clusters_for(len(space), cluster_rows),
        sample=kmeans_sample,
        iterations=kmeans_iterations,
        seed=seed,
        **budget,
    )
    for s in range(space.n_shards):
        assign_shard(space_dir, s, work_dir, probes=probes, **budget)
    group(space_dir, work_dir)
    for t in range(tasks):
        own_task(space_dir, work_dir, t, tasks, k=k, max_queries=tile_rows, **budget)
    bounds(work_dir, tasks, len(space))
    for t in range(tasks):
        score_task(space_dir, work_dir, t, tasks, k=k, max_queries=tile_rows, **budget)
    keep_clusters(work_dir, out_dir, probes=probes)
    return merge_tiles(
        work_dir, 0, -(-len(space) // tile_rows), tasks, out_dir, k=k, tile_rows=tile_rows, statements=len(space)
    )["shards"]
