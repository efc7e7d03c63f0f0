"""The ledger of acknowledged adds, replaces and deletes: replayed by every night, never lost.

Regression tests for issue 13: an added statement used to vanish at the second nightly after
it was added, a rebuild lost every addition, and a later partition silently replaced an
acknowledged add.
"""

import json

import pyarrow as pa
import pytest

import shardvec
from shardvec.tasks.changes.additions import Adder
from shardvec.tasks.storage.ledger import Ledger, Op
from shardvec.tasks.storage.datadir import DataDir
from tests.checks import read_current
from shardvec.tasks.changes.release import verify
from shardvec.tasks.changes.release import list_versions, rollback
from shardvec.tasks.changes.segments import Statements
from tests.runs import backfill_in_process, nightly_in_process as nightly
from tests.runs import shardvec_cli, small_settings
from tests.checks import ADDS, assert_rows_exact
from tests.corpora import SENTENCES


@pytest.fixture
def data(published_copy):
    return published_copy


def rebuild(data):
    return backfill_in_process(data, mode="rebuild")


def new_partition(data, name, records):
    path = data / "corpus" / name / "part.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_ops_compact_to_the_last_op_of_each_id(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.append(1, [Op("add", "a", "A1"), Op("add", "b", "B1")])
    ledger.append(2, [Op("replace", "a", "A2"), Op("delete", "b")])
    ledger.append(3, [Op("add", "c", "C"), Op("add", "b", "B3")])
    ledger.confirm(3)  # CURRENT names 3
    ledger.append(4, [Op("add", "leftover", "never acknowledged")])  # killed before CURRENT moved
    before = ledger.net(3).to_pylist()
    assert [(r["id"], r["op"], r["text"], r["seq"]) for r in before] == [
        ("a", "replace", "A2", 2),
        ("c", "add", "C", 3),
        ("b", "add", "B3", 3),
    ]
    assert [r["id"] for r in ledger.net(3, after=2).to_pylist()] == ["c", "b"]
    ledger.compact(2)
    assert ledger.net(3).to_pylist() == before  # compaction keeps what a replay needs
    assert sorted(p.name for p in ledger.dir.iterdir()) == [
        "ops-000000000003.arrow",
        "pending-000000000004.arrow",
        "upto-000000000002.arrow",
    ]
    assert ledger.settle(3) == 3 and not (ledger.dir / "pending-000000000004.arrow").exists()
    puts = pa.ipc.open_file(ledger.puts(3, 0, 2)).read_all().to_pylist()
    assert [(r["id"], r["text"]) for r in puts] == [("a", "A2")]


@pytest.mark.slow
def test_an_added_statement_survives_every_later_night_and_a_rebuild(data):
    shardvec.add([{"id": "added/1", "text": SENTENCES[0]}], data=data)
    assert nightly(data)["status"] == "published"  # folds added/1 into the shards
    shardvec.add([{"id": "added/2", "text": SENTENCES[1]}], data=data)
    assert nightly(data)["status"] == "published"
    store = shardvec.open(data)
    assert "added/1" in store and "added/2" in store  # added/1 was lost here before
    assert store.text("added/1") == SENTENCES[0]
    assert rebuild(data)["status"] == "published"
    store = shardvec.open(data)
    assert "added/1" in store and "added/2" in store and len(store) == 352 + 2
    assert_rows_exact(data)


def test_a_later_partition_never_overrides_an_acknowledged_add(data):
    shardvec.add([{"id": "clash", "text": SENTENCES[2]}], data=data)
    new_partition(data, "2026-11-04", [{"id": "clash", "text": SENTENCES[3]}, {"id": "fresh", "text": SENTENCES[4]}])
    report = nightly(data)
    store = shardvec.open(data)
    assert store.text("clash") == SENTENCES[2] and "fresh" in store
    reasons = [
        json.loads(line) for p in (data / "quarantine").rglob("*.reasons.jsonl") for line in p.read_text().splitlines()
    ]
    assert any("duplicate id 'clash': added with other text by `shardvec add`" in r["reason"] for r in reasons)
    assert report["quarantine_reasons"]["duplicate id"] >= 1


@pytest.mark.slow
def test_delete_is_exact_durable_and_stays_across_nights_until_added_again(data):
    store = shardvec.open(data)
    victim = store.row("dup/a")[0].key  # dup/b: in dup/a's row and in the corpus
    assert victim == "dup/b"
    result = shardvec.delete([victim, "no-such-id"], data=data)
    assert (result["deleted"], result["missing"]) == (1, 1) and result["rows_updated"] >= 1
    store = shardvec.open(data)
    assert victim not in store and len(store) == 351
    assert victim not in [h.key for h in store.row("dup/a")]
    assert victim not in [h.key for h in store.similar(store.text("dup/a"), 20)]
    assert_rows_exact(data)
    nightly(data)  # nothing new in the corpus, but the ledger has a new op: it builds
    assert victim not in shardvec.open(data)
    rebuild(data)  # the id is still in 2026-11-02/lee.jsonl
    store = shardvec.open(data)
    assert victim not in store and len(store) == 351
    assert_rows_exact(data)
    shardvec.add([{"id": victim, "text": SENTENCES[5]}], data=data)
    assert shardvec.open(data).text(victim) == SENTENCES[5]
    nightly(data)
    assert shardvec.open(data).text(victim) == SENTENCES[5]


def test_replace_gives_new_text_vector_and_rows(data):
    with pytest.raises(AssertionError):
        assert Adder(data, **ADDS).add([{"id": "dup/a", "text": SENTENCES[6]}]).replaced  # rejected by default
    result = shardvec.add([{"id": "dup/a", "text": SENTENCES[6]}], data=data, replace=True)
    assert result["replaced"] == 1
    store = shardvec.open(data)
    assert store.text("dup/a") == SENTENCES[6]
    assert "dup/a" not in [h.key for h in store.row("dup/b")[:1]]  # no longer its twin
    assert_rows_exact(data)
    rebuild(data)
    assert shardvec.open(data).text("dup/a") == SENTENCES[6]


def test_rollback_replays_what_was_acknowledged_after_the_version(data):
    first = read_current(data)["version"]
    shardvec.add([{"id": "early", "text": SENTENCES[7]}], data=data)
    new_partition(data, "2026-11-04", [{"id": "night/1", "text": SENTENCES[8]}])
    second = nightly(data)["version"]
    shardvec.add([{"id": "late", "text": SENTENCES[9]}], data=data)
    shardvec.delete(["dup/a"], data=data)
    kept = [v["version"] for v in list_versions(data)]
    assert kept[-2:] == [first, second]
    out = rollback(data)  # to the one before the live one
    assert out["version"] == first and out["ops_replayed"] == 3
    store = shardvec.open(data)
    assert store.version == first
    assert "night/1" not in store  # the partition is the rolled-back version's
    assert "early" in store and "late" in store and "dup/a" not in store  # every acknowledged op
    assert_rows_exact(data)
    assert verify(data) == []
    report = nightly(data)  # the next night builds on the rolled-back version and takes 2026-11-04 again
    store = shardvec.open(data)
    assert report["status"] == "published" and "night/1" in store and "early" in store and "dup/a" not in store


def test_inbox_and_the_flow_take_deletes_and_replaces(data, prefect_server):
    from shardvec.flows.add_statements import add_statements

    (data / "inbox").mkdir()
    lines = [
        {"id": "in/1", "text": SENTENCES[10]},
        {"id": "dup/b", "op": "delete"},
        {"id": "dup/a", "op": "replace", "text": SENTENCES[11]},
        {"id": "x", "op": "explode"},
    ]
    (data / "inbox" / "ops.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    report = add_statements(delete=["bg/150"], overrides={"data_dir": str(data)})
    assert report["delete"]["deleted"] == 1
    inbox = report["inbox"]
    assert (inbox["added"], inbox["deleted"], inbox["replaced"], inbox["quarantined"]) == (1, 1, 1, 1)
    store = shardvec.open(data)
    assert "in/1" in store and "dup/b" not in store and "bg/150" not in store
    assert store.text("dup/a") == SENTENCES[11]
    assert_rows_exact(data)


# -- found by the hostile review of this change -------------------------------------------------
def test_rollback_replays_an_add_of_a_corpus_id_over_the_versions_text(data):
    old_text = shardvec.open(data).text("bg/150")
    shardvec.delete(["bg/150"], data=data)
    shardvec.add([{"id": "bg/150", "text": SENTENCES[12]}], data=data)  # an "add": the id was not live
    nightly(data)
    out = rollback(data)
    store = shardvec.open(data)
    assert out["ops_replayed"] == 1 and store.text("bg/150") == SENTENCES[12] != old_text
    assert_rows_exact(data)


def test_an_add_acknowledged_while_a_run_works_wins_over_its_new_partition(data, monkeypatch):
    from shardvec.flows import skins

    new_partition(data, "2026-11-04", [{"id": "late/x", "text": SENTENCES[13]}])
    merge = skins.merge_tile_task

    def merge_then_add(*args, **kwargs):
        result = merge.fn(*args, **kwargs)
        shardvec.add([{"id": "late/x", "text": SENTENCES[14]}], data=data)  # not live yet: an add
        return result

    monkeypatch.setattr(skins, "merge_tile_task", skins.Step("merge-rows", merge_then_add))
    assert nightly(data)["status"] == "published"
    assert shardvec.open(data).text("late/x") == SENTENCES[14]
    assert_rows_exact(data)


def test_current_restored_from_an_older_copy_never_reuses_a_seq(data):
    shardvec.add([{"id": "k1", "text": SENTENCES[15]}], data=data)
    backup = (data / "CURRENT").read_bytes()
    shardvec.add([{"id": "k2", "text": SENTENCES[16]}], data=data)
    shardvec.delete(["bg/150"], data=data)
    (data / "CURRENT").write_bytes(backup)  # an operator restores yesterday's copy
    assert shardvec.add([{"id": "k4", "text": SENTENCES[17]}], data=data)["ledger_seq"] == 4
    store = shardvec.open(data)
    assert {"k1", "k2", "k4"} <= {i for i in ("k1", "k2", "k4") if i in store} and "bg/150" not in store
    nightly(data)
    store = shardvec.open(data)
    assert all(i in store for i in ("k1", "k2", "k4")) and "bg/150" not in store


def test_current_restored_from_before_any_add_with_ops_that_cancel_out(data):
    """The ops CURRENT lacks net to nothing (an add and its delete): the next call, itself a
    no-op, still acknowledges the ledger position and returns (it raised in the sweep: no
    `additions` in a CURRENT that never had a segment)."""
    backup = (data / "CURRENT").read_bytes()
    shardvec.add([{"id": "gone", "text": SENTENCES[18]}], data=data)
    shardvec.delete(["gone"], data=data)
    (data / "CURRENT").write_bytes(backup)
    assert Adder(data).delete(["not-there"]).missing == 1
    assert json.loads((data / "CURRENT").read_text())["ledger"] == 2 and "gone" not in shardvec.open(data)


def test_open_adders_see_each_others_ops_and_a_current_put_back_under_them(data):
    """A long-lived adder skips re-reading CURRENT while it is the one it wrote; any other
    writer, or an operator putting back an older copy, must still be seen."""
    a, b = Adder(data, **ADDS), Adder(data, **ADDS)
    a.add([{"id": "a1", "text": SENTENCES[20]}])
    b.add([{"id": "b1", "text": SENTENCES[21]}])
    assert a.delete(["b1"]).deleted == 1  # a sees b's add
    mine = (data / "CURRENT").read_bytes()  # what `a` wrote last
    b.add([{"id": "b2", "text": SENTENCES[22]}])
    (data / "CURRENT").write_bytes(mine)  # put back: byte for byte what `a` wrote
    a.add([{"id": "a2", "text": SENTENCES[23]}])  # must not reuse b2's seq
    store = shardvec.open(data)
    assert all(i in store for i in ("a1", "b2", "a2")) and "b1" not in store
    seqs = [int(p.name[4:16]) for p in (data / "ledger").glob("ops-*.arrow")]
    assert sorted(seqs) == list(range(1, 6))
    assert_rows_exact(data)


def test_single_deletes_keep_few_segments_and_exact_rows(data):
    adder = Adder(data, **ADDS)
    view = Statements(data, DataDir(data).current())
    victims = [view.key(r) for r in range(0, 96, 3)]
    for key in victims:
        assert adder.delete([key]).deleted == 1
    segments = read_current(data)["additions"]["segments"]
    assert len(segments) <= 6, segments  # merged like a binary counter, not one per delete
    assert_rows_exact(data)
    assert not any(k in shardvec.open(data) for k in victims)


def test_a_batch_never_acknowledged_is_never_replayed(data):
    shardvec.add([{"id": "acked", "text": SENTENCES[18]}], data=data)
    # what a kill after the ledger's fsync and before CURRENT moved leaves behind
    Ledger(data).append(2, [Op("add", "ghost", SENTENCES[19]), Op("delete", "bg/152")])
    os_replace = __import__("os").replace
    os_replace(data / "CURRENT", data / "CURRENT.damaged")  # and then CURRENT is moved aside
    rebuild(data)
    store = shardvec.open(data)
    assert "acked" in store and "ghost" not in store and "bg/152" in store
    assert not list((data / "ledger").glob("pending-*"))


def test_a_damaged_ledger_file_is_named_by_verify_and_stops_a_nightly(data):
    from shardvec.flows.executors import InProcess
    from shardvec.flows.pipeline import build_and_publish
    from shardvec.tasks.storage.ledger import LedgerError

    shardvec.add([{"id": "k1", "text": SENTENCES[15]}], data=data)
    path = next((data / "ledger").glob("ops-*.arrow"))
    path.write_bytes(path.read_bytes()[:40])
    assert any(str(path) in p for p in verify(data))
    out = shardvec_cli("verify", "--data", data)  # not "rebuild": a rebuild replays this very file
    assert out.returncode == 1 and str(path) in out.stderr
    assert "restore them from a backup" in out.stderr and "rebuild" not in out.stderr
    with pytest.raises(LedgerError, match="restore it from a backup"):
        build_and_publish(small_settings(data), flow="nightly", executor=InProcess())


def test_rollback_refuses_a_damaged_version(data):
    first = read_current(data)["version"]
    shardvec.add([{"id": "k1", "text": SENTENCES[15]}], data=data)
    nightly(data)
    rows = data / "versions" / first / "similarity" / "rows-00000.npy"
    rows.unlink()
    from shardvec.tasks.storage.versions import NotPublishedError

    with pytest.raises(NotPublishedError, match=f"Version {first} is damaged"):
        rollback(data, first)
    assert read_current(data)["version"] != first


def test_a_build_reads_the_ledgers_puts_a_slice_of_bytes_at_a_time_and_screens_none(tmp_path):
    """#33 F3: a build read the ledger's puts (one Arrow batch of every put) into Python strings
    all at once: 40 acknowledged 1 MB statements were 40 MB at once, and a ledger of big adds
    grew with it. They are read BATCH_BYTES at a time now, and still taken as they were
    acknowledged, whatever today's corpus.max_record_bytes."""
    import tracemalloc
    from shardvec.tasks.inputs.corpus import BATCH_BYTES, Quarantine, SourceFile, read_records

    text = "acknowledged " * 80_000  # 1,040,000 bytes
    ledger = Ledger(tmp_path)
    ledger.append(1, [Op("add", f"big{i}", text) for i in range(40)])
    puts = ledger.puts(1, 0, 1)
    assert pa.ipc.open_file(puts).num_record_batches == 1
    src = SourceFile("ledger", puts.relative_to(tmp_path).as_posix(), "arrow", puts.stat().st_size, 0, root=".")
    q = Quarantine(tmp_path / "quarantine", src)
    ids, same = [], True
    tracemalloc.start()
    try:
        for r in read_records(tmp_path, src, q, batch_size=2000, max_record_bytes=1000):
            ids.append(r.id)
            same = same and r.text == text
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert ids == [f"big{i}" for i in range(40)] and same and q.counts.records == 0
    assert peak < 3 * BATCH_BYTES, f"{peak >> 20} MB of Python strings at once"
