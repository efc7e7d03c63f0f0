"""Hypothesis: whatever bytes a corpus file holds, every non-blank line is either a good record
or quarantined byte for byte with a reason, and nothing raises."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardvec.tasks.inputs.corpus import Quarantine, discover, read_records

good = st.builds(
    lambda i, t: json.dumps({"id": i, "text": t}, ensure_ascii=False).encode(),
    st.text(min_size=1, max_size=20).filter(lambda s: s.strip() and "\x00" not in s),
    st.text(min_size=1, max_size=200).filter(lambda s: s.strip() and "\x00" not in s),
)
hostile = st.one_of(
    st.binary(max_size=300).map(lambda b: b.replace(b"\n", b" ")),  # random bytes, invalid UTF-8
    st.builds(
        lambda i: json.dumps({"id": i, "text": "x"}).encode(),  # ids of every JSON type
        st.one_of(st.none(), st.integers(), st.floats(allow_nan=False), st.lists(st.integers(), max_size=2)),
    ),
    st.just(b'{"id": "a", "text": ""}'),
    st.just(b'{"id": "a"}'),
    st.just(b'{"text": "no id"}'),
    st.just(b'{"id": "n", "text": "nul \\u0000"}'),
    st.just(b"[1, 2, 3]"),
    st.just(b'{"id": "t", "text": 5}'),
    st.just(b'{"id": "big", "text": "' + b"x" * 5000 + b'"}'),  # over max_record_bytes
    st.text(max_size=50).map(lambda s: s.replace("\n", " ").encode("utf-8")),  # mixed scripts, not JSON
)
lines = st.lists(st.one_of(good, hostile), max_size=40)


def _split(data: bytes) -> list[bytes]:
    """Non-blank lines as the reader sees them: ended by \\n only (a lone \\r is inside a line), and
    a byte order mark at the file's start not part of its first line."""
    parts = data.removeprefix(b"\xef\xbb\xbf").split(b"\n")
    lines = [p + b"\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    return [line for line in lines if line.rstrip(b"\r\n").strip()]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=lines, newline=st.sampled_from([b"\n", b"\r\n"]))
def test_jsonl_every_line_kept_or_quarantined_byte_for_byte(tmp_path_factory, lines, newline):
    tmp = tmp_path_factory.mktemp("h")
    (tmp / "corpus" / "p").mkdir(parents=True)
    raw = b"".join(line + newline for line in lines)
    (tmp / "corpus" / "p" / "f.jsonl").write_bytes(raw)
    files, _ = discover(tmp / "corpus")
    q = Quarantine(tmp / "q", files[0])
    records = list(read_records(tmp / "corpus", files[0], q, batch_size=7, max_record_bytes=2000))
    q.commit()
    nonblank = _split(raw)
    assert len(records) + q.counts.records == len(nonblank)
    rejected = tmp / "q" / "p" / "f.jsonl.rejected"
    rejected = rejected.read_bytes() if rejected.exists() else b""
    reasons = tmp / "q" / "p" / "f.jsonl.reasons.jsonl"
    reasons = [json.loads(l) for l in reasons.read_text().splitlines()] if reasons.exists() else []
    # the good records' own bytes and the quarantined bytes are, together, the file's non-blank
    # lines; of a line over max_record_bytes only its first bytes are kept, and where it is
    kept = [raw[r.offset : r.offset + r.length] for r in records]
    for e in reasons:
        part = rejected[e["offset_in_rejected"] : e["offset_in_rejected"] + e["bytes"]]
        if "length" in e:  # too long to hold: located in the source, its head kept
            assert e["bytes"] == 2001 and raw[e["offset"] : e["offset"] + e["length"]].startswith(part)
            part = raw[e["offset"] : e["offset"] + e["length"]]
        kept.append(part)
    assert sorted(kept) == sorted(nonblank)
    for r in records:
        assert isinstance(r.id, str) and r.id.strip() and r.text.strip() and "\x00" not in r.text


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(max_size=120).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b"")), max_size=30))
def test_text_lines_kept_or_quarantined(tmp_path_factory, lines):
    tmp = tmp_path_factory.mktemp("t")
    (tmp / "corpus" / "p").mkdir(parents=True)
    raw = b"".join(line + b"\n" for line in lines)
    (tmp / "corpus" / "p" / "f.txt").write_bytes(raw)
    files, _ = discover(tmp / "corpus")
    q = Quarantine(tmp / "q", files[0])
    records = list(read_records(tmp / "corpus", files[0], q, batch_size=5, max_record_bytes=100))
    q.commit()
    assert len(records) + q.counts.records == len(_split(raw))
    for r in records:
        line = raw[r.offset : r.offset + r.length].decode("utf-8").removeprefix("\ufeff" if r.line == 1 else "")
        assert r.id == f"p/f.txt:{r.line}" and line.strip() == r.text.strip()


def test_empty_and_unreadable_files(tmp_path):
    (tmp_path / "corpus" / "p").mkdir(parents=True)
    (tmp_path / "corpus" / "p" / "empty.jsonl").write_bytes(b"")
    (tmp_path / "corpus" / "p" / "gone.jsonl").symlink_to(tmp_path / "nowhere")
    files, _ = discover(tmp_path / "corpus")
    by_name = {f.name: f for f in files}
    assert "p/gone.jsonl" not in by_name  # a dangling link is not a file
    q = Quarantine(tmp_path / "q", by_name["p/empty.jsonl"])
    assert (
        list(read_records(tmp_path / "corpus", by_name["p/empty.jsonl"], q, batch_size=5, max_record_bytes=100)) == []
        and q.counts.records == 0
    )


record_values = st.one_of(
    st.none(),
    st.integers(),
    st.floats(allow_nan=False),
    st.booleans(),
    st.text(max_size=40),
    st.lists(st.text(max_size=3), max_size=2),
)


@pytest.fixture(scope="module")
def adder(published, tmp_path_factory):
    import shutil
    from shardvec.tasks.changes.additions import Adder

    copy = tmp_path_factory.mktemp("adds") / "data"
    shutil.copytree(published.data, copy)
    return Adder(copy, on_duplicate="reject", max_record_bytes=1_000_000)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.one_of(
            st.fixed_dictionaries({"id": record_values, "text": record_values}),
            st.dictionaries(st.sampled_from(["id", "text", "x"]), record_values, max_size=3),
            record_values,
        ),
        max_size=12,
    )
)
def test_statement_batches_every_record_added_or_quarantined(adder, records):
    before = adder.view.live
    result = adder.add(records)
    assert result.added + result.replaced + result.unchanged + result.quarantined == len(records)
    assert adder.view.live == before + result.added
    for rec in records:  # whatever was accepted can be found
        if (
            isinstance(rec, dict)
            and isinstance(rec.get("id"), str)
            and rec["id"].strip()
            and isinstance(rec.get("text"), str)
            and rec["text"].strip()
            and "\x00" not in rec["text"] + rec["id"]
        ):
            assert adder.view.find(rec["id"]) is not None


def test_a_line_of_a_million_escaped_quotes_costs_a_moment_not_a_night(tmp_path):
    """The depth check scanned a never-closed string once per quote in it: a 1 MB line (under the
    size limit) took over 10 minutes, failing the nightly's tokenize every night. Now one pass."""
    import time

    (tmp_path / "corpus" / "p").mkdir(parents=True)
    slow = b"[" * 501 + b'"' + b'\\"' * 499_000
    (tmp_path / "corpus" / "p" / "f.jsonl").write_bytes(b'{"id": "ok", "text": "fine"}\n' + slow + b"\n")
    files, _ = discover(tmp_path / "corpus")
    q = Quarantine(tmp_path / "q", files[0])
    began = time.monotonic()
    records = list(read_records(tmp_path / "corpus", files[0], q, batch_size=7, max_record_bytes=2_000_000))
    assert time.monotonic() - began < 30  # was > 600 s; a few hundredths now
    q.commit()
    assert [r.id for r in records] == ["ok"] and q.counts.records == 1
