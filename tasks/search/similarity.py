"""Similarity rows on disk: the top-k most similar statements of every statement.

Rows are stored per tile of the statement space: `rows-00000.npy` (int64 statement rows, -1
where fewer than k exist) and `scores-00000.npy` (cosine scores, -inf there), plus a
manifest. tasks/search/rows.py and tasks/search/partitioned.py compute them with the kernel of tasks/search/topk.py;
`rows_recall` measures them against a fresh exact search.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from shardvec.tasks.storage.atomic import save_npy, sha256_file, write_json
from shardvec.tasks.storage.spaces import Space, by_shard, shard_name
from shardvec.tasks.search.topk import exact_topk, recall_at_k


def tile_count(rows: int, tile_rows: int) -> int:
    return max(1, -(-rows // tile_rows))


def write_tile(out_dir: Path, tile: int, rows: np.ndarray, scores: np.ndarray) -> dict:
    """Write one tile's rows and scores durably; returns its manifest entry."""
    out_dir = Path(out_dir)
    r_path = save_npy(out_dir / shard_name("rows", tile, "npy"), rows)
    s_path = save_npy(out_dir / shard_name("scores", tile, "npy"), scores)
    return {
        "shard": tile,
        "rows": len(rows),
        "files": [r_path.name, s_path.name],
        "sha256": {p.name: sha256_file(p) for p in (r_path, s_path)},
    }


def tile_entries(merged: list[dict]) -> list[dict]:
    """The rows' shard entries from the merge tasks' results: one tile's entry each (exact rows)
    or a group's {"shards": [...]} (`partitioned.merge_tiles`)."""
    return [entry for result in merged for entry in result.get("shards", [result])]


def finish_rows(
    out_dir: Path, shards: list[dict], *, k: int, method: str, rows_per_shard: int, width: int | None = None
) -> dict:
    """The rows' manifest: readers see `k` neighbours of the `width` stored per row."""
    manifest = {
        "format": 1,
        "kind": "similarity",
        "k": k,
        "width": width or k,
        "method": method,
        "rows_per_shard": rows_per_shard,
        "rows": sum(s["rows"] for s in shards),
        "shards": sorted(shards, key=lambda s: s["shard"]),
    }
    write_json(Path(out_dir) / "manifest.json", manifest)
    return manifest


def rows_recall(space_dir: Path, rows_dir: Path, *, sample: int, seed: int) -> dict:
    """recall@k of the stored rows against a fresh exact search, on a sample of statements."""
    space = Space(space_dir)
    sim = SimilarityRows(rows_dir)
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(len(space), size=min(sample, len(space)), replace=False))
    exact, exact_s = exact_topk(space, space.vectors_at(picks), sim.k, exclude=picks)
    stored = [sim.row(int(p)) for p in picks]
    found, found_s = np.stack([r for r, _ in stored]), np.stack([s for _, s in stored])
    return {"rows_recall_at_k": recall_at_k(found, exact, found_s, exact_s), "k": sim.k, "sample": len(picks)}


class SimilarityRows:
    """The stored top-k rows, memmapped: `row(r)` -> (neighbour rows, scores).

    Each row stores `width` >= k neighbours, best first (-1 / -inf pad a row that holds fewer):
    always the exact best of the live statements, so its first k are what readers get, and a
    delete can shift the rest up (tasks/search/repair.py)."""

    def __init__(self, rows_dir: Path):
        self.dir = Path(rows_dir)
        self.manifest = json.loads((self.dir / "manifest.json").read_text())
        self.k = self.manifest["k"]
        self.width = self.manifest.get("width", self.k)
        self.rows_per_shard = self.manifest["rows_per_shard"]
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def shard(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        """The memmapped (rows, scores) of stored shard s: `rows_per_shard` statements each."""
        if s not in self._cache:
            self._cache[s] = (
                np.load(self.dir / shard_name("rows", s, "npy"), mmap_mode="r"),
                np.load(self.dir / shard_name("scores", s, "npy"), mmap_mode="r"),
            )
        return self._cache[s]

    def row(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        """The k neighbours readers see."""
        rows, scores = self.full(r)
        return rows[: self.k], scores[: self.k]

    def full(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        """All `width` stored neighbours."""
        s, off = divmod(int(r), self.rows_per_shard)
        rows, scores = self.shard(s)
        return np.asarray(rows[off]), np.asarray(scores[off])

    def full_many(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`full` of many rows (any order): one gather per stored shard they fall in."""
        out_rows = np.empty((len(rows), self.width), np.int64)
        out_scores = np.empty((len(rows), self.width), np.float32)
        for s, at, off in by_shard(rows, self.rows_per_shard):
            stored_rows, stored_scores = self.shard(s)
            out_rows[at], out_scores[at] = stored_rows[off], stored_scores[off]
        return out_rows, out_scores

    def verify(self) -> list[str]:
        bad = []
        for s in self.manifest["shards"]:
            bad += [n for n, h in s["sha256"].items() if sha256_file(self.dir / n) != h]
        return bad
