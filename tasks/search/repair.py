"""Keeping the stored similarity rows exact while statements are added and deleted.

Every stored row stays the exact best `width` (or fewer) of the live statements. `repair_rows`
works out what one batch changes, given the live statements (`segments.Statements`), the
batch's new vectors, the rows dying now and the per-row fill state (`fill`); tasks/changes/additions.py
embeds the batch before and writes the result as a segment after. `Holders` is the reverse
index of a version's rows that finds the rows holding a deleted statement without a pass over
every row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shardvec.tasks.search.similarity import SimilarityRows
from shardvec.tasks.search.topk import exact_topk, fold_block, merge_topk


class Holders:
    """Reverse index of a version's stored rows: which rows hold a given statement. Built once
    per version in RAM (two int32 arrays of rows x width when they fit), so a single delete
    finds the rows to repair without a pass over every row."""

    def __init__(self, base_rows: SimilarityRows):
        itype = np.int32 if base_rows.manifest.get("rows", 2**31) < 2**31 - 1 else np.int64
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


@dataclass(frozen=True)
class RowChanges:
    """The rows one batch writes: existing rows it changed (ascending row ids) and the new
    statements' own rows (row ids following the live statements'), each full `width`, padded
    with row -1 / score -inf."""

    row_ids: np.ndarray
    rows: np.ndarray
    scores: np.ndarray
    new_ids: np.ndarray
    new_rows: np.ndarray
    new_scores: np.ndarray

    def written(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row ids, rows, scores) as a segment stores them: the changed rows, then the new ones."""
        return (
            np.concatenate([self.row_ids, self.new_ids]),
            np.concatenate([self.rows, self.new_rows]),
            np.concatenate([self.scores, self.new_scores]),
        )


def repair_rows(view, vecs: np.ndarray, dead: np.ndarray, valid: np.ndarray, last: np.ndarray) -> RowChanges:
    """The rows that change when the statements of `vecs` (batch x dim, as `embed.Embedder`
    gives them) join the live statements `view` (a `segments.Statements`) and its rows `dead`
    die; `valid`, `last`: each row's fill state before (`Statements.fill`). `view` is left as
    it was.

    Every stored row stays the exact best `width` (or fewer) of the live statements:
    - a row that held a statement dying now drops it and its next neighbours move up; only
      a row left with fewer than k (and not holding every live statement) is rescanned;
    - a new statement enters a row if it beats the row's last neighbour, or anywhere in a
      row that is not full only if that row holds every other live statement (else a
      statement the row never kept could lie between)."""
    k, w = view.k, view.width
    B, n0 = len(vecs), len(view)
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
        valid, last = valid.copy(), last.copy()
        if changed:
            moved = np.fromiter(changed, np.int64, len(changed))
            valid[moved], last[moved] = fill(
                np.stack([changed[r][0] for r in moved.tolist()]), np.stack([changed[r][1] for r in moved.tolist()])
            )
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
                merged_r, merged_s = merge_topk(
                    np.stack([o[0] for o in old]),
                    np.stack([o[1] for o in old]),
                    np.broadcast_to(new_rows, cand_s.shape),
                    cand_s,
                    w,
                )
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
    rows = np.array([changed[r][0] for r in order], dtype=np.int64).reshape(-1, w)
    scores = np.array([changed[r][1] for r in order], dtype=np.float32).reshape(-1, w)
    rows[~np.isfinite(scores)] = -1
    return RowChanges(np.array(order, dtype=np.int64), rows, scores, new_rows, best_r, best_s)


def refilled(
    valid: np.ndarray, last: np.ndarray, added: int, row_ids: np.ndarray, rows: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The per-row fill state after `added` statements joined and `row_ids` were rewritten."""
    valid = np.concatenate([valid, np.zeros(added, np.int64)])
    last = np.concatenate([last, np.full(added, -np.inf, np.float32)])
    valid[row_ids], last[row_ids] = fill(rows, scores)
    return valid, last
