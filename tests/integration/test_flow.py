"""The nightly flow under Prefect's test harness, then queried."""

import json
import shutil

import numpy as np
import pytest
from gensim.models import Word2Vec

import shardvec
from shardvec.flows import skins
from tests.checks import read_current
from shardvec.tasks.storage.spaces import Space
from tests.corpora import NEAR_DUPLICATES, lee_lines, write_corpus
from tests.runs import nightly_in_process

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_nightly_publishes_every_part(published):
    data, report = published.data, published.report
    assert report["status"] == "published"
    assert report["records"] == 353 and report["quarantined"] == 1
    assert report["quarantine_reasons"] == {"broken JSON": 1}
    assert report["statements"] == 352 == report["similarity_rows"]
    assert report["partitions"] == ["2026-11-01", "2026-11-02", "2026-11-03"]
    steps = {row["step"]: row for row in report["steps"]}
    assert steps["project-statements"]["tasks"] == 2  # 352 rows / 256 per shard
    assert all(row["peak_rss_mb"] > 0 and row["seconds"] >= 0 for row in report["steps"])
    assert report["recall"]["similarity rows"]["rows_recall_at_k"] == 1.0
    assert report["recall"]["statements"]["recall_at_k"] >= 0.9
    assert report["progress_steps"] == [12, 12]  # the UI reaches 100 % with the last step, not before
    current = read_current(data)
    assert current["version"] == report["version"]
    assert current["watermark"]["partitions"] == report["partitions"]
    manifest = json.loads((data / "versions" / report["version"] / "manifest.json").read_text())
    assert manifest["config"]["lsi"]["num_topics"] == 40 and manifest["counts"]["statements"] == 352
    quarantined = (data / "quarantine" / "2026-11-02" / "lee.jsonl.rejected").read_bytes()
    assert quarantined == b'{"id": "bad/1", "text": "a broken line\n'


def test_store_reads_what_was_published(published):
    data, report = published.data, published.report
    store = shardvec.open(data)
    assert store.version == report["version"]
    model = Word2Vec.load(str(data / "versions" / report["version"] / "models" / "word2vec.gensim"))
    assert np.array_equal(store.vector("fire"), model.wv["fire"])
    hits = store.neighbours("fire", 5)
    assert len(hits) == 5 and "fire" not in [h.key for h in hits]
    assert [h.key for h in hits] == [w for w, _ in model.wv.most_similar("fire", topn=5)]
    # the near-duplicate pair: each is the other's top similarity row
    (a, text_a), (b, _) = NEAR_DUPLICATES
    assert store.row(a)[0].key == b and store.row(b)[0].key == a
    assert [h.key for h in store.similar(text_a, 2)] == [a, b]
    bg = lee_lines()
    assert store.text("2026-11-01/lee.txt:3") == bg[2]


def test_second_night_with_nothing_new_is_a_quick_no_op(published, published_copy):
    """On a copy: even a run with nothing to do takes the run lock and registers under .runs/,
    and the shared fixture is being copied by other workers meanwhile."""
    data, report = published_copy, published.report
    again = nightly_in_process(data)
    assert again["status"] == "nothing new" and "nothing to do" in again["message"]
    assert read_current(data)["version"] == report["version"]


def test_failed_late_task_leaves_the_published_version_serving(published, published_copy, monkeypatch):
    copy, report = published_copy, published.report
    (copy / "corpus" / "2026-11-04").mkdir()
    (copy / "corpus" / "2026-11-04" / "new.txt").write_text("volcanic ash grounded flights over the ocean\n" * 3)
    before = read_current(copy)

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(skins, "merge_tile_task", skins.Step("merge-rows", boom, retries=0))
    with pytest.raises(RuntimeError, match="disk on fire"):
        nightly_in_process(copy)
    assert read_current(copy) == before
    store = shardvec.open(copy)
    assert store.version == report["version"] and store.row(NEAR_DUPLICATES[0][0])[0].key == NEAR_DUPLICATES[1][0]
    assert Space(copy / before["components"]["statements"]).verify() == []
    monkeypatch.undo()
    rerun = nightly_in_process(copy)
    assert rerun["status"] == "published" and rerun["partitions"] == ["2026-11-04"]
    after = shardvec.open(copy)
    assert after.version != report["version"] and "volcanic" in after.words
    assert after.text("2026-11-04/new.txt:1").startswith("volcanic")
    assert read_current(copy)["watermark"]["partitions"][-1] == "2026-11-04"


@pytest.mark.parametrize("hashing", [True, False])
def test_hashed_vocabulary_learns_a_word_that_arrives_later(tmp_path, hashing):
    """With hashing, LSI counts a word first seen on the second night; with a fixed vocabulary
    (fixed by the first night) it is ignored."""
    from gensim.corpora import HashDictionary
    from shardvec.tasks.search.embed import Embedder
    from shardvec.tasks.models.vocab import load_dictionary

    data = tmp_path / "data"
    first = data / "corpus" / "2026-11-01" / "lee.txt"
    first.parent.mkdir(parents=True)
    first.write_text("\n".join(lee_lines()[:150]) + "\n", encoding="utf-8")
    vocab = {"hashing": hashing, "hash_buckets": 4096}
    nightly_in_process(data, vocab=vocab)
    word = "zyzzyvas"
    assert all(word not in line for line in lee_lines())
    second = data / "corpus" / "2026-11-02" / "lee.txt"
    second.parent.mkdir(parents=True)
    second.write_text(
        "\n".join(f"{line} the {word} swarmed" for line in lee_lines("lee.cor")[:40]) + "\n", encoding="utf-8"
    )
    report = nightly_in_process(data, vocab=vocab)
    assert report["status"] == "published"
    assert report["progress_steps"] == [11 + hashing] * 2  # a fixed vocabulary is not rebuilt
    models = data / read_current(data)["components"]["models"]
    dct = load_dictionary(models / "dictionary.gensim")
    vec = Embedder(models).embed([[word]], normalize=False)[0]
    if hashing:
        assert isinstance(dct, HashDictionary) and dct.dfs[dct.restricted_hash(word)] >= 40
        assert np.linalg.norm(vec) > 0
    else:
        assert word not in dct.token2id
        assert not vec.any()


def test_spaces_stored_small_still_answer(tmp_path):
    """int8 word vectors and float16 statement vectors: a quarter and half the bytes; rows,
    neighbours and lookups still work, read back as float32."""
    data = tmp_path / "data"
    write_corpus(data / "corpus")
    report = nightly_in_process(data, store={"words_dtype": "int8", "statements_dtype": "float16"})
    assert report["status"] == "published"
    assert report["recall"]["similarity rows"]["rows_recall_at_k"] == 1.0  # rows are exact over what is stored
    store = shardvec.open(data)
    assert store.words.dtype == "int8" and store.statements.dtype == "float16"
    assert store.vector("fire").dtype == np.float32
    assert [h.key for h in store.neighbours("fire", 5)] and store.similar("bushfires near sydney", 3)
    assert shardvec.open(data)._statements.base.verify() == []  # the space's own checksums


def test_two_nights_on_growing_input(tmp_path):
    """The third partition arrives a day later: the second night trains on it alone and keeps
    the LSI vocabulary; a third night has nothing to do."""
    data = tmp_path / "data"
    write_corpus(data / "corpus")
    night3 = data / "corpus" / "2026-11-03"
    held = tmp_path / "held"
    shutil.move(night3, held)  # the third partition arrives a day later
    first = nightly_in_process(data)
    assert first["partitions"] == ["2026-11-01", "2026-11-02"] and first["statements"] == 302
    words_before = set(shardvec.open(data).words.keys())
    shutil.move(held, night3)
    second = nightly_in_process(data)
    assert second["partitions"] == ["2026-11-03"]  # only the new partition is trained on
    steps = {r["step"]: r for r in second["steps"]}
    assert "vocabulary" not in steps  # the LSI vocabulary is kept, the models updated
    assert second["statements"] == 352
    store = shardvec.open(data)
    new_words = set(store.words.keys()) - words_before
    assert new_words and all(store.vector(w).any() for w in new_words)
    assert "test/0" in store and store.version == second["version"]
    manifest = json.loads((data / "versions" / second["version"] / "manifest.json").read_text())
    assert manifest["mode"] == "update" and manifest["watermark"]["partitions"][-1] == "2026-11-03"
    third = nightly_in_process(data)
    assert third["status"] == "nothing new"
