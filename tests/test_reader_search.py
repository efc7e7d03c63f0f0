"""Readers' searches (issue 35): the index by default, exact on request, additions and deletes
merged into approximate answers, batch queries, pages kept mapped."""

import numpy as np
import pytest

import shardvec
from shardvec.tasks.changes.additions import Adder
from tests.checks import ADDS, resident_kb
from tests.corpora import SENTENCES

# More nodes than every tree holds: Annoy then inspects every item, so its answer is exact.
EVERY_NODE = 10_000_000
TEXTS = ["bushfires in New South Wales", "the australian cricket team won the test", "police arrested a man",
         "qqqzzz xxxyyy"]  # the last has no known word: similar to nothing
WORDS = ["fire", "police", "government", "test"]


def _exhaustive(store):
    store.search_k = {name: EVERY_NODE for name in store.search_k}
    return store


def _same(approx, exact):
    assert [h.key for h in approx] == [h.key for h in exact]
    assert np.allclose([h.score for h in approx], [h.score for h in exact], atol=1e-5)


def test_approximate_answers_equal_exact_ones_at_a_search_k_that_sees_every_node(published):
    store = _exhaustive(shardvec.open(published.data))
    for text in TEXTS:
        _same(store.similar(text, 10, exact=False), store.similar(text, 10, exact=True))
    for word in WORDS:
        _same(store.neighbours(word, 10, exact=False), store.neighbours(word, 10, exact=True))
    assert store._indexes["statements"] is not None and store._indexes["words"] is not None  # really asked


def test_the_tuned_search_k_is_what_readers_use(published):
    store = shardvec.open(published.data)
    recall = published.report["recall"]
    assert store.search_k == {"words": recall["words"]["search_k"], "statements": recall["statements"]["search_k"]}
    assert recall["statements"]["recall_at_k"] >= 0.95 and recall["statements"]["target_recall"] == 0.95


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
    # at the published search_k too: the additions come from the exact scan, whatever the index finds
    tuned = shardvec.open(data)
    assert [tuned.similar(t, 1, exact=False)[0].key for t in SENTENCES[40:43]] == ["new/0", "new/1", "new/2"]


@pytest.mark.parametrize("exact", [None, False, True])
def test_batch_queries_equal_a_loop_of_single_ones(published, exact):
    store = shardvec.open(published.data)
    assert store.similar_many(TEXTS, 5, exact=exact) == [store.similar(t, 5, exact=exact) for t in TEXTS]
    assert store.similar_many(TEXTS, 5, exact=exact)[-1] == []
    assert store.neighbours_many(WORDS, 5, exact=exact) == [store.neighbours(w, 5, exact=exact) for w in WORDS]


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
        assert [line.split()[1] for line in out.stdout.splitlines()] == [h.key for h in store.similar(TEXTS[0], 3, exact=exact)]
