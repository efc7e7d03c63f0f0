"""The exact top-k kernel: cosine scores by blocked matrix products, the best k kept per query.

A search streams what it scans block by block (a memmapped space shard by shard, or rows held
in RAM), keeps the best k per query of each block and merges: RAM is one block of scores, never
the whole space. Everything that finds neighbours exactly goes through here: readers' queries,
the similarity rows (tasks/search/rows.py, tasks/search/partitioned.py), additions (tasks/changes/segments.py,
tasks/search/repair.py) and the recall checks. Results are (rows, scores) arrays, queries x k, best
first (score descending, then row ascending), padded with row -1 / score -inf.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

import numpy as np


class Scannable(Protocol):
    """What `exact_topk` and `score_blocks` scan (a `store.Space`, the live statements of
    `segments.Statements`, rows held in RAM).

    - `blocks(columns)`: (first row, rows) pieces of at most `columns` rows, each row once, in
      row order; the rows may be memmapped and are read once.
    - `normalized`: every row has unit length, so a dot product is already the cosine.
    - `dead`: sorted rows never returned (deleted statements); empty for most.
    """

    @property
    def normalized(self) -> bool: ...

    @property
    def dead(self) -> np.ndarray: ...

    def blocks(self, columns: int) -> Iterable[tuple[int, np.ndarray]]: ...


NO_ROWS = np.empty(0, dtype=np.int64)


class RowsInRam:
    """Rows held in RAM as a `Scannable`; row i of `vecs` is row `first + i`."""

    dead = NO_ROWS

    def __init__(self, vecs: np.ndarray, first: int = 0, normalized: bool = True):
        self.vecs, self.first, self.normalized = vecs, first, normalized

    def __len__(self) -> int:
        return len(self.vecs)

    def blocks(self, columns: int) -> Iterator[tuple[int, np.ndarray]]:
        for s in range(0, len(self.vecs), columns):
            yield self.first + s, self.vecs[s : s + columns]


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Each row divided by its length (all-zero rows stay zero)."""
    n = np.linalg.norm(x, axis=1, keepdims=True)
    n[n == 0] = 1.0
    return x / n


# Scores computed at once (queries x space rows): bounds search RAM whatever the corpus size,
# and keeps blocks wide for few queries (one add) so per-block overhead stays small.
SCORE_BUDGET = 4 << 20


def columns_for(queries: int, cells: int = SCORE_BUDGET) -> int:
    """Rows per block so that one block's scores for `queries` queries fit in `cells`."""
    return int(min(1 << 20, max(1024, cells // max(queries, 1))))


def empty_topk(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, scores) of n queries that have found nothing yet: -1 / -inf."""
    return np.full((n, k), -1, dtype=np.int64), np.full((n, k), -np.inf, dtype=np.float32)


def merge_topk(
    best_rows: np.ndarray, best_scores: np.ndarray, rows: np.ndarray, scores: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Best k per query of two candidate sets (queries x any), sorted by score descending then row."""
    rows, scores = np.hstack([best_rows, rows]), np.hstack([best_scores, scores])
    if len(rows) == 1:  # one query (a reader's): 1-d sorts cost a tenth of the 2-d take_along_axis
        order = np.lexsort((rows[0], -scores[0]))[:k]
        return rows[:, order], scores[:, order]
    if scores.shape[1] > max(4 * k, 64):  # a few columns (a reader's merge): one sort is cheaper
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        rows, scores = np.take_along_axis(rows, part, axis=1), np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((rows, -scores), axis=1)[:, :k]
    return np.take_along_axis(rows, order, axis=1), np.take_along_axis(scores, order, axis=1)


def exact_topk(
    space: Scannable, queries: np.ndarray, k: int, exclude: np.ndarray | None = None, cells: int = SCORE_BUDGET
) -> tuple[np.ndarray, np.ndarray]:
    """The k rows of `space` most cosine-similar to each query (rows -1 / score -inf where too
    few). `exclude[i]` is a row never returned for query i (its own row), or -1; rows in
    `space.dead` are never returned. `cells` bounds the scores held at once (queries x columns).
    """
    best: tuple[np.ndarray, np.ndarray] | None = None
    for start, _block, scores in score_blocks(space, queries, exclude, cells):
        best = fold_block(*(best or empty_topk(len(scores), k)), start, scores, k)
    if best is None:
        return empty_topk(len(np.atleast_2d(queries)), k)
    best_rows, best_scores = best
    best_rows[~np.isfinite(best_scores)] = -1
    return best_rows, best_scores.astype(np.float32)


def fold_block(
    best_rows: np.ndarray,
    best_scores: np.ndarray,
    start: int,
    scores: np.ndarray,
    k: int,
    ids: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Fold one block of scores (queries x columns starting at row `start`, or the ascending
    rows `ids` when given) into the best k.

    Once a query holds k candidates, only scores above its k-th best can enter: a max, a
    comparison and `nonzero` over the block (about 1 ns a score) instead of an argpartition
    (about 4 ns). Later rows never win a tie against earlier ones, so the result is the same.
    """
    kth = best_scores[:, -1]
    if not np.isfinite(kth).all():
        kk = min(k, scores.shape[1])
        idx = np.argpartition(scores, scores.shape[1] - kk, axis=1)[:, -kk:]
        return merge_topk(
            best_rows, best_scores, idx + start if ids is None else ids[idx], np.take_along_axis(scores, idx, axis=1), k
        )
    hit = np.flatnonzero(scores.max(axis=1) > kth)  # queries with any candidate: few, after warm-up
    if not len(hit):
        return best_rows, best_scores
    q, c = nonzero2d(scores[hit] > kth[hit, None])
    return _fold_candidates(best_rows, best_scores, hit[q], c + start if ids is None else ids[c], scores[hit[q], c], k)


def nonzero2d(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.nonzero of a 2-d mask, 15x faster: numpy's 2-d nonzero costs ~4 ns an element,
    flatnonzero ~0.3 ns."""
    return np.divmod(np.flatnonzero(mask), mask.shape[1])


def _fold_candidates(best_rows, best_scores, q, cand_rows, cand_scores, k):
    """Merge candidates (query q[i] gets row cand_rows[i] at cand_scores[i]) into the best k."""
    queries = np.unique(q)
    held_rows, held_scores = best_rows[queries], best_scores[queries]
    held = np.isfinite(held_scores)
    local = np.concatenate([np.nonzero(held)[0], np.searchsorted(queries, q)])
    best_rows, best_scores = best_rows.copy(), best_scores.copy()
    best_rows[queries], best_scores[queries] = best_per_row(
        local,
        np.concatenate([held_rows[held], cand_rows]),
        np.concatenate([held_scores[held], cand_scores]),
        len(queries),
        k,
    )
    return best_rows, best_scores


def best_per_row(local: np.ndarray, cand: np.ndarray, scores: np.ndarray, n: int, k: int):
    """(n, k) best candidates of each of n queries (query local[i] gets row cand[i] at
    scores[i]), by score then row; padded with -1 / -inf."""
    return top_in_order(local, cand, scores, np.lexsort((cand, -scores, local)), n, k)


def top_in_order(local: np.ndarray, cand: np.ndarray, scores: np.ndarray, order: np.ndarray, n: int, k: int):
    """`best_per_row` given the `order` that sorts the candidates by query, then best first:
    the first k of each query, (n, k), padded with -1 / -inf."""
    rows, best = empty_topk(n, k)
    local, cand, scores = local[order], cand[order], scores[order]
    rank = np.arange(len(local)) - np.searchsorted(local, local, side="left")
    keep = rank < k
    rows[local[keep], rank[keep]] = cand[keep]
    best[local[keep], rank[keep]] = scores[keep]
    return rows, best


def dot_one(q: np.ndarray, block: np.ndarray) -> np.ndarray:
    """block @ q for one query (a reader's), by faiss's SIMD loop: no threads, and 2x numpy's
    einsum (10k x 200: 0.25 against 0.5 ms). Not BLAS, whose threads cost 10x for one row on a
    busy machine (8.6 ms against 0.86 ms on 2 loaded cores) and then spin beside the caller."""
    import faiss  # here: the processes that never score one query need not load it

    block = np.ascontiguousarray(block, dtype=np.float32)
    q = np.ascontiguousarray(q, dtype=np.float32)
    out = np.empty(len(block), np.float32)
    if len(block):
        # faiss's own stubs (faiss/__init__.pyi) leave out this SWIG function
        ny = faiss.fvec_inner_products_ny  # type: ignore[attr-defined]
        ny(faiss.swig_ptr(out), faiss.swig_ptr(q), faiss.swig_ptr(block), len(q), len(block))
    return out


def score_blocks(
    space: Scannable, queries: np.ndarray, exclude: np.ndarray | None = None, cells: int = SCORE_BUDGET
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(first row, rows, cosine scores queries x rows) for every block of the space; excluded
    and dead rows score -inf."""
    q = unit_rows(np.atleast_2d(np.asarray(queries, dtype=np.float32)))
    dead = space.dead
    for start, block in space.blocks(columns_for(len(q), cells)):
        block = np.asarray(block)
        scores = q @ block.T if len(q) > 1 else dot_one(q[0], block)[None]
        if not space.normalized:
            norms = np.linalg.norm(block, axis=1)
            norms[norms == 0] = 1.0
            scores /= norms
        if exclude is not None:
            local = exclude - start
            hit = (local >= 0) & (local < len(block))
            scores[np.flatnonzero(hit), local[hit]] = -np.inf
        if len(dead):
            local = dead[(dead >= start) & (dead < start + len(block))] - start
            scores[:, local] = -np.inf
        yield start, block, scores


def recall_at_k(
    found: np.ndarray,
    truth: np.ndarray,
    found_scores: np.ndarray | None = None,
    truth_scores: np.ndarray | None = None,
    tie: float = 1e-6,
) -> float:
    """Share of the true top-k ids found. Given scores, a found id that ties the true k-th
    score (within `tie`: equal vectors scored by differently shaped products) counts as found."""
    hits = total = 0
    for i, (f, t) in enumerate(zip(found, truth)):
        t_set = set(int(x) for x in t if x >= 0)
        ok = [int(x) in t_set for x in f if x >= 0]
        if found_scores is not None and truth_scores is not None and len(t_set):
            kth = truth_scores[i][len(t_set) - 1]
            ok = [o or abs(float(sc) - float(kth)) <= tie for o, sc in zip(ok, found_scores[i])]
        hits += min(sum(ok), len(t_set))
        total += len(t_set)
    return hits / total if total else 1.0
