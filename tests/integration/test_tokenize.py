"""Tokenizing: the per-file token cache in fixed-size batches, reused while its source is
unchanged and rebuilt when damaged, with relative paths so a copied data directory reads its own."""

import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shardvec.tasks.inputs.corpus import discover
from shardvec.tasks.inputs.tokenize import TokenStream, Tokenizer, open_cache, tokenize_file
from tests.corpora import write_corpus


def _tokenize_all(tmp_path):
    corpus = tmp_path / "corpus"
    if not corpus.exists():
        write_corpus(corpus)
    files, _ = discover(corpus)
    return [
        tokenize_file(
            corpus, f, tmp_path / "cache", tmp_path / "q", Tokenizer(), batch_size=64, max_record_bytes=100_000
        )
        for f in files
    ]


def test_tokenizer_keeps_alphabetic_runs_lowercased():
    assert Tokenizer()("The 2 Cats' café, x-ray 3D!") == ["the", "cats", "café", "ray"]
    assert Tokenizer(deaccent=True)("Café") == ["cafe"]


def test_cache_holds_every_record_in_fixed_size_batches(tmp_path):
    summaries = _tokenize_all(tmp_path)
    assert [s["records"] for s in summaries] == [150, 152, 50]
    reader = open_cache(summaries[1]["cache"])
    assert reader.num_record_batches == 3  # 152 records in batches of 64
    table = reader.read_all()
    assert table.column("id")[0].as_py() == "bg/150"
    assert table.column("tokens")[0].as_py() == Tokenizer()(table.column("text")[0].as_py())
    assert summaries[0]["tokens"] == sum(len(t) for t in TokenStream([summaries[0]["cache"]]))


def test_second_tokenize_reuses_the_cache(tmp_path):
    first = _tokenize_all(tmp_path)
    stamps = [os.stat(s["cache"]).st_mtime_ns for s in first]
    again = _tokenize_all(tmp_path)
    assert all(s["cached"] for s in again) and not any(s["cached"] for s in first)
    assert [os.stat(s["cache"]).st_mtime_ns for s in again] == stamps


def test_token_stream_is_reiterable(tmp_path):
    caches = [s["cache"] for s in _tokenize_all(tmp_path)]
    stream = TokenStream(caches)
    assert sum(1 for _ in stream) == sum(1 for _ in stream) == 352


def _damage(path, how: str) -> None:
    data = bytearray(open(path, "rb").read())
    if how == "truncated":
        data = data[: len(data) // 2]
    else:  # same size, a few bytes flipped in the middle
        for k in range(len(data) // 2, len(data) // 2 + 16):
            data[k] ^= 0xFF
    open(path, "wb").write(bytes(data))


@pytest.mark.parametrize("how", ["truncated", "flipped"])
def test_a_damaged_cache_is_rebuilt_from_its_source(tmp_path, how):
    """issue 14 item 2: a cache that does not match its summary is tokenized again."""
    first = _tokenize_all(tmp_path)
    _damage(first[1]["cache"], how)
    again = _tokenize_all(tmp_path)
    assert [s["cached"] for s in again] == [True, False, True]
    assert sum(1 for _ in TokenStream([again[1]["cache"]])) == 152
    assert {k: v for k, v in again[1].items() if k != "cached"} == {k: v for k, v in first[1].items() if k != "cached"}


@pytest.mark.parametrize("how", ["missing", "broken", "other source"])
def test_a_cache_whose_summary_is_missing_or_wrong_is_rebuilt(tmp_path, how):
    first = _tokenize_all(tmp_path)
    summary = Path(first[0]["cache"] + ".json")
    if how == "missing":
        summary.unlink()
    elif how == "broken":
        summary.write_text(summary.read_text()[:20])
    else:
        summary.write_text(json.dumps({**json.loads(summary.read_text()), "source": "elsewhere/x.txt"}))
    again = _tokenize_all(tmp_path)
    assert [s["cached"] for s in again] == [False, True, True]
    assert json.loads(summary.read_text())["source"] == first[0]["source"]


def test_cache_summaries_hold_relative_paths_so_a_copied_data_dir_reads_its_own(tmp_path):
    """issue 14 item 2: the copy's caches are the copy's; the summaries name nothing absolute."""
    original, copy = tmp_path / "a", tmp_path / "b"
    first = _tokenize_all(original)
    shutil.copytree(original, copy)
    for s in first:  # whatever the copy reads must not be the original's caches
        _damage(s["cache"], "truncated")
    again = _tokenize_all(copy)
    assert all(s["cached"] for s in again)
    assert all(Path(s["cache"]).is_relative_to(copy) for s in again)
    assert sum(1 for _ in TokenStream([s["cache"] for s in again])) == 352
    stored = json.loads(Path(again[0]["cache"] + ".json").read_text())
    assert stored["cache"] == os.path.relpath(again[0]["cache"], copy) and not os.path.isabs(stored["cache"])
    assert stored["size"] == os.path.getsize(again[0]["cache"]) and len(stored["sha256"]) == 64


def test_a_bad_parquet_partition_still_tokenizes(tmp_path):
    """issue 14 item 1 through the tokenize step: the good rows are cached, the bad one counted."""
    corpus = tmp_path / "corpus"
    (corpus / "p").mkdir(parents=True)
    ids = pa.array([b"a", b"b", b"c"], pa.binary()).view(pa.string())
    texts = pa.array([b"a good text", b"caf\xe9", b"another good text"], pa.binary()).view(pa.string())
    pq.write_table(pa.table({"id": ids, "text": texts}), corpus / "p" / "u.parquet")
    (summary,) = _tokenize_all(tmp_path)
    assert summary["records"] == 2 and summary["reasons"] == {"invalid UTF-8 in column text": 1}


def _tokenize_with(tmp_path, tokenizer, max_record_bytes=100_000):
    corpus = tmp_path / "corpus"
    files, _ = discover(corpus)
    return [
        tokenize_file(
            corpus, f, tmp_path / "cache", tmp_path / "q", tokenizer, batch_size=64, max_record_bytes=max_record_bytes
        )
        for f in files
    ]


@pytest.mark.parametrize("changed", [Tokenizer(min_len=5), Tokenizer(max_len=6), Tokenizer(deaccent=True)])
def test_a_change_of_tokenizer_settings_builds_the_caches_again(tmp_path, changed):
    """issue 33 item 3: the cache is keyed by what it derives from, the tokenizer included; the
    superseded caches go."""
    first = _tokenize_all(tmp_path)
    again = _tokenize_with(tmp_path, changed)
    assert not any(s["cached"] for s in again)
    assert all(s["tokenizer"] == changed.settings() for s in again)
    for s in again:
        texts = open_cache(s["cache"]).read_all()
        assert texts.column("tokens").to_pylist() == [changed(t) for t in texts.column("text").to_pylist()]
    assert {s["source"] for s in again} == {s["source"] for s in first}
    left = sorted(p.name for p in (tmp_path / "cache").rglob("*.arrow"))
    assert left == sorted(Path(s["cache"]).name for s in again)  # the first caches are gone
    assert all(s["cached"] for s in _tokenize_with(tmp_path, changed))
    assert not any(s["cached"] for s in _tokenize_all(tmp_path))  # and back


def test_a_change_of_the_record_size_limit_builds_the_caches_again(tmp_path):
    """Which records a cache holds depends on corpus.max_record_bytes: a cache made under another
    limit is not reused."""
    first = _tokenize_all(tmp_path)
    again = _tokenize_with(tmp_path, Tokenizer(), max_record_bytes=200)
    assert not any(s["cached"] for s in again)
    assert sum(s["records"] for s in again) < sum(s["records"] for s in first)
    assert sum(s["quarantined"] for s in again) > sum(s["quarantined"] for s in first)


def test_a_new_tokenizer_version_builds_the_caches_again(tmp_path, monkeypatch):
    """A change of the tokenizer's code (TOKENIZER_VERSION) is a change of what the cache holds."""
    from shardvec.tasks.inputs import tokenize

    _tokenize_all(tmp_path)
    monkeypatch.setattr(tokenize, "TOKENIZER_VERSION", tokenize.TOKENIZER_VERSION + 1)
    assert not any(s["cached"] for s in _tokenize_all(tmp_path))


def test_a_word_is_normalised_as_the_tokenizer_normalises_text():
    """issue 33 item 5: lookups find what the build stored ("Datei" is stored as "datei")."""
    assert Tokenizer().normalise(" Datei ") == "datei" == Tokenizer()("Datei")[0]
    assert Tokenizer(deaccent=True).normalise("Café") == "cafe" and Tokenizer().normalise("Café") == "café"
    assert Tokenizer(min_len=3).normalise("an") == "an"  # short words are looked up, not dropped


@pytest.mark.slow
def test_a_rebuild_with_other_tokenizer_settings_trains_on_new_tokens_and_says_so(tmp_path):
    """issue 33 item 3 through the flows: a rebuild after a tokenizer change re-tokenizes, its
    manifest names the tokenizer its caches were made with, and readers still find statements;
    a nightly (an update) after a change rebuilds instead of mixing two tokenizers in one model."""
    from shardvec.reader import Store
    from tests.checks import read_current, read_manifest
    from tests.runs import backfill_in_process, nightly_in_process

    data = tmp_path / "data"
    write_corpus(data / "corpus")
    first = nightly_in_process(data)
    rebuilt = backfill_in_process(data, mode="rebuild", tokenize={"min_len": 5})
    assert rebuilt["tokens"] < first["tokens"] and rebuilt["terms"] < first["terms"]
    manifest = read_manifest(data, read_current(data)["version"])
    assert manifest["tokenizer"] == Tokenizer(min_len=5).settings()
    store = Store(data)
    assert store.tokenizer == Tokenizer(min_len=5)
    assert store.similar("bushfires in New South Wales", k=3)
    assert len(list((data / "cache" / "tokens").rglob("*.arrow"))) == rebuilt["files"]  # the first ones are gone

    (data / "corpus" / "2026-11-09").mkdir()
    (data / "corpus" / "2026-11-09" / "more.txt").write_text("Bushfires burned across the state again.\n" * 3)
    night = nightly_in_process(data, tokenize={"deaccent": True})
    assert night["mode"] == "rebuild" and night["status"] == "published"
    assert read_manifest(data, night["version"])["tokenizer"] == Tokenizer(deaccent=True).settings()
    assert nightly_in_process(data, tokenize={"deaccent": True})["status"] == "nothing new"


def test_a_cache_batch_holds_at_most_a_few_megabytes_of_text(tmp_path):
    """2,000 records of 1 MB each, all legal, took the tokenizing worker down every night (a token
    list costs ~24x its text), and were 2 GB in one add's batch: a batch (of the token cache, of
    `shardvec add` and the inbox) now also stops at BATCH_BYTES of text."""
    from shardvec.tasks.inputs.corpus import BATCH_BYTES, Record, batched

    def _batches(records, size, max_bytes):
        return batched(records, size, max_bytes, weigh=lambda r: len(r.text))

    big = [Record(id=f"r{i}", text="ab " * 333_000, line=i, offset=0, length=1) for i in range(60)]
    sizes = [len(b) for b in _batches(iter(big), 2000, BATCH_BYTES)]
    assert sum(sizes) == 60 and max(sizes) <= BATCH_BYTES // 999_000 + 1 and len(sizes) > 1
    assert [len(b) for b in _batches(iter(big[:3]), 2000, 10)] == [1, 1, 1]  # one record alone may exceed it
    small = [Record(id=f"s{i}", text="a b", line=i, offset=0, length=1) for i in range(5000)]
    assert [len(b) for b in _batches(iter(small), 2000, BATCH_BYTES)] == [2000, 2000, 1000]
