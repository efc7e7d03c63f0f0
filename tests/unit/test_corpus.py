"""Reading the corpus: partitions found and selected, the three input formats streamed in batches,
and every bad record quarantined byte for byte with its file, line and reason while the good ones go on."""

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shardvec.tasks.inputs.corpus import BadInputError, Quarantine, discover, read_records, select_partitions
from tests.corpora import write_corpus


def _read(corpus: Path, quarantine: Path, name: str, batch_size: int = 4, max_bytes: int = 10_000):
    files, _ = discover(corpus)
    src = next(f for f in files if f.name == name)
    q = Quarantine(quarantine, src)
    records = list(read_records(corpus, src, q, batch_size=batch_size, max_record_bytes=max_bytes))
    q.commit()
    return records, q


def _reasons(quarantine: Path, name: str) -> list[dict]:
    p = quarantine / f"{name}.reasons.jsonl"
    return [json.loads(l) for l in p.read_text().splitlines()] if p.exists() else []


def test_discover_orders_partitions_and_names_skipped_files(tmp_path):
    write_corpus(tmp_path / "corpus")
    (tmp_path / "corpus" / "2026-11-02" / "notes.md").write_text("hello")
    files, skipped = discover(tmp_path / "corpus")
    assert [f.partition for f in files] == ["2026-11-01", "2026-11-02", "2026-11-03"]
    assert [f.format for f in files] == ["text", "jsonl", "parquet"]
    assert skipped == ["2026-11-02/notes.md: not .jsonl, .ndjson, .txt or .parquet"]


def test_missing_corpus_folder_says_how_to_fix(tmp_path):
    with pytest.raises(BadInputError, match="create it and drop partitions in it"):
        discover(tmp_path / "nowhere")


def test_bad_jsonl_records_quarantined_byte_for_byte_good_ones_kept(tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "p1").mkdir(parents=True)
    bad_utf8 = b'{"id": "x3", "text": "caf\xe9"}\n'
    lines = [
        b'{"id": "x1", "text": "a good record"}\n',
        b'{"id": "x2", "text": "broken\n',
        bad_utf8,
        b'{"id": 7, "text": "numeric id"}\n',
        b'{"text": "no id"}\n',
        b'{"id": "x6", "text": "   "}\n',
        b"\n",
        b"[1, 2]\n",
        b'{"id": "x9", "text": "nul \\u0000 inside"}\n',
        b'{"id": "x10", "text": "' + b"long " * 100 + b'"}\n',
        b'{"id": "x11", "text": "another good one \xe2\x9c\x93 mixed \xd0\xba\xd0\xb8\xd1\x80\xd0\xb8\xd0\xbb\xd0\xbb\xd0\xb8\xd1\x86\xd0\xb0"}\n',
    ]
    (corpus / "p1" / "s.jsonl").write_bytes(b"".join(lines))
    records, q = _read(corpus, tmp_path / "q", "p1/s.jsonl", max_bytes=200)
    assert [r.id for r in records] == ["x1", "x11"]
    assert records[1].line == 11 and records[1].text.endswith("кириллица")
    reasons = _reasons(tmp_path / "q", "p1/s.jsonl")
    assert [(r["line"], r["reason"].split(":")[0]) for r in reasons] == [
        (2, "broken JSON"),
        (3, "invalid UTF-8"),
        (4, "id must be a string, got int"),
        (5, "missing id"),
        (6, "empty text"),
        (8, "not a JSON object"),
        (9, "NUL byte in id or text"),
        (10, "too large"),
    ]
    assert all(r["source"] == "p1/s.jsonl" for r in reasons)
    raw = (tmp_path / "q" / "p1/s.jsonl.rejected").read_bytes()
    rejected = [lines[i - 1] for i in (2, 3, 4, 5, 6, 8, 9)] + [lines[9][:201]]  # a line too long: its head
    assert raw == b"".join(rejected)
    assert (reasons[-1]["offset"], reasons[-1]["length"]) == (sum(map(len, lines[:9])), len(lines[9]))
    for r, expected in zip(reasons, rejected):  # each reason points at its bytes
        assert raw[r["offset_in_rejected"] : r["offset_in_rejected"] + r["bytes"]] == expected
    assert q.counts.records == 8


def test_text_lines_get_file_line_ids_and_bad_bytes_are_quarantined(tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "p").mkdir(parents=True)
    (corpus / "p" / "t.txt").write_bytes(b"first line\n\n\xff\xfe broken\nlast line")
    records, _ = _read(corpus, tmp_path / "q", "p/t.txt")
    assert [(r.id, r.text) for r in records] == [("p/t.txt:1", "first line"), ("p/t.txt:4", "last line")]
    assert (tmp_path / "q" / "p/t.txt.rejected").read_bytes() == b"\xff\xfe broken\n"


def test_parquet_with_wrong_schema_is_quarantined_whole(tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "p").mkdir(parents=True)
    pq.write_table(pa.table({"id": [1, 2], "body": ["a", "b"]}), corpus / "p" / "w.parquet")
    records, q = _read(corpus, tmp_path / "q", "p/w.parquet")
    assert records == []
    assert (tmp_path / "q" / "p/w.parquet.rejected").read_bytes() == (corpus / "p" / "w.parquet").read_bytes()
    assert (
        "wrong Parquet schema: needs one string column id and one text, got id: int64, body: string"
        in _reasons(tmp_path / "q", "p/w.parquet")[0]["reason"]
    )


def test_parquet_with_a_column_twice_is_quarantined_whole_not_a_failed_night(tmp_path):
    """Two `id` columns raised a KeyError in the nightly's tokenize, every night (hostile review)."""
    corpus = tmp_path / "corpus"
    (corpus / "p").mkdir(parents=True)
    table = pa.Table.from_arrays(
        [pa.array(["a", "b"]), pa.array(["x", "y"]), pa.array(["t1", "t2"])], names=["id", "id", "text"]
    )
    pq.write_table(table, corpus / "p" / "dup.parquet")
    records, _ = _read(corpus, tmp_path / "q", "p/dup.parquet")
    assert records == []
    assert (
        "needs one string column id and one text, got id: string, id: string, text: string"
        in _reasons(tmp_path / "q", "p/dup.parquet")[0]["reason"]
    )


def test_a_file_whose_name_is_not_utf8_costs_its_records_not_the_night(tmp_path):
    """Its token cache's fingerprint encoded the name strictly: a Latin-1 name failed every nightly.
    Now the file is read; its lines' ids (name:line) cannot be Unicode, so they are quarantined
    with that reason, and the night goes on."""
    from shardvec.tasks.inputs.corpus import discover

    corpus = tmp_path / "corpus"
    (corpus / "p").mkdir(parents=True)
    name = b"notes-\xe9.txt"
    (corpus / "p" / os.fsdecode(name)).write_text("hello world again\n")
    files, _ = discover(corpus)
    (src,) = files
    assert len(src.fingerprint) == 12
    records, q = _read(corpus, tmp_path / "q", src.name)
    assert records == [] and q.counts.records == 1
    assert "lone surrogate" in _reasons(tmp_path / "q", src.name)[0]["reason"]


def test_parquet_rows_streamed_with_bad_rows_quarantined(tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "p").mkdir(parents=True)
    ids = [f"r{i}" for i in range(10)] + [None, "r11"]
    texts = [f"text {i}" for i in range(10)] + ["orphan", ""]
    pq.write_table(
        pa.table({"id": pa.array(ids, pa.string()), "text": texts}), corpus / "p" / "r.parquet", row_group_size=3
    )
    records, _ = _read(corpus, tmp_path / "q", "p/r.parquet", batch_size=4)
    assert [r.id for r in records] == [f"r{i}" for i in range(10)]
    rows = [json.loads(l) for l in (tmp_path / "q" / "p/r.parquet.rejected.jsonl").read_text().splitlines()]
    assert rows == [{"line": 11, "id": None, "text": "orphan"}, {"line": 12, "id": "r11", "text": ""}]


def test_unreadable_and_corrupt_parquet(tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "p").mkdir(parents=True)
    (corpus / "p" / "c.parquet").write_bytes(b"PAR1 not really")
    records, _ = _read(corpus, tmp_path / "q", "p/c.parquet")
    assert records == [] and "unreadable Parquet file" in _reasons(tmp_path / "q", "p/c.parquet")[0]["reason"]


def test_quarantine_rerun_replaces_not_duplicates(tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "p").mkdir(parents=True)
    (corpus / "p" / "s.jsonl").write_bytes(b'{"id": "a", "text": "ok"}\nnot json\n')
    _read(corpus, tmp_path / "q", "p/s.jsonl")
    _read(corpus, tmp_path / "q", "p/s.jsonl")
    assert (tmp_path / "q" / "p/s.jsonl.rejected").read_bytes() == b"not json\n"


@pytest.mark.parametrize(
    "mode,kw,expected",
    [
        ("update", {}, (["a", "b", "c"], ["c"])),  # nightly: only the new one
        ("update", {"start": "b", "end": "b"}, (["a", "b"], [])),  # a range already in
        ("update", {"start": "b"}, (["a", "b", "c"], ["c"])),  # from b on
        ("rebuild", {}, (["a", "b", "c"], ["a", "b", "c"])),  # rebuild everything
        ("rebuild", {"end": "a"}, (["a", "b"], ["a", "b"])),  # what was in stays in
        ("update", {"partitions": ["c"]}, (["a", "b", "c"], ["c"])),
    ],
)
def test_select_partitions(mode, kw, expected):
    sel = select_partitions(["a", "b", "c"], ["a", "b"], mode=mode, **kw)
    assert (sel.in_version, sel.train) == expected


def test_select_first_run_trains_on_everything():
    sel = select_partitions(["a", "b"], [], mode="update")
    assert sel.in_version == sel.train == ["a", "b"]


def test_select_unknown_partition_or_reversed_range():
    with pytest.raises(BadInputError, match="No partition named z in the corpus; the partitions there are: a, b"):
        select_partitions(["a", "b"], [], mode="update", partitions=["z"])
    with pytest.raises(BadInputError, match="starts at b after it ends at a; swap --start and --end"):
        select_partitions(["a", "b"], [], mode="update", start="b", end="a")


@pytest.mark.parametrize("fmt", ["jsonl", "txt"])
def test_a_line_longer_than_max_record_bytes_is_skipped_without_being_held(tmp_path, fmt):
    """issue 14 item 3: an 8 MB line is quarantined (its first bytes and its length) while
    reading holds about max_record_bytes; the good lines around it are read."""
    import tracemalloc

    corpus = tmp_path / "corpus"
    (corpus / "p").mkdir(parents=True)
    good = [
        json.dumps({"id": f"g{i}", "text": f"good line {i}"}).encode() if fmt == "jsonl" else f"good line {i}".encode()
        for i in range(3)
    ]
    long = b'{"id": "long", "text": "' + b"word " * 1_600_000 + b'"}' if fmt == "jsonl" else b"word " * 1_600_000
    path = corpus / "p" / f"l.{fmt}"
    path.write_bytes(good[0] + b"\n" + long + b"\n" + good[1] + b"\n" + good[2])  # the last one has no newline
    tracemalloc.start()
    try:
        records, q = _read(corpus, tmp_path / "q", f"p/l.{fmt}", max_bytes=4096)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"reading held {peak} bytes"
    assert [r.line for r in records] == [1, 3, 4]
    assert [r.text for r in records] == ["good line 0", "good line 1", "good line 2"]
    (reason,) = _reasons(tmp_path / "q", f"p/l.{fmt}")
    assert reason["line"] == 2 and reason["reason"].startswith(f"too large: {len(long) + 1} bytes")
    kept = (tmp_path / "q" / f"p/l.{fmt}.rejected").read_bytes()
    assert 0 < len(kept) <= 4097 and long.startswith(kept)


def test_a_big_file_without_newline_is_one_record_too_large(tmp_path):
    import tracemalloc

    corpus = tmp_path / "corpus"
    (corpus / "p").mkdir(parents=True)
    (corpus / "p" / "n.txt").write_bytes(b"x" * (6 << 20))
    tracemalloc.start()
    try:
        records, q = _read(corpus, tmp_path / "q", "p/n.txt", max_bytes=1000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert records == [] and q.counts.records == 1 and peak < 1 << 20
    assert _reasons(tmp_path / "q", "p/n.txt")[0]["reason"].startswith(f"too large: {6 << 20} bytes")


def _invalid_utf8(values: list[bytes]) -> pa.Array:
    """A string column holding bytes that are not UTF-8 (as other writers produce)."""
    return pa.array(values, pa.binary()).view(pa.string())


def test_parquet_rows_with_invalid_utf8_are_quarantined_row_by_row(tmp_path):
    """issue 14 item 1: a non-UTF-8 string costs its row only, kept byte for byte."""
    import base64

    corpus = tmp_path / "corpus"
    (corpus / "p").mkdir(parents=True)
    ids = [b"a", b"b\xff", b"c", b"d", b"e"]
    texts = [b"good one", b"bad id", b"caf\xe9 latin-1", b"good two", b"good three"]
    pq.write_table(
        pa.table({"id": _invalid_utf8(ids), "text": _invalid_utf8(texts)}), corpus / "p" / "u.parquet", row_group_size=2
    )
    records, q = _read(corpus, tmp_path / "q", "p/u.parquet", batch_size=4)
    assert [(r.id, r.line) for r in records] == [("a", 1), ("d", 4), ("e", 5)]
    assert [(r["line"], r["reason"]) for r in _reasons(tmp_path / "q", "p/u.parquet")] == [
        (2, "invalid UTF-8 in column id: byte 1"),
        (3, "invalid UTF-8 in column text: byte 3"),
    ]
    rows = [json.loads(l) for l in (tmp_path / "q" / "p/u.parquet.rejected.jsonl").read_text().splitlines()]
    assert base64.b64decode(rows[0]["id"]["base64"]) == b"b\xff" and rows[0]["text"] == "bad id"
    assert base64.b64decode(rows[1]["text"]["base64"]) == b"caf\xe9 latin-1"


def _corrupt_row_group(path: Path, rg: int) -> tuple[int, int]:
    """Flip bytes inside the text column's data of row group `rg`; its byte range in the file."""
    md = pq.ParquetFile(path).metadata.row_group(rg)
    cols = [md.column(j) for j in range(md.num_columns)]
    starts = [c.dictionary_page_offset if c.has_dictionary_page else c.data_page_offset for c in cols]
    text = cols[1]
    data = bytearray(path.read_bytes())
    mid = text.data_page_offset + (starts[1] + text.total_compressed_size - text.data_page_offset) // 2
    for k in range(mid, mid + 8):
        data[k] ^= 0x5A
    path.write_bytes(bytes(data))
    return min(starts), max(s + c.total_compressed_size for s, c in zip(starts, cols))


@pytest.mark.parametrize("checksums", [False, True])
def test_parquet_corrupt_page_costs_its_row_group_only(tmp_path, checksums):
    """issue 14 item 1: a corrupt page quarantines its row group (its bytes, with a reason);
    the row groups around it are read."""
    corpus = tmp_path / "corpus"
    (corpus / "p").mkdir(parents=True)
    path = corpus / "p" / "c.parquet"
    pq.write_table(
        pa.table({"id": [f"r{i}" for i in range(300)], "text": [f"text number {i}" for i in range(300)]}),
        path,
        row_group_size=100,
        write_page_checksum=checksums,
        compression="none" if checksums else "snappy",
    )
    start, end = _corrupt_row_group(path, 1)
    records, q = _read(corpus, tmp_path / "q", "p/c.parquet", batch_size=32)
    assert [r.id for r in records] == [f"r{i}" for i in range(100)] + [f"r{i}" for i in range(200, 300)]
    assert [r.line for r in records][99:101] == [100, 201]
    (reason,) = _reasons(tmp_path / "q", "p/c.parquet")
    assert (
        reason["line"] == 101
        and reason["rows"] == [101, 200]
        and (reason["offset"], reason["length"]) == (start, end - start)
    )
    assert reason["reason"].startswith("unreadable Parquet row group 1 (rows 101-200): ")
    assert (tmp_path / "q" / "p/c.parquet.rejected").read_bytes() == path.read_bytes()[start:end]


def _read_held(corpus: Path, quarantine: Path, name: str, max_bytes: int, batch_size: int = 2000):
    """(ids read, most Arrow memory held while a record was handed over, peak of Python's
    allocations): records are dropped as they come, so what is measured is the reading."""
    import tracemalloc

    files, _ = discover(corpus)
    src = next(f for f in files if f.name == name)
    q = Quarantine(quarantine, src)
    ids, base, arrow = [], pa.total_allocated_bytes(), 0
    tracemalloc.start()
    try:
        for r in read_records(corpus, src, q, batch_size=batch_size, max_record_bytes=max_bytes):
            ids.append(r.id)
            arrow = max(arrow, pa.total_allocated_bytes() - base)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    q.commit()
    return ids, arrow, peak


def test_a_tiny_parquet_of_one_text_repeated_is_decoded_a_slice_at_a_time(tmp_path):
    """#33 F3: 250 copies of one legal 990 kB text, dictionary-encoded and zstd-compressed, are a
    2 kB file that decoded to 250 MB of Arrow strings and 250 MB of Python ones in one batch of
    `batch_size` rows. Each row's length now comes from the dictionary's offsets before anything
    is decoded, and the rows are decoded BATCH_BYTES at a time."""
    import numpy as np
    from shardvec.tasks.inputs.corpus import BATCH_BYTES

    corpus = tmp_path / "corpus"
    (corpus / "p").mkdir(parents=True)
    path = corpus / "p" / "t.parquet"
    text = pa.DictionaryArray.from_arrays(pa.array(np.zeros(250, np.int32)), pa.array(["word " * 198_000]))
    # written as any writer's string column (no Arrow schema in the file): it reads back as strings
    pq.write_table(
        pa.table({"id": [f"r{i}" for i in range(250)], "text": text}), path, compression="zstd", store_schema=False
    )
    assert path.stat().st_size < 4096 and pq.ParquetFile(path).schema_arrow.field("text").type == pa.string()
    ids, arrow, peak = _read_held(corpus, tmp_path / "q", "p/t.parquet", max_bytes=1_000_000)
    assert ids == [f"r{i}" for i in range(250)]
    assert arrow < 3 * BATCH_BYTES and peak < 3 * BATCH_BYTES, f"held {arrow >> 20} MB of Arrow, {peak >> 20} MB"


def test_a_parquet_row_group_of_large_texts_is_read_in_small_row_slices(tmp_path):
    """#33 F3: a row group whose text is far larger than what a batch may hold (60 distinct 900 kB
    texts, 54 MB, in a file of kilobytes) is read a few rows at a time, as its stored size says."""
    from shardvec.tasks.inputs.corpus import BATCH_BYTES

    corpus = tmp_path / "corpus"
    (corpus / "p").mkdir(parents=True)
    texts = [f"{i:06d} " + "x" * 899_993 for i in range(60)]
    pq.write_table(
        pa.table({"id": [f"r{i}" for i in range(60)], "text": texts}),
        corpus / "p" / "l.parquet",
        compression="zstd",
        use_dictionary=False,
        write_batch_size=1,
    )  # a page per text
    del texts
    ids, arrow, peak = _read_held(corpus, tmp_path / "q", "p/l.parquet", max_bytes=1_000_000)
    assert ids == [f"r{i}" for i in range(60)]
    assert arrow < 3 * BATCH_BYTES and peak < 3 * BATCH_BYTES, f"held {arrow >> 20} MB of Arrow, {peak >> 20} MB"


def test_a_parquet_record_over_the_limit_is_quarantined_without_being_decoded(tmp_path):
    """#33 F3: a 6 MB text over corpus.max_record_bytes is quarantined with its first
    max_record_bytes bytes (base64) and its length, never turned into a Python string whole; the
    rows around it are read."""
    import base64

    corpus = tmp_path / "corpus"
    (corpus / "p").mkdir(parents=True)
    big = ("é" + "x" * 999) * 6000  # 6,006,000 bytes; the cut at 1,000,000 splits an é: kept as bytes
    pq.write_table(
        pa.table({"id": ["a", "big", "c"], "text": ["first", big, "third"]}),
        corpus / "p" / "b.parquet",
        compression="zstd",
    )
    ids, _, peak = _read_held(corpus, tmp_path / "q", "p/b.parquet", max_bytes=1_000_000)
    assert ids == ["a", "c"]
    assert peak < 6 << 20, f"{peak >> 20} MB of Python objects for a 6 MB record"
    (reason,) = _reasons(tmp_path / "q", "p/b.parquet")
    assert reason["line"] == 2 and reason["reason"].startswith(
        "too large: 6006003 bytes, over corpus.max_record_bytes=1000000"
    )
    (row,) = [json.loads(l) for l in (tmp_path / "q" / "p/b.parquet.rejected.jsonl").read_text().splitlines()]
    assert row["line"] == 2 and row["id"] == "big" and row["text"]["bytes"] == 6_006_000
    assert base64.b64decode(row["text"]["base64"]) == big.encode()[:1_000_000]


def test_a_large_parquet_row_group_whose_dictionary_holds_long_texts_is_read_a_few_rows_at_a_time(tmp_path):
    """#33 F3: a row group storing more than a batch may hold (9 distinct 1 MB texts) is read in
    reads of 8 MB of what it stores; but 600 more rows each naming the first text in its
    dictionary store nothing and decoded to 560 MB in one read. Its dictionaries' longest value
    bounds the rows a read takes too."""
    import numpy as np
    from shardvec.tasks.inputs.corpus import BATCH_BYTES

    corpus = tmp_path / "corpus"
    (corpus / "p").mkdir(parents=True)
    path = corpus / "p" / "d.parquet"
    values = pa.array([f"{i} " + "w" * 999_000 for i in range(9)])
    text = pa.DictionaryArray.from_arrays(pa.array(np.r_[np.zeros(600), np.arange(9)].astype(np.int32)), values)
    pq.write_table(
        pa.table({"id": [f"r{i}" for i in range(609)], "text": text}), path, compression="zstd", store_schema=False
    )
    stored = pq.ParquetFile(path).metadata.row_group(0).column(1)
    assert stored.has_dictionary_page and BATCH_BYTES < stored.total_uncompressed_size < 10 << 20
    ids, arrow, peak = _read_held(corpus, tmp_path / "q", "p/d.parquet", max_bytes=1_000_000)
    assert ids == [f"r{i}" for i in range(609)]
    # the dictionary page itself (what it stores) is held while its rows are read
    assert arrow < stored.total_uncompressed_size + 3 * BATCH_BYTES and peak < 3 * BATCH_BYTES, (
        f"held {arrow >> 20} MB of Arrow, {peak >> 20} MB"
    )


def test_a_large_parquet_row_group_of_shared_prefixes_is_read_a_few_rows_at_a_time(tmp_path):
    """#33 F3: DELTA_BYTE_ARRAY stores a text as the length of the prefix it shares with the one
    before and the rest: 100 copies of a 1 MB text after 9 others store nothing more and decoded
    to 100 MB in one read. Such a row group is read as many rows a time as BATCH_BYTES holds at
    corpus.max_record_bytes."""
    from shardvec.tasks.inputs.corpus import BATCH_BYTES

    corpus = tmp_path / "corpus"
    (corpus / "p").mkdir(parents=True)
    path = corpus / "p" / "delta.parquet"
    texts = [f"{i} " + "z" * 999_000 for i in range(9)] + ["w" * 999_000] * 100
    pq.write_table(
        pa.table({"id": [f"r{i}" for i in range(109)], "text": texts}),
        path,
        compression="zstd",
        use_dictionary=False,
        column_encoding={"text": "DELTA_BYTE_ARRAY", "id": "PLAIN"},
    )
    del texts
    stored = pq.ParquetFile(path).metadata.row_group(0).column(1)
    assert "DELTA_BYTE_ARRAY" in stored.encodings and BATCH_BYTES < stored.total_uncompressed_size < 10 << 20
    ids, arrow, peak = _read_held(corpus, tmp_path / "q", "p/delta.parquet", max_bytes=1_000_000)
    assert ids == [f"r{i}" for i in range(109)]
    assert arrow < stored.total_uncompressed_size + 3 * BATCH_BYTES and peak < 3 * BATCH_BYTES, (
        f"held {arrow >> 20} MB of Arrow, {peak >> 20} MB"
    )


def test_a_byte_order_mark_at_a_files_start_is_not_part_of_its_first_record(tmp_path):
    """#33 hostile review: a JSON Lines file saved with a BOM (Windows editors do) lost its first
    line to quarantine as broken JSON, and a text file's BOM became part of its first statement."""
    corpus = tmp_path / "corpus"
    (corpus / "p1").mkdir(parents=True)
    (corpus / "p1" / "a.jsonl").write_bytes(
        b'\xef\xbb\xbf{"id": "a1", "text": "first"}\n{"id": "a2", "text": "second"}\n'
    )
    (corpus / "p1" / "b.txt").write_bytes(b"\xef\xbb\xbffirst line\r\nsecond line\r\n")
    (corpus / "p1" / "c.txt").write_bytes(b"\xef\xbb\xbf\nonly line\n")  # a BOM alone is no statement
    records, q = _read(corpus, tmp_path / "q", "p1/a.jsonl")
    assert [(r.id, r.text) for r in records] == [("a1", "first"), ("a2", "second")] and q.counts.records == 0
    records, _ = _read(corpus, tmp_path / "q", "p1/b.txt")
    assert [r.text for r in records] == ["first line", "second line"]
    records, _ = _read(corpus, tmp_path / "q", "p1/c.txt")
    assert [r.text for r in records] == ["only line"]
