"""Faults: SIGKILL at many points of a nightly run, a Dask worker killed mid-run, a full disk,
hostile parameters. Whatever happens, the published version stays whole and a rerun publishes."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

import shardvec
from shardvec.tasks.inputs.corpus import BadInputError
from tests.checks import read_current
from shardvec.tasks.changes.release import verify
from tests.corpora import lee_lines
from tests.processes import BIN, kill_group_and_check_it_landed, run_in_a_group
from tests.runs import (
    SUBPROCESS_TOML,
    backfill_in_process,
    nightly_in_process,
    run_nightly,
    shardvec_cli,
    small_settings,
)

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture
def waiting(published_copy, tmp_path) -> tuple[Path, dict]:
    """A copy of the session's published data directory, a fourth partition waiting in its
    corpus, and small.toml (the published settings, on one Dask worker and in fewer shards) for
    runs in other processes; with what CURRENT says before any run."""
    data = published_copy
    (tmp_path / "small.toml").write_text(SUBPROCESS_TOML)
    night = data / "corpus" / "2026-11-04"
    night.mkdir()
    with open(night / "more.jsonl", "w") as f:
        for i, line in enumerate(lee_lines() * 3):
            f.write(json.dumps({"id": f"more/{i}", "text": line}) + "\n")
    return data, read_current(data)


def _env(tmp_path) -> dict:
    from prefect.settings import get_current_settings

    return {
        **os.environ,
        "PREFECT_API_URL": str(get_current_settings().api.url),
        "SHARDVEC_CONFIG": str(tmp_path / "small.toml"),
    }


def _phase(data: Path, live: str) -> str:
    """How far the killed run got, from what it left in its unpublished version folder."""
    building = sorted(p for p in (data / "versions").iterdir() if p.name != live)
    if not building:
        return "starting or tokenizing"
    v = building[-1]
    if (v / "manifest.json").exists():
        return "publishing"
    for sub, phase in (
        ("similarity", "similarity rows"),
        ("index", "index builds"),
        ("spaces/statements", "shard writes"),
        ("spaces/words", "word vectors"),
        ("models", "training"),
        ("work", "planning"),
    ):
        if (v / sub).exists():
            return phase
    return "starting or tokenizing"


PHASES = [
    "starting or tokenizing",
    "planning",
    "training",
    "word vectors",
    "shard writes",
    "index builds",
    "similarity rows",
    "publishing",
]
# A run is killed as soon as it is seen at or past each of these: six runs, each one phase
# further, spread over the whole build (every run is a cold start, ~20 s of CPU here)
KILL_AT = ["starting or tokenizing", "training", "shard writes", "index builds", "similarity rows", "publishing"]


@pytest.mark.slow
def test_sigkill_at_many_points_leaves_the_published_version_whole(waiting, tmp_path):
    """Each run is killed as soon as it is seen in the next phase (not after a fixed delay, which
    a loaded machine shifts): the kill lands at every phase the run passes through."""
    data, before = waiting
    env = _env(tmp_path)
    cmd = [str(BIN / "shardvec"), "nightly", "--data", str(data)]
    phases = []
    for target in KILL_AT:
        proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        seen = None
        while proc.poll() is None and read_current(data) == before:
            seen = _phase(data, before["version"])
            if PHASES.index(seen) >= PHASES.index(target):
                break
            time.sleep(0.02)
        if proc.poll() is not None or read_current(data) != before:  # it published before we saw the phase
            kill_group_and_check_it_landed(proc.pid, proc)
            phases.append("after publishing")
            break
        kill_group_and_check_it_landed(proc.pid, proc)  # all of it is gone before anything is checked
        assert verify(data) == []  # every file of what CURRENT names matches its checksum
        assert shardvec.open(data).row("dup/a")[0].key == "dup/b"
        if read_current(data) != before:  # killed after the swap (reporting, shutdown): published whole
            phases.append("after publishing")
            break
        phases.append(seen)
    print(f"\nkilled during: {phases}")
    assert len(set(phases)) >= 5, phases
    # the rerun, in this process (nothing is killed any more) on the thread pool: what it must get
    # past is what the killed runs left in the data directory, whichever runner ran them
    if phases[-1] != "after publishing":
        assert nightly_in_process(data)["status"] == "published"
    after = read_current(data)
    assert after["version"] != before["version"] and after["watermark"]["partitions"][-1] == "2026-11-04"
    assert verify(data) == [] and "more/5" in shardvec.open(data)
    out = shardvec_cli("verify", "--data", data)
    assert out.returncode == 0 and out.stdout.startswith(f"ok: version {after['version']} is whole")


@pytest.mark.slow
def test_a_dask_worker_killed_mid_run_and_the_flow_completes(waiting, dask_cluster):
    address, workers, procs = dask_cluster
    data, before = waiting
    killed, done = [], threading.Event()

    def kill_w0_once_it_works():  # its worker process, under the first nanny; the nanny restarts it
        from distributed import Client

        with Client(address, timeout=30) as client:
            w0 = next(a for a, w in client.scheduler_info()["workers"].items() if w["name"] == "w0")
            while not done.is_set():
                if client.processing([w0]).get(w0):  # a task of the run is on it right now
                    for child in psutil.Process(procs[1].pid).children(recursive=True):
                        child.kill()
                        killed.append(child.pid)
                    return
                time.sleep(0.02)

    killer = threading.Thread(target=kill_w0_once_it_works)
    killer.start()
    try:
        report = run_nightly(small_settings(data, dask={"address": address}))
    finally:
        done.set()
        killer.join(60)
    assert killed, "no worker process was killed while it ran a task"
    assert report["status"] == "published" and report["statements"] == 352 + 3 * 300
    assert verify(data) == [] and report["recall"]["similarity rows"]["rows_recall_at_k"] == 1.0


@pytest.mark.slow
def test_full_disk_is_a_clear_error_and_the_published_version_survives(waiting, tmp_path):
    data, before = waiting
    env = _env(tmp_path)

    def small_files():  # files may not grow past 256 KiB: a disk that fills mid-run
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 << 10, 256 << 10))

    out = run_in_a_group(
        [str(BIN / "shardvec"), "nightly", "--data", str(data)], env=env, preexec_fn=small_files, timeout=300
    )
    # Prefect's log shows the failed task's traceback; the command ends with one clear sentence
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert out.returncode == 1 and len(errors) == 1 and "File too large" in errors[0]
    assert "Nothing new was published; free space or fix the permissions" in errors[0]
    assert read_current(data) == before and verify(data) == []
    assert nightly_in_process(data)["status"] == "published" and read_current(data)["version"] != before["version"]


def test_parameters_cannot_reach_outside_the_data_directory(waiting):
    from shardvec.tasks.inputs.corpus import select_partitions

    with pytest.raises(BadInputError, match="No partition named ../../etc"):
        select_partitions(["2026-11-01"], [], mode="update", partitions=["../../etc"])
    data, _ = waiting
    with pytest.raises(BadInputError, match="No partition named ../corpus"):
        backfill_in_process(data, partitions=["../corpus"])


def test_published_files_load_without_unpickling(published):
    """What readers map (vectors, similarity rows and scores) is plain .npy: nothing a reader opens
    runs pickled code. (The gensim models under models/ are gensim's own pickles, for training.)"""
    data = published.data
    current = read_current(data)
    for name in ("words", "statements", "similarity"):
        found = sorted((data / current["components"][name]).rglob("*.npy"))
        assert len(found) >= 2, f"no shards found under {name}"
        for npy in found:
            assert np.load(npy, allow_pickle=False, mmap_mode="r").dtype != object


def _without_dac_override() -> list[str]:
    """The command prefix that runs a program without the capabilities that let root write
    where the permission bits say no (as root: setpriv drops them all; anyone else has none)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("root without setpriv (util-linux) cannot drop its capabilities")
    return ["setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--"]


def _chmod_tree(root: Path, dirs: int, files: int) -> None:
    for p in [root, *root.rglob("*")]:
        if not p.is_symlink():
            p.chmod(dirs if p.is_dir() else files)


@pytest.mark.slow
def test_no_permission_is_a_clear_error(waiting, tmp_path):
    """The data directory is read-only to the run (every folder r-x, every file r--; as root
    the run has no capability that overrides that). Only folders under tmp_path are changed."""
    data, before = waiting
    home = tmp_path / "prefect-home"
    home.mkdir()
    env = {**_env(tmp_path), "PREFECT_HOME": str(home), "HOME": str(home)}
    prefix = _without_dac_override()
    _chmod_tree(data, 0o555, 0o444)
    try:
        probe = subprocess.run([*prefix, "touch", str(data / "probe")], capture_output=True, text=True)
        assert probe.returncode != 0 and not (data / "probe").exists(), "the data directory is still writable"
        out = run_in_a_group([*prefix, str(BIN / "shardvec"), "nightly", "--data", str(data)], env=env, timeout=300)
    finally:
        _chmod_tree(data, 0o755, 0o644)
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert out.returncode == 1 and len(errors) == 1 and errors[0].startswith("error: Permission denied"), out.stderr[
        -3000:
    ]
    assert read_current(data) == before and verify(data) == []
