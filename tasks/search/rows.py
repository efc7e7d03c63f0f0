"""Exact similarity rows of every statement, each pair of tiles scored once.

Scores are symmetric (cos(a, b) = cos(b, a)), so one product of tiles i and j serves the rows
of both. Three steps, a task per tile or pair:
  1. `own_tile`: a tile against itself gives each row's best k there, and so a lower bound of
     its final k-th best score;
  2. `tile_pair`: tiles i < j: a score at or above a row's bound is a candidate for it (about k
     per row per tile), for the rows of both tiles from the one product;
  3. `merge_tile`: each row's candidates from every tile, best k, written as the tile's rows.
Exact: a true neighbour scores at least the final k-th best, which is at least the bound. The
rows cost about half the products of a row-by-row search, and no running top-k is kept.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shardvec.tasks.search.index import SpaceIndex
from shardvec.tasks.search.similarity import tile_count, write_tile
from shardvec.tasks.storage.spaces import Space
from shardvec.tasks.search.topk import (
    RowsInRam,
    best_per_row,
    columns_for,
    exact_topk,
    merge_topk,
    nonzero2d,
    unit_rows,
)


def tile_pairs(rows: int, tile_rows: int) -> list[tuple[int, int]]:
    n = tile_count(rows, tile_rows)
    return [(i, j) for i in range(n) for j in range(i + 1, n)]


def _tile(space: Space, tile: int, tile_rows: int) -> RowsInRam:
    """Unit rows of one tile, held in RAM."""
    lo = tile * tile_rows
    return RowsInRam(unit_rows(np.asarray(space.range(lo, min(lo + tile_rows, len(space))), dtype=np.float32)), lo)


def _save(work_dir: Path, mine: int, other: int, rows: np.ndarray, scores: np.ndarray) -> None:
    work_dir.mkdir(parents=True, exist_ok=True)
    np.save(work_dir / f"cand-{mine}-{other}-rows.npy", rows)
    np.save(work_dir / f"cand-{mine}-{other}-scores.npy", scores)


def own_tile(space_dir: Path, tile: int, work_dir: Path, *, k: int, tile_rows: int, block_rows: int) -> dict:
    """Best k of each row of the tile within the tile (self excluded), and their k-th scores."""
    t = _tile(Space(space_dir), tile, tile_rows)
    rows = np.empty((len(t.vecs), k), dtype=np.int64)
    scores = np.empty((len(t.vecs), k), dtype=np.float32)
    for b in range(0, len(t.vecs), block_rows):
        q = t.vecs[b : b + block_rows]
        own = np.arange(t.first + b, t.first + b + len(q))
        rows[b : b + len(q)], scores[b : b + len(q)] = exact_topk(t, q, k, exclude=own)
    work_dir = Path(work_dir)
    _save(work_dir, tile, tile, rows, scores)
    np.save(work_dir / f"bound-{tile}.npy", scores[:, -1])  # -inf where the tile has fewer than k others
    return {"tile": tile, "rows": len(t.vecs)}


def tile_pair(space_dir: Path, ti: int, tj: int, work_dir: Path, *, k: int, tile_rows: int, block_rows: int) -> dict:
    """Candidates of tile ti's rows among tj's and of tj's among ti's, from one product."""
    space, work_dir = Space(space_dir), Path(work_dir)
    a, b = _tile(space, ti, tile_rows), _tile(space, tj, tile_rows)
    bound_a, bound_b = np.load(work_dir / f"bound-{ti}.npy"), np.load(work_dir / f"bound-{tj}.npy")
    found = {ti: ([], [], []), tj: ([], [], [])}  # per side: local row, candidate row, score
    columns = columns_for(block_rows)
    for i in range(0, len(a.vecs), block_rows):
        q = a.vecs[i : i + block_rows]
        for j in range(0, len(b.vecs), columns):
            scores = q @ b.vecs[j : j + columns].T
            r, c = _best_k(*nonzero2d(scores >= bound_a[i : i + len(q), None]), scores, len(q), k)
            _add(found[ti], r + i, c + b.first + j, scores[r, c])
            c, r = _best_k(
                *nonzero2d((scores >= bound_b[None, j : j + scores.shape[1]]).T), scores.T, scores.shape[1], k
            )
            _add(found[tj], c + j, r + a.first + i, scores[r, c])
    for mine, other, n in ((ti, tj, len(a.vecs)), (tj, ti, len(b.vecs))):
        _save(work_dir, mine, other, *best_per_row(*(np.concatenate(x) for x in found[mine]), n, k))
    return {"tiles": [ti, tj], "candidates": sum(len(x) for side in found.values() for x in side[0])}


def _best_k(r: np.ndarray, c: np.ndarray, scores: np.ndarray, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The block's candidates (row r, column c of `scores`, n rows), cut to the best k of each row
    (by score, then column: the earlier row wins a tie, as in merging) when there are more than k
    a row on average: ties with a bound are as many as a tile's rows when its rows are one text
    repeated, and held them all (16,384 x 16,384 a tile pair) took a worker down every night."""
    if len(r) <= k * n:
        return r, c
    rows, _ = best_per_row(r, c, scores[r, c], n, k)
    keep = rows >= 0
    return np.nonzero(keep)[0], rows[keep]


def _add(side: tuple[list, list, list], local, cand, scores) -> None:
    side[0].append(local)
    side[1].append(cand)
    side[2].append(scores.astype(np.float32))


def merge_tile(work_dir: Path, tile: int, tiles: int, out_dir: Path, *, k: int) -> dict:
    """A tile's final rows: the best k of its candidates from every tile, written durably."""
    work_dir = Path(work_dir)
    rows = scores = None
    for other in range(tiles):
        r = np.load(work_dir / f"cand-{tile}-{other}-rows.npy")
        s = np.load(work_dir / f"cand-{tile}-{other}-scores.npy")
        rows, scores = (r, s) if rows is None else merge_topk(rows, scores, r, s, k)
    rows[~np.isfinite(scores)] = -1
    return write_tile(out_dir, tile, rows, scores)


def rows_for_tile(
    space_dir: Path,
    tile: int,
    out_dir: Path,
    *,
    k: int,
    tile_rows: int,
    block_rows: int,
    method: str = "exact",
    index_dir: Path | None = None,
    nprobe: int | None = None,
) -> dict:
    """Top-k rows (self excluded) of statements tile*tile_rows.. (one task each), written durably.

    Tiles, not the space's shards, are the unit: equal tiles keep every worker busy to the end.
    """
    space = Space(space_dir)
    start = tile * tile_rows
    vecs = space.range(start, min(start + tile_rows, len(space)))
    rows = np.empty((len(vecs), k), dtype=np.int64)
    scores = np.empty((len(vecs), k), dtype=np.float32)
    index = SpaceIndex(index_dir, space.dim) if method == "index" else None
    for b in range(0, len(vecs), block_rows):
        block = np.asarray(vecs[b : b + block_rows])
        own = np.arange(start + b, start + b + len(block), dtype=np.int64)
        if index is None:
            r, s = exact_topk(space, block, k, exclude=own)
        else:
            r, s = index.search_many(block, k, effort=nprobe, exclude=own)
        rows[b : b + len(block)], scores[b : b + len(block)] = r, s
    return write_tile(out_dir, tile, rows, scores)
