"""Partitioned similarity rows (issue 16): recall against exact search on real LSI vectors, the
format exact rows have, a nightly that runs them, and memory bounded by the configured budget."""

from __future__ import annotations

import itertools
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from gensim.corpora import Dictionary
from gensim.models import LsiModel, TfidfModel
from gensim.utils import simple_preprocess

from shardvec.tasks.search import partitioned
from shardvec.tasks.search.similarity import SimilarityRows, finish_rows, rows_recall
from shardvec.tasks.search.topk import best_per_row, exact_topk, recall_at_k
from shardvec.tasks.storage.datadir import DataDir
from shardvec.tasks.storage.spaces import Space, write_shard, finish_space
from tests.corpora import lee_lines
from tests.runs import small_settings

N = 4000


@pytest.fixture(scope="module")
def wiki_space(tmp_path_factory) -> Path:
    """N real sentences of gensim's Wikipedia sample as 100-topic LSI unit vectors, 3 shards."""
    from benchmarks.common import sentences

    docs = [simple_preprocess(s) for s in itertools.islice(sentences(), N)]
    dct = Dictionary(docs)
    dct.filter_extremes(no_below=2, no_above=0.5)
    bow = [dct.doc2bow(d) for d in docs]
    tfidf = TfidfModel(bow)
    lsi = LsiModel(tfidf[bow], id2word=dct, num_topics=100, random_seed=1)
    vecs = np.zeros((N, 100), dtype=np.float32)
    for i, v in enumerate(lsi[tfidf[bow]]):
        for t, x in v:
            vecs[i, t] = x
    vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    space = tmp_path_factory.mktemp("wiki") / "space"
    R = 1500
    shards = [
        write_shard(space, i, vecs[s : s + R], [f"w/{j}" for j in range(s, min(N, s + R))])
        for i, s in enumerate(range(0, N, R))
    ]
    finish_space(space, shards, dim=100, rows_per_shard=R, normalized=True)
    return space


def _rows(space: Path, out: Path, **knobs) -> SimilarityRows:
    args = {
        **dict(
            k=10,
            tile_rows=1024,
            cluster_rows=256,
            probes=6,
            kmeans_sample=65_536,
            kmeans_iterations=10,
            seed=1,
            memory_budget_mb=1024,
            tasks=3,
        ),
        **knobs,
    }
    shards = partitioned.partitioned_rows(space, out / "work", out / "rows", **args)
    finish_rows(out / "rows", shards, k=10, method="partitioned", rows_per_shard=args["tile_rows"], width=args["k"])
    return SimilarityRows(out / "rows")


def test_merges_in_groups_of_tiles_write_the_rows_of_one_merge(wiki_space, tmp_path):
    """The nightly merges a group of tiles a task (`merge_groups`): the groups cover every tile
    once, and the files they write are byte for byte those of one merge of all tiles."""
    _rows(wiki_space, tmp_path)
    whole = json.loads((tmp_path / "rows" / "manifest.json").read_text())["shards"]
    assert partitioned.merge_groups(4, 1) == [(0, 2), (2, 4)]
    assert partitioned.merge_groups(3, 2) == [(0, 1), (1, 2), (2, 3)]
    assert partitioned.merge_groups(0, 2) == []
    grouped = [
        e
        for first, end in partitioned.merge_groups(len(whole), 1)
        for e in partitioned.merge_tiles(
            tmp_path / "work", first, end, 3, tmp_path / "grouped", k=10, tile_rows=1024, statements=N
        )["shards"]
    ]
    assert [e["sha256"] for e in grouped] == [e["sha256"] for e in whole] and len(whole) == 4


def test_the_kept_clusters_name_the_pairs_the_rows_scored(wiki_space, tmp_path):
    """`Clusters.candidates` of a statement's vector are exactly the statements its pairs join
    it with: i's nearest cluster among j's probes, or j's nearest among i's."""
    _rows(wiki_space, tmp_path, cluster_rows=64, probes=4)
    clusters = partitioned.Clusters.open(tmp_path / "rows")
    assert clusters is not None and clusters.probes == 4 and clusters.members.dtype == np.int32
    space, work = Space(wiki_space), tmp_path / "work"
    near = np.concatenate([np.load(work / f"assign-{s:05d}.npy") for s in range(space.n_shards)])
    for i in np.random.default_rng(3).choice(N, 40, replace=False).tolist():
        want = np.flatnonzero((near == near[i, 0]).any(axis=1) | np.isin(near[:, 0], near[i]))
        assert np.array_equal(clusters.candidates(space.vectors_at([i])), want)
    assert partitioned.Clusters.open(wiki_space) is None  # a folder without them: exact rows


def test_partitioned_rows_reach_recall_095_on_real_lsi_vectors(wiki_space, tmp_path):
    sim = _rows(wiki_space, tmp_path)
    space = Space(wiki_space)
    every = np.arange(N)
    truth, truth_s = exact_topk(space, space.vectors_at(every), 10, exclude=every)
    found = [sim.row(r) for r in every]
    rows, scores = np.stack([r for r, _ in found]), np.stack([s for _, s in found])
    assert recall_at_k(rows, truth, scores, truth_s) >= 0.95
    assert (rows != every[:, None]).all() and (rows >= 0).all()  # never itself, always k rows
    # a stored score is the true cosine of the row it names, sorted best first
    true = np.einsum("ij,ikj->ik", space.vectors_at(every), space.vectors_at(rows.ravel()).reshape(N, 10, -1))
    assert np.allclose(scores, true, atol=1e-5) and (np.diff(scores, axis=1) <= 0).all()


def test_one_probe_and_tiny_clusters_lose_recall_the_measure_sees(wiki_space, tmp_path):
    """The recall test above can fail: a starved partitioning is measured far below the floor."""
    sim = _rows(wiki_space, tmp_path, cluster_rows=16, probes=2)
    assert sim.manifest["method"] == "partitioned"
    assert rows_recall(wiki_space, tmp_path / "rows", sample=500, seed=1)["rows_recall_at_k"] < 0.9


def test_partitioned_rows_are_read_like_exact_rows(wiki_space, tmp_path):
    sim = _rows(wiki_space, tmp_path)
    assert sim.verify() == [] and sim.rows_per_shard == 1024 and sim.k == 10
    assert sorted(p.name for p in (tmp_path / "rows").glob("*.npy")) == sorted(
        [f"{kind}-{i:05d}.npy" for kind in ("rows", "scores") for i in range(4)]
        + [f"clusters-{name}.npy" for name in partitioned.CLUSTER_FILES]
    )
    last = np.load(tmp_path / "rows" / "rows-00003.npy")
    assert last.shape == (N - 3 * 1024, 10) and last.dtype == np.int64


def test_rows_equal_every_pair_the_clusters_pair_scored_and_kept_by_the_bounds(wiki_space, tmp_path):
    """Each pass keeps only what can still enter a row (`bounds`): the rows must equal the best
    k of every pair the clusters pair (i's nearest cluster among j's probes, or j's among i's),
    all scored. Small clusters, so some bounds are -inf (clusters of fewer than k+1)."""
    k = 14
    sim = _rows(wiki_space, tmp_path, k=k, cluster_rows=24, probes=3, tasks=4)
    space, work = Space(wiki_space), tmp_path / "work"
    near = np.concatenate([np.load(work / f"assign-{s:05d}.npy") for s in range(space.n_shards)])
    assert np.isinf(np.load(work / "bounds.npy")).any()
    member = np.zeros((N, near.max() + 1), dtype=bool)
    member[np.arange(N)[:, None], near] = True
    paired = member[:, near[:, 0]] | member[:, near[:, 0]].T  # [j, i]: i's nearest among j's probes
    np.fill_diagonal(paired, False)
    i, j = np.nonzero(paired)
    vecs = space.vectors_at(np.arange(N))
    want_rows, want_scores = best_per_row(i, j, np.einsum("ij,ij->i", vecs[i], vecs[j]), N, k)
    rows, scores = (
        np.concatenate([np.load(tmp_path / "rows" / f"{kind}-{t:05d}.npy") for t in range(4)])
        for kind in ("rows", "scores")
    )
    assert sim.width == k and rows.shape == (N, k)
    assert np.allclose(scores, want_scores, atol=1e-6)
    # the same neighbours, but where two score within float error of each other (products of
    # other shapes round differently)
    assert (rows == want_rows).mean() > 0.999


def test_fast_top_k_orders_like_the_lexsort(tmp_path):
    """The integer sort key of the kernel (`_descending`) orders as (score desc, row asc):
    negative scores, -0.0 against 0.0, exact ties."""
    rng = np.random.default_rng(7)
    values = np.array([-1.0, -0.5, -0.0, 0.0, 1e-39, -1e-39, 0.25, 0.25000003, 0.5, 1.0], dtype=np.float32)
    for _ in range(50):
        n = int(rng.integers(1, 400))
        local, cand = rng.integers(0, 9, n), rng.integers(0, 30, n)
        pair = local * 30 + cand
        score = values[np.asarray([hash((int(x), 3)) % len(values) for x in pair])]  # one score per pair
        order = np.argsort(local * 30 + cand, kind="stable")  # candidates ascending within a query
        local, cand, score = local[order], cand[order], score[order]
        once = np.unique(local * 30 + cand, return_index=True)[1]
        local, cand, score = local[once], cand[once], score[once]
        k = int(rng.integers(1, 6))
        got = partitioned._best_k(local, cand, score, 9, k)
        want = best_per_row(local, cand, score, 9, k)
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
        flat = partitioned._top_per_statement((local, cand, score), k=k)
        assert np.array_equal(flat[1], want[0][want[0] >= 0])


def test_gathers_read_the_space_without_mapping_it(tmp_path):
    """Score tasks gather rows spread over the whole space. Through the mapping each fault maps
    a folio of neighbours, and a process ends up holding most of the space (1,094 MB at 1M
    statements); `Space.read` reads the rows alone. Same values as `rows` in every dtype."""
    import psutil
    from shardvec.tasks.storage.spaces import convert_space

    rng = np.random.default_rng(0)
    n, dim = 80_000, 200  # 64 MB of vectors
    space = tmp_path / "space"
    vecs = rng.standard_normal((n, dim), dtype=np.float32)
    finish_space(
        space,
        [
            write_shard(space, i, vecs[s : s + 20_000], [str(j) for j in range(s, s + 20_000)])
            for i, s in enumerate(range(0, n, 20_000))
        ],
        dim=dim,
        rows_per_shard=20_000,
        normalized=False,
    )
    picks = rng.choice(n, 4000, replace=False)
    for dtype in ("float32", "float16", "int8"):
        s = Space(space if dtype == "float32" else convert_space(space, tmp_path / dtype, dtype) and tmp_path / dtype)
        assert np.array_equal(s.read(picks), s.vectors_at(picks))
    s, proc = Space(space), psutil.Process()
    before = proc.memory_info().rss
    got = s.read(np.sort(picks))
    assert proc.memory_info().rss - before < 2 * got.nbytes + (8 << 20)  # the rows, not the space


def test_a_large_cluster_scores_within_the_memory_budget(tmp_path):
    """One cluster of 20k statements (everything in one cluster): the score task's Python-side
    allocations stay within the budget's working share (128 MB), not the cluster's n^2 scores
    (1.6 GB). The time is the n^2 scoring itself: 60k statements took ~2 minutes, 20k ~14 s."""
    rng = np.random.default_rng(0)
    n, dim, budget = 20_000, 100, 512
    space = tmp_path / "space"
    vecs = rng.standard_normal((n, dim), dtype=np.float32)
    finish_space(
        space, [write_shard(space, 0, vecs, [str(i) for i in range(n)])], dim=dim, rows_per_shard=n, normalized=False
    )
    work = tmp_path / "work"
    partitioned.train_centroids(space, work, clusters=2, sample=1000, iterations=2, seed=1, memory_budget_mb=budget)
    partitioned.assign_shard(space, 0, work, probes=2, memory_budget_mb=budget)
    partitioned.group(space, work)  # 2 clusters, every statement a candidate in both
    for step in (
        lambda: partitioned.own_task(space, work, 0, 1, k=10, max_queries=n, memory_budget_mb=budget),
        lambda: partitioned.bounds(work, 1, n),
        lambda: partitioned.score_task(space, work, 0, 1, k=10, max_queries=n, memory_budget_mb=budget),
    ):
        tracemalloc.start()
        step()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < (budget - partitioned.BASELINE_MB) * partitioned.MB


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_nightly_above_the_exact_threshold_publishes_partitioned_rows(corpus_data):
    from tests.runs import run_nightly

    settings = small_settings(
        corpus_data,
        similarity={"method": "auto", "exact_max_statements": 100, "cluster_rows": 64, "tile_rows": 100},
        quality={"gate": True, "rows_recall_floor": 0.95},
    )
    report = run_nightly(settings)
    assert report["status"] == "published" and report["rows_method"] == "partitioned"
    assert report["statements"] > 300 and report["quality"]["rows_recall_at_10"] >= 0.95
    current = json.loads((corpus_data / "CURRENT").read_text())
    rows_dir = corpus_data / current["components"]["similarity"]
    assert json.loads((rows_dir / "manifest.json").read_text())["method"] == "partitioned"
    sim = SimilarityRows(rows_dir)
    assert sim.verify() == [] and sim.manifest["rows"] == report["statements"]
    assert {s["step"] for s in report["steps"]} >= {"similarity-rows", "merge-rows"}
    assert (rows_dir / "clusters.json").exists()  # kept for adds


@pytest.mark.slow
def test_a_small_add_into_partitioned_rows_scores_the_pairs_its_clusters_name(corpus_data):
    """Into a version with partitioned rows, a single add is scored against the statements its
    clusters pair it with (and every added one), not every row: its row is the exact best of
    those, and every one of those whose row it beats holds it. A batch over PROBED_MAX scans all."""
    import shardvec
    from shardvec.tasks.changes.segments import PROBED_MAX, Statements
    from tests.runs import nightly_in_process  # the Dask run of partitioned rows is the test above

    similarity = {"method": "auto", "exact_max_statements": 100, "cluster_rows": 32, "probes": 2, "tile_rows": 100}
    assert nightly_in_process(corpus_data, similarity=similarity)["rows_method"] == "partitioned"  # 11 clusters
    texts = lee_lines()[-3:]
    for i, text in enumerate(texts):
        assert shardvec.add([{"id": f"new/{i}", "text": text}], data=corpus_data)["added"] == 1
    view = Statements(corpus_data, DataDir(corpus_data).current())
    assert view.clusters is not None and 3 < PROBED_MAX
    n = len(view)
    every = np.arange(n)
    vecs = view.vectors_at(every)
    scores = vecs @ vecs.T
    np.fill_diagonal(scores, -np.inf)
    probed = 0
    for x in range(n - 3, n):
        pool = np.union1d(view.clusters.candidates(vecs[x]), np.arange(len(view.base), x))  # added before it
        assert len(pool) < len(view.base)  # not every row
        rows, row_scores = view.full_row(x)
        best = pool[np.lexsort((pool, -scores[x, pool]))][: view.width]
        assert np.array_equal(rows, best) and np.allclose(row_scores, scores[x, best], atol=1e-5)
        later = np.arange(x + 1, n)
        for j in np.union1d(pool, later).tolist():  # its pairs: each row it beats holds it
            held_rows, held_scores = view.full_row(j)
            if scores[j, x] > held_scores[-1] + 1e-5:
                assert x in held_rows, f"row {j} should hold {x}"
                probed += 1
    assert probed > 0  # the reverse updates were exercised
    truth, truth_s = exact_topk(view, vecs[n - 3 :], view.k, exclude=np.arange(n - 3, n))
    got = [view.row(x) for x in range(n - 3, n)]
    assert recall_at_k(np.stack([r for r, _ in got]), truth, np.stack([s for _, s in got]), truth_s) >= 0.9
    # deletes that thin its clusters: a small add scans every row instead (else its row held
    # only the few candidates left, or none)
    from shardvec.tasks.changes.additions import Adder
    from shardvec.tasks.search.topk import unit_rows

    text = lee_lines()[-4]
    adder = Adder(corpus_data, on_duplicate="reject", max_record_bytes=1_000_000)
    probe = unit_rows(adder.embedder.embed([adder.tokenizer(text)]))
    doomed = adder.view.clusters.candidates(probe)
    assert shardvec.delete([adder.view.key(int(r)) for r in doomed], data=corpus_data)["deleted"] == len(doomed)
    assert shardvec.add([{"id": "after-deletes", "text": text}], data=corpus_data)["added"] == 1
    view = Statements(corpus_data, DataDir(corpus_data).current())
    x = view.find("after-deletes")
    rows, _ = view.row(x)
    truth, _ = exact_topk(view, view.vectors_at([x]), view.k, exclude=np.array([x]))
    assert len(rows) == view.k and set(rows.tolist()) == set(truth[0].tolist())
