"""Similarity rows that scale: k-means partitions, exact scores inside each, one row per statement.

Exact rows cost n^2 products. Here each statement is scored only against the statements that
share its nearest cluster, so the cost is about n * probes * cluster_rows, linear in n:
  1. `train_centroids`: spherical k-means (seeded, on a bounded sample, a few Lloyd iterations);
  2. `assign_shard`: each statement's `probes` nearest centroids, per shard of the space;
  3. `group`: inverted lists on disk. A cluster's candidates are every statement assigned to it
     (any probe); its queries are the statements whose nearest centroid it is (each once);
  4. `score_task`: units of (cluster, slice of its queries) scored exactly against the
     cluster's candidates with the blocked kernel, in blocks sized from a memory budget. Each
     product serves both sides: a query's best among the candidates, and a candidate's best
     among the queries (cosine is symmetric);
  5. `merge_tile`: per statement, its candidates from every cluster it is in, best k, written in
     the format of exact rows (rows-NNNNN.npy / scores-NNNNN.npy, `tile_rows` a shard).
A true neighbour j of statement i is found when i's nearest cluster is among j's `probes`
nearest, or j's nearest among i's; recall is measured, not promised (`similarity.rows_recall`). Every step holds a
bounded number of rows in RAM: the sample, one shard, one block; never the corpus.
"""

from __future__ import annotations

import heapq
from pathlib import Path

import numpy as np

from shardvec.tasks.atomic import save_npy
from shardvec.tasks.similarity import write_tile
from shardvec.tasks.store import Space, shard_name
from shardvec.tasks.topk import NO_ROWS, best_per_row, empty_topk, fold_block, score_blocks, unit_rows

MB = 1 << 20
# Resident before any rows are touched: the interpreter, numpy/scipy/gensim, a Dask worker and
# its Prefect client (measured 250-330 MB); the rest of the budget is working memory.
BASELINE_MB = 384
# Bytes per score cell at the kernel's peak: the float32 score, argpartition's int64 index and
# a float32 temporary on the first block; masks and gathers are a few more.
CELL_BYTES = 24
# Above 4M cells (the exact search's block) a block is no faster: BLAS already runs at full
# speed, and the first block's argpartition only gets wider.
MAX_CELLS = 1 << 22


def score_cells(memory_budget_mb: int) -> int:
    """Score cells (queries x candidates) one block may hold within the process budget."""
    free = max(memory_budget_mb - BASELINE_MB, 16) * MB
    return int(min(MAX_CELLS, max(1 << 16, free // CELL_BYTES)))


def clusters_for(statements: int, cluster_rows: int) -> int:
    return max(1, -(-statements // cluster_rows))


def _sample(space: Space, size: int, rng: np.random.Generator) -> np.ndarray:
    picks = np.sort(rng.choice(len(space), size=min(size, len(space)), replace=False))
    return unit_rows(space.vectors_at(picks).astype(np.float32, copy=False))


def nearest(vecs: np.ndarray, centroids: np.ndarray, probes: int, cells: int) -> np.ndarray:
    """(n, probes) indices of each row's most similar centroids, best first."""
    probes = min(probes, len(centroids))
    out = np.empty((len(vecs), probes), dtype=np.int32)
    step = max(1, cells // len(centroids))
    for s in range(0, len(vecs), step):
        scores = vecs[s:s + step] @ centroids.T
        top = np.argpartition(-scores, probes - 1, axis=1)[:, :probes] if probes < scores.shape[1] else \
            np.argsort(-scores, axis=1)
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
        out[s:s + step] = np.take_along_axis(top, order, axis=1)
    return out


def train_centroids(space_dir: Path, work_dir: Path, *, clusters: int, sample: int, iterations: int,
                    seed: int, memory_budget_mb: int) -> dict:
    """Spherical k-means on a sample; centroids saved as work_dir/centroids.npy."""
    rng = np.random.default_rng(seed)
    x = _sample(Space(space_dir), max(sample, clusters), rng)
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
    near = nearest(vecs, centroids, probes, score_cells(memory_budget_mb))
    save_npy(work_dir / shard_name("assign", shard, "npy"), near)
    np.save(work_dir / shard_name("counts", shard, "npy"),
            np.stack([np.bincount(near.ravel(), minlength=len(centroids)),
                      np.bincount(near[:, 0], minlength=len(centroids))]))
    return {"shard": shard, "rows": len(near)}


def group(space_dir: Path, work_dir: Path) -> dict:
    """Inverted lists, written through memmaps one shard at a time (RAM: one shard):
    members.npy / members_offsets.npy (candidates per cluster, ascending rows) and
    queries.npy / queries_offsets.npy (each statement once, under its nearest cluster)."""
    space, work_dir = Space(space_dir), Path(work_dir)
    shards, rows_per_shard = space.n_shards, space.rows_per_shard
    counts = sum(np.load(work_dir / shard_name("counts", s, "npy")).astype(np.int64) for s in range(shards))
    offsets = {name: np.concatenate([[0], np.cumsum(c)]) for name, c in zip(("members", "queries"), counts)}
    out = {name: np.lib.format.open_memmap(work_dir / f"{name}.tmp.npy", mode="w+", dtype=np.int64,
                                           shape=(int(off[-1]),)) for name, off in offsets.items()}
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
    return {"clusters": len(sizes), "members": int(sizes.sum()), "largest_cluster": int(sizes.max()),
            "pairs_scored": int((counts[0] * counts[1]).sum())}


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


class _Candidates:
    """One cluster's candidate rows, gathered from the space a block at a time (never whole):
    a `topk.Scannable` whose row i is the space's row `rows[i]`."""
    normalized = True
    dead = NO_ROWS

    def __init__(self, space: Space, rows: np.ndarray):
        self.space, self.rows = space, rows

    def blocks(self, columns: int):
        for s in range(0, len(self.rows), columns):
            yield s, unit_rows(self.space.vectors_at(np.asarray(self.rows[s:s + columns])))


def score_task(space_dir: Path, work_dir: Path, task: int, tasks: int, *, k: int, max_queries: int,
               memory_budget_mb: int) -> dict:
    """Candidates for the statements of this task's units (`plan_tasks`): each query's best k
    among its cluster, and each member's best k among the cluster's queries (scores are
    symmetric: the same products serve both). Written sorted by statement row as
    out-TTTTT-{stmt,rows,scores}.npy for `merge_tile`; a statement may appear more than once."""
    space, work_dir = Space(space_dir), Path(work_dir)
    units = plan_tasks(work_dir, tasks=tasks, max_queries=max_queries)[task]
    members, m_off = np.load(work_dir / "members.npy", mmap_mode="r"), np.load(work_dir / "members_offsets.npy")
    queries, q_off = np.load(work_dir / "queries.npy", mmap_mode="r"), np.load(work_dir / "queries_offsets.npy")
    cells = score_cells(memory_budget_mb)
    found = [_score_unit(space, np.asarray(members[m_off[c]:m_off[c + 1]]),
                         np.asarray(queries[q_off[c] + lo:q_off[c] + hi]), k, cells) for c, lo, hi in units]
    parts = [p for f in found for p in f]
    stmt = np.concatenate([p[0] for p in parts]) if parts else np.empty(0, np.int64)
    order = np.argsort(stmt, kind="stable")
    for i, name in enumerate(("stmt", "rows", "scores")):
        arr = np.concatenate([p[i] for p in parts]) if parts else np.empty((0, k)[:1 + (i > 0)], np.float32)
        save_npy(work_dir / f"out-{task:05d}-{name}.npy", arr[order])
    return {"task": task, "units": len(units), "queries": int(sum(hi - lo for _, lo, hi in units)),
            "candidate_rows": len(stmt)}


def _score_unit(space: Space, members: np.ndarray, queries: np.ndarray, k: int, cells: int):
    """(queries, their best members) and (members, their best queries), as global rows."""
    cands = _Candidates(space, members)
    own = np.searchsorted(members, queries)  # every query is among its own cluster's candidates
    block = max(1, min(1024, cells // 4096))
    q_rows, q_scores = empty_topk(len(queries), k)
    m_rows, m_scores = empty_topk(len(members), k)
    for b in range(0, len(queries), block):
        r, s = empty_topk(min(block, len(queries) - b), k)
        for start, cols, scores in score_blocks(cands, space.vectors_at(queries[b:b + block]), own[b:b + block], cells):
            r, s = fold_block(r, s, start, scores, k)
            end = start + len(cols)
            m_rows[start:end], m_scores[start:end] = fold_block(m_rows[start:end], m_scores[start:end], b,
                                                                np.ascontiguousarray(scores.T), k)
        q_rows[b:b + len(r)], q_scores[b:b + len(r)] = r, s
    return (queries, _global(members, q_rows, q_scores), q_scores), (members, _global(queries, m_rows, m_scores), m_scores)


def _global(rows: np.ndarray, local: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Local indices -> statement rows; -1 where no candidate was found (score -inf)."""
    return np.where(np.isfinite(scores), rows[np.maximum(local, 0)], -1)


def merge_tile(work_dir: Path, tile: int, tasks: int, out_dir: Path, *, k: int, tile_rows: int,
               statements: int) -> dict:
    """Rows tile*tile_rows..: every score task's candidates for them, each neighbour once, best k
    by score then row; written durably in the format of exact rows."""
    work_dir, lo = Path(work_dir), tile * tile_rows
    n = min(tile_rows, statements - lo)
    local, cand, score = [], [], []
    for t in range(tasks):
        stmt = np.load(work_dir / f"out-{t:05d}-stmt.npy", mmap_mode="r")
        a, b = np.searchsorted(stmt, [lo, lo + n])
        if b > a:
            local.append(np.repeat(np.asarray(stmt[a:b]) - lo, k))
            cand.append(np.load(work_dir / f"out-{t:05d}-rows.npy", mmap_mode="r")[a:b].ravel())
            score.append(np.load(work_dir / f"out-{t:05d}-scores.npy", mmap_mode="r")[a:b].ravel())
    local, cand, score = (np.concatenate(x) for x in (local, cand, score))
    if len(np.unique(local)) != n:
        raise RuntimeError(f"rows tile {tile}: {len(np.unique(local))} of its {n} statements were scored")
    keep = cand >= 0
    local, cand, score = local[keep], cand[keep], score[keep]
    once = np.unique(local * statements + cand, return_index=True)[1]  # a pair found from both sides
    return write_tile(out_dir, tile, *best_per_row(local[once], cand[once], score[once], n, k))


def partitioned_rows(space_dir: Path, work_dir: Path, out_dir: Path, *, k: int, tile_rows: int, cluster_rows: int,
                     probes: int, kmeans_sample: int, kmeans_iterations: int, seed: int, memory_budget_mb: int,
                     tasks: int = 1) -> list[dict]:
    """Every step above in this process, in order (the flows run them as Dask tasks): the rows'
    shard entries, for `similarity.finish_rows`."""
    space, budget = Space(space_dir), dict(memory_budget_mb=memory_budget_mb)
    train_centroids(space_dir, work_dir, clusters=clusters_for(len(space), cluster_rows), sample=kmeans_sample,
                    iterations=kmeans_iterations, seed=seed, **budget)
    for s in range(space.n_shards):
        assign_shard(space_dir, s, work_dir, probes=probes, **budget)
    group(space_dir, work_dir)
    for t in range(tasks):
        score_task(space_dir, work_dir, t, tasks, k=k, max_queries=tile_rows, **budget)
    return [merge_tile(work_dir, tile, tasks, out_dir, k=k, tile_rows=tile_rows, statements=len(space))
            for tile in range(-(-len(space) // tile_rows))]
