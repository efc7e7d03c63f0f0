"""The Annoy index of a space: one per space, built on disk, searched by readers through mmap.

Annoy's lifecycle: items are added, `build` freezes the index in its file (`on_disk_build`:
RAM stays small whatever the space), and every reader `load`s it with mmap, so many processes
share one copy of its pages. One index per space, not one per shard: a search costs one walk
of the trees instead of one per shard, each at full search_k. search_k is always set
explicitly (Annoy's default, n_trees * k, gives poor recall on real vectors); the nightly
measures recall@k at it and, given a target recall, tunes it (`index_recall`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from annoy import AnnoyIndex

from shardvec.tasks.storage.atomic import atomic_path, sha256_file, write_json
from shardvec.tasks.storage.spaces import Space
from shardvec.tasks.search.topk import NO_ROWS, empty_topk, exact_topk, recall_at_k

FORMAT = 2  # 1: one Annoy file per shard (searched exactly by readers now)
FILE = "annoy.ann"


def build_index(space_dir: Path, index_dir: Path, *, n_trees: int, search_k: int, seed: int) -> dict:
    """The space's Annoy index and its manifest (search_k as configured until `index_recall` tunes it)."""
    space = Space(space_dir)
    t = time.perf_counter()
    final = Path(index_dir) / FILE
    final.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(final) as tmp:
        index = AnnoyIndex(space.dim, "angular")
        index.set_seed(seed)
        index.on_disk_build(str(tmp))
        for s in range(space.n_shards):
            start = space.shard_start(s)
            for i, v in enumerate(space.shard_vectors(s)):
                index.add_item(start + i, v)
        index.build(n_trees, n_jobs=-1)
        index.unload()
    manifest = {"format": FORMAT, "kind": "annoy", "metric": "angular", "n_trees": n_trees, "search_k": search_k,
                "items": len(space), "file": FILE, "sha256": sha256_file(final), "bytes": final.stat().st_size,
                "build_seconds": round(time.perf_counter() - t, 3)}
    write_json(Path(index_dir) / "manifest.json", manifest)
    return manifest


def read_manifest(index_dir: Path) -> dict:
    return json.loads((Path(index_dir) / "manifest.json").read_text())


class SpaceIndex:
    """A space's Annoy index, mapped (the pages stay mapped while it is open)."""

    def __init__(self, index_dir: Path, dim: int):
        self.manifest = read_manifest(index_dir)
        self.search_k: int = self.manifest["search_k"]
        self.index = AnnoyIndex(dim, "angular")
        self.index.load(str(Path(index_dir) / FILE))  # mmap: one copy in the page cache for every reader

    @staticmethod
    def usable(index_dir: Path) -> bool:
        """False for a version indexed before FORMAT 2 (per-shard files): readers scan it exactly."""
        return read_manifest(index_dir).get("format") == FORMAT

    def search(self, vector: np.ndarray, k: int, *, search_k: int | None = None,
               drop: np.ndarray = NO_ROWS) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cosine scores) of the k nearest rows not in `drop` (sorted: the query's own row,
        deleted rows), best first; asks for more while dropped rows leave fewer than k."""
        search_k = search_k or self.search_k
        n = k + min(len(drop), k)
        while True:
            rows, dist = self.index.get_nns_by_vector(vector, n, search_k=max(search_k, n), include_distances=True)
            rows = np.asarray(rows, dtype=np.int64)
            keep = ~_isin_sorted(rows, drop)
            if keep.sum() >= k or len(rows) < n:
                break
            n *= 2
        d = np.asarray(dist, dtype=np.float64)[keep][:k]
        return rows[keep][:k], (1.0 - d * d / 2.0).astype(np.float32)  # angular distance = sqrt(2 - 2 cos)

    def search_many(self, vectors: np.ndarray, k: int, *, search_k: int | None = None,
                    exclude: np.ndarray | None = None, drop: np.ndarray = NO_ROWS) -> tuple[np.ndarray, np.ndarray]:
        """(rows, scores) arrays (len(vectors) x k), best first, -1 / -inf padded; `exclude[i]` is
        query i's own row (or -1), `drop` rows never returned by any."""
        rows, scores = empty_topk(len(vectors), k)
        for i, v in enumerate(vectors):
            own = NO_ROWS if exclude is None or exclude[i] < 0 else np.array([exclude[i]])
            r, s = self.search(v, k, search_k=search_k, drop=np.union1d(drop, own) if len(drop) else own)
            rows[i, :len(r)], scores[i, :len(s)] = r, s
        return rows, scores


def _isin_sorted(rows: np.ndarray, drop: np.ndarray) -> np.ndarray:
    if not len(drop):
        return np.zeros(len(rows), dtype=bool)
    at = np.minimum(np.searchsorted(drop, rows), len(drop) - 1)
    return drop[at] == rows


# Tuning's search_k steps (x2 each) and bounds.
TUNE_STEPS = 8


def index_recall(space_dir: Path, index_dir: Path, *, k: int, search_k: int, sample: int, seed: int,
                 target: float = 0.0) -> dict:
    """recall@k of the index against exact search, on sampled rows as queries (self excluded).

    Given a `target` recall, search_k is tuned first, by halving and doubling from `search_k`:
    the smallest step that reaches the target (or the largest tried), written into the index's
    manifest, where readers take it from. Run before the version is published."""
    space = Space(space_dir)
    index = SpaceIndex(index_dir, space.dim)
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(len(space), size=min(sample, len(space)), replace=False))
    queries = space.vectors_at(picks)
    exact, exact_s = exact_topk(space, queries, k, exclude=picks)

    def measure(sk: int) -> dict:
        t = time.perf_counter()
        found, found_s = index.search_many(queries, k, search_k=sk, exclude=picks)
        seconds = time.perf_counter() - t
        # Annoy's distances carry float error: a found row tying the k-th exact score counts
        return {"recall_at_k": round(recall_at_k(found, exact, found_s, exact_s, tie=1e-5), 4), "k": k,
                "search_k": sk, "sample": len(picks),
                "queries_per_second": round(len(picks) / seconds, 1) if seconds else None}

    result = measure(search_k)
    if target:
        tried = [result]
        floor = k * index.manifest["n_trees"]
        step = (lambda sk: sk * 2) if result["recall_at_k"] < target else (lambda sk: max(floor, sk // 2))
        for _ in range(TUNE_STEPS):
            nxt = step(tried[-1]["search_k"])
            if nxt == tried[-1]["search_k"]:
                break
            tried.append(measure(nxt))
            if (tried[-1]["recall_at_k"] >= target) != (result["recall_at_k"] >= target):
                break
        reached = [r for r in tried if r["recall_at_k"] >= target]
        result = min(reached, key=lambda r: r["search_k"]) if reached else max(tried, key=lambda r: r["search_k"])
        result = {**result, "target_recall": target, "tuned_from": search_k}
        manifest = {**index.manifest, "search_k": result["search_k"], "recall_at_k": result["recall_at_k"]}
        write_json(Path(index_dir) / "manifest.json", manifest)
    return result
