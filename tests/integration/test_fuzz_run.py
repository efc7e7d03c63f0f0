"""Whole-run fuzzing (issue 14): Hypothesis writes a partition in the three input formats, the
nightly runs on it, and afterwards every well-formed record is live, every other one is in
quarantine/ with its reason, and a second run changes nothing.

What is well-formed is stated here from the input formats (design.md), independently of
tasks/inputs/corpus.py: a JSON Lines line is a UTF-8 JSON object with non-blank string id and text; a
text line is non-blank UTF-8; a Parquet row has non-null, non-blank UTF-8 id and text in string
columns (a file whose id or text column is not a string column is quarantined whole). No NUL
in id or text. A later record with an id already seen is a duplicate.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardvec.reader import Store
from tests.checks import usable
from tests.corpora import lee_lines
from tests.runs import nightly_in_process

PART = "2026-11-02"
words = st.text(st.characters(codec="utf-8"), min_size=1, max_size=60)
good_json = st.builds(lambda t: {"text": t}, words.filter(lambda s: s.strip() and "\x00" not in s))
hostile_json = st.one_of(
    st.binary(max_size=80),  # arbitrary bytes
    st.builds(
        lambda i, t: json.dumps({"id": i, "text": t}).encode(),  # wrong types, nulls
        st.one_of(st.none(), st.integers(), st.just(""), st.just(" ")),
        st.one_of(st.none(), words),
    ),
    st.just(b'{"id": "nul", "text": "a \\u0000 b"}'),
    st.just(b"[1]"),
    st.just(b'{"id": "x", "text": "broken'),
)
json_lines = st.lists(st.one_of(good_json, hostile_json), max_size=25)
text_lines = st.lists(st.one_of(words.map(lambda s: s.encode()), st.binary(max_size=60)), max_size=25)
cells = st.one_of(st.none(), words, st.binary(max_size=12))  # bytes: a string cell that is not UTF-8
parquet_rows = st.lists(st.tuples(cells, cells), max_size=25)
parquet_shape = st.sampled_from(["plain", "extra column", "id is int64", "text is int64"])


def _jsonl(lines: list) -> bytes:
    out = []
    for i, line in enumerate(lines):
        if isinstance(line, dict):  # a good record: ids unique by construction
            line = json.dumps({"id": f"j{i}", **line}, ensure_ascii=bool(i % 2)).encode()
        out.append(line.replace(b"\n", b" ") + b"\n")
    return b"".join(out)


def _string_column(values: list) -> pa.Array:
    raw = [v.encode() if isinstance(v, str) else v for v in values]
    return pa.array(raw, pa.binary()).view(pa.string())


def _parquet(path: Path, rows: list, shape: str) -> None:
    ids = [f"p{i}:{a}" if isinstance(a, str) else a for i, (a, _) in enumerate(rows)]
    cols = {"id": _string_column(ids), "text": _string_column([b for _, b in rows])}
    if shape == "extra column":
        cols["score"] = pa.array(range(len(rows)), pa.int64())
    elif shape != "plain":
        cols[shape.split()[0]] = pa.array(range(len(rows)), pa.int64())
    pq.write_table(pa.table(cols), path, row_group_size=7)


def _decoded(raw):
    try:
        return raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        return None


def _expected(name: str, data: bytes) -> tuple[list[tuple[str, str]], list[bytes | None]]:
    """The well-formed records of one input file, (id, text) in order, and the rejected ones
    (their raw line; None for a Parquet row or file)."""
    good, bad = [], []
    if name.endswith(".parquet"):
        table = pq.read_table(pa.BufferReader(data))
        if not all(pa.types.is_string(table.schema.field(c).type) for c in ("id", "text")):
            return [], [None]
        for a, b in zip(*(table.column(c).cast(pa.binary()).to_pylist() for c in ("id", "text"))):
            a, b = _decoded(a), _decoded(b)
            (good.append((a, b)) if usable(a, b) else bad.append(None))
        return good, bad
    for number, raw in enumerate(_lines(data), 1):
        body = raw.rstrip(b"\r\n")
        if not body.strip():
            continue
        value = _decoded(body)
        if name.endswith(".txt"):
            record = (f"{PART}/{name}:{number}", value)
        else:
            try:
                obj = json.loads(value) if value is not None else None
            except ValueError:
                obj = None
            record = (obj.get("id"), obj.get("text")) if isinstance(obj, dict) else (None, None)
        (good.append(record) if usable(*record) else bad.append(raw))
    return good, bad


def _lines(data: bytes) -> list[bytes]:
    """Lines ended by \\n only, as a line reader sees them."""
    parts = data.split(b"\n")
    return [p + b"\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def _tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.slow
@settings(
    max_examples=4,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(jsonl=json_lines, text=text_lines, rows=parquet_rows, shape=parquet_shape)
def test_nightly_on_fuzzed_partitions_publishes_the_good_and_quarantines_the_rest(
    tmp_path_factory, jsonl, text, rows, shape
):
    data = tmp_path_factory.mktemp("fuzz") / "data"
    base = data / "corpus" / "2026-11-01" / "lee.txt"  # real text, so there is something to learn
    base.parent.mkdir(parents=True)
    base.write_text("\n".join(lee_lines()[:120]) + "\n", encoding="utf-8")
    part = data / "corpus" / PART
    part.mkdir()
    (part / "f.jsonl").write_bytes(_jsonl(jsonl))
    (part / "f.txt").write_bytes(b"".join(t.replace(b"\n", b" ") + b"\n" for t in text))
    _parquet(part / "f.parquet", rows, shape)

    shards_of_64 = {"rows_per_shard": 64}
    report = nightly_in_process(data, store=shards_of_64)
    assert report["status"] == "published"

    live, seen = {}, set()
    for i, line in enumerate(lee_lines()[:120], 1):
        live[f"2026-11-01/lee.txt:{i}"] = line
    quarantine = data / "quarantine" / PART
    duplicates = 0
    for name in ("f.jsonl", "f.parquet", "f.txt"):  # the order a partition's files are read in
        good, bad = _expected(name, (part / name).read_bytes())
        for id_, text_ in good:
            if id_ in live or id_ in seen:
                duplicates += 1
            else:
                live[id_] = text_
            seen.add(id_)
        reasons = quarantine / f"{name}.reasons.jsonl"
        entries = [json.loads(l) for l in reasons.read_text().splitlines()] if reasons.exists() else []
        assert len(entries) == len(bad), (name, entries)
        assert all(e["reason"] and e["source"] == f"{PART}/{name}" for e in entries)
        if bad and all(raw is not None for raw in bad):  # lines: kept byte for byte
            assert (quarantine / f"{name}.rejected").read_bytes() == b"".join(bad)
    dup_entries = sum(len(p.read_text().splitlines()) for p in quarantine.glob("*.duplicates.reasons.jsonl"))
    assert dup_entries == duplicates

    store = Store(data)
    assert len(store) == len(live)
    for id_, text_ in live.items():
        assert id_ in store and store.text(id_) == text_

    current, before = (data / "CURRENT").read_bytes(), _tree(data / "quarantine")
    again = nightly_in_process(data, store=shards_of_64)
    assert again["status"] == "nothing new"
    assert (data / "CURRENT").read_bytes() == current and _tree(data / "quarantine") == before
