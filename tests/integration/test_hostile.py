"""Careless operators and hostile callers (issue 14): a damaged CURRENT, paths that escape,
inbox files that are links, of unknown formats or unreadable, concurrent stdin spools, runs
that try to move a deployment's data directory, a rebuild over a damaged live version.
Each test fails on the code before that issue."""

import json
import os
import shutil
import subprocess
import sys
import threading

import pytest
from typer.testing import CliRunner

import shardvec
from shardvec.config.settings import SettingsError
from shardvec.flows.params import run_settings
from shardvec.cli import app
from shardvec.tasks.changes.additions import Adder
from shardvec.tasks.changes.intake import drain_inbox, text_id
from shardvec.tasks.storage.versions import DamagedCurrentError
from tests.checks import read_current
from shardvec.tasks.changes.release import verify
from tests.processes import free_port
from tests.runs import backfill_in_process, nightly_in_process, shardvec_cli
from tests.corpora import SENTENCES


@pytest.fixture
def data(published_copy):
    return published_copy


def _write_current(data, **change):
    current = {**json.loads((data / "CURRENT").read_text()), **change}
    (data / "CURRENT").write_text(json.dumps(current))


@pytest.mark.parametrize(
    "change",
    [
        {"version": "../../../victim"},
        {
            "components": {
                "models": "../outside",
                "words": "x",
                "statements": "x",
                "words_index": "x",
                "statements_index": "x",
                "similarity": "x",
            }
        },
        {"additions": {"base": "x", "segments": ["../../victim/000001"], "next_seq": 2}},
        {"ledger": -3},
    ],
)
def test_a_current_that_points_outside_is_refused_before_anything_is_written(data, tmp_path, change):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    _write_current(data, **change)
    with pytest.raises(DamagedCurrentError, match="move it aside and run `shardvec backfill --mode rebuild`"):
        Adder(data, on_duplicate="reject", max_record_bytes=1_000_000).add([{"id": "x", "text": SENTENCES[0]}])
    assert sorted(p.name for p in victim.iterdir()) == ["keep.txt"]
    out = shardvec_cli("verify", "--data", data)  # one sentence with the fix, not a traceback
    assert out.returncode == 2 and out.stderr.startswith("error: ") and "move it aside" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_symlinked_versions_folder_is_outside(data, tmp_path):
    outside = tmp_path / "elsewhere"
    shutil.move(data / "versions", outside)
    (data / "versions").symlink_to(outside)
    with pytest.raises(DamagedCurrentError, match="not inside"):
        read_current(data)


def test_a_rebuild_with_current_moved_aside_keeps_every_acknowledged_op(data):
    shardvec.add([{"id": "kept", "text": SENTENCES[1]}], data=data)
    shardvec.delete(["dup/a"], data=data)
    os.replace(data / "CURRENT", data / "CURRENT.damaged")
    backfill_in_process(data, mode="rebuild")
    store = shardvec.open(data)
    assert "kept" in store and "dup/a" not in store and read_current(data)["ledger"] == 2
    assert shardvec.add([{"id": "next", "text": SENTENCES[2]}], data=data)["ledger_seq"] == 3  # never reuses a seq


def test_rebuild_publishes_over_a_damaged_live_version(data):
    current = read_current(data)
    rows = data / current["components"]["similarity"] / "rows-00000.npy"
    rows.write_bytes(rows.read_bytes()[:100])  # truncated
    assert verify(data)
    report = backfill_in_process(data, mode="rebuild")
    assert report["status"] == "published" and verify(data) == []
    assert "drift_skipped" in report["quality"]


def test_inbox_refuses_links_unknown_and_unreadable_files_and_adds_the_rest(data, tmp_path):
    inbox = data / "inbox"
    inbox.mkdir()
    secret = tmp_path / "secret.jsonl"
    secret.write_text(json.dumps({"id": "stolen", "text": SENTENCES[3]}) + "\n")
    (inbox / "a-link.jsonl").symlink_to(secret)
    (inbox / "b-notes.docx").write_bytes(b"PK\x03\x04 not a corpus")
    (inbox / "c-partial.jsonl.part").write_text('{"id": "half", "text": "still being writ')
    (inbox / "d-good.jsonl").write_text(json.dumps({"id": "good", "text": SENTENCES[4]}) + "\n")
    unreadable = inbox / "e-locked.jsonl"
    unreadable.write_text(json.dumps({"id": "locked", "text": SENTENCES[5]}) + "\n")
    unreadable.chmod(0)
    readable_as_root = os.geteuid() == 0
    report = drain_inbox(data, batch_size=100, on_duplicate="reject", max_record_bytes=1_000_000)
    store = shardvec.open(data)
    assert "good" in store and "stolen" not in store and "half" not in store
    assert report["added"] == 1 + readable_as_root and report["refused"] == 2 + (not readable_as_root)
    assert (inbox / "c-partial.jsonl.part").exists() and secret.exists()  # the protocol's temp name waits
    reasons = {
        json.loads(p.read_text())["source"]: json.loads(p.read_text())["reason"]
        for p in (data / "quarantine" / "inbox").glob("*.reason.json")
    }
    assert reasons["inbox/a-link.jsonl"].startswith("a symlink")
    assert reasons["inbox/b-notes.docx"].startswith("not .jsonl")
    refused = [p for p in (data / "quarantine" / "inbox").iterdir() if not p.name.endswith(".json")]
    assert any(p.name.endswith("a-link.jsonl") and p.is_symlink() for p in refused)  # the link, not its target
    notes = next(p for p in (data / "quarantine" / "inbox").iterdir() if p.name.endswith("b-notes.docx"))
    assert notes.read_bytes() == b"PK\x03\x04 not a corpus"  # byte for byte


def test_two_stdin_adds_in_the_same_second_do_not_share_a_spool(data):
    outs = [None, None]

    def add(i):
        line = json.dumps({"id": f"stdin/{i}", "text": SENTENCES[10 + i]}) + "\n"
        outs[i] = subprocess.run(
            [sys.executable, "-m", "shardvec.cli", "add", "-", "--data", str(data)],
            input=line,
            capture_output=True,
            text=True,
            timeout=120,
        )

    threads = [threading.Thread(target=add, args=(i,)) for i in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert all(o.returncode == 0 and "added=1" in o.stdout for o in outs), [o.stderr for o in outs]
    store = shardvec.open(data)
    assert "stdin/0" in store and "stdin/1" in store
    assert list((data / "inbox" / ".stdin").iterdir()) == []


def test_replayed_operations_are_not_screened_again(data):
    """An op acknowledged under a large configured max_record_bytes is replayed at publish as it is."""
    big = " ".join(SENTENCES)[:3000]
    adder = Adder(data, on_duplicate="reject", max_record_bytes=10_000)
    assert adder.add([{"id": "big", "text": big}]).added == 1
    report = nightly_in_process(data, corpus={"max_record_bytes": 10_000})
    assert report["status"] == "published"
    assert shardvec.open(data).text("big") == big


def test_a_deployment_run_cannot_move_the_data_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("SHARDVEC_DATA_DIR", str(tmp_path / "bound"))
    assert run_settings({"data_dir": str(tmp_path / "other")}, deployed=False).data == tmp_path / "other"
    assert run_settings({"lsi": {"num_topics": 12}}, deployed=True).lsi.num_topics == 12
    # [dask] and [schedule] too: the run's cluster and the schedules are made before its overrides are read
    for overrides in (
        {"data_dir": str(tmp_path / "evil")},
        {"dask": {"address": "tcp://evil:8786"}},
        {"dask": {"n_workers": 8}},
        {"dask": {"no_progress_seconds": 5}},
        {"schedule": {"nightly_cron": "0 3 * * *"}},
    ):
        with pytest.raises(SettingsError, match="A deployment run may not change"):
            run_settings(overrides, deployed=True)


def test_server_beyond_loopback_without_auth_warns(monkeypatch, tmp_path):
    monkeypatch.setenv("SHARDVEC_SERVER_HOST", "0.0.0.0")
    monkeypatch.delenv("PREFECT_SERVER_API_AUTH_STRING", raising=False)
    import shardvec.server

    monkeypatch.setattr(shardvec.server, "run", lambda *a: None)  # do not start it: the warning is the point
    for name in ("PREFECT_UI_API_URL", "PREFECT_SERVER_API_HOST", "PREFECT_SERVER_API_PORT"):
        monkeypatch.delenv(name, raising=False)  # what the command sets for the server: restored after
    monkeypatch.setenv("SHARDVEC_SERVER_PORT", str(free_port()))
    out = CliRunner().invoke(app, ["server", "--data", str(tmp_path)])
    assert "set PREFECT_SERVER_API_AUTH_STRING" in out.output
    monkeypatch.setenv("PREFECT_SERVER_API_AUTH_STRING", "admin:pass")
    assert "PREFECT_SERVER_API_AUTH_STRING" not in CliRunner().invoke(app, ["server", "--data", str(tmp_path)]).output


def test_a_linked_done_folder_a_long_name_and_a_lone_surrogate_never_escape_or_block(data, tmp_path):
    """inbox/.done as a link to a folder outside: refused before anything moves there. A name
    too long to prefix with a stamp, and a record with a lone surrogate escape (json accepts it,
    UTF-8 cannot encode it): quarantined, and the files after them still applied."""
    inbox = data / "inbox"
    _refuses_a_linked(data, tmp_path, ".done", "victim.jsonl")
    (inbox / ".done").unlink()
    (inbox / ("0" + "a" * 240 + ".xyz")).write_text("x")
    (inbox / "1-surrogate.jsonl").write_bytes(
        b'{"id": "bad", "text": "bad \\udc80 record"}\n'
        + json.dumps({"id": "fine", "text": SENTENCES[6]}).encode()
        + b"\n"
    )
    report = drain_inbox(data, batch_size=100, on_duplicate="reject", max_record_bytes=1_000_000)
    assert report["refused"] == 1 and report["quarantined"] == 1
    store = shardvec.open(data)
    assert "fine" in store and "a" in store and "bad" not in store


def test_a_delete_of_an_id_utf8_cannot_encode_is_quarantined_not_a_traceback(data):
    """`shardvec delete $'bad\\xff'` (argv and stdin decode bad bytes to lone surrogates), and
    ids with NUL or of other types from Python: refused with a reason, the good delete applied."""
    out = shardvec_cli("delete", "bad\udcff", "dup/a", "--data", data)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    assert "deleted=1" in out.stdout and "quarantined=1" in out.stdout
    result = shardvec.delete(["a\x00b", 7, "bad\udc80"], data=data)
    assert result["quarantined"] == 3 and result["missing"] == 0
    store = shardvec.open(data)
    assert "dup/a" not in store and "dup/b" in store
    reasons = [
        json.loads(line)["reason"]
        for p in (data / "quarantine" / "additions").glob("*.reasons.jsonl")
        for line in p.read_text().splitlines()
    ]
    assert any("lone surrogate" in r for r in reasons) and any("NUL" in r for r in reasons)


@pytest.mark.parametrize("damage", ["truncate-arrow", "garble-npz"])
def test_a_damaged_segment_is_a_one_line_error_that_says_how_to_recover(data, damage):
    """A segment file CURRENT names, truncated or overwritten: add and query say which file and
    how to recover (a rebuild replays the ledger), instead of pyarrow's or numpy's traceback."""
    shardvec.add([{"id": "seg/1", "text": SENTENCES[1]}], data=data)
    (seg,) = read_current(data)["additions"]["segments"]
    if damage == "truncate-arrow":
        path = data / f"{seg}.arrow"
        path.write_bytes(path.read_bytes()[:100])
    else:
        path = data / f"{seg}.npz"
        path.write_bytes(b"PK\x03\x04" + b"\x00" * 64)
    for args in (["add", "-"], ["query", "similar", "bushfires"]):
        out = shardvec_cli(*args, "--data", data, input=json.dumps({"id": "seg/2", "text": SENTENCES[2]}) + "\n")
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        assert seg in out.stderr and "backfill --mode rebuild" in out.stderr and len(out.stderr.splitlines()) == 1
    assert any(seg in p for p in verify(data))


def test_a_file_records_refused_as_duplicates_are_quarantined_byte_for_byte_with_file_and_line(data, tmp_path):
    """A duplicate id in a file given to `shardvec add` (live with other text, or twice in the
    batch) is quarantined beside the file's other rejects: its own bytes, its file and line."""
    lines = [
        b'{"id":"dup/a",  "text":"Cricket players in Sydney", "extra": 1}\r\n',
        json.dumps({"id": "new/1", "text": SENTENCES[1]}).encode() + b"\n",
        b'{"id": ""}\n',
        b'{"id":"new/1","text":"other text for it in the same batch"}\n',
    ]
    f = tmp_path / "mixed.jsonl"
    f.write_bytes(b"".join(lines))
    out = shardvec_cli("add", f, "--data", data)
    assert out.returncode == 0 and "added=1" in out.stdout and "quarantined=3" in out.stdout, out
    (reasons,) = (data / "quarantine" / "additions").rglob("mixed.jsonl.reasons.jsonl")
    entries = sorted((json.loads(line) for line in reasons.read_text().splitlines()), key=lambda e: e["line"])
    assert [(e["source"], e["line"]) for e in entries] == [("mixed.jsonl", 1), ("mixed.jsonl", 3), ("mixed.jsonl", 4)]
    raw = reasons.with_name("mixed.jsonl.rejected").read_bytes()
    assert [raw[e["offset_in_rejected"] : e["offset_in_rejected"] + e["bytes"]] for e in entries] == [
        lines[0],
        lines[2],
        lines[3],
    ]
    assert "--replace" in entries[0]["reason"]
    t = tmp_path / "notes.txt"  # a text file's line whose id is live with other text
    t.write_bytes(b"An edited line about cricket\r\n")
    Adder(data, on_duplicate="reject", max_record_bytes=1_000_000).add(
        [{"id": text_id("notes.txt", "An edited line about cricket"), "text": SENTENCES[3]}]
    )
    assert "quarantined=1" in shardvec_cli("add", t, "--data", data).stdout
    (rejected,) = (data / "quarantine" / "additions").rglob("notes.txt.rejected")
    assert rejected.read_bytes() == b"An edited line about cricket\r\n"


def test_long_file_names_in_the_inbox_and_add_are_applied_or_refused_never_a_blocked_drain(data, tmp_path):
    """#33 hostile review: a name is up to 255 bytes, and what intake writes beside it must be too.
    A long name with a bad record failed the drain at its quarantine's temp name (every drain after,
    the files sorted after it never applied) and `shardvec add` with an error about disk space; a
    long name of two-byte characters, refused or met again in .done/, failed under its stamp."""
    inbox = data / "inbox"
    inbox.mkdir()
    long_bad = "1" + "n" * 240 + ".jsonl"
    lines = [json.dumps({"id": "long/good", "text": SENTENCES[7]}), "{broken"]
    (inbox / long_bad).write_text("".join(line + "\n" for line in lines))
    (inbox / ("0" + "é" * 120 + ".xyz")).write_text("x")
    accented = "3" + "é" * 120 + ".jsonl"
    (inbox / accented).write_text(json.dumps({"id": "accented/1", "text": SENTENCES[8]}) + "\n")
    (inbox / "9-after.jsonl").write_text(json.dumps({"id": "after", "text": SENTENCES[9]}) + "\n")
    report = drain_inbox(data, batch_size=100, on_duplicate="reject", max_record_bytes=1_000_000)
    assert (report["files"], report["refused"], report["added"], report["quarantined"]) == (3, 1, 3, 1)
    (inbox / accented).write_text(json.dumps({"id": "accented/2", "text": SENTENCES[11]}) + "\n")  # its name again
    assert drain_inbox(data, batch_size=100, on_duplicate="reject", max_record_bytes=1_000_000)["added"] == 1
    assert not [p for p in inbox.iterdir() if p.name != ".done"] and len(list((inbox / ".done").iterdir())) == 4
    (reason,) = [
        json.loads(line)
        for p in (data / "quarantine" / "additions").rglob("*.reasons.jsonl")
        for line in p.read_text().splitlines()
    ]
    assert reason["line"] == 2 and reason["reason"].startswith("broken JSON") and long_bad.endswith(reason["source"])
    f = tmp_path / ("2" + "m" * 240 + ".txt")
    f.write_bytes(SENTENCES[12].encode() + b"\n\xff not UTF-8\n")
    out = shardvec_cli("add", f, "--data", data)
    assert out.returncode == 0 and "added=1" in out.stdout and "quarantined=1" in out.stdout, out.stderr
    store = shardvec.open(data)
    assert all(i in store for i in ("long/good", "accented/1", "accented/2", "after", text_id(f.name, SENTENCES[12])))


def test_a_corpus_file_with_a_long_name_does_not_fail_every_nightly(data):
    """#33 hostile review: a corpus file named with 221-255 bytes (legal on Linux) failed every
    nightly with 'File name too long' at its token cache's temp name `.NAME.KEY.arrow.PID.tmp`, and
    the CLI said to free space. The night should go on: the file's records in, or the file
    quarantined with a reason that says to rename it."""
    new = data / "corpus" / "2099-01-01"
    new.mkdir(parents=True)
    (new / ("n" * 240 + ".jsonl")).write_text(json.dumps({"id": "long/1", "text": SENTENCES[13]}) + "\n{broken\n")
    (new / "short.jsonl").write_text(json.dumps({"id": "short/1", "text": SENTENCES[14]}) + "\n")
    assert nightly_in_process(data)["status"] == "published"
    store = shardvec.open(data)
    assert "short/1" in store and "long/1" in store
    # its broken line is quarantined byte for byte under a name that fits, the reason naming the file
    (rejected,) = (data / "quarantine" / "2099-01-01").glob("n*.rejected")
    assert rejected.read_bytes() == b"{broken\n" and len(rejected.name.encode()) <= 255
    reasons = [json.loads(x) for x in rejected.with_name(rejected.name.replace(".rejected", ".reasons.jsonl")).open()]
    assert reasons[0]["source"] == "2099-01-01/" + "n" * 240 + ".jsonl" and reasons[0]["line"] == 2


def test_two_drains_at_once_both_end_well_and_apply_every_file(data):
    """#33 hostile review: two drains at once (a hand-run flow beside the deployment's) both took
    the first file, and the one that came second to move it to .done/ failed with FileNotFoundError."""
    inbox = data / "inbox"
    inbox.mkdir()
    for k in range(20):
        (inbox / f"f{k:02d}.jsonl").write_text(
            "".join(json.dumps({"id": f"f{k}/{i}", "text": SENTENCES[k + i]}) + "\n" for i in range(10))
        )
    drain = (
        f"from shardvec.tasks.changes.intake import drain_inbox; drain_inbox({str(data)!r}, batch_size=5, "
        "on_duplicate='reject', max_record_bytes=1_000_000)"
    )
    procs = [subprocess.Popen([sys.executable, "-c", drain], stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    store = shardvec.open(data)
    assert all(f"f{k}/{i}" in store for k in range(20) for i in range(10))
    assert [p.name for p in inbox.iterdir()] == [".done"] and len(list((inbox / ".done").iterdir())) == 20


@pytest.mark.slow
def test_a_night_of_one_text_repeated_publishes_though_lsi_keeps_fewer_topics(data):
    """#33 hostile review: a partition of thousands of records with the same words (here one id
    repeated, all but one quarantined as duplicates: LSI trains on every record) outweighs the
    rest of an update's energy, and gensim's merge keeps fewer topics than lsi.num_topics (it
    drops factors under 0.1% of the energy). The statement shards were written with the model's
    width and the space's manifest with the setting's, so every nightly failed at build-index:
    'Vector has wrong length (expected 40, got 37)'."""
    from shardvec.tasks.storage.spaces import Space

    new = data / "corpus" / "2099-01-01"
    new.mkdir(parents=True)
    (new / "same.jsonl").write_text(
        "".join(json.dumps({"id": "same", "text": f"bushfire smoke {i}"}) + "\n" for i in range(40_000))
    )
    assert nightly_in_process(data)["status"] == "published"
    store = shardvec.open(data)
    assert store.text("same") == "bushfire smoke 0" and store.similar("bushfire smoke", 1)
    space = Space(data / json.loads((data / "CURRENT").read_text())["components"]["statements"])
    assert space.shard_vectors(0).shape[1] == space.dim < 40
    later = data / "corpus" / "2099-01-02"  # and the night after, whatever width its merge keeps
    later.mkdir()
    (later / "more.jsonl").write_text(
        "".join(json.dumps({"id": f"more/{i}", "text": t}) + "\n" for i, t in enumerate(SENTENCES[:100]))
    )
    assert nightly_in_process(data)["status"] == "published" and "more/99" in shardvec.open(data)


def test_a_linked_progress_folder_is_refused_before_anything_is_written_through_it(data, tmp_path):
    """#33 hostile review: inbox/.progress (where a drain counts a file's acknowledged records) as
    a link to a folder outside: the drain wrote its counts there and deleted them after, like the
    .done link refused before it."""
    _refuses_a_linked(data, tmp_path, ".progress", "a.jsonl.json")


def _refuses_a_linked(data, tmp_path, folder: str, victim: str) -> None:
    """inbox/FOLDER as a link to a folder outside holding VICTIM: the drain refuses it before it
    writes, moves or deletes anything there."""
    from shardvec.tasks.inputs.corpus import BadInputError

    inbox, outside = data / "inbox", tmp_path / "outside"
    inbox.mkdir()
    outside.mkdir()
    (outside / victim).write_text("precious\n")
    (inbox / folder).symlink_to(outside)
    (inbox / "a.jsonl").write_text(json.dumps({"id": "a", "text": SENTENCES[3]}) + "\n")
    with pytest.raises(BadInputError, match="is a symlink"):
        drain_inbox(data, batch_size=100, on_duplicate="reject", max_record_bytes=1_000_000)
    assert [p.name for p in outside.iterdir()] == [victim] and (outside / victim).read_text() == "precious\n"
