"""The publish protocol: CURRENT replaced atomically with relative paths, incomplete versions
refused, retention, the run lock's refusal, and the fsyncs that make a new version durable."""

import json
import multiprocessing as mp
import threading
import time
from contextlib import contextmanager

import pytest

from shardvec.tasks.storage.versions import (
    LockedError,
    RunLock,
    retain,
    NotPublishedError,
)
from shardvec.tasks.changes.release import publish_version as publish
from tests.checks import read_current, require_current

V0, V1, V2, V3, V9 = (f"20261101T00000{i}-00000{i}" for i in (0, 1, 2, 3, 9))

COMPONENTS = ("models", "words", "statements", "words_index", "statements_index", "similarity")


def _version(data, vid):
    root = data / "versions" / vid
    comps = {}
    for c in COMPONENTS:
        (root / c).mkdir(parents=True)
        (root / c / "f").write_text(vid)
        comps[c] = str(root / c)
    return comps


def test_publish_replaces_current_and_keeps_relative_paths(tmp_path):
    assert read_current(tmp_path) is None
    with pytest.raises(NotPublishedError, match="run `shardvec nightly --data"):
        require_current(tmp_path)
    publish(tmp_path, V1, _version(tmp_path, V1), {"partitions": ["a"]}, {"n": 1}, keep_versions=2)
    cur = read_current(tmp_path)
    assert cur["version"] == V1 and cur["components"]["words"] == f"versions/{V1}/words"
    assert json.loads((tmp_path / "versions" / V1 / "manifest.json").read_text())["n"] == 1
    assert not list(tmp_path.glob(".*.tmp"))


def test_retention_keeps_newest_and_deletes_crashed_leftovers(tmp_path):
    for v in (V1, V2, V3):
        publish(tmp_path, v, _version(tmp_path, v), {"partitions": []}, {}, keep_versions=2)
    (tmp_path / "versions" / V0).mkdir()  # an unpublished leftover, older than live
    (tmp_path / "versions" / V9).mkdir()  # newer than live: maybe a run in progress
    removed = retain(tmp_path, 2)
    assert sorted(p.name for p in (tmp_path / "versions").iterdir()) == [V2, V3, V9]
    assert V0 in removed


def test_a_version_never_live_is_not_what_rollback_or_retention_take_for_published(tmp_path):
    """A run killed after its manifest and before its swap leaves a whole version nobody served.
    Rollback skips it by default, retention removes it once a later version is live."""
    from shardvec.tasks.storage.versions import prepare
    from shardvec.tasks.changes.release import list_versions, rollback
    from tests.runs import shardvec_cli

    publish(tmp_path, V1, _version(tmp_path, V1), {"partitions": ["a"]}, {}, keep_versions=3)
    prepare(tmp_path, V2, _version(tmp_path, V2), {"partitions": ["a", "b"]}, {})  # killed here
    assert [(v["version"], v["live"], v["was_live"]) for v in list_versions(tmp_path)] == [
        (V1, True, True),
        (V2, False, False),
    ]
    lines = shardvec_cli("versions", "--data", tmp_path).stdout.splitlines()
    assert lines[0].startswith(f"* {V1}") and not lines[0].endswith("(never live)")
    assert lines[1].startswith(f"  {V2}") and lines[1].endswith("(never live)")
    out = publish(tmp_path, V3, _version(tmp_path, V3), {"partitions": ["a", "b"]}, {}, keep_versions=3)
    assert out["removed_versions"] == [V2]
    # killed between the swap and retention: the never-live version is still there
    prepare(tmp_path, V2, _version(tmp_path, V2), {"partitions": ["a", "b"]}, {})
    assert rollback(tmp_path)["version"] == V1
    assert rollback(tmp_path, V2)["version"] == V2  # named, it can still go live
    assert rollback(tmp_path)["version"] == V1
    prepare(tmp_path, V0, _version(tmp_path, V0), {"partitions": []}, {})  # older, never live
    with pytest.raises(NotPublishedError, match="was ever live"):
        rollback(tmp_path)
    assert (tmp_path / "versions.live").read_text().split() == [V1, V3, V1, V2, V1]


def test_what_was_live_survives_current_moved_aside_restored_or_from_before_the_record(tmp_path):
    for v in (V1, V2):
        publish(tmp_path, v, _version(tmp_path, v), {"partitions": []}, {}, keep_versions=3)
    backup = (tmp_path / "CURRENT").read_bytes()  # names V2
    publish(tmp_path, V3, _version(tmp_path, V3), {"partitions": []}, {}, keep_versions=3)
    (tmp_path / "CURRENT").write_bytes(backup)  # restored from a backup: V3's publish is not in it
    (tmp_path / "CURRENT").rename(tmp_path / "CURRENT.damaged")  # ... or moved aside
    publish(tmp_path, V9, _version(tmp_path, V9), {"partitions": []}, {}, keep_versions=3)
    assert sorted(p.name for p in (tmp_path / "versions").iterdir()) == [V2, V3, V9]
    # a data directory from before versions.live: every version with a manifest counts as live once
    (tmp_path / "versions.live").unlink()
    from shardvec.tasks.changes.release import rollback

    assert rollback(tmp_path)["version"] == V3
    assert (tmp_path / "versions.live").read_text().split() == [V2, V9, V3]
    # a line a kill cut short is never joined to the next
    with open(tmp_path / "versions.live", "a") as f:
        f.write(V0[:9])
    assert rollback(tmp_path)["version"] == V2 and (tmp_path / "versions.live").read_text().splitlines()[-2:] == [
        V0[:9],
        V2,
    ]


def test_publish_refuses_incomplete_components(tmp_path):
    comps = _version(tmp_path, V1)
    del comps["similarity"]
    with pytest.raises(ValueError, match="components \\['similarity'\\] missing"):
        publish(tmp_path, V1, comps, {"partitions": []}, {}, keep_versions=2)
    assert read_current(tmp_path) is None


def _hold(path, ready, release):
    with RunLock(path):
        ready.set()
        release.wait(20)


@contextmanager
def lock_held_elsewhere(path):
    """Another process holding the run lock of `path` until the block ends (or `release` is set)."""
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold, args=(path, ready, release))
    p.start()
    try:
        assert ready.wait(20)
        yield p, release
    finally:
        release.set()
        p.join(20)


def test_second_run_is_told_why_it_cannot_start(tmp_path):
    with lock_held_elsewhere(tmp_path):
        with pytest.raises(LockedError, match=r"Another shardvec run holds .*\(pid \d+ since .*\); wait for it"):
            with RunLock(tmp_path):
                pass
    with RunLock(tmp_path):  # free again once the holder is gone
        pass


def test_a_colliding_run_waits_for_the_lock_and_says_so(tmp_path):
    """Issue 32: a nightly that meets a running backfill waits for it instead of failing."""
    with lock_held_elsewhere(tmp_path) as (p, release):
        said = []
        with pytest.raises(LockedError, match=r"waited 1 s for it"):  # gives up when its wait is over
            with RunLock(tmp_path, wait_seconds=1, say=said.append):
                pass
        assert said and said[0].startswith("waiting for the run that holds") and f"pid {p.pid}" in said[0]
        said.clear()
        threading.Timer(1.5, release.set).start()
        began = time.monotonic()
        with RunLock(tmp_path, wait_seconds=60, say=said.append, say_every=0.5):
            waited = time.monotonic() - began
        assert 1.0 < waited < 30, waited
        assert len(said) >= 3 and said[-1].startswith("the run lock is free after")


@pytest.fixture
def fsynced(monkeypatch):
    """The paths os.fsync is called on (the real fsync still runs): a spy, not a stand-in."""
    import os

    seen, real = [], os.fsync

    def spy(fd):
        seen.append(os.path.realpath(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return seen


def test_publish_fsyncs_the_folders_that_name_a_new_version(tmp_path, fsynced):
    """issue 14: a new folder under versions/ is durable only once the folders holding its
    entry (versions/, and the data directory that got versions/) are fsynced before CURRENT moves."""
    import os
    from shardvec.tasks.storage.versions import new_version_id

    data, vid = tmp_path / "data", new_version_id()
    data.mkdir()
    publish(data, vid, _version(data, vid), {"partitions": ["a"]}, {}, keep_versions=2)
    current_at = next(i for i, p in enumerate(fsynced) if os.path.basename(p).startswith(".CURRENT."))
    for folder in (data / "versions" / vid, data / "versions", data):
        assert os.path.realpath(folder) in fsynced[:current_at], f"{folder} not fsynced before CURRENT"
