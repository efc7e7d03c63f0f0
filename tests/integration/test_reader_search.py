"""Readers' searches (issue 35): the index by default, exact on request, additions and deletes
merged into approximate answers, batch queries, pages kept mapped."""

import numpy as np
import pytest

import shardvec
from shardvec.tasks.changes.additions import Adder
from tests.checks import ADDS, resident_kb
from tests.corpora import SENTENCES

TEXTS = [
    "bushfires in New South Wales",
    "the australian cricket team won the test",
    "police arrested a man",
    "qqqzzz xxxyyy",
]  # the last has no known word: similar to nothing
WORDS = ["fire", "police", "government", "test"]


def _exhaustive(store):
    """Every list of each index searched: the index's answer is then exact."""
    store.effort = {name: store._index_manifests[name]["nlist"] for name in store.effort}
    return store


def _same(approx, exact):
    assert [h.key for h in approx] == [h.key for h in exact]
    assert np.allclose([h.score for h in approx], [h.score for h in exact], atol=1e-5)


def test_approximate_answers_equal_exact_ones_when_every_list_is_searched(published):
    store = _exhaustive(shardvec.open(published.data))
    for text in TEXTS:
        _same(store.similar(text, 10, exact=False), store.similar(text, 10, exact=True))
    for word in WORDS:
        _same(store.neighbours(word, 10, exact=False), store.neighbours(word, 10, exact=True))
    assert store._indexes["statements"] is not None and store._indexes["words"] is not None  # really asked


def test_the_tuned_nprobe_is_what_readers_use(published):
    store = shardvec.open(published.data)
    recall = published.report["recall"]
    assert store.effort == {"words": recall["words"]["nprobe"], "statements": recall["statements"]["nprobe"]}
    assert recall["statements"]["recall_at_k"] >= 0.95 and recall["statements"]["target_recall"] == 0.95
    for name in ("words", "statements"):  # the nightly built faiss IVF indexes, tuned below every list
        m = store._index_manifests[name]
        assert m["kind"] == "faiss-ivf" and m["format"] == 3 and 1 <= m["nprobe"] < m["nlist"], m
    # and the tuned nprobe is what a search runs at: below it, answers differ from the exact ones
    store.effort = {"words": 1, "statements": 1}
    exact = store.similar_many(SENTENCES[:30], 10, exact=True)
    assert store.similar_many(SENTENCES[:30], 10, exact=False) != exact
    store.effort = {name: recall[name]["nprobe"] for name in ("words", "statements")}
    tuned = [[h.key for h in hits] for hits in store.similar_many(SENTENCES[:30], 10, exact=False)]
    found = sum(len(set(t) & {h.key for h in e}) for t, e in zip(tuned, exact))
    assert found / sum(len(e) for e in exact) >= 0.9


def test_additions_and_deletes_are_in_approximate_answers(published_copy):
    data = published_copy
    before = shardvec.open(data)
    gone = before.similar(SENTENCES[7], 1, exact=True)[0].key  # the statement closest to a text
    adder = Adder(data, **ADDS)
    adder.add([{"id": f"new/{i}", "text": t} for i, t in enumerate(SENTENCES[40:43])])
    adder.delete([gone])
    store = _exhaustive(shardvec.open(data))
    assert store._statements.segments and len(store._statements.dead)
    for i, text in enumerate(SENTENCES[40:43]):
        hits = store.similar(text, 10, exact=False)
        assert hits[0].key == f"new/{i}"
        _same(hits, store.similar(text, 10, exact=True))
    hits = store.similar(SENTENCES[7], 10, exact=False)
    assert gone not in [h.key for h in hits] and len(hits) == 10
    _same(hits, store.similar(SENTENCES[7], 10, exact=True))
    # at the published nprobe too: the additions are in the index's lists, where their texts probe
    tuned = shardvec.open(data)
    assert [tuned.similar(t, 1, exact=False)[0].key for t in SENTENCES[40:43]] == ["new/0", "new/1", "new/2"]
    assert len(tuned._index("statements").added) == 3
    # more adds: a refresh places the new segment's statements, and only those
    placed = dict(tuned._placements)
    adder.add([{"id": "new/3", "text": SENTENCES[44]}])
    assert tuned.refresh()
    assert tuned.similar(SENTENCES[44], 1, exact=False)[0].key == "new/3"
    live = {str(seg.prefix) for seg in tuned._statements.segments}
    assert {key[0] for key in tuned._placements} == live and len(tuned._index("statements").added) == 4
    kept = set(tuned._placements) & set(placed)
    assert kept and all(tuned._placements[key] is placed[key] for key in kept)  # not placed again


def test_a_reader_that_stays_through_a_nightly_and_a_rollback_places_the_rewritten_segments(published_copy):
    """Hostile review: a rollback writes its version's segment numbers again (new files, other
    statements). A reader that had placed the old files' statements must not take their lists
    for the new ones' (it read 30 list numbers past an array of 2, in faiss: a segfault)."""
    from shardvec.tasks.changes.release import rollback
    from tests.runs import nightly_in_process

    data = published_copy
    reader = shardvec.open(data)
    first = reader.version
    Adder(data, **ADDS).add([{"id": f"x/{i}", "text": t} for i, t in enumerate(SENTENCES[100:102])])
    assert reader.refresh() and reader.similar(SENTENCES[100], 1, exact=False)[0].key == "x/0"
    nightly_in_process(data)
    Adder(data, **ADDS).add([{"id": f"y/{i}", "text": t} for i, t in enumerate(SENTENCES[110:140])])
    rollback(data, first)
    assert reader.refresh() and reader.version == first
    assert len(reader._index("statements").added) == 32  # the two adds and the thirty, replayed
    for i, text in enumerate(SENTENCES[110:114]):  # (a text may also be a published statement's)
        hits = reader.similar(text, 3, exact=False)
        assert f"y/{i}" in [h.key for h in hits if h.score > 0.9999], hits


@pytest.mark.parametrize("exact", [None, False, True])
def test_batch_queries_equal_a_loop_of_single_ones(published, exact):
    store = shardvec.open(published.data)
    assert store.similar_many(TEXTS, 5, exact=exact) == [store.similar(t, 5, exact=exact) for t in TEXTS]
    assert store.similar_many(TEXTS, 5, exact=exact)[-1] == []
    assert store.neighbours_many(WORDS, 5, exact=exact) == [store.neighbours(w, 5, exact=exact) for w in WORDS]


def test_hits_looked_up_per_shard_equal_hits_looked_up_row_by_row(published_copy, monkeypatch):
    """A batch's hits come from one Arrow take per shard (more than ROW_BY_ROW_HITS_MAX of them):
    the same ids, scores and texts as row by row, additions included."""
    from shardvec import reader

    Adder(published_copy, **ADDS).add([{"id": f"new/{i}", "text": t} for i, t in enumerate(SENTENCES[40:43])])
    store = shardvec.open(published_copy)
    texts = TEXTS + SENTENCES[40:43]
    monkeypatch.setattr(reader, "ROW_BY_ROW_HITS_MAX", 10**9)
    one_by_one = store.similar_many(texts, 20), store.neighbours_many(WORDS, 20)
    monkeypatch.setattr(reader, "ROW_BY_ROW_HITS_MAX", 0)
    assert (store.similar_many(texts, 20), store.neighbours_many(WORDS, 20)) == one_by_one
    assert any(h.key.startswith("new/") for hits in one_by_one[0] for h in hits)


def test_a_reader_keeps_the_pages_it_scanned_mapped(published):
    store = shardvec.open(published.data)
    space = store._statements.base
    files = [space.dir / s["vectors"] for s in space.manifest["shards"]]
    store.similar(TEXTS[0], 10, exact=True)
    assert all(resident_kb(f) > 0 for f in files)  # the nightly's scans release them; a reader's do not


def test_the_cli_asks_the_index_or_scans_with_exact(published):
    from tests.runs import shardvec_cli

    store = shardvec.open(published.data)
    for flag, exact in (((), None), (("--exact",), True)):
        out = shardvec_cli("query", "similar", TEXTS[0], "-k", "3", "--data", str(published.data), *flag)
        assert [line.split()[1] for line in out.stdout.splitlines()] == [
            h.key for h in store.similar(TEXTS[0], 3, exact=exact)
        ]


def _as_annoy_version(data, search_k=10_000_000):
    """Rewrite the live version's two indexes as code before faiss published them (index format 2:
    one Annoy index per space, searched at the manifest's search_k)."""
    import json
    from annoy import AnnoyIndex
    from shardvec.tasks.storage.spaces import Space

    current = json.loads((data / "CURRENT").read_text())
    for name in ("words", "statements"):
        space, where = Space(data / current["components"][name]), data / current["components"][f"{name}_index"]
        for f in where.iterdir():
            f.unlink()
        index = AnnoyIndex(space.dim, "angular")
        for r in range(len(space)):
            index.add_item(r, space.vector_at(r))
        index.build(10)
        index.save(str(where / "annoy.ann"))
        (where / "manifest.json").write_text(
            json.dumps(
                {
                    "format": 2,
                    "kind": "annoy",
                    "metric": "angular",
                    "n_trees": 10,
                    "search_k": search_k,
                    "items": len(space),
                    "file": "annoy.ann",
                }
            )
        )


def test_a_version_published_with_annoy_indexes_is_still_searched_with_them(published_copy):
    from shardvec.tasks.search.index import AnnoySpaceIndex

    data = published_copy
    _as_annoy_version(data)
    Adder(data, **ADDS).add([{"id": "new/0", "text": SENTENCES[40]}])
    store = shardvec.open(data)
    assert store.effort == {"words": 10_000_000, "statements": 10_000_000}
    for text in TEXTS[:3] + [SENTENCES[40]]:
        _same(store.similar(text, 10, exact=False), store.similar(text, 10, exact=True))
    for word in WORDS:
        _same(store.neighbours(word, 10, exact=False), store.neighbours(word, 10, exact=True))
    assert isinstance(store._indexes["statements"], AnnoySpaceIndex) and isinstance(
        store._indexes["words"], AnnoySpaceIndex
    )
    assert store.similar(SENTENCES[40], 1, exact=False)[0].key == "new/0"


def test_a_k_below_one_is_refused_in_a_sentence_and_empty_batches_answer_empty(published):
    """k=0 raised an IndexError from inside the search, k=-1 a ValueError, and an empty batch an
    IndexError; a string given as a batch was searched letter by letter."""
    store = shardvec.open(published.data)
    word = store.words.key(5)
    for k in (0, -1, 2.5, True, "3"):
        for ask in (
            lambda: store.neighbours(word, k),
            lambda: store.similar(SENTENCES[0], k),
            lambda: store.similar_vectors(store.embed(SENTENCES[0]), k),
        ):
            with pytest.raises(shardvec.UsageError, match="a whole number of at least 1"):
                ask()
    assert store.neighbours_many([], 5) == [] and store.similar_many([], 5) == []
    assert store.similar_vectors(np.empty((0, store.embed("x").shape[0]), np.float32), 5) == []
    assert store.neighbours_many(word, 3) == [store.neighbours(word, 3)]
    assert store.similar_many(SENTENCES[0], 3) == [store.similar(SENTENCES[0], 3)]
    assert len(store.neighbours(word, np.int64(2))) == 2  # numpy's whole numbers are whole numbers
