"""Annoy indexes, one per shard of a space; a search fans out to the shards and merges.

Annoy's lifecycle: items are added, `build` freezes the index, then it is saved and every
reader `load`s it with mmap (shared between processes). search_k is always set explicitly:
Annoy's default (n_trees * k) gives poor recall on real vectors.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from annoy import AnnoyIndex

from shardvec.tasks.atomic import atomic_path, sha256_file, write_json
from shardvec.tasks.store import Space, shard_name
from shardvec.tasks.topk import best_per_row, exact_topk, recall_at_k


def build_shard_index(space_dir: Path, shard: int, index_dir: Path, *, n_trees: int, seed: int) -> dict:
    space = Space(space_dir)
    vecs = space.shard_vectors(shard)
    t = time.perf_counter()
    index = AnnoyIndex(space.dim, "angular")
    index.set_seed(seed)
    for i in range(len(vecs)):
        index.add_item(i, vecs[i])
    index.build(n_trees, n_jobs=1)  # shards are the parallel unit; one thread each
    final = Path(index_dir) / shard_name("annoy", shard, "ann")
    with atomic_path(final) as tmp:
        index.save(str(tmp))
    index.unload()
    return {"shard": shard, "items": len(vecs), "file": final.name, "sha256": sha256_file(final),
            "bytes": final.stat().st_size, "build_seconds": round(time.perf_counter() - t, 3)}


def finish_index(index_dir: Path, shards: list[dict], *, n_trees: int, search_k: int, metric: str = "angular") -> dict:
    manifest = {"format": 1, "kind": "annoy", "metric": metric, "n_trees": n_trees, "search_k": search_k,
                "shards": sorted(shards, key=lambda s: s["shard"])}
    write_json(Path(index_dir) / "manifest.json", manifest)
    return manifest


class ShardedIndex:
    """The Annoy indexes of a space's shards, searched together."""

    def __init__(self, index_dir: Path, space: Space):
        self.dir, self.space = Path(index_dir), space
        self._indexes: dict[int, AnnoyIndex] = {}

    def _index(self, s: int) -> AnnoyIndex:
        if s not in self._indexes:
            index = AnnoyIndex(self.space.dim, "angular")
            index.load(str(self.dir / shard_name("annoy", s, "ann")))  # mmap: shared page cache
            self._indexes[s] = index
        return self._indexes[s]

    def search(self, vector: np.ndarray, k: int, *, search_k: int, exclude: int = -1) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cosine scores) of the k nearest rows, best first; the shards stay mapped."""
        rows, scores = self._search(np.atleast_2d(vector), k, search_k, None if exclude < 0 else np.array([exclude]),
                                    unmap=False)
        return rows[0], scores[0]

    def search_many(self, vectors: np.ndarray, k: int, *, search_k: int,
                    exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(rows, scores) arrays (len(vectors) x k) of many queries, best first, -1 / -inf padded.

        Shard by shard: all queries meet one shard's index, which is unmapped before the next
        (unless `search` had mapped it), so the pages a batch of queries touches stay at one
        shard's index whatever the number of shards."""
        return self._search(vectors, k, search_k, exclude, unmap=True)

    def _search(self, vectors: np.ndarray, k: int, search_k: int, exclude: np.ndarray | None,
                unmap: bool) -> tuple[np.ndarray, np.ndarray]:
        want = k + (1 if exclude is not None else 0)
        local, cand, dist = [], [], []
        for s in range(self.space.n_shards):
            kept = s in self._indexes
            index, start = self._index(s), self.space.shard_start(s)
            for i, v in enumerate(vectors):
                rows, d = index.get_nns_by_vector(v, want, search_k=search_k, include_distances=True)
                local += [i] * len(rows)
                cand += [start + r for r in rows]
                dist += d
            if unmap and not kept:
                self._indexes.pop(s).unload()
        local_a, cand_a = np.asarray(local, dtype=np.int64), np.asarray(cand, dtype=np.int64)
        d_a = np.asarray(dist, dtype=np.float64)
        scores_a = (1.0 - d_a * d_a / 2.0).astype(np.float32)  # angular distance = sqrt(2 - 2 cos)
        if exclude is not None:
            keep = cand_a != np.asarray(exclude, dtype=np.int64)[local_a]
            local_a, cand_a, scores_a = local_a[keep], cand_a[keep], scores_a[keep]
        return best_per_row(local_a, cand_a, scores_a, len(vectors), k)


def index_recall(space_dir: Path, index_dir: Path, *, k: int, search_k: int, sample: int, seed: int) -> dict:
    """recall@k of the Annoy indexes against exact search, on sampled rows as queries (self excluded)."""
    space = Space(space_dir)
    index = ShardedIndex(index_dir, space)
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(len(space), size=min(sample, len(space)), replace=False))
    queries = space.vectors_at(picks)
    exact, exact_s = exact_topk(space, queries, k, exclude=picks)
    t = time.perf_counter()
    found, found_s = index.search_many(queries, k, search_k=search_k, exclude=picks)
    seconds = time.perf_counter() - t
    # Annoy's distances carry float error: a found row tying the k-th exact score counts
    return {"recall_at_k": round(recall_at_k(found, exact, found_s, exact_s, tie=1e-5), 4), "k": k, "search_k": search_k, "sample": len(picks),
            "queries_per_second": round(len(picks) / seconds, 1) if seconds else None}
