"""How the similarity-rows stage grows with the corpus: exact vs partitioned vs plain Annoy.

Real-text statements are projected through a 200-topic LSI model that gensim trains on the
first TRAIN of them; the unit vectors are cached under benchmarks/work/rows_scale/. The text is
the documentation Debian packages ship (every English man page under /usr/share/man, roff
stripped) plus gensim's Wikipedia sample (`common.sentences`): about 380k distinct sentences,
in a seeded shuffle. Beyond them, runs of 2, then 3, consecutive sentences (as
`common.statements` does): those overlap their parts, so neighbours are easier above ~380k. For each size the rows are built by the plain step functions
in 2 worker processes (as the nightly's 2 Dask workers run them): time, the peak RSS of any
worker, and recall@10 against exact search on 2,000 sampled statements.

    python -m benchmarks.rows_scale [SIZES...]      # default 125000 250000 500000 1000000
    python -m benchmarks.rows_scale --vectors N     # only build the cached vectors
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from benchmarks.common import WORK, save, sentences

HERE = WORK / "rows_scale"
TOPICS, TRAIN, SAMPLE, K, SEED = 200, 100_000, 2_000, 10, 1
SIZES = (125_000, 250_000, 500_000, 1_000_000)
EXACT_MAX = 250_000  # exact rows are run up to here (minutes); beyond, extrapolated (quadratic)
BATCH = 20_000


_ROFF = re.compile(r"\\f[BIRP1-4]|\\f\(..|\\f\[[^\]]*\]|\\\(..|\\\[[^\]]*\]|\\\*\(..|\\\*.|\\[-&e|^~0 ]|\\s[-+]?\d")
_FONT = (".B", ".I", ".BR", ".IR", ".RB", ".BI", ".IB", ".RI")


def man_sentences() -> Iterator[str]:
    """Sentences of the English man pages installed here, roff requests and escapes removed."""
    for path in sorted(Path("/usr/share/man").glob("man*/*.gz")):
        try:
            text = gzip.open(path, "rt", encoding="utf-8", errors="replace").read()
        except (OSError, EOFError):
            continue
        for para in _paragraphs(text):
            yield from (s for s in re.split(r"(?<=[.!?])\s+", para) if len(s.split()) >= 5)


def _paragraphs(roff: str) -> list[str]:
    out = []
    for line in roff.split("\n"):
        if line.startswith((".", "'")):
            head, _, rest = line.partition(" ")
            out.append(rest.replace('"', "") if head in _FONT else "\n")  # other requests end a paragraph
        else:
            out.append(line)
    return [" ".join(_ROFF.sub("", p).split()) for p in " ".join(out).split("\n")]


def bench_statements(n: int) -> Iterator[str]:
    """n statements: the distinct sentences (shuffled, seeded), then runs of 2, 3, ... of them."""
    seen, base = set(), []
    for s in list(man_sentences()) + list(sentences()):
        if s not in seen:
            seen.add(s)
            base.append(s)
    base = [base[i] for i in np.random.default_rng(SEED).permutation(len(base))]
    made, width = 0, 1
    while made < n:
        for i in range(0, len(base) - width + 1):
            yield " ".join(base[i : i + width])
            made += 1
            if made == n:
                return
        width += 1


def _tokens(text: str) -> list[str]:
    from gensim.utils import simple_preprocess

    return simple_preprocess(text)


def build_vectors(n: int) -> Path:
    """The cached (n, TOPICS) float32 unit LSI vectors of the first n statements."""
    path = HERE / f"lsi-{n}.npy"
    if path.exists():
        return path
    from gensim.corpora import Dictionary
    from gensim.models import LsiModel, TfidfModel
    from shardvec.tasks.search.embed import tfidf_matrix

    HERE.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    train = [_tokens(text) for text in bench_statements(TRAIN)]
    dct = Dictionary(train)
    dct.filter_extremes(no_below=2, no_above=0.5, keep_n=100_000)
    bow = [dct.doc2bow(d) for d in train]
    tfidf = TfidfModel(bow)
    lsi = LsiModel(tfidf[bow], id2word=dct, num_topics=TOPICS, chunksize=20_000, random_seed=SEED)
    print(f"  LSI trained on {TRAIN:,} statements in {time.perf_counter() - t:.0f} s", flush=True)
    idf = np.array([tfidf.idfs.get(i, 0.0) for i in range(len(dct))])
    u = lsi.projection.u.astype(np.float32)
    out = np.lib.format.open_memmap(path.with_suffix(".tmp.npy"), mode="w+", dtype=np.float32, shape=(n, TOPICS))
    batch: list[list[str]] = []
    done = 0
    for text in bench_statements(n):
        batch.append(_tokens(text))
        if len(batch) == BATCH or done + len(batch) == n:
            out[done : done + len(batch)] = _project(batch, dct.token2id.get, idf, u, tfidf_matrix)
            done += len(batch)
            batch = []
            print(f"  projected {done:,}/{n:,}", flush=True)
    out.flush()
    del out
    path.with_suffix(".tmp.npy").rename(path)
    return path


def _project(docs, lookup, idf, u, tfidf_matrix) -> np.ndarray:
    v = np.asarray(tfidf_matrix(docs, lookup, idf) @ u, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return v / norms


def vectors(n: int) -> np.ndarray:
    return np.load(build_vectors(max(SIZES)), mmap_mode="r")[:n]


def space_for(n: int) -> Path:
    """The first n vectors as a statement space (50k rows a shard), cached."""
    from shardvec.tasks.storage.spaces import finish_space, write_shard

    path = HERE / f"space-{n}"
    if (path / "manifest.json").exists():
        return path
    x, r = vectors(n), 50_000
    shards = [
        write_shard(path, i, np.asarray(x[s : s + r]), [f"s{j}" for j in range(s, min(n, s + r))])
        for i, s in enumerate(range(0, n, r))
    ]
    finish_space(path, shards, dim=TOPICS, rows_per_shard=r, normalized=True)
    return path


@contextmanager
def workers() -> Iterator[ProcessPoolExecutor]:
    """2 fresh worker processes set up as the nightly's Dask nanny sets up its workers: one
    BLAS thread each (distributed's `pre-spawn-environ`). Forked from this process they would
    inherit a BLAS already started with a thread per core: 2 x 2 threads on 2 cores, measured
    2x slower on the score tasks than the nightly runs them."""
    import multiprocessing

    env = dict(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MALLOC_TRIM_THRESHOLD_="65536")
    saved = {var: os.environ.get(var) for var in env}
    os.environ.update(env)  # read by each worker as it starts (workers start as tasks arrive)
    try:
        with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
            yield pool
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


def _run(fn, *args, **kwargs) -> dict:
    from shardvec.flows.skins import measured

    cpu = time.process_time()
    return {**measured(fn)(*args, **kwargs), "cpu_seconds": time.process_time() - cpu}


def _phase(pool, calls) -> list[dict]:
    return [f.result() for f in [pool.submit(_run, *c[:-1], **c[-1]) for c in calls]]


def exact(space: Path, out: Path, n: int, pool) -> list[list[dict]]:
    from shardvec.tasks.search import rows
    from shardvec.tasks.search.similarity import tile_count

    args, tiles = dict(k=K, tile_rows=16_384, block_rows=1024), tile_count(n, 16_384)
    return [
        _phase(pool, [(rows.own_tile, space, t, out / "work", args) for t in range(tiles)]),
        _phase(pool, [(rows.tile_pair, space, i, j, out / "work", args) for i, j in rows.tile_pairs(n, 16_384)]),
        _phase(pool, [(rows.merge_tile, out / "work", t, tiles, out / "rows", dict(k=K)) for t in range(tiles)]),
    ]


def partitioned(space: Path, out: Path, n: int, pool, s) -> list[list[dict]]:
    from shardvec.tasks.search import partitioned as p
    from shardvec.tasks.storage.spaces import Space

    w, b = out / "work", dict(memory_budget_mb=s.memory_budget_mb)
    tasks = p.score_tasks_for(n, s.tile_rows, 2)
    return [
        _phase(
            pool,
            [
                (
                    p.train_centroids,
                    space,
                    w,
                    dict(
                        clusters=p.clusters_for(n, s.cluster_rows),
                        sample=s.kmeans_sample,
                        seed=SEED,
                        iterations=s.kmeans_iterations,
                        **b,
                    ),
                )
            ],
        ),
        _phase(pool, [(p.assign_shard, space, i, w, dict(probes=s.probes, **b)) for i in range(Space(space).n_shards)]),
        _phase(pool, [(p.group, space, w, {})]),
        _phase(
            pool,
            [(p.own_task, space, w, t, tasks, dict(k=s.width, max_queries=s.tile_rows, **b)) for t in range(tasks)],
        ),
        _phase(pool, [(p.bounds, w, tasks, n, {})]),
        _phase(
            pool,
            [(p.score_task, space, w, t, tasks, dict(k=s.width, max_queries=s.tile_rows, **b)) for t in range(tasks)],
        ),
        _phase(
            pool,
            [
                (
                    p.merge_tiles,
                    w,
                    first,
                    end,
                    tasks,
                    out / "rows",
                    dict(k=s.width, tile_rows=s.tile_rows, statements=n),
                )
                for first, end in p.merge_groups(-(-n // s.tile_rows), 2)
            ],
        ),
    ]


def annoy_plain(n: int, out: Path) -> dict:
    """benchmarks/plain.py's rows: one Annoy index, n_trees = ln(N), default search_k."""
    from annoy import AnnoyIndex
    from shardvec.tasks.quality.report import PeakRSS

    x = vectors(n)
    t = time.perf_counter()
    with PeakRSS() as mem:
        index = AnnoyIndex(TOPICS, "angular")
        for i in range(n):
            index.add_item(i, x[i])
        index.build(max(1, int(math.log(n))))
        built = time.perf_counter() - t
        rows = np.full((n, K), -1, dtype=np.int64)
        for i in range(n):
            nns = [j for j in index.get_nns_by_item(i, K + 1) if j != i][:K]
            rows[i, : len(nns)] = nns
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "rows.npy", rows)
    return {
        "seconds": round(time.perf_counter() - t, 1),
        "build_seconds": round(built, 1),
        "peak_rss_mb": round(mem.peak / (1 << 20), 1),
    }


def truth(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SAMPLE statements and their exact top-k (cached)."""
    from shardvec.tasks.search.topk import exact_topk
    from shardvec.tasks.storage.spaces import Space

    path = HERE / f"truth-{n}.npz"
    if not path.exists():
        picks = np.sort(np.random.default_rng(SEED).choice(n, SAMPLE, replace=False))
        space = Space(space_for(n))
        r, s = exact_topk(space, space.vectors_at(picks), K, exclude=picks)
        np.savez(path, picks=picks, rows=r, scores=s)
    z = np.load(path)
    return z["picks"], z["rows"], z["scores"]


def recall(n: int, rows: np.ndarray) -> float:
    """recall@10 against exact on the sample; rows are (SAMPLE, K) neighbour rows."""
    from shardvec.tasks.search.topk import recall_at_k

    picks, t_rows, t_scores = truth(n)
    x = vectors(n)
    found_s = np.einsum(
        "ij,ikj->ik", np.asarray(x[picks]), np.asarray(x[np.maximum(rows, 0).ravel()]).reshape(len(picks), K, -1)
    )
    return round(recall_at_k(rows, t_rows, found_s, t_scores), 4)


def stored_rows(rows_dir: Path, picks: np.ndarray) -> np.ndarray:
    from shardvec.tasks.search.similarity import SimilarityRows

    sim = SimilarityRows(rows_dir)
    return np.stack([sim.row(int(p))[0] for p in picks])


def measure(n: int, method: str) -> dict:
    import shutil
    from shardvec.config import load_settings
    from shardvec.tasks.search.similarity import finish_rows, tile_entries

    out = HERE / f"run-{method}-{n}"
    shutil.rmtree(out, ignore_errors=True)
    space, picks = space_for(n), truth(n)[0]
    t = time.perf_counter()
    if method == "annoy":
        r = annoy_plain(n, out)
        return {**r, "recall_at_10": recall(n, np.load(out / "rows.npy")[picks])}
    s = load_settings().similarity
    with workers() as pool:
        phases = exact(space, out, n, pool) if method == "exact" else partitioned(space, out, n, pool, s)
    seconds = time.perf_counter() - t
    finish_rows(
        out / "rows",
        tile_entries(phases[-1]),
        k=K,
        method=method,
        rows_per_shard=16_384,
        width=s.width if method == "partitioned" else K,
    )
    steps = [max(r["peak_rss_mb"] for r in ph) for ph in phases]
    result = {
        "seconds": round(seconds, 1),
        "peak_rss_mb": max(steps),
        "peak_anon_mb": max(r["peak_anon_mb"] for ph in phases for r in ph),
        "phase_seconds": [round(sum(r["seconds"] for r in ph), 1) for ph in phases],
        "phase_cpu_seconds": [round(sum(r["cpu_seconds"] for r in ph), 1) for ph in phases],
        "phase_peak_rss_mb": steps,
        # CPU time of the workers: what the machine's other load does not change much
        "cpu_seconds": round(sum(r.get("cpu_seconds", 0) for ph in phases for r in ph), 1),
        "load_average_1min": round(os.getloadavg()[0], 1),  # the machine is shared
        "recall_at_10": recall(n, stored_rows(out / "rows", picks)),
    }
    if method == "partitioned":
        result["products"] = sum(r.get("products", 0) for r in phases[-2])
        result["cross_candidates"] = sum(r.get("candidates", 0) for r in phases[-2])
        result["settings"] = {knob: getattr(s, knob) for knob in PARTITIONED_KNOBS}
    shutil.rmtree(out / "work", ignore_errors=True)
    return result


def main(sizes: list[int], methods: list[str]) -> dict:
    results = json.loads((RESULTS_FILE).read_text()).get("runs", {}) if RESULTS_FILE.exists() else {}
    for n in sizes:
        for method in methods:
            if method == "exact" and n > EXACT_MAX:
                continue
            print(f"{method} rows of {n:,} statements ...", flush=True)
            results[f"{method}/{n}"] = r = measure(n, method)
            print(f"  {r}", flush=True)
            save("rows_scale", {"runs": results, "note": NOTE})
    table(results)
    return results


PARTITIONED_KNOBS = ("cluster_rows", "probes", "kmeans_sample", "kmeans_iterations", "memory_budget_mb", "width")
NOTE = (
    "2 worker processes (1 for annoy, as the plain script); peak RSS = the highest of any task's process; "
    "exact is extrapolated beyond the sizes run, by its measured quadratic"
)
RESULTS_FILE = Path(__file__).parent / "results" / "rows_scale.json"


def table(results: dict) -> None:
    exact_runs = {int(k.split("/")[1]): v["seconds"] for k, v in results.items() if k.startswith("exact/")}
    print(f"{'statements':>11} {'method':>12} {'seconds':>9} {'peak RSS MB':>12} {'recall@10':>10}")
    for n in sorted({int(k.split("/")[1]) for k in results}):
        for method in ("exact", "partitioned", "annoy"):
            r = results.get(f"{method}/{n}")
            if r:
                print(f"{n:>11,} {method:>12} {r['seconds']:>9} {r['peak_rss_mb']:>12} {r['recall_at_10']:>10}")
            elif method == "exact" and exact_runs:
                m = max(exact_runs)
                print(f"{n:>11,} {'exact (ext.)':>12} {exact_runs[m] * (n / m) ** 2:>9.0f} {'':>12} {1.0:>10}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--vectors"]:
        print(build_vectors(int(sys.argv[2])))
    else:
        args = sys.argv[1:]
        methods = [a for a in args if not a.isdigit()] or ["exact", "partitioned", "annoy"]
        main([int(a) for a in args if a.isdigit()] or list(SIZES), methods)
