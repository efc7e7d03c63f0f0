"""The vector index of a space: one per space, built by the nightly, searched by readers through mmap.

Since index format 3 it is a faiss IVF-flat index on inner product of unit rows (cosine; word
vectors are made unit as they are written in): `nlist` lists, each a k-means centroid and the
rows nearest it, stored whole (float32, no compression); a query scores the centroids, then
every row of its `nprobe` best lists. `nprobe` is the recall/speed trade-off: the nightly measures recall@k at it and, given a
target recall, tunes it (`index_recall`) and records it in the manifest, where readers take it
from; at nprobe = nlist a search is exact.

Building keeps RAM constant: the centroids are trained on a sample read row by row from the
space, then two passes over the shards write faiss's own file format directly (`write_lists`):
the first assigns every row to its list (a list number per row), the second writes each
shard's rows into their lists' places in the file. faiss's `add` would hold every vector in
RAM first. Readers open it with `faiss.read_index(path, IO_FLAG_MMAP_IFC)`: the lists are arrays
over the file's pages (a shared mapping), one copy in the page cache for every reader process.
(IO_FLAG_MMAP maps the file too, but through faiss's OnDiskInvertedLists, which lock and look
up every list a query probes: 40x slower per probed list, 3 ms against 0.08 ms at nprobe 32.)

Rows added since the index was built (a version's addition segments) are not in its file. A
reader places them in the index's lists as the build placed its own rows (`place`: one list
number per added row, computed once per segment) and holds them in a small IVF index of its own
that shares the centroids (`Added`); a query probes the same lists in both and merges: additions
are found as surely as the version's rows, and a query reads a few of them, not all.

Format 2 (one Annoy index per space, versions published before faiss) is still read and
searched with Annoy at its tuned search_k (`AnnoySpaceIndex`); format 1 (one Annoy file per
shard) is scanned exactly by readers (`open_index` gives None).

Long because: the index's file format, its streamed build, the nightly's tuning and the readers'
search (with its damaged-file and short-answer checks) share the one format and manifest above.
"""

from __future__ import annotations

import json
import math
import os
import struct
import time
from pathlib import Path

import faiss
import numpy as np

from shardvec.errors import ShardvecError
from shardvec.tasks.storage.atomic import atomic_path, sha256_file, write_json
from shardvec.tasks.storage.spaces import Space
from shardvec.tasks.search.topk import NO_ROWS, empty_topk, exact_topk, merge_topk, recall_at_k, unit_rows

FORMAT = 3
THREADS = faiss.omp_get_max_threads()  # what faiss runs a batch of queries on (OMP_NUM_THREADS, or the cores)
KIND = "faiss-ivf"
FILE = "ivf.faiss"
ANNOY_FORMAT, ANNOY_FILE = 2, "annoy.ann"

# Lists: about 4 sqrt(rows) (faiss's guideline: 4-16 sqrt(n)), and at least 39 training rows
# each (fewer and k-means places centroids badly); the training sample is at most TRAIN_ROWS
# rows, read one by one (100 MB at 200 dimensions, whatever the space).
LISTS_PER_SQRT_ROW = 4
TRAIN_ROWS = 131_072
ROWS_PER_LIST_TRAINED = 39
KMEANS_ITERATIONS = 10


def lists_for(rows: int, nlist: int = 0) -> int:
    """The lists of a space of `rows` rows: `nlist` as configured, else about 4 sqrt(rows);
    never more than its training sample can place."""
    most = max(1, min(rows, TRAIN_ROWS) // ROWS_PER_LIST_TRAINED)
    return max(1, min(nlist or round(LISTS_PER_SQRT_ROW * math.sqrt(rows)), most))


def build_index(space_dir: Path, index_dir: Path, *, nlist: int, nprobe: int, seed: int) -> dict:
    """The space's IVF index and its manifest (nprobe as configured until `index_recall` tunes it)."""
    space = Space(space_dir)
    t = time.perf_counter()
    n, dim = len(space), space.dim
    lists = lists_for(n, nlist)
    quantizer = faiss.IndexFlatIP(dim)
    ivf = faiss.IndexIVFFlat(quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT)
    picks = np.sort(np.random.default_rng(seed).choice(n, size=min(n, TRAIN_ROWS), replace=False))
    if n:
        ivf.cp.niter, ivf.cp.seed = KMEANS_ITERATIONS, seed
        ivf.train(unit_rows(space.read(picks)))  # row by row from the files: RAM is the sample, not the space
    else:  # nothing to train on: one list, empty
        quantizer.add(np.zeros((1, dim), np.float32))
        ivf.is_trained = True
    trained = time.perf_counter() - t
    final = Path(index_dir) / FILE
    with atomic_path(final) as tmp:
        write_lists(ivf, space, tmp)
    manifest = {
        "format": FORMAT,
        "kind": KIND,
        "metric": "inner_product",
        "nlist": lists,
        "nprobe": min(nprobe, lists),
        "items": n,
        "dim": dim,
        "train_rows": len(picks),
        "file": FILE,
        "sha256": sha256_file(final),
        "bytes": final.stat().st_size,
        "train_seconds": round(trained, 3),
        "build_seconds": round(time.perf_counter() - t, 3),
    }
    write_json(Path(index_dir) / "manifest.json", manifest)
    return manifest


def write_lists(ivf, space: Space, path: Path) -> None:
    """Write the trained, empty `ivf` with every row of `space` in its lists, as faiss's
    `write_index` would after `ivf.add` of the whole space, shard by shard.

    The file is faiss's serialization of the empty index (header, centroids) up to its inverted
    lists, then the lists as faiss writes an `ArrayInvertedLists` ("ilar"): nlist, bytes per
    code, "full" and every list's size, then each list's codes (the float32 rows) followed by
    its ids (int64 rows). tests/unit/test_search.py checks it byte for byte against `write_index`."""
    head = faiss.serialize_index(ivf).tobytes()
    at = head.rfind(b"ilar")
    if head[:4] != b"IwFl" or at < 0:
        raise RuntimeError(
            f"faiss {faiss.__version__} serializes IndexIVFFlat unlike what shardvec "
            "(tasks/search/index.py) writes; pin faiss-cpu to the version in requirements.lock."
        )
    nlist, code = ivf.nlist, ivf.code_size
    assign = np.empty(len(space), np.int64)
    for s in range(space.n_shards):  # pass 1: each row's list
        start = space.shard_start(s)
        vecs = _unit(space, s)
        assign[start : start + len(vecs)] = nearest_lists(ivf.quantizer, vecs)
    sizes = np.bincount(assign, minlength=nlist).astype(np.int64)
    lists = struct.pack("<4sQQ4sQ", b"ilar", nlist, code, b"full", nlist) + sizes.astype("<u8").tobytes()
    data = len(head[:at]) + len(lists)
    list_at = data + np.concatenate([[0], np.cumsum(sizes * (code + 8))[:-1]]).astype(np.int64)
    filled = np.zeros(nlist, np.int64)  # rows written into each list so far
    with open(path, "wb") as f:
        f.write(head[:8] + struct.pack("<q", len(space)) + head[16:at] + lists)  # header's ntotal: the rows
        f.truncate(int(list_at[-1] + sizes[-1] * (code + 8)) if nlist else data)
        fd = f.fileno()
        for s in range(space.n_shards):  # pass 2: each shard's rows into their lists' places
            start = space.shard_start(s)
            vecs = _unit(space, s)
            mine = assign[start : start + len(vecs)]
            order = np.argsort(mine, kind="stable")
            which, first, count = np.unique(mine[order], return_index=True, return_counts=True)
            for li, a, c in zip(which.tolist(), first.tolist(), count.tolist()):
                rows = order[a : a + c]
                slot = int(list_at[li]) + int(filled[li]) * code
                os.pwrite(fd, vecs[rows].tobytes(), slot)
                os.pwrite(
                    fd,
                    (rows + start).astype("<i8").tobytes(),
                    int(list_at[li]) + int(sizes[li]) * code + int(filled[li]) * 8,
                )
                filled[li] += c
            if not space.keep_mapped:
                space.release()


def nearest_lists(quantizer, unit_vectors: np.ndarray) -> np.ndarray:
    """The list of each row: its nearest centroid. The build places the space's rows so, and a
    reader the rows added since (`SpaceIndex.place`)."""
    return quantizer.search(unit_vectors, 1)[1][:, 0].astype(np.int64)


def _unit(space: Space, s: int) -> np.ndarray:
    """Shard s's rows as unit float32 rows (word vectors are stored as trained: cosine needs them unit)."""
    vecs = np.ascontiguousarray(space.shard_vectors(s), dtype=np.float32)
    return vecs if space.normalized else unit_rows(vecs)


def index_manifest(index_dir: Path) -> dict:
    return json.loads((Path(index_dir) / "manifest.json").read_text())


def open_index(index_dir: Path, dim: int, manifest: dict | None = None):
    """The index a version published in `index_dir`, mapped: a SpaceIndex (format 3), an
    AnnoySpaceIndex (format 2), or None (format 1, one Annoy file per shard: scanned exactly)."""
    manifest = manifest or index_manifest(index_dir)
    if manifest.get("format") == FORMAT:
        return SpaceIndex(index_dir, dim, manifest)
    if manifest.get("format") == ANNOY_FORMAT:
        return AnnoySpaceIndex(index_dir, dim, manifest)
    return None


class DamagedIndexError(RuntimeError, ShardvecError):
    """A published index file that faiss cannot read, or whose lists name rows the space lacks."""

    def __init__(self, path: Path, why: str):
        super().__init__(
            f"{path} is damaged: {why}. `shardvec verify` names every damaged file of the version; "
            "`shardvec backfill --mode rebuild` builds the version again (or `shardvec rollback`)."
        )


class QueryShapeError(ValueError, ShardvecError):
    """Query vectors whose length is not the space's."""


class Added:
    """Rows an IVF index does not hold (a version's additions), in an IVF index of their own that
    shares its centroids, searched over the lists a query probed in the version's index. Each part
    is (its first global row, its vectors, unit length as the caller gives them, the list of each of
    its rows by `SpaceIndex.place`).
    It holds a copy of the added vectors in RAM (a reader's own: 8 MB per 10,000 statements of 200
    floats), which lets faiss score them as it scores its own lists, on every thread."""

    def __init__(self, owner, parts: list[tuple[int, np.ndarray, np.ndarray]]):
        """`owner`: the version's faiss index, whose centroids this one shares (and which owns them:
        holding it keeps them alive as long as this index is)."""
        self._owner, quantizer = owner, owner.quantizer
        self.index = faiss.IndexIVFFlat(quantizer, quantizer.d, quantizer.ntotal, faiss.METRIC_INNER_PRODUCT)
        self.index.is_trained = True
        self.index.parallel_mode = 3  # a batch's queries over the threads (see SpaceIndex)
        for start, vecs, lists in parts:
            if len(vecs):
                x = np.ascontiguousarray(vecs, dtype=np.float32)
                rows = np.arange(start, start + len(x), dtype=np.int64)
                lists = np.ascontiguousarray(lists, dtype=np.int64)
                # faiss trusts these blindly (a list number past nlist writes out of bounds)
                if lists.shape != (len(x),) or (len(lists) and not 0 <= lists.min() <= lists.max() < quantizer.ntotal):
                    raise ValueError(
                        f"{len(lists)} list numbers for {len(x)} added rows, or one past {quantizer.ntotal}"
                    )
                self.index.add_core(len(x), faiss.swig_ptr(x), faiss.swig_ptr(rows), faiss.swig_ptr(lists))

    def __len__(self) -> int:
        return self.index.ntotal

    def search(self, queries: np.ndarray, n: int, probed: tuple[np.ndarray, np.ndarray], params):
        """(rows, scores), queries x n, of the added rows in the lists each query probed."""
        return _preassigned(self.index, queries, n, probed, params)


def _preassigned(index, queries: np.ndarray, n: int, probed: tuple[np.ndarray, np.ndarray], params):
    """faiss's search of the lists `probed` names ((centroid scores, list numbers), queries x
    nprobe): `search_preassigned`, with the parameters its Python wrapper refuses."""
    centroid_scores, lists = probed
    scores = np.empty((len(queries), n), np.float32)
    rows = np.empty((len(queries), n), np.int64)
    ptr = faiss.swig_ptr
    index.search_preassigned_c(
        len(queries), ptr(queries), n, ptr(lists), ptr(centroid_scores), ptr(scores), ptr(rows), False, params
    )
    return rows, scores


class _Index:
    """What both index kinds share: the batch search with own rows and deleted rows dropped."""

    manifest: dict
    effort: int  # nprobe (faiss) or search_k (Annoy): the recall/speed setting readers search at
    EFFORT = "nprobe"
    added: Added | None = None  # rows searched beside the index's own (SpaceIndex.add)

    def search(
        self, vector: np.ndarray, k: int, *, effort: int | None = None, drop: np.ndarray = NO_ROWS
    ) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cosine scores) of the k nearest rows not in `drop` (sorted), best first."""
        rows, scores = self.search_many(np.asarray(vector, np.float32)[None], k, effort=effort, drop=drop)
        keep = rows[0] >= 0
        return rows[0][keep], scores[0][keep]

    def search_many(
        self,
        vectors: np.ndarray,
        k: int,
        *,
        effort: int | None = None,
        exclude: np.ndarray | None = None,
        drop: np.ndarray = NO_ROWS,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(rows, scores) arrays (len(vectors) x k), best first, -1 / -inf padded; `exclude[i]` is
        query i's own row (or -1), `drop` (sorted) rows never returned by any. The index is asked
        for k plus what may be dropped, and again, for more, by a query that still lacks k."""
        vectors = np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)
        dim = self.manifest.get("dim")
        if dim and vectors.shape[1] != dim:
            raise QueryShapeError(f"Query vectors of {vectors.shape[1]} dimensions; this space's have {dim}.")
        effort = effort or self.effort
        rows, scores = self._search_many(vectors, k, effort, exclude, drop)
        # the lists probed held fewer than k rows (a large k, a small space): probe more of them
        # (np.count_nonzero, not .any(): on a query's dozen cells it is several times faster)
        while effort < self.max_effort and np.count_nonzero(short := (rows[:, -1] < 0)):
            effort = min(effort * 4, self.max_effort)
            more = self._search_many(
                vectors[short], k, effort, None if exclude is None else np.asarray(exclude)[short], drop
            )
            rows[short], scores[short] = more
        return rows, scores

    @property
    def max_effort(self) -> int:
        return 0  # no retry: Annoy's search_k already bounds its own search

    def _search_many(self, vectors, k, effort, exclude, drop) -> tuple[np.ndarray, np.ndarray]:
        n = k + min(len(drop), k) + (exclude is not None)
        rows, scores = self._ask(vectors, n, effort)
        bad = (rows < 0) | _isin_sorted(rows, drop)
        if exclude is not None:
            bad |= rows == np.asarray(exclude)[:, None]
        if not np.count_nonzero(bad[:, :k]):  # the common case: the index's first k, as it sorted them
            rows, scores = rows[:, :k], scores[:, :k]
        elif len(rows) == 1 and len(keep := np.flatnonzero(~bad[0])) >= k:  # one query (a word's own row left out)
            rows, scores = rows[:, keep[:k]], scores[:, keep[:k]]
        else:
            rows, scores = self._kept(vectors, rows, scores, bad, k, n, effort, exclude, drop)
        if np.count_nonzero(scores[:, 1:] == scores[:, :-1]):  # ties: by row, as exact answers are
            order = np.lexsort((rows, -scores), axis=1)
            rows, scores = np.take_along_axis(rows, order, axis=1), np.take_along_axis(scores, order, axis=1)
        return rows, scores

    def _kept(self, vectors, rows, scores, bad, k, n, effort, exclude, drop):
        """The first k rows of each answer that are not `bad`; a query left with fewer, whose
        answer was full (the index may hold more), asks again for twice as many."""
        out_rows, out_scores = empty_topk(len(vectors), k)
        todo = np.arange(len(vectors))
        while True:
            order = np.argsort(bad, axis=1, kind="stable")[:, :k]  # kept ones first, in the index's order
            kept = np.take_along_axis(~bad, order, axis=1)
            out_rows[todo] = np.where(kept, np.take_along_axis(rows, order, axis=1), -1)
            out_scores[todo] = np.where(kept, np.take_along_axis(scores, order, axis=1), -np.inf)
            short = (kept.sum(axis=1) < k) & (rows[:, -1] >= 0)
            if not short.any() or n >= self.searchable:
                return out_rows, out_scores
            todo, n = todo[short], min(n * 2, self.searchable)
            rows, scores = self._ask(vectors[todo], n, effort)
            bad = (rows < 0) | _isin_sorted(rows, drop)
            if exclude is not None:
                bad |= rows == np.asarray(exclude)[todo, None]

    @property
    def items(self) -> int:
        return self.manifest["items"]

    @property
    def searchable(self) -> int:
        """The rows a search can return: the index's, and the added ones beside it."""
        return self.items + (len(self.added) if self.added is not None else 0)


class SpaceIndex(_Index):
    """A space's faiss IVF index, its lists mapped from the file (the pages stay mapped while
    it is open, one copy in the page cache for every reader)."""

    def __init__(self, index_dir: Path, dim: int, manifest: dict | None = None):
        self.manifest = manifest or index_manifest(index_dir)
        self.effort: int = self.manifest["nprobe"]
        self.path = Path(index_dir) / self.manifest["file"]
        if not self.path.is_file():  # an OSError, as a missing space file is: readers move on from a pruned version
            raise FileNotFoundError(f"{self.path} is missing")
        try:
            self.index = faiss.read_index(str(self.path), faiss.IO_FLAG_MMAP_IFC)
        except RuntimeError as exc:  # faiss's reader throws on a short or garbled file
            raise DamagedIndexError(self.path, f"faiss cannot read it ({str(exc).splitlines()[0][:120]})") from None
        if self.index.d != dim or self.index.ntotal != self.items:
            raise DamagedIndexError(
                self.path,
                f"it holds {self.index.ntotal} rows of {self.index.d}, "
                f"not the {self.items} of {dim} its manifest and space say",
            )
        self._params: dict[int, object] = {}  # nprobe -> its search parameters, never changed once made
        # mode 3: search_preassigned (a search with additions) splits a batch's queries over the
        # threads; faiss's own `search`, which slices a batch itself only in mode 0, then passes the
        # whole batch to it and so splits it alike
        self.index.parallel_mode = 3

    @property
    def max_effort(self) -> int:
        return self.manifest["nlist"]

    def place(self, vectors: np.ndarray) -> np.ndarray:
        """The list each row of `vectors` belongs in: the nearest centroid, as the build placed the
        index's own rows."""
        vectors = unit_rows(np.ascontiguousarray(vectors, dtype=np.float32))
        return nearest_lists(self.index.quantizer, vectors) if len(vectors) else NO_ROWS

    def add(self, parts: list[tuple[int, np.ndarray, np.ndarray]]) -> None:
        """Search these rows too, beside the index's own: (first global row, unit vectors, their
        lists by `place`) per part; they replace what an earlier call added."""
        rows = sum(len(vecs) for _, vecs, _ in parts)
        self.added = Added(self.index, parts) if rows else None  # (delete-only segments add no rows)

    def _ask(self, vectors: np.ndarray, n: int, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        vectors = unit_rows(vectors)  # the lists hold unit rows: inner product = cosine
        nprobe = min(nprobe, self.manifest["nlist"])
        # this call's own: another thread's query may ask for another nprobe meanwhile
        params = self._params.get(nprobe) or self._params.setdefault(nprobe, faiss.SearchParametersIVF(nprobe=nprobe))
        # One query: faiss's OpenMP threads cost more than they share (at 100k rows, nprobe 4:
        # p50 / p99 0.26 / 4.7 ms on 2 threads, 0.19 / 0.6 ms on one). (OpenMP keeps the setting
        # per calling thread: a batch in another thread keeps its threads.)
        one = len(vectors) == 1
        if one:
            faiss.omp_set_num_threads(1)
        try:
            if self.added is not None:  # the centroids once, then the version's lists and the additions' same lists
                probed = self.index.quantizer.search(vectors, nprobe)
                rows, scores = _preassigned(self.index, vectors, n, probed, params)
                more = self.added.search(vectors, n, probed, params)
            else:
                scores, rows = self.index.search(vectors, n, params=params)
        finally:
            if one:
                faiss.omp_set_num_threads(THREADS)
        if np.count_nonzero(rows >= self.items):  # ids are rows: one past the space is a damaged list
            raise DamagedIndexError(self.path, "its lists hold ids past the space's rows")
        if self.added is not None:
            rows, scores = merge_topk(rows, scores, *more, n)
        return rows, scores


class AnnoySpaceIndex(_Index):
    """A format-2 space's Annoy index (versions published before faiss), mapped."""

    EFFORT = "search_k"

    def __init__(self, index_dir: Path, dim: int, manifest: dict | None = None):
        from annoy import AnnoyIndex

        self.manifest = manifest or index_manifest(index_dir)
        self.effort = self.manifest["search_k"]
        self.index = AnnoyIndex(dim, "angular")
        self.index.load(str(Path(index_dir) / ANNOY_FILE))  # mmap

    def _ask(self, vectors: np.ndarray, n: int, search_k: int) -> tuple[np.ndarray, np.ndarray]:
        rows, scores = empty_topk(len(vectors), n)
        for i, v in enumerate(vectors):
            r, d = self.index.get_nns_by_vector(v, n, search_k=max(search_k, n), include_distances=True)
            rows[i, : len(r)] = r
            scores[i, : len(d)] = 1.0 - np.asarray(d, np.float64) ** 2 / 2.0  # angular distance = sqrt(2 - 2 cos)
        return rows, scores


def _isin_sorted(rows: np.ndarray, drop: np.ndarray) -> np.ndarray:
    if not len(drop):
        return np.zeros(rows.shape, dtype=bool)
    at = np.minimum(np.searchsorted(drop, rows), len(drop) - 1)
    return drop[at] == rows


# Tuning's nprobe steps (x2 each).
TUNE_STEPS = 8


def index_recall(
    space_dir: Path, index_dir: Path, *, k: int, nprobe: int, sample: int, seed: int, target: float = 0.0
) -> dict:
    """recall@k of the index against exact search, on sampled rows as queries (self excluded).

    Given a `target` recall, nprobe is tuned first, by halving and doubling from `nprobe`: the
    smallest step that reaches the target (or the largest tried; at nlist the search is exact),
    written into the index's manifest, where readers take it from. Run before the version is
    published."""
    space = Space(space_dir)
    index = SpaceIndex(index_dir, space.dim)
    nlist = index.manifest["nlist"]
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(len(space), size=min(sample, len(space)), replace=False))
    queries = space.vectors_at(picks)
    exact, exact_s = exact_topk(space, queries, k, exclude=picks)

    def measure(probes: int) -> dict:
        t = time.perf_counter()
        found, found_s = index.search_many(queries, k, effort=probes, exclude=picks)
        seconds = time.perf_counter() - t
        # a found row tying the k-th exact score counts (equal scores, different products)
        return {
            "recall_at_k": round(recall_at_k(found, exact, found_s, exact_s, tie=1e-5), 4),
            "k": k,
            "nprobe": probes,
            "nlist": nlist,
            "sample": len(picks),
            "queries_per_second": round(len(picks) / seconds, 1) if seconds else None,
        }

    result = measure(min(nprobe, nlist))
    if target:
        tried = [result]
        step = (lambda p: min(nlist, p * 2)) if result["recall_at_k"] < target else (lambda p: max(1, p // 2))
        for _ in range(TUNE_STEPS):
            nxt = step(tried[-1]["nprobe"])
            if nxt == tried[-1]["nprobe"]:
                break
            tried.append(measure(nxt))
            if (tried[-1]["recall_at_k"] >= target) != (result["recall_at_k"] >= target):
                break
        reached = [r for r in tried if r["recall_at_k"] >= target]
        result = min(reached, key=lambda r: r["nprobe"]) if reached else max(tried, key=lambda r: r["nprobe"])
        result = {**result, "target_recall": target, "tuned_from": nprobe}
        manifest = {**index.manifest, "nprobe": result["nprobe"], "recall_at_k": result["recall_at_k"]}
        write_json(Path(index_dir) / "manifest.json", manifest)
    return result
