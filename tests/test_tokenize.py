"""Tokenizing: the per-file token cache in fixed-size batches, reused while its source is
unchanged and rebuilt when damaged, with relative paths so a copied data directory reads its own."""

import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shardvec.tasks.corpus import discover
from shardvec.tasks.tokenize import TokenStream, Tokenizer, open_cache, tokenize_file
from tests.corpora import write_corpus


def _tokenize_all(tmp_path):
    corpus = tmp_path / "corpus"
    if not corpus.exists():
        write_corpus(corpus)
    files, _ = discover(corpus)
    return [tokenize_file(corpus, f, tmp_path / "cache", tmp_path / "q", Tokenizer(), batch_size=64,
                          max_record_bytes=100_000) for f in files]


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
