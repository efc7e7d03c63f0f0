"""Issue 33: acknowledged is forever, whatever the settings; no record blocks a night; a full
disk leaves nothing behind.

The reproductions of the issue, each of which failed before its fix: a statement acknowledged
under one corpus.max_record_bytes and screened again (and dropped, with the corpus record it
replaced) by a nightly under a lower one; an Adder that screened with its own default instead
of the configured limit; a JSON line nested 50,000 deep or holding a 5,000-digit integer that
ended `shardvec add` in a traceback, failed every nightly and stopped the inbox; the `.tmp`
files of a segment and the version folder of a nightly that met a full disk, left behind.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import shardvec
from shardvec.tasks.changes.additions import Adder
from shardvec.tasks.inputs.corpus import Quarantine, SourceFile, read_records
from shardvec.tasks.changes.intake import drain_inbox
from tests.checks import read_current
from shardvec.tasks.changes.release import rollback, verify
from tests.checks import assert_rows_exact
from tests.corpora import SENTENCES
from tests.runs import backfill_in_process, nightly_in_process, shardvec_cli

ROOT = Path(__file__).parents[2]
BIG = " ".join(SENTENCES)[:5400]  # a 5.4 kB statement, as in the issue
DEEP = b"[" * 50_000 + b"]" * 50_000  # RecursionError in json.loads
HUGE_INT = b'{"id": "n", "text": "x", "n": ' + b"7" * 5000 + b"}"  # ValueError: Exceeds the limit (4300 digits)
HOSTILE_LINES = [
    DEEP,
    HUGE_INT,
    b'{"id": 1e400, "text": "x"}',
    b'{"id": "t", "text": -1e400}',
    b'{"id": "l", "text": ["a"]}',
    b'{"id": {"a": 1}, "text": "x"}',
    b'{"id": "b", "text": true}',
    b'{"id": "s", "text": "\\ud800"}',
    b'{"id": "o", "text": ' + b"[" * 900 + b"]" * 900 + b"}",
]


@pytest.fixture
def data(published_copy):
    return published_copy


def _jsonl(path: Path, lines: list[bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def _good(id_: str, text: str) -> bytes:
    return json.dumps({"id": id_, "text": text}).encode()


# -- 1. an acknowledged op is never screened again ---------------------------------------------
@pytest.mark.slow
def test_acknowledged_statements_outlive_a_lower_limit_in_nightly_rebuild_and_rollback(data):
    """Two new 5.4 kB statements and a corpus id replaced by one, acknowledged under the configured
    limit; then a nightly, a rebuild and a rollback under corpus.max_record_bytes = 4000. The same
    nightly takes in a partition holding lines no parser takes (nested too deep, wrong types):
    they cost themselves only, where a RecursionError used to fail the night."""
    big = {"big/1": BIG, "big/2": BIG[::-1], "bg/150": BIG.upper()}
    lines = [
        _good("big/1", big["big/1"]),
        _good("big/2", big["big/2"]),
        json.dumps({"op": "replace", "id": "bg/150", "text": big["bg/150"]}).encode(),
    ]
    out = shardvec_cli("add", _jsonl(data.parent / "big.jsonl", lines), "--data", data)
    assert out.returncode == 0 and "added=2 replaced=1" in out.stdout, out.stderr
    # under the limit of 4000 bytes: lines no parser takes that are not too large
    hostile = [b"[" * 1900 + b"]" * 1900, *(line for line in HOSTILE_LINES if len(line) < 4000)]
    _jsonl(data / "corpus" / "2026-11-04" / "night.jsonl", [*hostile, _good("night/1", SENTENCES[3])])
    first = read_current(data)["version"]

    def all_there():
        store = shardvec.open(data)
        assert {i: store.text(i) for i in big} == big
        assert verify(data) == []

    low = {"max_record_bytes": 4000}
    report = nightly_in_process(data, corpus=low)
    assert report["status"] == "published" and report["quarantined"] >= len(hostile)
    all_there()
    assert shardvec.open(data).text("night/1") == SENTENCES[3]
    reasons = [
        json.loads(line)["reason"]
        for line in (data / "quarantine" / "2026-11-04" / "night.jsonl.reasons.jsonl").read_text().splitlines()
    ]
    assert len(reasons) == len(hostile) and "JSON nested more than 500 deep" in reasons
    assert (data / "quarantine" / "2026-11-04" / "night.jsonl.rejected").read_bytes() == b"".join(
        line + b"\n" for line in hostile
    )

    assert backfill_in_process(data, mode="rebuild", corpus=low)["status"] == "published"
    all_there()
    assert rollback(data, first)["version"] == first
    all_there()
    assert_rows_exact(data)


@pytest.mark.slow
def test_a_lower_limit_screens_what_comes_in_not_what_a_version_holds(data):
    """Lowering corpus.max_record_bytes applies to partitions taken in from then on: a nightly
    re-reads the partitions already in (their token caches are keyed by the limit), and must read
    them with the limit they came in with, or their long records silently leave the live set. A
    rebuild takes everything in again, under today's limit."""
    lines = [
        json.loads(line)
        for line in (data / "corpus" / "2026-11-02" / "lee.jsonl").read_text().splitlines()
        if line.startswith('{"id": "bg/')
    ]
    longest = max(lines, key=lambda r: len(r["text"].encode()))
    low = {"max_record_bytes": len(longest["text"].encode()) - 1}
    _jsonl(
        data / "corpus" / "2026-11-04" / "new.jsonl", [_good("new/1", SENTENCES[2]), _good("new/long", longest["text"])]
    )
    report = nightly_in_process(data, corpus=low)
    assert report["status"] == "published"
    store = shardvec.open(data)
    assert store.text(longest["id"]) == longest["text"]  # in before the limit changed: stays
    assert "new/long" not in store and store.text("new/1") == SENTENCES[2]  # came in under it: refused
    manifest = json.loads((data / "versions" / read_current(data)["version"] / "manifest.json").read_text())
    limits = manifest["intake"]["max_record_bytes"]
    assert limits["2026-11-04"] == low["max_record_bytes"] and limits["2026-11-02"] > low["max_record_bytes"]
    assert backfill_in_process(data, mode="rebuild", corpus=low)["status"] == "published"
    assert longest["id"] not in shardvec.open(data)  # a rebuild screens everything with today's settings
    assert verify(data) == []


def test_an_adder_screens_with_the_configured_settings(data, monkeypatch):
    """The API's and the CLI's adds used to screen at 1,000,000 bytes and refuse duplicates whatever
    the configuration said; an Adder itself takes them from its caller, and refuses to add without."""
    long, other = {"id": "long", "text": "word " * 200}, {"id": "long", "text": "other " * 100}
    monkeypatch.setenv("SHARDVEC_CORPUS_MAX_RECORD_BYTES", "500")
    assert shardvec.add([long], data)["quarantined"] == 1
    assert shardvec_cli("add", "-", "--data", data, input=json.dumps(long) + "\n").returncode == 0
    assert "long" not in shardvec.open(data)
    monkeypatch.setenv("SHARDVEC_CORPUS_MAX_RECORD_BYTES", "2000")
    monkeypatch.setenv("SHARDVEC_CORPUS_ON_DUPLICATE", "update")
    assert shardvec.add([long], data)["added"] == 1
    assert shardvec.add([other], data)["replaced"] == 1
    assert shardvec_cli("add", "-", "--data", data, input=json.dumps(long) + "\n").returncode == 0
    assert shardvec.open(data).text("long") == long["text"]
    kept = shardvec.adder(data)  # the add path kept open screens as shardvec.add does
    assert kept.add([other]).replaced == 1 and shardvec.open(data).text("long") == other["text"]
    monkeypatch.setenv("SHARDVEC_CORPUS_MAX_RECORD_BYTES", "500")
    assert shardvec.adder(data).add([{"id": "long2", "text": "word " * 200}]).quarantined == 1
    with pytest.raises(shardvec.UsageError, match="needs on_duplicate and max_record_bytes.*shardvec.adder"):
        Adder(data).add([long])
    assert Adder(data).delete(["long"]).deleted == 1  # a delete needs neither


# -- 2. a record that cannot be parsed is quarantined, never a traceback -----------------------
def test_every_way_a_line_can_fail_to_decode_costs_that_line_only(tmp_path):
    path = _jsonl(tmp_path / "corpus" / "p" / "f.jsonl", [_good("a", "first"), *HOSTILE_LINES, _good("z", "last")])
    src = SourceFile("p", "p/f.jsonl", "jsonl", path.stat().st_size, path.stat().st_mtime_ns)
    q = Quarantine(tmp_path / "q", src)
    records = list(read_records(tmp_path / "corpus", src, q, batch_size=3, max_record_bytes=1 << 20))
    q.commit()
    assert [(r.id, r.text) for r in records] == [("a", "first"), ("z", "last")]
    entries = [json.loads(line) for line in (tmp_path / "q" / "p" / "f.jsonl.reasons.jsonl").read_text().splitlines()]
    assert [e["line"] for e in entries] == list(range(2, 2 + len(HOSTILE_LINES)))
    assert all(e["source"] == "p/f.jsonl" and e["reason"] for e in entries)
    assert (tmp_path / "q" / "p" / "f.jsonl.rejected").read_bytes() == b"".join(l + b"\n" for l in HOSTILE_LINES)


def test_add_and_the_inbox_quarantine_what_cannot_be_decoded_and_go_on(data, tmp_path):
    bad = _jsonl(tmp_path / "bad.jsonl", [*HOSTILE_LINES, _good("cli/1", SENTENCES[1])])
    out = shardvec_cli("add", bad, "--data", data)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    assert "added=1" in out.stdout and f"quarantined={len(HOSTILE_LINES)}" in out.stdout, out.stdout
    inbox = data / "inbox"
    _jsonl(inbox / "a.jsonl", [DEEP, _good("inbox/a", SENTENCES[2]), HUGE_INT])
    # a name with a byte that is not UTF-8: its reasons used to fail to be written
    odd = os.fsdecode(b"b\xff.jsonl")
    _jsonl(inbox / odd, [b'{"id": 1, "text": "x"}', _good("inbox/odd", SENTENCES[6])])
    _jsonl(inbox / "c.jsonl", [_good("inbox/c", SENTENCES[4])])
    totals = drain_inbox(data, batch_size=100, on_duplicate="reject", max_record_bytes=1_000_000)
    assert totals["files"] == 3 and totals["added"] == 3 and totals["quarantined"] == 3
    store = shardvec.open(data)
    assert [store.text(i) for i in ("cli/1", "inbox/a", "inbox/odd", "inbox/c")] == [SENTENCES[i] for i in (1, 2, 6, 4)]
    assert sorted(p.name for p in (inbox / ".done").iterdir()) == sorted(["a.jsonl", odd, "c.jsonl"])
    reasons = [
        json.loads(line)
        for p in (data / "quarantine" / "additions").rglob("*.reasons.jsonl")
        for line in p.read_text().splitlines()
    ]
    assert {"source": odd, "line": 1, "reason": "id must be a string, got int"}.items() <= next(
        r for r in reasons if r["source"] == odd
    ).items()


def test_the_python_api_quarantines_values_that_cannot_even_be_printed(data):
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    adder = Adder(data, on_duplicate="reject", max_record_bytes=1_000_000)
    result = adder.add(
        [
            {"id": 10**5000, "text": "x"},
            {"id": "d", "text": deep},
            deep,
            {"id": "f", "text": float("inf")},
            {"id": "ok", "text": SENTENCES[5]},
        ]
    )
    assert result.added == 1 and result.quarantined == 4
    deleted = adder.delete([10**5000, deep, "ok"])
    assert deleted.deleted == 1 and deleted.quarantined == 2


# -- 4. what a full disk leaves behind -------------------------------------------------------
ADD = """
import sys
import tests.environment
from shardvec.tasks.changes.additions import Adder
Adder(sys.argv[1], on_duplicate="reject", max_record_bytes=1_000_000).add([{"id": "full/1", "text": sys.argv[2]}])
"""
DRAIN = """
import sys
import tests.environment
from shardvec.tasks.changes.intake import drain_inbox
drain_inbox(sys.argv[1], batch_size=100, on_duplicate="reject", max_record_bytes=1_000_000)
"""
NIGHTLY = """
import sys
import tests.environment
from pathlib import Path
from tests.runs import nightly_in_process
nightly_in_process(Path(sys.argv[1]))
"""


def _on_a_full_disk(script: str, *args: str, limit: int) -> subprocess.CompletedProcess:
    """`script` in a process whose files may not grow past `limit` bytes: a disk that fills."""

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # no Prefect: the scripts run steps in-process
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        env=env,
        preexec_fn=small_files,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_an_add_that_meets_a_full_disk_leaves_no_temporary_files(data):
    before = read_current(data)
    out = _on_a_full_disk(ADD, str(data), SENTENCES[7], limit=2048)  # the ledger fits, the segment does not
    assert out.returncode != 0 and "File too large" in out.stderr, out.stderr[-2000:]
    assert read_current(data) == before
    assert [p.name for p in (data / "additions").rglob("*.tmp")] == []
    assert "full/1" not in shardvec.open(data)


def test_an_inbox_file_whose_quarantine_meets_a_full_disk_stays_in_the_inbox_for_a_retry(data):
    """A full disk is not the file's fault: the file is not refused, the drain stops, and the next
    drain (with room) applies it."""
    path = _jsonl(data / "inbox" / "a.jsonl", [b"{broken " + b"x" * 20_000, _good("inbox/a", SENTENCES[2])])
    out = _on_a_full_disk(DRAIN, str(data), limit=8192)
    assert out.returncode != 0 and "File too large" in out.stderr, out.stderr[-2000:]
    assert path.exists() and not (data / "quarantine" / "inbox").exists()
    totals = drain_inbox(data, batch_size=100, on_duplicate="reject", max_record_bytes=1_000_000)
    assert totals["files"] == 1 and totals["added"] == 1 and totals["quarantined"] == 1


@pytest.mark.slow
def test_the_next_run_removes_what_a_nightly_on_a_full_disk_left(data):
    _jsonl(data / "corpus" / "2026-11-04" / "night.jsonl", [_good("night/1", SENTENCES[3])])
    live = read_current(data)["version"]
    out = _on_a_full_disk(NIGHTLY, str(data), limit=256 << 10)
    assert out.returncode != 0 and read_current(data)["version"] == live, out.stderr[-2000:]
    left = [p.name for p in (data / "versions").iterdir() if p.name != live]
    assert left, "the failed nightly left no version folder: the test proves nothing"
    shutil.rmtree(data / "corpus" / "2026-11-04")  # the next run has nothing to publish: it cleans all the same
    assert nightly_in_process(data)["status"] == "nothing new"
    assert not set(left) & {p.name for p in (data / "versions").iterdir()}
