"""Which records the statement space holds: one per id, duplicates settled by configuration."""

import json

import numpy as np
import pytest

from shardvec.tasks.corpus import discover
from shardvec.tasks.statements import plan_statements, project_shard
from shardvec.tasks.store import Space, _open_keys
from shardvec.tasks.tokenize import Tokenizer, tokenize_file


@pytest.fixture
def caches(tmp_path):
    corpus = tmp_path / "data" / "corpus"
    for part, rows in (("p1", [("a", "first a"), ("b", "only b")]), ("p2", [("a", "second a"), ("c", "only c")])):
        (corpus / part).mkdir(parents=True)
        (corpus / part / "s.jsonl").write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in rows))
    files, _ = discover(corpus)
    return tmp_path / "data", [tokenize_file(corpus, f, tmp_path / "cache", tmp_path / "data" / "quarantine",
                                             Tokenizer(), batch_size=10, max_record_bytes=1000) for f in files]


def test_reject_keeps_the_first_and_quarantines_the_second_byte_for_byte(caches, tmp_path):
    data, summaries = caches
    out = plan_statements(summaries, tmp_path / "plan.npy", data, data / "quarantine", on_duplicate="reject")
    assert (out["statements"], out["duplicates_rejected"]) == (3, 1)
    assert np.load(tmp_path / "plan.npy").tolist() == [[0, 0], [0, 1], [1, 1]]
    raw = (data / "quarantine" / "p2/s.jsonl.duplicates.rejected").read_bytes()
    assert raw == b'{"id": "a", "text": "second a"}\n'
    reason = json.loads((data / "quarantine" / "p2/s.jsonl.duplicates.reasons.jsonl").read_text())
    assert reason["reason"] == "duplicate id 'a': first seen in p1/s.jsonl" and reason["line"] == 1


def test_update_keeps_the_last(caches, tmp_path):
    data, summaries = caches
    out = plan_statements(summaries, tmp_path / "plan.npy", data, data / "quarantine", on_duplicate="update")
    assert (out["statements"], out["duplicates_superseded"]) == (3, 1)
    assert np.load(tmp_path / "plan.npy").tolist() == [[0, 1], [1, 0], [1, 1]]


def test_a_shard_projected_in_small_batches_equals_the_published_one(published, tmp_path):
    """project_shard streams its rows in batches; the batch size must not change a byte."""
    data, settings, _ = published
    current = json.loads((data / "CURRENT").read_text())
    files, _ = discover(data / "corpus")
    summaries = [tokenize_file(data / "corpus", f, tmp_path / "cache", tmp_path / "q", Tokenizer(),
                               batch_size=50, max_record_bytes=1_000_000) for f in files]
    plan = plan_statements(summaries, tmp_path / "plan.npy", data, tmp_path / "q", on_duplicate="reject")
    published_space = Space(data / current["components"]["statements"])
    assert plan["statements"] == len(published_space)
    caches = [s["cache"] for s in summaries]
    for shard in (0, published_space.n_shards - 1):
        entry = project_shard(tmp_path / "plan.npy", caches, shard, settings.store.rows_per_shard,
                              data / current["components"]["models"], tmp_path / "space", batch_rows=7)
        assert entry["rows"] == len(published_space.shard(shard))
        assert np.array_equal(np.load(tmp_path / "space" / entry["vectors"]), published_space.shard(shard))
        shard_keys = published_space.shard_keys(shard)
        mine = _open_keys(tmp_path / "space" / entry["keys"])
        assert mine.column("key").to_pylist() == shard_keys.column("key").to_pylist()
        assert mine.column("text").to_pylist() == shard_keys.column("text").to_pylist()
