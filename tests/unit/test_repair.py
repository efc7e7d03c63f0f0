"""repair.repair_rows on its own, without an Adder or a data directory: a view held in RAM
takes batches of adds and deletes, and every row stays the exact best of the live statements."""

from __future__ import annotations

import numpy as np

from shardvec.tasks.search.repair import Holders, fill, refilled, repair_rows
from shardvec.tasks.search.topk import exact_topk, score_blocks, unit_rows


class InRam:
    """What repair_rows needs of segments.Statements, held in RAM."""

    normalized = True

    def __init__(self, vecs: np.ndarray, k: int, width: int):
        self.vecs, self.k, self.width = vecs, k, width
        self.dead = np.empty(0, np.int64)
        self.rows, self.scores = exact_topk(self, vecs, width, exclude=np.arange(len(vecs)))

    def __len__(self) -> int:
        return len(self.vecs)

    def blocks(self, columns: int):
        for c in range(0, len(self.vecs), columns):
            yield c, self.vecs[c : c + columns]

    def scored(self, vecs: np.ndarray):
        for start, block, scores in score_blocks(self, vecs):
            yield np.arange(start, start + len(block)), scores

    def full_row(self, r: int):
        return self.rows[r], self.scores[r]

    def vectors_at(self, rows) -> np.ndarray:
        return self.vecs[np.asarray(rows, np.int64)]

    def rows_holding(self, targets: np.ndarray):
        hit = np.flatnonzero(np.isin(self.rows, targets).any(axis=1))
        return hit, self.rows[hit].copy(), self.scores[hit].copy()

    def take(self, vecs: np.ndarray, dead: np.ndarray, changes) -> None:
        """What writing the batch's segment does to the view."""
        self.vecs = np.concatenate([self.vecs, vecs])
        self.rows = np.concatenate([self.rows, changes.new_rows])
        self.scores = np.concatenate([self.scores, changes.new_scores])
        self.rows[changes.row_ids], self.scores[changes.row_ids] = changes.rows, changes.scores
        self.dead = np.union1d(self.dead, dead)


def assert_exact(view: InRam) -> None:
    live = np.setdiff1d(np.arange(len(view)), view.dead)
    exact_r, exact_s = exact_topk(view, view.vecs[live], view.width, exclude=live)
    for i, r in enumerate(live):
        held = int((view.rows[r] >= 0).sum())
        assert held >= min(view.k, len(live) - 1), (r, held)
        assert np.array_equal(view.rows[r][:held], exact_r[i][:held]), r
        assert np.allclose(view.scores[r][:held], exact_s[i][:held], atol=1e-5), r
        assert not np.isin(view.rows[r], view.dead).any(), r


def test_rows_stay_exact_through_batches_of_adds_and_deletes():
    rng = np.random.default_rng(7)
    view = InRam(unit_rows(rng.normal(size=(80, 6)).astype(np.float32)), k=3, width=5)
    valid, last = fill(view.rows, view.scores)
    for adds, deletes in [(5, 0), (1, 0), (0, 1), (0, 12), (3, 4), (1, 1), (20, 0), (0, 30)]:
        live = np.setdiff1d(np.arange(len(view)), view.dead)
        dead = np.sort(rng.choice(live, deletes, replace=False)).astype(np.int64)
        vecs = unit_rows(rng.normal(size=(adds, 6)).astype(np.float32))
        before = view.dead.copy()
        changes = repair_rows(view, vecs, dead, valid, last)
        assert np.array_equal(view.dead, before)  # the view is left as it was
        assert np.array_equal(changes.new_ids, np.arange(len(view), len(view) + adds))
        row_ids, rows, scores = changes.written()
        valid, last = refilled(valid, last, adds, row_ids, rows, scores)
        view.take(vecs, dead, changes)
        assert_exact(view)
        assert np.array_equal(valid, fill(view.rows, view.scores)[0])


def test_holders_name_every_row_holding_a_statement():
    rows = np.array([[1, 2, -1], [0, 2, 3], [3, -1, -1], [0, 1, 2]])

    class Rows:  # the part of similarity.SimilarityRows Holders reads: two shards of two rows
        manifest = {"rows": 4, "shards": [{"shard": 0}, {"shard": 1}]}
        rows_per_shard = 2

        def shard(self, s):
            return rows[2 * s : 2 * s + 2], None

    holders = Holders(Rows())
    for target in range(4):
        assert (
            sorted(holders.holding(np.array([target])).tolist())
            == np.flatnonzero((rows == target).any(axis=1)).tolist()
        )
    assert holders.holding(np.array([], np.int64)).tolist() == []
