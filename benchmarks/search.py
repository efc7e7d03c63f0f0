"""Benchmark (issue 35): readers' searches beside Annoy directly, hnswlib and faiss, on the same vectors.

Vectors: random but structured like the 1M benchmark's (LSI statements: 200 dimensions, a
decaying spectrum, 4,096 clusters; words: 100 dimensions, 200,000 of them), unit length. The
sizes grow: each is the first n statement rows. At each size one data directory publishes a
version through tasks/storage/versions.py (spaces, the faiss IVF index built and its nprobe tuned to
index.target_recall as the nightly does; its similarity rows are left empty, searches never read
them) with 10,000 added statements in 2 segments and 1,000 deleted ones live.

- shardvec default / exact: `Store.similar_vectors` (what `similar` runs after `embed`), one
  query at a time (p50 / p99, one core) and all queries in one call (batch q/s, the median of 5 timings); recall@10
  against the exact answer over the live statements (additions in, deletes out).
- faiss directly (the version's own index file, read with IO_FLAG_MMAP_IFC), Annoy (20 trees, built
  here on disk), hnswlib (HNSW, M 16, ef_construction 40): the version's statements only, recall
  against exact over them; faiss's nprobe, Annoy's search_k and hnswlib's ef the smallest of a
  ladder that reaches recall 0.95 on these queries (so a little optimistic); hnswlib grows its
  index in place from size to size.
- Readers: 4 processes at once at the largest size, each with the index open and the queries
  run twice: RSS of one and the summed PSS of all (whole process; the store's files alone), and
  the q/s of the 4 together on all cores.

Needs hnswlib, which shardvec itself does not: `make bench-search` puts it in benchmarks/.venv
(the project's own venv stays as requirements.lock says) and runs this.

    benchmarks/.venv/bin/python -m benchmarks.search                     # 250k, 500k, 1M
    benchmarks/.venv/bin/python -m benchmarks.search --sizes 100000      # one quick size
    benchmarks/.venv/bin/python -m benchmarks.search --no-others         # shardvec and faiss only
    benchmarks/.venv/bin/python -m benchmarks.search --vectors-from benchmarks/work/scale/data-4
                                 # real LSI and word2vec vectors (benchmarks.scale's largest corpus)

`--no-others` skips Annoy and hnswlib (their builds are most of the ~35 minutes, and their
figures do not depend on shardvec's code): for a rerun after a change to the reader.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil

from benchmarks.common import WORK, save

DIM, WORD_DIM, WORDS = 200, 100, 200_000
WORD_VECTORS: np.ndarray | None = None  # real word vectors (--vectors-from), else structured ones
ADDS, DELETES, QUERIES, EXACT_SINGLE = 10_000, 1_000, 300, 50
TARGET = 0.95
LADDERS = {
    "hnswlib": [10, 16, 24, 32, 48, 64, 96, 128, 256],
    "faiss": [1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 128],
    "annoy": [5_000, 10_000, 20_000, 40_000, 80_000],
}
MB = 1 << 20


def structured(n: int, dim: int, seed: int, clusters: int = 4096) -> np.ndarray:
    """n unit rows around `clusters` centres, each dimension scaled as an LSI spectrum decays."""
    rng = np.random.default_rng(seed)
    spectrum = (1.0 / np.sqrt(np.arange(1, dim + 1))).astype(np.float32)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32) * spectrum
    out = np.empty((n, dim), np.float32)
    for s in range(0, n, 100_000):
        m = min(100_000, n - s)
        out[s : s + m] = (
            centres[rng.integers(0, clusters, m)] + 0.6 * rng.standard_normal((m, dim), np.float32) * spectrum
        )
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def publish(data: Path, vecs: np.ndarray, words: Path | None, adds: np.ndarray, dead: np.ndarray) -> dict:
    """A data directory whose CURRENT names a version of `vecs` (and `words`, built here when None)
    plus one segment of `adds` and one of the deletes; the seconds its indexes took."""
    from shardvec.tasks.search.index import build_index, index_recall
    from shardvec.tasks.storage.layout import Layout
    from shardvec.tasks.storage.datadir import DataDir
    from shardvec.tasks.storage.documents import Additions
    from shardvec.tasks.storage.versions import prepare
    from shardvec.tasks.changes.segments import write_segment
    from shardvec.tasks.search.similarity import finish_rows
    from shardvec.tasks.storage.spaces import SpaceWriter
    from shardvec.tasks.inputs.tokenize import Tokenizer

    where = Layout(data)
    vid = time.strftime("%Y%m%dT%H%M%S-") + f"{len(vecs) % 0xFFFFFF:06x}"
    v = where.version(vid)
    figures = {}
    spaces = [("statements", vecs, v.statements, v.statements_index)]
    if words is None:
        spaces.append(
            ("words", structured(WORDS, WORD_DIM, 7) if WORD_VECTORS is None else WORD_VECTORS, v.words, v.words_index)
        )
    for name, x, space, index in spaces:
        keys = [f"{name[0]}{i}" for i in range(len(x))]
        w = SpaceWriter(space, x.shape[1], 50_000, ["text"] if name == "statements" else [])
        w.append(keys, x, **({"text": [f"statement {k}" for k in keys]} if name == "statements" else {}))
        w.close(normalized=True)
        t = time.perf_counter()
        built = build_index(space, index, nlist=0, nprobe=16, seed=1)
        tuned = index_recall(space, index, k=10, nprobe=16, sample=200, seed=1, target=TARGET)
        figures[name] = {
            "build_s": built["build_seconds"],
            "train_s": built["train_seconds"],
            "tune_s": round(time.perf_counter() - t - built["build_seconds"], 1),
            "index_mb": round(built["bytes"] / MB),
            "nlist": built["nlist"],
            "nprobe": tuned["nprobe"],
            "tuning_recall": tuned["recall_at_k"],
        }
    v.models.mkdir(parents=True, exist_ok=True)
    finish_rows(v.similarity, [], k=10, width=14, method="exact", rows_per_shard=16_384)
    comps = v.components() | (
        {} if words is None else {"words": words, "words_index": words.parents[1] / "index" / "words"}
    )
    current = prepare(data, vid, comps, {}, {"tokenizer": Tokenizer.from_settings({}).settings()})
    n = len(vecs)
    seg1, _ = write_segment(
        where, vid, 1, [f"a{i}" for i in range(len(adds))], [""] * len(adds), adds, *_no_rows(), np.empty(0, np.int64)
    )
    seg2, _ = write_segment(where, vid, 2, [], [], np.empty((0, DIM), np.float32), *_no_rows(), dead)
    DataDir(data).swap(dataclasses.replace(current, additions=Additions(vid, (seg1, seg2), 3)))
    assert n + len(adds) - len(dead) == len(__import__("shardvec").open(data))
    return figures


def _no_rows():
    return np.empty(0, np.int64), np.empty((0, 14), np.int64), np.empty((0, 14), np.float32)


def latencies(fn, queries) -> dict:
    times = []
    for q in queries:
        t = time.perf_counter_ns()
        fn(q)
        times.append(time.perf_counter_ns() - t)
    ms = np.asarray(times) / 1e6
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "qps_one_core": round(1e3 / float(ms.mean()), 1),
    }


BATCHES = 5  # each library's batch of all the queries is timed this often: the median is reported


def batch_qps(fn, queries) -> float:
    """Queries per second of `fn(queries)`, the whole batch in one call: the median of BATCHES
    timings (one timing moved by a fifth from run to run on this noisy machine)."""
    seconds = []
    for _ in range(BATCHES):
        t = time.perf_counter()
        fn(queries)
        seconds.append(time.perf_counter() - t)
    return round(len(queries) / float(np.median(seconds)), 1)


def recall(found: list, truth: np.ndarray) -> float:
    as_set = lambda row: {x if isinstance(x, str) else int(x) for x in row}  # noqa: E731 (keys or rows)
    return round(float(np.mean([len(as_set(f) & as_set(t)) / len(t) for f, t in zip(found, truth)])), 4)


def ladder(name: str, search, truth: np.ndarray, queries: np.ndarray):
    """The smallest setting of `name`'s ladder whose recall reaches TARGET (else the largest)."""
    for p in LADDERS[name]:
        r = recall([search(q, p) for q in queries], truth)
        if r >= TARGET:
            break
    return p, r


class Libraries:
    """hnswlib's index grown in place as the sizes grow; Annoy's built at each size, on disk."""

    def __init__(self, work: Path):
        import hnswlib

        self.work, self.hnswlib = work, hnswlib
        self.hnsw = None
        self.built = {"hnswlib": 0.0, "annoy": 0.0}
        self.annoy_path = work / "annoy.ann"

    def grow(self, vecs: np.ndarray, first: int, capacity: int) -> None:
        t = time.perf_counter()
        if self.hnsw is None:
            self.hnsw = self.hnswlib.Index("ip", DIM)
            self.hnsw.init_index(capacity, M=16, ef_construction=40, random_seed=1)
        self.hnsw.add_items(vecs[first:], np.arange(first, len(vecs)), num_threads=2)
        self.built["hnswlib"] += time.perf_counter() - t

    def annoy(self, vecs: np.ndarray):
        from annoy import AnnoyIndex

        t = time.perf_counter()
        index = AnnoyIndex(DIM, "angular")
        index.set_seed(1)
        self.annoy_path.unlink(missing_ok=True)
        index.on_disk_build(str(self.annoy_path))
        for i, v in enumerate(vecs):
            index.add_item(i, v)
        index.build(20, n_jobs=-1)
        self.built["annoy"] = time.perf_counter() - t
        return index

    def save(self) -> dict[str, Path]:
        paths = {"hnswlib": self.work / "hnsw.bin", "annoy": self.annoy_path}
        self.hnsw.save_index(str(paths["hnswlib"]))
        return paths


def size(
    n: int, x: np.ndarray, adds: np.ndarray, queries: np.ndarray, libs: Libraries | None, work: Path, words: Path | None
):
    import faiss
    import shardvec
    from shardvec.tasks.search.topk import RowsInRam, exact_topk

    data = work / "data"  # one directory: each size's version reuses the first one's words
    dead = np.sort(np.random.default_rng(n).choice(n, DELETES, replace=False))
    out = {"statements": n, "additions": ADDS, "deletes": DELETES}
    out["index"] = publish(data, x[:n], words, adds, dead)
    store = shardvec.open(data)
    t = time.perf_counter()
    exact = store.similar_vectors(queries, 10, exact=True)
    out["shardvec exact"] = {
        "batch_qps": round(len(queries) / (time.perf_counter() - t), 1),
        "recall": 1.0,
        **latencies(lambda q: store.similar_vectors(q, 10, exact=True), queries[:EXACT_SINGLE]),
    }
    truth_live = np.array([[store.statements.find(h.key) for h in hits] for hits in exact])
    found = store.similar_vectors(queries, 10)
    out["shardvec default"] = {
        "batch_qps": batch_qps(lambda q: store.similar_vectors(q, 10), queries),
        "recall": recall([[store.statements.find(h.key) for h in hits] for hits in found], truth_live),
        "nprobe": store.effort["statements"],
        **latencies(lambda q: store.similar_vectors(q, 10), queries),
    }
    truth = exact_topk(RowsInRam(x[:n]), queries, 10)[0]
    faiss.omp_set_num_threads(1)  # one query at a time, on one core, as the others
    ivf = faiss.read_index(
        str(data / store.current.components["statements_index"] / "ivf.faiss"), faiss.IO_FLAG_MMAP_IFC
    )

    def ivf_search(q, nprobe):
        ivf.nprobe = nprobe
        return ivf.search(q[None], 10)[1][0]

    def faiss_figures(nprobe: int, r: float) -> dict:
        """faiss alone at `nprobe` (its recall `r`): one query at a time on one thread, then a batch on two."""
        ivf.nprobe = nprobe
        faiss.omp_set_num_threads(1)
        figures = {
            "nprobe": nprobe,
            "recall": r,
            **latencies(lambda q: ivf.search(q[None], 10), queries),
            "build_s": out["index"]["statements"]["build_s"],
        }
        faiss.omp_set_num_threads(2)
        return figures | {"batch_qps": batch_qps(lambda q: ivf.search(q, 10), queries)}

    out["faiss IVF"] = faiss_figures(*ladder("faiss", ivf_search, truth, queries))
    # at shardvec's own nprobe (equal recall on the version's rows; no additions, no deletes)
    same = store.effort["statements"]
    out["faiss IVF, shardvec's nprobe"] = faiss_figures(same, recall([ivf_search(q, same) for q in queries], truth))
    if words is None:
        out["words"] = word_figures(store)
    if libs is None:  # --no-others
        return out, data
    annoy = libs.annoy(x[:n])
    search_k, r = ladder("annoy", lambda q, sk: annoy.get_nns_by_vector(q, 10, search_k=sk), truth, queries)
    out["annoy"] = {
        "search_k": search_k,
        "recall": r,
        **latencies(lambda q: annoy.get_nns_by_vector(q, 10, search_k=search_k), queries),
        "build_s": round(libs.built["annoy"], 1),
    }
    annoy.unload()
    libs.grow(x[:n], libs.hnsw.get_current_count() if libs.hnsw else 0, len(x))

    def hnsw(q, ef):
        libs.hnsw.set_ef(ef)
        return libs.hnsw.knn_query(q, 10)[0][0]

    ef, r = ladder("hnswlib", hnsw, truth, queries)
    libs.hnsw.set_ef(ef)
    out["hnswlib"] = {
        "ef": ef,
        "recall": r,
        **latencies(lambda q: libs.hnsw.knn_query(q, 10), queries),
        "build_s": round(libs.built["hnswlib"], 1),
    }
    # a batch on two threads, as faiss's and shardvec's
    out["hnswlib"]["batch_qps"] = batch_qps(lambda q: libs.hnsw.knn_query(q, 10, num_threads=2), queries)
    return out, data


def word_figures(store) -> dict:
    rng = np.random.default_rng(3)
    keys = [f"w{i}" for i in rng.choice(WORDS, QUERIES, replace=False)]
    exact = store.neighbours_many(keys, 10, exact=True)
    found = [store.neighbours(k, 10) for k in keys]
    return {
        "recall": recall([[h.key for h in f] for f in found], [[h.key for h in e] for e in exact]),
        "nprobe": store.effort["words"],
        "nlist": store._index_manifests["words"]["nlist"],
        **latencies(lambda k: store.neighbours(k, 10), keys),
        "exact": latencies(lambda k: store.neighbours(k, 10, exact=True), keys[:EXACT_SINGLE]),
    }


READER = """
import sys, time, numpy as np
kind, path, queries = sys.argv[1], sys.argv[2], np.load(sys.argv[3])
if kind == "shardvec":
    import shardvec
    store = shardvec.open(path)
    ask = lambda q: store.similar_vectors(q, 10)
elif kind == "annoy":
    from annoy import AnnoyIndex
    index = AnnoyIndex(queries.shape[1], "angular"); index.load(path)
    sk = int(sys.argv[4]); ask = lambda q: index.get_nns_by_vector(q, 10, search_k=sk)
elif kind == "hnswlib":
    import hnswlib
    index = hnswlib.Index("ip", queries.shape[1]); index.load_index(path); index.set_ef(int(sys.argv[4]))
    ask = lambda q: index.knn_query(q, 10)
else:
    import faiss
    faiss.omp_set_num_threads(1)
    index = faiss.read_index(path, faiss.IO_FLAG_MMAP_IFC); index.nprobe = int(sys.argv[4])
    ask = lambda q: index.search(q[None], 10)
for q in queries[:100]: ask(q)
print("ready", flush=True)
sys.stdin.readline()
t = time.perf_counter()
for q in queries: ask(q)
print(time.perf_counter() - t, flush=True)
sys.stdin.readline()
"""


def readers(kind: str, path: Path, under: Path, queries: Path, param, n: int = 4) -> dict:
    """n reader processes at once: RSS of one, summed PSS (whole, and of files under `under`),
    and their q/s together."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", READER, kind, str(path), str(queries), str(param)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        t = time.perf_counter()
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        [float(p.stdout.readline()) for p in procs]
        wall = time.perf_counter() - t
        mem = []
        for p in procs:
            info, maps = psutil.Process(p.pid).memory_full_info(), psutil.Process(p.pid).memory_maps(grouped=True)
            files = [m for m in maps if m.path.startswith(str(under))]
            mem.append((info.rss, info.pss, sum(m.rss for m in files), sum(m.pss for m in files)))
        rss, pss, frss, fpss = (np.array(c) / MB for c in zip(*mem))
        return {
            "rss_one_mb": round(float(rss.max())),
            "pss_sum_mb": round(float(pss.sum())),
            "pss_ratio": round(float(pss.sum() / rss.max()), 2),
            "files_rss_one_mb": round(float(frss.max())),
            "files_pss_sum_mb": round(float(fpss.sum())),
            "qps_all_cores": round(n * len(np.load(queries)) / wall, 1),
        }
    finally:
        for p in procs:
            p.kill()
            p.wait()


def table(runs: list[dict], mem: dict) -> list[str]:
    lines = [
        "| statements | what | setting | recall@10 | p50 / p99 ms | q/s one core | q/s batch | build s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in runs:
        for name, key in (
            ("shardvec default", "nprobe"),
            ("shardvec exact", None),
            ("annoy", "search_k"),
            ("hnswlib", "ef"),
            ("faiss IVF", "nprobe"),
            ("faiss IVF, shardvec's nprobe", "nprobe"),
        ):
            if name not in r:
                continue
            f = r[name]
            build = f.get("build_s", r["index"]["statements"]["build_s"] if name == "shardvec default" else "")
            lines.append(
                f"| {r['statements']:,} | {name} | {f'{key} {f[key]:,}' if key else ''} | {f['recall']} | "
                f"{f['p50_ms']} / {f['p99_ms']} | {f['qps_one_core']} | {f.get('batch_qps', '')} | {build} |"
            )
    w = runs[0].get("words")
    if w:
        lines.append(
            f"\nneighbours(word, 10), {WORDS:,} words x {WORD_DIM}: recall {w['recall']} at nprobe "
            f"{w['nprobe']:,} of {w['nlist']:,} lists, p50 / p99 {w['p50_ms']} / {w['p99_ms']} ms; exact {w['exact']['p50_ms']} / "
            f"{w['exact']['p99_ms']} ms"
        )
    if mem:
        lines += [
            "",
            f"| 4 readers at {runs[-1]['statements']:,} | RSS of one MB | summed PSS MB (ratio) | "
            "store files: RSS of one / summed PSS MB | q/s, 4 processes on all cores |",
            "| --- | --- | --- | --- | --- |",
        ]
        for name, m in mem.items():
            lines.append(
                f"| {name} | {m['rss_one_mb']} | {m['pss_sum_mb']} ({m['pss_ratio']}x) | "
                f"{m['files_rss_one_mb']} / {m['files_pss_sum_mb']} | {m['qps_all_cores']} |"
            )
    return lines


def real_vectors(data: Path) -> tuple[np.ndarray, np.ndarray]:
    """The statements' and words' vectors of the version `data` publishes (LSI and word2vec
    trained on real text), unit length; the statements in an order shuffled with a fixed seed, so
    that the queries and additions taken from its end are a sample, not the newest partition."""
    import shardvec

    store = shardvec.open(data)

    def unit(space) -> np.ndarray:
        v = space.vectors_at(np.arange(len(space)))
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    statements = unit(store._statements.base)
    return statements[np.random.default_rng(0).permutation(len(statements))], unit(store._words)


def main() -> None:
    global WORDS, DIM, WORD_DIM, WORD_VECTORS
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[250_000, 500_000, 1_000_000])
    ap.add_argument("--words", type=int, default=WORDS)
    ap.add_argument("--no-others", dest="others", action="store_false", help="skip Annoy and hnswlib")
    ap.add_argument(
        "--vectors-from",
        type=Path,
        help="a data directory: its version's real vectors instead of structured ones, at a quarter, "
        "half and all of its statements (less the additions and queries taken from them)",
    )
    args = ap.parse_args()
    WORDS = args.words
    t0 = time.perf_counter()
    work = WORK / "search"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    if args.vectors_from:
        everything, WORD_VECTORS = real_vectors(args.vectors_from)
        WORDS, WORD_DIM, DIM = len(WORD_VECTORS), WORD_VECTORS.shape[1], everything.shape[1]
        top = len(everything) - ADDS - QUERIES
        args.sizes = [top // 4, top // 2, top]
    else:
        top = max(args.sizes)
        everything = structured(top + ADDS + QUERIES, DIM, 0)
    x, adds, queries = everything[:top], everything[top : top + ADDS], everything[top + ADDS :]
    np.save(work / "queries.npy", queries)
    libs, runs, words, data = Libraries(work), [], None, None
    for n in sorted(args.sizes):
        run, data = size(n, x, adds, queries, libs if args.others else None, work, words)
        words = words or (data / json.loads((data / "CURRENT").read_text())["components"]["words"])
        runs.append(run)
        print(json.dumps(run), flush=True)
    paths = libs.save() if args.others else {}
    current = json.loads((data / "CURRENT").read_text())
    last = runs[-1]
    q = work / "queries.npy"
    mem = {"shardvec default": readers("shardvec", data, data, q, None)}
    if args.others:
        mem["annoy"] = readers("annoy", paths["annoy"], work, q, last["annoy"]["search_k"])
        mem["hnswlib"] = readers("hnswlib", paths["hnswlib"], work, q, last["hnswlib"]["ef"])
    mem |= {
        "faiss IVF": readers(
            "faiss",
            data / current["components"]["statements_index"] / "ivf.faiss",
            data,
            q,
            last["faiss IVF"]["nprobe"],
        ),
    }
    lines = table(runs, mem)
    print("\n".join(lines))
    path = save(
        ("search_real" if args.vectors_from else "search") + ("" if args.others else "_no_others"),
        {"runs": runs, "readers": mem, "table": lines, "seconds": round(time.perf_counter() - t0)},
    )
    print(f"{path} ({round(time.perf_counter() - t0)} s)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
