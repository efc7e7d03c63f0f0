"""Exact top-k over shards, similarity rows and the spaces' IVF indexes."""

import numpy as np
import pytest

from shardvec.tasks.storage.atomic import sha256_file
from shardvec.tasks.search.index import SpaceIndex, build_index, index_recall, lists_for, index_manifest
from shardvec.tasks.search.rows import rows_for_tile
from shardvec.tasks.search.similarity import SimilarityRows, finish_rows, rows_recall, tile_count
from shardvec.tasks.search.topk import RowsInRam, exact_topk
from shardvec.tasks.storage.spaces import Space, SpaceWriter
from tests.checks import resident_kb


def _random_space(tmp_path, n=700, dim=12, rows_per_shard=100, normalized=False):
    rng = np.random.default_rng(1)
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    if normalized:
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    w = SpaceWriter(tmp_path / "s", dim, rows_per_shard)
    w.append([str(i) for i in range(n)], vecs)
    w.close(normalized=normalized)
    return Space(tmp_path / "s"), vecs


def _brute(vecs, queries, k, exclude):
    u = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    s = q @ u.T
    s[np.arange(len(q)), exclude] = -np.inf
    return np.argsort(-s, axis=1, kind="stable")[:, :k], np.sort(s, axis=1)[:, ::-1][:, :k]


@pytest.mark.parametrize("normalized", [False, True])
def test_exact_topk_across_shards_equals_brute_force(tmp_path, normalized):
    space, vecs = _random_space(tmp_path, normalized=normalized)
    picks = np.array([0, 99, 100, 350, 699])
    rows, scores = exact_topk(space, vecs[picks], 15, exclude=picks)
    ref_rows, ref_scores = _brute(vecs, vecs[picks], 15, picks)
    assert np.array_equal(rows, ref_rows)
    assert np.allclose(scores, ref_scores, atol=1e-5)
    assert not np.isin(picks, rows).any() or all(p not in r for p, r in zip(picks, rows))


def test_exact_topk_pads_when_space_is_small(tmp_path):
    space, vecs = _random_space(tmp_path, n=5, rows_per_shard=2)
    rows, scores = exact_topk(space, vecs[:1], 10, exclude=np.array([0]))
    assert (rows[0, :4] >= 0).all() and (rows[0, 4:] == -1).all() and np.isneginf(scores[0, 4:]).all()


def test_similarity_rows_per_tile_equal_brute_force(tmp_path):
    space, vecs = _random_space(tmp_path, normalized=True)
    out = tmp_path / "rows"
    # tiles of 70 rows straddle the space's shards of 100
    tiles = [
        rows_for_tile(tmp_path / "s", t, out, k=10, tile_rows=70, block_rows=33)
        for t in range(tile_count(len(space), 70))
    ]
    finish_rows(out, tiles, k=10, method="exact", rows_per_shard=70)
    sim = SimilarityRows(out)
    ref_rows, _ = _brute(vecs, vecs, 10, np.arange(len(vecs)))
    got = np.stack([sim.row(r)[0] for r in range(len(vecs))])
    assert np.array_equal(got, ref_rows)
    assert rows_recall(tmp_path / "s", out, sample=50, seed=0)["rows_recall_at_k"] == 1.0
    assert sim.verify() == []


def test_rows_recall_notices_wrong_rows(tmp_path):
    space, _ = _random_space(tmp_path, normalized=True)
    out = tmp_path / "rows"
    tiles = [
        rows_for_tile(tmp_path / "s", t, out, k=10, tile_rows=100, block_rows=64)
        for t in range(tile_count(len(space), 100))
    ]
    finish_rows(out, tiles, k=10, method="exact", rows_per_shard=100)
    np.save(out / "rows-00000.npy", np.roll(np.load(out / "rows-00000.npy"), 1, axis=0))
    assert rows_recall(tmp_path / "s", out, sample=700, seed=0)["rows_recall_at_k"] < 0.9


def _clustered_space(tmp_path, n=6000, dim=20, rows_per_shard=1000, seed=1):
    """Unit rows around 60 centres (as real vectors are: clustered), over several shards."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((60, dim)).astype(np.float32)
    vecs = centres[rng.integers(0, 60, n)] + 0.5 * rng.standard_normal((n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    w = SpaceWriter(tmp_path / "s", dim, rows_per_shard)
    w.append([str(i) for i in range(n)], vecs)
    w.close(normalized=True)
    return Space(tmp_path / "s"), vecs


def test_the_streamed_index_file_is_what_faiss_writes_after_adding_the_whole_space(tmp_path):
    """write_lists writes faiss's file format itself, shard by shard, instead of `add` (which
    holds every vector in RAM): byte for byte what faiss writes, or faiss could not read it."""
    import faiss

    space, vecs = _clustered_space(tmp_path, n=3000, rows_per_shard=700)
    built = build_index(tmp_path / "s", tmp_path / "ix", nlist=0, nprobe=4, seed=1)
    assert built["kind"] == "faiss-ivf" and built["format"] == 3 and built["nlist"] == lists_for(3000) == 76
    mine = faiss.read_index(str(tmp_path / "ix" / "ivf.faiss"))
    ref = faiss.IndexIVFFlat(faiss.IndexFlatIP(space.dim), space.dim, built["nlist"], faiss.METRIC_INNER_PRODUCT)
    ref.quantizer.add(mine.quantizer.reconstruct_n(0, built["nlist"]))
    ref.is_trained = True
    ref.add(vecs)
    faiss.write_index(ref, str(tmp_path / "ref.faiss"))
    assert (tmp_path / "ref.faiss").read_bytes() == (tmp_path / "ix" / "ivf.faiss").read_bytes()
    assert built["sha256"] == sha256_file(tmp_path / "ix" / "ivf.faiss")


def test_lists_follow_the_rows_within_the_training_samples_bounds():
    assert [lists_for(n) for n in (0, 1, 100, 10_000, 250_000, 1_000_000, 10**8)] == [1, 1, 2, 256, 2000, 3360, 3360]
    assert lists_for(1_000_000, nlist=1024) == 1024 and lists_for(500, nlist=1024) == 12


def test_one_ivf_index_per_space_at_every_list_is_exact(tmp_path):
    space, vecs = _clustered_space(tmp_path)
    built = build_index(tmp_path / "s", tmp_path / "ix", nlist=0, nprobe=4, seed=1)
    assert built["items"] == 6000 and sorted(p.name for p in (tmp_path / "ix").iterdir()) == [
        "ivf.faiss",
        "manifest.json",
    ]
    index = SpaceIndex(tmp_path / "ix", space.dim)
    picks = np.arange(0, 6000, 60)
    exact, exact_s = exact_topk(space, vecs[picks], 10, exclude=picks)
    every = built["nlist"]
    rows, scores = index.search_many(vecs[picks], 10, effort=every, exclude=picks)
    assert np.array_equal(rows, exact) and np.allclose(scores, exact_s, atol=1e-5)
    full = index_recall(tmp_path / "s", tmp_path / "ix", k=10, nprobe=every, sample=100, seed=0)
    one = index_recall(tmp_path / "s", tmp_path / "ix", k=10, nprobe=1, sample=100, seed=0)
    assert full["recall_at_k"] == 1.0 and one["recall_at_k"] < 0.9  # nprobe is what buys recall
    many_rows, many_scores = index.search_many(vecs[picks], 10, effort=8, exclude=picks)
    one_by_one = [index.search(vecs[p], 10, effort=8, drop=np.array([p])) for p in picks]
    assert np.array_equal(many_rows, np.stack([r for r, _ in one_by_one]))
    assert np.array_equal(many_scores, np.stack([s for _, s in one_by_one]))
    # deleted rows are dropped and the index asked for more: still k
    near = exact[0]
    rows, _ = index.search(vecs[picks[0]], 10, effort=every, drop=np.sort(np.append(near[:8], picks[0])))
    assert len(rows) == 10 and not set(near[:8].tolist()) & set(rows.tolist()) and rows[0] == near[8]


def test_tuning_finds_the_smallest_nprobe_at_the_target_and_records_it(tmp_path):
    _clustered_space(tmp_path)
    build_index(tmp_path / "s", tmp_path / "ix", nlist=0, nprobe=1, seed=1)
    up = index_recall(tmp_path / "s", tmp_path / "ix", k=10, nprobe=1, sample=100, seed=0, target=0.95)
    assert up["recall_at_k"] >= 0.95 and up["nprobe"] > 1 and up["tuned_from"] == 1
    below = index_recall(tmp_path / "s", tmp_path / "ix", k=10, nprobe=up["nprobe"] // 2, sample=100, seed=0)
    assert below["recall_at_k"] < 0.95
    assert index_manifest(tmp_path / "ix")["nprobe"] == up["nprobe"]  # where readers take it from
    down = index_recall(tmp_path / "s", tmp_path / "ix", k=10, nprobe=up["nprobe"] * 8, sample=100, seed=0, target=0.95)
    assert down["nprobe"] == up["nprobe"]


def test_an_empty_space_has_an_index_that_finds_nothing(tmp_path):
    w = SpaceWriter(tmp_path / "s", 8, 100)
    w.close(normalized=True)
    built = build_index(tmp_path / "s", tmp_path / "ix", nlist=0, nprobe=4, seed=1)
    rows, scores = SpaceIndex(tmp_path / "ix", 8).search_many(np.ones((2, 8), np.float32), 5)
    assert built["items"] == 0 and (rows == -1).all() and np.isneginf(scores).all()


def test_a_scan_leaves_the_space_unmapped_but_readable(tmp_path):
    space, vecs = _random_space(tmp_path, n=200_000, dim=64, rows_per_shard=200_000)  # 51 MB
    shard0 = tmp_path / "s" / space.manifest["shards"][0]["vectors"]
    seen, resident = 0.0, []
    for _start, block in space.blocks(4096):
        seen += float(block.sum(dtype=np.float64))
        resident.append(resident_kb(shard0))
    assert np.isclose(seen, float(vecs.sum(dtype=np.float64)), rtol=1e-5)
    # the block in hand (1 MB) and the page-cache folios the kernel maps around a fault
    # (up to 2 MB each), not the 51 MB of the shard a scan without releasing keeps mapped
    assert max(resident) <= 8 * 1024
    assert np.array_equal(space.range(0, 200_000), vecs)  # released pages read back from the page cache
    assert resident_kb(shard0) > 40 * 1024


@pytest.mark.parametrize("n, tile_rows, normalized", [(700, 130, False), (700, 700, True), (25, 7, True)])
def test_rows_from_tile_pairs_equal_brute_force(tmp_path, n, tile_rows, normalized):
    """Each pair of tiles scored once serves both tiles' rows; the bounds from a tile's own
    rows never drop a true neighbour (7-row tiles: fewer than k others in a tile)."""
    from shardvec.tasks.search import rows as R

    space, vecs = _random_space(tmp_path, n=n, normalized=normalized)
    work, out = tmp_path / "work", tmp_path / "rows"
    tiles = R.tile_count(n, tile_rows)
    for t in range(tiles):
        R.own_tile(tmp_path / "s", t, work, k=10, tile_rows=tile_rows, block_rows=33)
    for i, j in R.tile_pairs(n, tile_rows):
        R.tile_pair(tmp_path / "s", i, j, work, k=10, tile_rows=tile_rows, block_rows=33)
    shards = [R.merge_tile(work, t, tiles, out, k=10) for t in range(tiles)]
    finish_rows(out, shards, k=10, method="exact", rows_per_shard=tile_rows)
    sim = SimilarityRows(out)
    ref_rows, _ = _brute(vecs, vecs, 10, np.arange(n))
    assert np.array_equal(np.stack([sim.row(r)[0] for r in range(n)]), ref_rows)


def test_a_tile_pair_of_one_vector_repeated_holds_k_candidates_a_row(tmp_path):
    """#33 hostile review: rows of one text repeated (20,000 records of boilerplate) all tie with
    their bounds, and a tile pair held every tie: 16,384 x 16,384 candidates, a worker past its
    memory limit every night. It holds at most k a row a block now."""
    from shardvec.tasks.search import rows as R

    n, tile_rows, k = 2048, 1024, 10
    w = SpaceWriter(tmp_path / "s", 8, 1024)
    w.append([str(i) for i in range(n)], np.tile(np.eye(8, dtype=np.float32)[0], (n, 1)))
    w.close(normalized=True)
    work, out = tmp_path / "work", tmp_path / "rows"
    for t in range(2):
        R.own_tile(tmp_path / "s", t, work, k=k, tile_rows=tile_rows, block_rows=256)
    found = R.tile_pair(tmp_path / "s", 0, 1, work, k=k, tile_rows=tile_rows, block_rows=256)
    assert found["candidates"] <= k * tile_rows * (1 + tile_rows // 256), (
        found
    )  # k a row a block (all 2 x 1024^2 before)
    shards = [R.merge_tile(work, t, 2, out, k=k) for t in range(2)]
    finish_rows(out, shards, k=k, method="exact", rows_per_shard=tile_rows)
    sim = SimilarityRows(out)
    for r in range(n):  # any k others: they all tie at 1.0
        rows, scores = sim.row(r)
        assert len(set(rows.tolist()) - {r}) == k and np.allclose(scores, 1.0)


def test_similarity_rows_asked_of_the_index_equal_exact_ones_at_every_list(tmp_path):
    """similarity.method = "index": each tile's rows from the statements' index."""
    _random_space(tmp_path, n=2000, dim=20, rows_per_shard=700, normalized=True)  # Gaussian: hard for lists
    built = build_index(tmp_path / "s", tmp_path / "ix", nlist=0, nprobe=4, seed=1)
    out = tmp_path / "rows"
    tiles = [
        rows_for_tile(
            tmp_path / "s",
            t,
            out,
            k=10,
            tile_rows=900,
            block_rows=256,
            method="index",
            index_dir=tmp_path / "ix",
            nprobe=built["nlist"],
        )
        for t in range(tile_count(2000, 900))
    ]
    finish_rows(out, tiles, k=10, method="index", rows_per_shard=900)
    assert rows_recall(tmp_path / "s", out, sample=200, seed=0)["rows_recall_at_k"] == 1.0
    tiles = [
        rows_for_tile(
            tmp_path / "s",
            t,
            out,
            k=10,
            tile_rows=900,
            block_rows=256,
            method="index",
            index_dir=tmp_path / "ix",
            nprobe=1,
        )
        for t in range(tile_count(2000, 900))
    ]
    finish_rows(out, tiles, k=10, method="index", rows_per_shard=900)
    assert rows_recall(tmp_path / "s", out, sample=200, seed=0)["rows_recall_at_k"] < 0.95  # the index answered


def test_added_rows_are_found_as_an_index_holding_them_finds_them(tmp_path):
    """Rows added since the index was built (a reader's addition segments, issue 35) are placed in
    its lists and scored when a query probes their list: the answers are those of a faiss index
    that holds the added rows too, at every nprobe; at every list they are exact; dropped added
    rows are never returned."""
    import faiss

    space, vecs = _clustered_space(tmp_path)
    built = build_index(tmp_path / "s", tmp_path / "ix", nlist=0, nprobe=4, seed=1)
    index = SpaceIndex(tmp_path / "ix", space.dim)
    rng = np.random.default_rng(7)
    added = vecs[rng.integers(0, 6000, 900)] + 0.3 * rng.standard_normal((900, space.dim)).astype(np.float32)
    added /= np.linalg.norm(added, axis=1, keepdims=True)
    parts = [(6000, added[:500]), (6500, added[500:]), (7000, added[:0])]  # two segments and an empty one
    index.add([(start, part, index.place(part)) for start, part in parts])
    assert len(index.added) == 900 and index.searchable == 6900

    holding = faiss.IndexIVFFlat(index.index.quantizer, space.dim, built["nlist"], faiss.METRIC_INNER_PRODUCT)
    holding.is_trained = True
    holding.add(np.vstack([vecs, added]))
    queries = np.vstack([added[::45], vecs[::300]])
    for nprobe in (1, 4, 16):
        want_s, want = holding.search(queries, 10, params=faiss.SearchParametersIVF(nprobe=nprobe))
        rows, scores = index.search_many(queries, 10, effort=nprobe)
        full = (want >= 0).all(axis=1)  # (a list short of k rows: shardvec probes more, faiss pads)
        assert full.mean() > 0.9 and (rows >= 0).all()
        assert np.array_equal(rows[full], want[full]) and np.allclose(scores[full], want_s[full], atol=1e-5)
        one = [index.search(q, 10, effort=nprobe) for q in queries]
        assert np.array_equal(np.stack([r for r, _ in one]), rows)

    everything = RowsInRam(np.vstack([vecs, added]))
    exact, exact_s = exact_topk(everything, queries, 10)
    rows, scores = index.search_many(queries, 10, effort=built["nlist"])
    assert np.array_equal(rows, exact) and np.allclose(scores, exact_s, atol=1e-5)

    # an added row deleted since (a reader's `dead`) is never returned, and k still come back
    found, _ = index.search(added[0], 10, effort=4)
    assert found[0] == 6000
    kept, _ = index.search(added[0], 10, effort=4, drop=np.array([6000]))
    assert 6000 not in kept and len(kept) == 10
    # list numbers that do not fit the rows or the index are refused (faiss would write past them)
    with pytest.raises(ValueError):
        index.add([(6000, added[:5], index.place(added[:4]))])
    with pytest.raises(ValueError):
        index.add([(6000, added[:2], np.array([0, built["nlist"]]))])
    # nothing added is nothing searched
    index.add([])
    assert index.added is None and index.search(added[0], 1, effort=4)[0][0] < 6000


def test_threads_asking_one_index_for_different_nprobes_get_their_own_answers(tmp_path):
    """Hostile review: a thread asking for a large k probes more lists while another asks at the
    tuned nprobe; the search parameters were the index's, changed under the other thread, and
    faiss read its probed lists past their end ("Invalid key")."""
    import threading

    space, vecs = _clustered_space(tmp_path)
    build_index(tmp_path / "s", tmp_path / "ix", nlist=0, nprobe=2, seed=1)
    index = SpaceIndex(tmp_path / "ix", space.dim)
    added = vecs[:300] + 0.01
    index.add([(6000, added, index.place(added))])
    queries = vecs[1000:1020]
    want = [index.search(q, 10, effort=2)[0] for q in queries]
    errors, wrong = [], []

    def asks(k: int, effort: int, check: bool) -> None:
        for _ in range(15):
            for q, w in zip(queries, want):
                try:
                    rows, _ = index.search(q, k, effort=effort)
                except Exception as exc:  # noqa: BLE001 - the failure this test looks for
                    errors.append(repr(exc)[:200])
                    return
                if check and not np.array_equal(rows, w):
                    wrong.append(rows)

    threads = [threading.Thread(target=asks, args=(10, 2, True)), threading.Thread(target=asks, args=(400, 64, False))]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == [] and wrong == []


def test_a_k_larger_than_the_probed_lists_hold_probes_more_of_them(tmp_path):
    """nprobe 1 of ~300 lists holds some 20 rows: asked for 200, the index probes more lists
    until it has them (hostile review: similar(text, 300) gave 262 of 8,783 statements)."""
    space, vecs = _clustered_space(tmp_path)
    built = build_index(tmp_path / "s", tmp_path / "ix", nlist=0, nprobe=1, seed=1)
    index = SpaceIndex(tmp_path / "ix", space.dim)
    rows, scores = index.search_many(vecs[:3], 200, effort=1, exclude=np.arange(3))
    assert built["nlist"] > 50 and (rows >= 0).all() and rows.shape == (3, 200)
    assert [len(set(r.tolist())) for r in rows] == [200] * 3 and not (rows == np.arange(3)[:, None]).any()
    assert (np.diff(scores, axis=1) <= 0).all()  # still best first
    everything, _ = index.search_many(vecs[:1], 7000, effort=1)  # more than the space holds: all of it, padded
    assert (everything[0] >= 0).sum() == 6000


def test_a_damaged_or_missing_index_file_is_one_sentence_and_a_wrong_query_shape_too(tmp_path):
    from shardvec.errors import ShardvecError
    from shardvec.tasks.search.index import DamagedIndexError, QueryShapeError

    space, vecs = _clustered_space(tmp_path)
    build_index(tmp_path / "s", tmp_path / "ix", nlist=0, nprobe=4, seed=1)
    with pytest.raises(QueryShapeError, match="Query vectors of 5 dimensions; this space's have 20"):
        SpaceIndex(tmp_path / "ix", space.dim).search_many(np.ones((1, 5), np.float32), 3)
    path = tmp_path / "ix" / "ivf.faiss"
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DamagedIndexError, match=r"ivf.faiss is damaged: .*shardvec verify") as err:
        SpaceIndex(tmp_path / "ix", space.dim)
    assert isinstance(err.value, ShardvecError) and "\n" not in str(err.value)
    # the file ends with the last list's ids: its last one now names a row the space lacks
    path.write_bytes(whole[:-8] + np.int64(10**9).tobytes())
    with pytest.raises(DamagedIndexError, match="ids past the space's rows"):
        SpaceIndex(tmp_path / "ix", space.dim).search_many(vecs[:2], 6000, effort=10_000)
    path.unlink()
    with pytest.raises(FileNotFoundError):  # an OSError: a reader moves on to the version CURRENT names
        SpaceIndex(tmp_path / "ix", space.dim)
