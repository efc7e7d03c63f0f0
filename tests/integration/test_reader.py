"""A reader that stays open across nights (issue 14 item 12)."""

from __future__ import annotations

import shutil

import pytest

import shardvec
from shardvec.reader import Store
from tests.corpora import lee_lines, write_corpus
from tests.runs import nightly_in_process


@pytest.mark.slow
def test_an_open_reader_survives_the_pruning_of_its_version(tmp_path):
    """Opened on one version, queried only after keep_versions deleted that version: the
    queries that open shards lazily are answered from the version CURRENT names now."""
    data = tmp_path / "data"
    write_corpus(data / "corpus")
    later = tmp_path / "later"
    shutil.move(data / "corpus" / "2026-11-03", later)
    keep_one = {"keep_versions": 1}
    first = nightly_in_process(data, publish=keep_one)["version"]

    store = Store(data)
    assert store.version == first and "bg/150" in store  # opens no shard yet
    scanned = Store(data)
    assert scanned.neighbours("fire", k=2, exact=True)  # its words mapped, their index not opened

    shutil.move(later, data / "corpus" / "2026-11-03")
    second = nightly_in_process(data, publish=keep_one)["version"]
    assert second != first and not (data / "versions" / first).exists()

    # a search that opens the pruned version's index: faiss's error on the missing file was no
    # OSError, and the reader raised it on every such query (hostile review, session 6)
    assert scanned.neighbours("fire", k=2, exact=False) and scanned.version == second

    assert [h.key for h in store.row("dup/a")][0] == "dup/b"
    assert store.neighbours("fire", k=3) and store.similar("bushfires in New South Wales", k=3)
    assert store.text("bg/150") == lee_lines()[150]
    assert store.version == second and "test/0" in store  # it moved to the version CURRENT names


def test_a_store_let_go_unmaps_the_store_at_once(published):
    """A Store, its spaces, views and indexes hold no cycle: dropped, nothing of the data directory
    stays mapped until Python's cycle collector runs (a benchmark's reader figures were split with
    a process whose Store had not been collected)."""
    import gc

    from tests.unit.test_store import _mapped

    gc.collect()  # other tests' Stores of the session's store: this one's mappings alone count
    assert _mapped(published.data) == 0
    store = shardvec.open(published.data)
    word = store.words.key(3)
    store.similar("police arrested a man", 3, exact=False), store.neighbours(word, 3, exact=False)
    store.similar("police arrested a man", 3, exact=True), store.vector(word)
    assert _mapped(published.data)
    gc.disable()
    try:
        del store
        assert _mapped(published.data) == 0
    finally:
        gc.enable()
