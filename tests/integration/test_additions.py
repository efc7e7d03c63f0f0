"""Adding statements: exact rows, duplicates, bad records, durability, readers, nightly folding."""

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import shardvec
from shardvec.flows import skins
from shardvec.tasks.changes.additions import Adder
from shardvec.tasks.changes.intake import add_file, drain_inbox, text_id
from tests.checks import read_current
from tests.checks import ADDS, assert_rows_exact
from tests.corpora import SENTENCES
from tests.runs import nightly_in_process, shardvec_cli


@pytest.fixture
def data(published_copy):
    return published_copy


def recs(prefix, texts):
    return [{"id": f"{prefix}/{i}", "text": t} for i, t in enumerate(texts)]


def test_rows_after_adds_equal_an_exact_recompute(data):
    adder = Adder(data, **ADDS)
    adder.add(recs("a", SENTENCES[:40]))  # a batch
    adder.add(recs("b", SENTENCES[40:41]))  # a single statement
    adder.add(recs("c", SENTENCES[41:43] * 1))  # two
    n = assert_rows_exact(data)
    assert n == 352 + 43
    store = shardvec.open(data)
    assert len(store) == n and "b/0" in store
    assert store.similar(SENTENCES[40], 1)[0].key == "b/0"


def test_rows_read_many_at_once_equal_rows_read_one_by_one(data):
    """A delete finds the rows that held its statement with `full_rows`, one search per segment
    and one gather per shard (one lookup per row before: 12,600 for 1,000 deletes): each row
    from the newest segment that wrote it, as `full_row` reads it."""
    from shardvec.tasks.changes.segments import Statements
    from shardvec.tasks.storage.datadir import DataDir

    adder = Adder(data, **ADDS)
    adder.add(recs("a", SENTENCES[:30]))
    adder.delete(["a/3", "a/7"])
    adder.add(recs("b", SENTENCES[30:32]))
    view = Statements(data, DataDir(data).require_current())
    assert len(view.segments) >= 2
    every = np.random.default_rng(0).permutation(len(view))
    rows, scores = view.full_rows(every)
    for i, r in enumerate(every):
        one_rows, one_scores = view.full_row(int(r))
        assert np.array_equal(rows[i], one_rows) and np.array_equal(scores[i], one_scores), r
    assert view.full_rows(np.empty(0, np.int64))[0].shape == (0, view.width)


def test_new_statement_enters_the_rows_of_existing_ones(data):
    before = shardvec.open(data)
    old_row = before.row("dup/a")
    text = before.text("dup/a")
    result = Adder(data, **ADDS).add([{"id": "twin", "text": text}])  # identical to dup/a
    assert result.added == 1 and result.rows_updated >= 2
    after = shardvec.open(data)
    # dup/b has the same words as dup/a: both tie at cosine 1, the older row first
    assert [h.key for h in after.row("dup/a")[:2]] == ["dup/b", "twin"]
    assert {h.key for h in after.row("twin")[:2]} == {"dup/a", "dup/b"}
    assert [h.key for h in after.row("dup/a")[2:]] == [h.key for h in old_row[1:-1]]


def test_same_id_rejected_or_replaced_and_readding_is_a_no_op(data):
    adder = Adder(data, **ADDS)
    first = adder.add([{"id": "s1", "text": SENTENCES[0]}])
    again = adder.add([{"id": "s1", "text": SENTENCES[0]}])
    other = adder.add([{"id": "s1", "text": SENTENCES[1]}])
    assert (first.added, again.unchanged, again.segment, other.quarantined) == (1, 1, None, 1)
    reasons = [
        json.loads(l)
        for f in (data / "quarantine" / "additions").glob("*.reasons.jsonl")
        for l in f.read_text().splitlines()
    ]
    assert any(
        "duplicate id 's1': already live with other text; use `shardvec add --replace`" in r["reason"] for r in reasons
    )
    updater = Adder(data, **ADDS | {"on_duplicate": "update"})
    replaced = updater.add([{"id": "s1", "text": SENTENCES[2]}, {"id": "dup/b", "text": SENTENCES[3]}])
    assert replaced.replaced == 2 and replaced.added == 0
    store = shardvec.open(data)
    assert store.text("s1") == SENTENCES[2] and store.text("dup/b") == SENTENCES[3]
    assert "dup/b" not in [h.key for h in store.row("dup/a")]  # the old dup/b left every row
    assert_rows_exact(data)


def test_bad_records_quarantined_good_ones_added(data):
    bad = [{"id": 3, "text": "numeric id"}, {"text": "no id"}, {"id": "e", "text": " "}, ["not", "a", "dict"]]
    result = Adder(data, **ADDS).add(bad[:2] + recs("g", SENTENCES[5:7]) + bad[2:])
    assert (result.added, result.quarantined) == (2, 4)
    raw = b"".join(p.read_bytes() for p in (data / "quarantine" / "additions").glob("*.rejected"))
    assert raw == b"".join(json.dumps(r).encode() + b"\n" for r in bad)
    assert "g/1" in shardvec.open(data)


def test_add_file_and_cli_with_stdin(data, tmp_path):
    f = tmp_path / "new.txt"
    f.write_bytes(("\n".join(SENTENCES[10:15]) + "\n").encode() + b"\xff broken\n")
    out = shardvec_cli("add", f, "--data", data)
    assert out.returncode == 0 and "added=5" in out.stdout and "quarantined=1" in out.stdout
    lines = "".join(json.dumps(r) + "\n" for r in recs("stdin", SENTENCES[20:23]))
    out = shardvec_cli("add", "-", "--data", data, input=lines)
    assert out.returncode == 0 and "added=3" in out.stdout
    for again in (False, True):  # text from stdin too: adding it again is a no-op
        out = shardvec_cli("add", "-", "--format", "txt", "--data", data, input=SENTENCES[24] + "\n")
        assert out.returncode == 0 and ("unchanged=1" if again else "added=1") in out.stdout
    store = shardvec.open(data)
    assert text_id("new.txt", SENTENCES[10]) in store and "stdin/2" in store
    assert store.text(text_id("stdin.txt", SENTENCES[24])) == SENTENCES[24]


def test_text_files_of_one_name_never_meet(data, tmp_path):
    """Another day's daily.txt: its lines are new statements, in reject and update mode, by
    `shardvec add` and the inbox alike, beside a line added under the old `name:line` ids; the
    inbox keeps both files in .done/, and a nightly folds them all."""

    def daily(folder, texts):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "daily.txt").write_text("".join(t + "\n" for t in texts))
        return tmp_path / folder / "daily.txt"

    def add(path, mode="reject"):
        return add_file(data, path, batch_size=100, on_duplicate=mode, max_record_bytes=1_000_000)

    def counts(result):
        return [result[k] for k in ("added", "replaced", "unchanged", "quarantined")]

    Adder(data, **ADDS).add([{"id": "daily.txt:1", "text": SENTENCES[49]}])  # as a text add was keyed before
    assert counts(add(daily("mon", SENTENCES[50:53]))) == [3, 0, 0, 0]
    assert counts(add(daily("tue", SENTENCES[53:56]))) == [3, 0, 0, 0]
    assert counts(add(daily("wed", SENTENCES[56:59]), "update")) == [3, 0, 0, 0]
    assert counts(add(tmp_path / "mon" / "daily.txt")) == [0, 0, 3, 0]  # again, after an unknown outcome
    inbox = data / "inbox"
    for texts in (SENTENCES[59:61], SENTENCES[61:63]):
        inbox.mkdir(exist_ok=True)
        (inbox / "daily.txt").write_text("".join(t + "\n" for t in texts))
        assert drain_inbox(data, batch_size=100, on_duplicate="update", max_record_bytes=1_000_000)["added"] == 2
    done = sorted((inbox / ".done").iterdir(), key=lambda p: len(p.name))
    assert done[0].name == "daily.txt" and done[1].name.endswith("-daily.txt")
    assert [p.read_text() for p in done] == [
        "".join(t + "\n" for t in ts) for ts in (SENTENCES[59:61], SENTENCES[61:63])
    ]

    def all_live():
        store = shardvec.open(data)
        assert store.text("daily.txt:1") == SENTENCES[49]
        assert [store.text(text_id("daily.txt", t)) for t in SENTENCES[50:63]] == SENTENCES[50:63]
        return store

    all_live()
    assert nightly_in_process(data)["status"] == "published"
    assert text_id("daily.txt", SENTENCES[50]) in all_live()._statements.base  # folded into the shards


def test_inbox_drained_by_the_flow(data, prefect_server):
    from shardvec.flows.add_statements import add_statements

    (data / "inbox").mkdir()
    (data / "inbox" / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs("inbox", SENTENCES[30:34])))
    report = add_statements(records=recs("param", SENTENCES[34:35]), overrides={"data_dir": str(data)})
    assert report["records"]["added"] == 1 and report["inbox"]["added"] == 4
    assert not (data / "inbox" / "a.jsonl").exists() and (data / "inbox" / ".done" / "a.jsonl").exists()
    assert "inbox/3" in shardvec.open(data) and "param/0" in shardvec.open(data)


ADD_LOOP = """
import json, sys
from shardvec.tasks.changes.additions import Adder
from shardvec.tasks.changes.intake import add_file, drain_inbox, text_id
texts = json.loads(sys.stdin.read())
adder = Adder(sys.argv[1], on_duplicate="reject", max_record_bytes=1_000_000)
for b in range(1000):
    batch = [{"id": f"k{b}/{i}", "text": t} for i, t in enumerate(texts[(b * 7) % 50:(b * 7) % 50 + 150])]
    adder.add(batch)
    print(json.dumps([r["id"] for r in batch]), flush=True)   # acknowledged
"""


def test_kill_9_during_adds_loses_nothing_acknowledged(data):
    proc = subprocess.Popen(
        [sys.executable, "-c", ADD_LOOP, str(data)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    proc.stdin.write(json.dumps(SENTENCES[:200]))
    proc.stdin.close()
    acked = []
    deadline = time.monotonic() + 60
    while len(acked) < 4 and time.monotonic() < deadline:
        acked.append(json.loads(proc.stdout.readline()))
    time.sleep(0.05 + 0.1 * np.random.default_rng().random())  # somewhere inside a later batch
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    acked += [json.loads(l) for l in proc.stdout.read().splitlines()]
    store = shardvec.open(data)
    missing = [i for batch in acked for i in batch if i not in store]
    assert len(acked) >= 4 and missing == []
    for seg in store._statements.segments:  # every named segment opened whole
        assert len(seg) == len(seg.vectors) and len(seg.keys()) == len(seg)
    assert_rows_exact(data)
    Adder(data, **ADDS).add(recs("after", SENTENCES[60:61]))  # and adding goes on
    assert "after/0" in shardvec.open(data)


def test_a_drain_killed_inside_a_file_does_not_undo_a_delete_acknowledged_after_it(data):
    """#33 hostile review: the inbox applies a file batch by batch and moves it to .done/ at the end.
    Killed in between, the next drain applies it again from the start, which is a no-op only if no
    one touched its ids meanwhile: a `shardvec delete` of one of them, acknowledged after the kill,
    was undone, the statement live again with no one asking."""
    from shardvec.tasks.changes.additions import delete_ids
    from tests.e2e.harness import wait_for
    from tests.processes import kill_group_and_check_it_landed

    inbox = data / "inbox"
    inbox.mkdir()
    (inbox / "big.jsonl").write_text(
        "".join(json.dumps({"id": f"big/{i}", "text": SENTENCES[i % len(SENTENCES)]}) + "\n" for i in range(20_000))
    )
    drain = (
        f"from shardvec.tasks.changes.intake import drain_inbox; drain_inbox({str(data)!r}, batch_size=20, "
        "on_duplicate='reject', max_record_bytes=1_000_000)"
    )
    proc = subprocess.Popen([sys.executable, "-c", drain], start_new_session=True)
    wait_for(lambda: "big/0" in shardvec.open(data), 120, "the drain's first batch")
    kill_group_and_check_it_landed(proc.pid, proc)
    assert (inbox / "big.jsonl").exists() and "big/19999" not in shardvec.open(data)  # killed inside the file
    assert delete_ids(data, ["big/0"])["deleted"] == 1  # acknowledged
    drain_inbox(data, batch_size=500, on_duplicate="reject", max_record_bytes=1_000_000)
    store = shardvec.open(data)
    assert "big/19999" in store and "big/0" not in store


@pytest.mark.parametrize("dies_in", ["save", "intend"])
def test_a_drain_killed_between_a_batch_and_its_progress_does_not_undo_a_later_delete(data, dies_in):
    """The random kill above lands, now and then, after a batch is acknowledged and before the
    inbox records its progress (the fresh-clone run of session 5 caught it): killed exactly
    there, the drain's first batch is live, a delete of one of its ids is acknowledged, and the
    next drain must not add it back. Killed before the ledger write instead (`intend`), nothing of
    the batch was acknowledged and the next drain applies all of it."""
    from shardvec.tasks.changes.additions import delete_ids
    from shardvec.tasks.changes.intake import drain_inbox

    before = len(shardvec.open(data))
    inbox = data / "inbox"
    inbox.mkdir()
    (inbox / "big.jsonl").write_text(
        "".join(json.dumps({"id": f"big/{i}", "text": SENTENCES[i % len(SENTENCES)]}) + "\n" for i in range(100))
    )
    drain = (
        "import os, signal\nfrom shardvec.tasks.changes import intake\n"
        f"orig = intake._Progress.{dies_in}\n"
        "def dies(self, *a):\n"
        "    if a[-1] > 20 if len(a) == 1 else a[0] >= 20:\n"  # on the second batch's save / intent
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    orig(self, *a)\n"
        f"intake._Progress.{dies_in} = dies\n"
        f"intake.drain_inbox({str(data)!r}, batch_size=20, on_duplicate='reject', max_record_bytes=1_000_000)"
    )
    proc = subprocess.run([sys.executable, "-c", drain], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr  # the kill landed where it was put
    store = shardvec.open(data)
    assert "big/0" in store and "big/99" not in store
    assert ("big/20" in store) == (dies_in == "save")  # the second batch: acknowledged, or not yet
    assert delete_ids(data, ["big/20", "big/0"])["deleted"] == 1 + (dies_in == "save")
    drain_inbox(data, batch_size=20, on_duplicate="reject", max_record_bytes=1_000_000)
    store = shardvec.open(data)
    assert "big/99" in store and "big/0" not in store
    assert ("big/20" in store) == (dies_in == "intend")  # deleted after it was acknowledged: stays deleted
    assert len(store) == before + 100 - 1 - (dies_in == "save")


READ_LOOP = """
import os, sys, time, shardvec
store = shardvec.open(sys.argv[1])
errors = reads = 0
sizes, versions = set(), set()
end = time.monotonic() + 600  # a bound, should the test die before it says stop
while not os.path.exists(sys.argv[2]) and time.monotonic() < end:
    try:
        store.refresh()
        sizes.add(len(store))
        versions.add(store.version)
        for id_ in ("dup/a", "2026-11-01/lee.txt:1"):
            row = store.row(id_)
            assert len(row) == 10 and all(h.text for h in row)
        store.similar("bushfires near sydney", 3)
        reads += 1
        print("read", len(store), store.version, flush=True)
    except Exception as exc:
        errors += 1
        print("ERR", repr(exc), file=sys.stderr)
print("done", errors, reads, len(sizes), len(versions), flush=True)
"""


def test_readers_in_other_processes_while_adds_land_and_a_nightly_publishes(data, tmp_path):
    """A reader process reads all along; each step waits (with a deadline) until the reader has
    read what the step published, so every add and the nightly land while it reads."""
    stop, errlog = tmp_path / "stop-reading", tmp_path / "reader.err"
    with open(errlog, "w") as err:
        reader = subprocess.Popen(
            [sys.executable, "-c", READ_LOOP, str(data), str(stop)], stdout=subprocess.PIPE, stderr=err, text=True
        )
    lines: queue.Queue[str] = queue.Queue()
    pump = threading.Thread(target=lambda: [lines.put(line.split()) for line in reader.stdout], daemon=True)
    pump.start()
    seen = {"size": None, "version": None}

    def reader_sees(size: int, version: str | None = None) -> None:
        deadline = time.monotonic() + 120
        while seen["size"] != size or (version and seen["version"] != version):
            try:
                word, *rest = lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"the reader did not see {size} statements in time: {seen}, {errlog.read_text()[-2000:]}"
                ) from None
            assert word == "read", (word, rest, errlog.read_text()[-2000:])
            seen.update(size=int(rest[0]), version=rest[1])

    try:
        reader_sees(352)
        first = seen["version"]
        adder = Adder(data, **ADDS)
        for b in range(20):
            adder.add(recs(f"r{b}", SENTENCES[b * 3 : b * 3 + 3]))
            reader_sees(352 + 3 * (b + 1))
        report = nightly_in_process(data)  # folds the adds
        assert report["status"] == "published" and report["version"] != first
        Adder(data, **ADDS).add(recs("after", SENTENCES[70:72]))
        reader_sees(352 + 62, report["version"])
    finally:
        stop.touch()
        reader.wait(120)
        pump.join(10)
    last = None
    while not lines.empty():
        last = lines.get_nowait()
    word, errors, reads, sizes, versions = last
    assert word == "done" and int(errors) == 0, errlog.read_text()[-2000:]
    # it read all along and moved on with refresh()
    assert int(reads) > 20 and int(sizes) > 20 and int(versions) == 2


def test_nightly_folds_additions_and_keeps_those_that_land_during_it(data, monkeypatch):
    Adder(data, **ADDS).add(recs("before", SENTENCES[:30]))
    late = skins.merge_tile_task

    def rows_then_a_concurrent_add(*args, **kwargs):
        result = late.fn(*args, **kwargs)
        if args[1] == 0:  # while the run works, another client adds a statement
            Adder(data, **ADDS).add([{"id": "during", "text": SENTENCES[31]}])
        return result

    monkeypatch.setattr(skins, "merge_tile_task", skins.Step("merge-rows", rows_then_a_concurrent_add))
    report = nightly_in_process(data)
    assert report["status"] == "published" and report["ledger_new_ops"] == 1
    current = read_current(data)
    assert current["version"] == report["version"] and current["ledger"] == 2
    assert len(current["additions"]["segments"]) == 1  # only the one that landed during the run
    store = shardvec.open(data)
    assert "before/29" in store._statements.base and "during" in store
    assert report["statements"] == 352 + 30
    assert_rows_exact(data)
