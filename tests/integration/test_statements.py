"""Which records the statement space holds: one per id, duplicates settled by configuration."""

import json

import numpy as np
import pytest

from shardvec.tasks.models import statements
from shardvec.tasks.inputs.corpus import discover
from shardvec.tasks.storage.ledger import Ledger, Op, replay_for_build
from shardvec.tasks.models.statements import plan_statements, project_shard
from shardvec.tasks.storage.spaces import Space, _open_keys
from shardvec.tasks.inputs.tokenize import Tokenizer, tokenize_file


@pytest.fixture
def caches(tmp_path):
    corpus = tmp_path / "data" / "corpus"
    for part, rows in (("p1", [("a", "first a"), ("b", "only b")]), ("p2", [("a", "second a"), ("c", "only c")])):
        (corpus / part).mkdir(parents=True)
        (corpus / part / "s.jsonl").write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in rows))
    files, _ = discover(corpus)
    return tmp_path / "data", [
        tokenize_file(
            corpus,
            f,
            tmp_path / "cache",
            tmp_path / "data" / "quarantine",
            Tokenizer(),
            batch_size=10,
            max_record_bytes=1000,
        )
        for f in files
    ]


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
    summaries = [
        tokenize_file(
            data / "corpus",
            f,
            tmp_path / "cache",
            tmp_path / "q",
            Tokenizer(),
            batch_size=50,
            max_record_bytes=1_000_000,
        )
        for f in files
    ]
    plan = plan_statements(summaries, tmp_path / "plan.npy", data, tmp_path / "q", on_duplicate="reject")
    published_space = Space(data / current["components"]["statements"])
    assert plan["statements"] == len(published_space)
    caches = [s["cache"] for s in summaries]
    for shard in (0, published_space.n_shards - 1):
        entry = project_shard(
            tmp_path / "plan.npy",
            caches,
            shard,
            settings.store.rows_per_shard,
            data / current["components"]["models"],
            tmp_path / "space",
            batch_rows=7,
        )
        assert entry["rows"] == len(published_space.shard(shard))
        assert np.array_equal(np.load(tmp_path / "space" / entry["vectors"]), published_space.shard(shard))
        shard_keys = published_space.shard_keys(shard)
        mine = _open_keys(tmp_path / "space" / entry["keys"])
        assert mine.column("key").to_pylist() == shard_keys.column("key").to_pylist()
        assert mine.column("text").to_pylist() == shard_keys.column("text").to_pylist()


def _one_id_many_times(data, n: int, texts=lambda i: f"text number {i}") -> list[bytes]:
    """A partition of one record `other`, then `n` records that all have the id `same`: its lines."""
    (data / "corpus" / "p1").mkdir(parents=True)
    lines = [json.dumps({"id": "other", "text": "only other"}).encode() + b"\n"]
    lines += [json.dumps({"id": "same", "text": texts(i)}).encode() + b"\n" for i in range(n)]
    (data / "corpus" / "p1" / "s.jsonl").write_bytes(b"".join(lines))
    return lines


def _tokenized(data, tmp_path):
    files, _ = discover(data / "corpus")
    return [
        tokenize_file(
            data / "corpus",
            f,
            tmp_path / "cache",
            data / "quarantine",
            Tokenizer(),
            batch_size=2000,
            max_record_bytes=1_000_000,
        )
        for f in files
    ]


def _cache_opens_at_most(monkeypatch, limit: int) -> None:
    """Fail as soon as the caches are opened more than `limit` times: a plan that reads a cache
    again per duplicate row (quadratic) fails at once, whatever the machine's speed."""
    from shardvec.tasks.inputs import tokenize
    from shardvec.tasks.models import statements

    opened = 0

    def counted(path):
        nonlocal opened
        opened += 1
        assert opened <= limit, f"a cache was opened {opened} times: once per duplicate row?"
        return real(path)

    real = tokenize.open_cache
    monkeypatch.setattr(tokenize, "open_cache", counted)
    monkeypatch.setattr(statements, "open_cache", counted)


def test_a_long_run_of_one_id_is_settled_in_one_pass(tmp_path, monkeypatch):
    """Each duplicate row read the whole cache again: 20,000 rows of one id took 24 s and this
    file's 60,000 several minutes, so a 35 MB file of one id would have been cancelled by the
    no-progress watch every night. Now each cache is opened a fixed number of times."""
    data = tmp_path / "data"
    n = 60_000
    lines = _one_id_many_times(data, n)
    summaries = _tokenized(data, tmp_path)
    _cache_opens_at_most(monkeypatch, 20)
    out = plan_statements(summaries, tmp_path / "plan.npy", data, data / "quarantine", on_duplicate="reject")
    assert (out["statements"], out["duplicates_rejected"]) == (2, n - 1)
    assert np.load(tmp_path / "plan.npy").tolist() == [[0, 0], [0, 1]]
    assert (data / "quarantine" / "p1/s.jsonl.duplicates.rejected").read_bytes() == b"".join(lines[2:])
    reasons = [json.loads(x) for x in (data / "quarantine" / "p1/s.jsonl.duplicates.reasons.jsonl").open()]
    assert [r["line"] for r in reasons] == list(range(3, n + 2))
    assert {r["reason"] for r in reasons} == {"duplicate id 'same': first seen in p1/s.jsonl"}

    _cache_opens_at_most(monkeypatch, 20)
    out = plan_statements(summaries, tmp_path / "plan.npy", data, tmp_path / "q2", on_duplicate="update")
    assert (out["statements"], out["duplicates_superseded"]) == (2, n - 1)
    assert np.load(tmp_path / "plan.npy").tolist() == [[0, 0], [0, n]]
    assert not (tmp_path / "q2").exists()


def test_a_long_run_of_an_id_the_ledger_decides_is_masked_in_one_pass(tmp_path, monkeypatch):
    """The ledger's mask read the whole cache once per corpus row of a decided id: quadratic too."""
    data = tmp_path / "data"
    n = 60_000
    lines = _one_id_many_times(data, n, texts=lambda i: "acknowledged" if i == 7 else f"text number {i}")
    ledger = Ledger(data)
    ledger.append(1, [Op("add", "same", "acknowledged")])
    ledger.confirm(1)
    replay = replay_for_build(data, None, 0, rebuild=True)
    summaries = _tokenized(data, tmp_path)
    _cache_opens_at_most(monkeypatch, 20)
    out = plan_statements(
        summaries, tmp_path / "plan.npy", data, data / "quarantine", on_duplicate="reject", ledger_ops=replay.ops
    )
    assert (out["statements"], out["decided_by_ledger"], out["duplicates_rejected"]) == (1, n, n - 1)
    assert np.load(tmp_path / "plan.npy").tolist() == [[0, 0]]
    # the record with the acknowledged text is no clash: every other one is quarantined, byte for byte
    assert (data / "quarantine" / "p1/s.jsonl.duplicates.rejected").read_bytes() == b"".join(lines[1:8] + lines[9:])
    reasons = [json.loads(x) for x in (data / "quarantine" / "p1/s.jsonl.duplicates.reasons.jsonl").open()]
    assert [r["line"] for r in reasons] == [i for i in range(2, n + 2) if i != 9]
    assert all(r["reason"].startswith("duplicate id 'same': added with other text by `shardvec add`") for r in reasons)


def test_ids_whose_hashes_collide_stay_apart(caches, tmp_path, monkeypatch):
    """Ids are grouped by their text, not their 64-bit hash: with every hash equal (forced here),
    the plan is the same as without a collision."""
    data, summaries = caches
    monkeypatch.setattr(statements, "key_hashes", lambda keys: np.zeros(len(list(keys)), dtype=np.uint64))
    out = plan_statements(summaries, tmp_path / "plan.npy", data, data / "quarantine", on_duplicate="reject")
    assert (out["statements"], out["duplicates_rejected"]) == (3, 1)
    assert np.load(tmp_path / "plan.npy").tolist() == [[0, 0], [0, 1], [1, 1]]
    assert (data / "quarantine" / "p2/s.jsonl.duplicates.rejected").read_bytes() == b'{"id": "a", "text": "second a"}\n'
    out = plan_statements(summaries, tmp_path / "plan.npy", data, tmp_path / "q2", on_duplicate="update")
    assert (out["statements"], out["duplicates_superseded"]) == (3, 1)
    assert np.load(tmp_path / "plan.npy").tolist() == [[0, 1], [1, 0], [1, 1]]
