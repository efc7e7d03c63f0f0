import os

from tasks.corpus import discover
from tasks.tokenize import TokenStream, Tokenizer, open_cache, tokenize_file
from tests.conftest import write_corpus


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
