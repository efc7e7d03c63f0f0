"""Hypothesis writes JSON Lines from arbitrary bytes and arbitrary JSON (nesting 100,000 deep,
integers of thousands of digits, 1e400, every JSON type in id, text and op) and sends them
through the record reader, `shardvec add`, the inbox and the nightly: every well-formed record
comes out live, every other one is quarantined byte for byte with its line and a reason, and
nothing raises (issue 33).

What is well-formed is decided here by the standard library and the input format (design.md):
a line that decodes as UTF-8 and parses with `json.loads` (whatever it raises, the line is bad),
nested at most 500 deep (tasks/inputs/corpus.py MAX_JSON_DEPTH: Python's own limit depends on the
caller), into an object whose id and text are non-blank strings without NUL or lone surrogates;
given to `add`, its "op", when present, is add, replace or delete (a delete needs only its id).

Most examples exercise the reader directly; fewer go through add and the inbox, fewer still
through a nightly. SHARDVEC_FUZZ_EXAMPLES=3000 runs more of each (CI: 300 in all).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shardvec
from shardvec.tasks.inputs.corpus import Quarantine, SourceFile, read_records
from shardvec.tasks.changes.intake import drain_inbox
from tests.checks import usable
from tests.runs import nightly_in_process, shardvec_cli

EXAMPLES = int(os.environ.get("SHARDVEC_FUZZ_EXAMPLES", "300"))
READER_EXAMPLES = EXAMPLES * 9 // 10
ADD_EXAMPLES = max(6, EXAMPLES // 12)
NIGHTLY_EXAMPLES = max(2, EXAMPLES // 150)
MAX_BYTES = 1 << 20
HEALTH = dict(deadline=None, database=None, suppress_health_check=list(HealthCheck))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
words = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40)
op_values = st.one_of(st.just(None), st.sampled_from(["add", "replace", "delete"]), json_values)


@st.composite
def a_record(draw) -> bytes:
    """An object with id, text and perhaps op of any JSON type, written one of several ways."""
    obj = {"id": draw(st.one_of(words, json_values)), "text": draw(st.one_of(words, words, json_values))}
    op = draw(op_values)
    if op is not None:
        obj["op"] = op
    if draw(st.booleans()):
        obj = dict(reversed(list(obj.items())))
    return json.dumps(obj, ensure_ascii=draw(st.booleans())).encode()


def _nested(n: int, kind: str) -> bytes:
    return b"[" * n + b"]" * n if kind == "list" else b'{"a": ' * n + b"0" + b"}" * n


def _placed(value: bytes, where: str) -> bytes:
    """`value` as the whole line, or as the id, text or op of an otherwise good record."""
    return {
        "line": value,
        "id": b'{"id": ' + value + b', "text": "t"}',
        "text": b'{"id": "v", "text": ' + value + b"}",
        "op": b'{"id": "v", "text": "t", "op": ' + value + b"}",
    }[where]


places = st.sampled_from(["line", "id", "text", "op"])
depths = st.one_of(st.integers(1, 100_000), st.integers(495, 505))
deep = st.builds(
    lambda n, kind, where: _placed(_nested(n, kind), where), depths, st.sampled_from(["list", "object"]), places
)
huge_numbers = st.builds(
    lambda sign, n, where: _placed(sign + b"9" * n, where), st.sampled_from([b"", b"-"]), st.integers(1, 12_000), places
)
floats = st.builds(
    _placed, st.sampled_from([b"1e400", b"-1e400", b"NaN", b"Infinity", b"1e-400", b"1" + b"0" * 500 + b".5"]), places
)
escapes = st.sampled_from(
    [
        b'{"id": "s", "text": "\\ud800"}',
        b'{"id": "\\udc80", "text": "t"}',
        b'{"id": "z", "text": "a\\u0000b"}',
        b'{"id": "e", "text": " \\t "}',
        b'{"id": "x", "text": "t"',
        b'{"id": "x", "id": "y", "text": "t"}',
    ]
)
lines = st.lists(
    st.one_of(a_record(), a_record(), deep, huge_numbers, floats, escapes, st.binary(max_size=60)), max_size=12
)


def _depth(value) -> int:
    """How deep lists and objects nest in `value` (without recursing: it may be 1,000 deep)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (list, dict)):
            deepest = max(deepest, depth + 1)
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    return deepest


def expected(raw: bytes, ops: bool):
    """(op, id, text) of a well-formed line, or None."""
    try:
        obj = json.loads(raw.decode("utf-8"))
    except Exception:  # noqa: BLE001 - whatever the standard library cannot decode is bad
        return None
    if not isinstance(obj, dict) or _depth(obj) > 500:
        return None
    op = obj.get("op", "add") if ops else "add"
    if op not in ("add", "replace", "delete"):
        return None
    if op == "delete":
        return ("delete", obj.get("id"), None) if usable(obj.get("id"), "-") else None
    return (op, obj["id"], obj["text"]) if usable(obj.get("id"), obj.get("text")) else None


def _file(lines_: list[bytes], prefix: str) -> tuple[bytes, list[bytes]]:
    """The file's bytes, one line per item (string ids made unique by `prefix` and position, so
    that duplicates are not what is tested here), and its lines as written."""
    out = []
    for i, line in enumerate(lines_):
        line = line.replace(b"\n", b" ").replace(b"\r", b" ")
        try:
            obj = json.loads(line.decode("utf-8"))
        except Exception:  # noqa: BLE001
            obj = None
        if isinstance(obj, dict) and isinstance(obj.get("id"), str):
            obj["id"] = f"{prefix}{i}:{obj['id']}"
            try:
                line = json.dumps(obj, ensure_ascii=bool(i % 2)).encode()
            except UnicodeEncodeError:  # a lone surrogate is written as its escape
                line = json.dumps(obj).encode()
        out.append(line + b"\n")
    return b"".join(out), out


def _blank(raw: bytes) -> bool:
    return not raw.rstrip(b"\r\n").strip()


def _quarantined(folder: Path, name: str) -> tuple[list[dict], bytes]:
    reasons = list(folder.rglob(f"{name}.reasons.jsonl"))
    rejected = list(folder.rglob(f"{name}.rejected"))
    return (
        [json.loads(line) for p in reasons for line in p.read_text().splitlines()],
        b"".join(p.read_bytes() for p in rejected),
    )


# -- the reader, directly: most examples ------------------------------------------------------
@settings(max_examples=READER_EXAMPLES, **HEALTH)
@given(lines=lines, ops=st.booleans())
def test_the_reader_keeps_every_well_formed_line_and_quarantines_the_rest(tmp_path_factory, lines, ops):
    tmp = tmp_path_factory.mktemp("fuzz")
    content, written = _file(lines, "r")
    path = tmp / "corpus" / "p" / "f.jsonl"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    src = SourceFile("p", "p/f.jsonl", "jsonl", len(content), path.stat().st_mtime_ns)
    q = Quarantine(tmp / "q", src)
    got = list(read_records(tmp / "corpus", src, q, batch_size=4, max_record_bytes=MAX_BYTES, ops=ops))
    q.commit()
    want = [(n, e) for n, raw in enumerate(written, 1) if not _blank(raw) and (e := expected(raw, ops))]
    bad = [(n, raw) for n, raw in enumerate(written, 1) if not _blank(raw) and not expected(raw, ops)]
    assert [(r.line, (r.op, r.id, r.text)) for r in got] == want
    entries, rejected = _quarantined(tmp / "q", "f.jsonl")
    assert [e["line"] for e in entries] == [n for n, _ in bad]
    assert all(e["source"] == "p/f.jsonl" and e["reason"].strip() for e in entries)
    assert rejected == b"".join(raw for _, raw in bad)
    shutil.rmtree(tmp)


# -- add and the inbox, on a published copy ---------------------------------------------------
@pytest.fixture(scope="module")
def store(published, tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("fuzz-store") / "data"
    shutil.copytree(published.data, data)
    return data


COUNTER = iter(range(10**9))


def _check_live_and_quarantined(data: Path, written: list[bytes], quarantine: Path, name: str, ops: bool):
    live = {}
    for raw in written:
        if not _blank(raw) and (e := expected(raw, ops)):
            live[e[1]] = e[2]  # ids are unique in a file: an op is the id's only one
    reader = shardvec.open(data)
    for id_, text in live.items():
        if text is None:
            assert id_ not in reader
        else:
            assert reader.text(id_) == text
    bad = [raw for raw in written if not _blank(raw) and not expected(raw, ops)]
    entries, rejected = _quarantined(quarantine, name)
    assert len(entries) == len(bad) and all(e["reason"].strip() for e in entries)
    assert rejected == b"".join(bad)


@settings(max_examples=ADD_EXAMPLES, **HEALTH)
@given(lines=lines)
def test_add_and_the_inbox_take_every_well_formed_record_and_quarantine_the_rest(store, tmp_path_factory, lines):
    n = next(COUNTER)
    tmp = tmp_path_factory.mktemp("add")
    content, written = _file(lines, f"a{n}.")
    path = tmp / f"add{n}.jsonl"
    path.write_bytes(content)
    out = shardvec_cli("add", path, "--data", store)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-3000:]
    _check_live_and_quarantined(store, written, store / "quarantine" / "additions", path.name, ops=True)

    content, written = _file(lines, f"i{n}.")
    (store / "inbox").mkdir(exist_ok=True)
    (store / "inbox" / f"in{n}.jsonl").write_bytes(content)
    totals = drain_inbox(store, batch_size=5, on_duplicate="reject", max_record_bytes=MAX_BYTES)
    assert totals["files"] == 1 and totals["refused"] == 0
    _check_live_and_quarantined(store, written, store / "quarantine" / "additions", f"in{n}.jsonl", ops=True)
    shutil.rmtree(tmp)


# -- the nightly: fewest examples --------------------------------------------------------------
@pytest.mark.slow
@settings(max_examples=NIGHTLY_EXAMPLES, **HEALTH)
@given(lines=lines.filter(lambda ls: len(ls) >= 3))
def test_a_nightly_publishes_every_well_formed_record_and_quarantines_the_rest(store, lines):
    n = next(COUNTER)
    part = f"2026-12-{n % 28 + 1:02d}x{n}"
    content, written = _file(lines, f"n{n}.")
    path = store / "corpus" / part / "f.jsonl"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    report = nightly_in_process(store)
    assert report["status"] == "published"
    _check_live_and_quarantined(store, written, store / "quarantine" / part, "f.jsonl", ops=False)
