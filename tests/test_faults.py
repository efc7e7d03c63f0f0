"""Faults: SIGKILL at many points of a nightly run, a Dask worker killed mid-run, a full disk,
hostile parameters. Whatever happens, the published version stays whole and a rerun publishes."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

import shardvec
from shardvec.tasks.corpus import BadInputError
from shardvec.tasks.publish import read_current
from shardvec.tasks.release import verify
from tests.conftest import BIN, SMALL_TOML, lee_lines, run_nightly, small_settings, write_corpus

pytestmark = pytest.mark.usefixtures("prefect_server")



def _published(tmp_path) -> tuple[Path, dict]:
    data = tmp_path / "data"
    write_corpus(data / "corpus")
    (tmp_path / "small.toml").write_text(SMALL_TOML)
    run_nightly(small_settings(data))
    night = data / "corpus" / "2026-11-04"
    night.mkdir()
    with open(night / "more.jsonl", "w") as f:
        for i, line in enumerate(lee_lines() * 3):
            f.write(json.dumps({"id": f"more/{i}", "text": line}) + "\n")
    return data, read_current(data)


def _env(tmp_path) -> dict:
    from prefect.settings import get_current_settings
    return {**os.environ, "PREFECT_API_URL": str(get_current_settings().api.url),
            "SHARDVEC_CONFIG": str(tmp_path / "small.toml")}


def _phase(data: Path, live: str) -> str:
    """How far the killed run got, from what it left in its unpublished version folder."""
    building = sorted(p for p in (data / "versions").iterdir() if p.name != live)
    if not building:
        return "starting or tokenizing"
    v = building[-1]
    if (v / "manifest.json").exists():
        return "publishing"
    for sub, phase in (("similarity", "similarity rows"), ("index", "index builds"),
                       ("spaces/statements", "shard writes"), ("spaces/words", "word vectors"),
                       ("models", "training"), ("work", "planning")):
        if (v / sub).exists():
            return phase
    return "starting or tokenizing"


def test_sigkill_at_many_points_leaves_the_published_version_whole(tmp_path):
    data, before = _published(tmp_path)
    env = _env(tmp_path)
    cmd = [str(BIN / "shardvec"), "nightly", "--data", str(data)]
    probe = tmp_path / "probe"
    shutil.copytree(data, probe)
    t = time.monotonic()
    probe_run = subprocess.run([str(BIN / "shardvec"), "nightly", "--data", str(probe)], env=env,
                               capture_output=True, text=True, timeout=300)
    assert probe_run.returncode == 0, probe_run.stderr[-3000:]
    clean = time.monotonic() - t
    phases = []
    # later runs reuse the token caches the killed ones left, so they publish sooner than the probe
    for delay in np.linspace(0.03 * clean, 0.65 * clean, 14):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        time.sleep(delay)
        if proc.poll() is not None:  # it finished first: that point is past the end of the run
            break
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert verify(data) == []  # every file of what CURRENT names matches its checksum
        assert shardvec.open(data).row("dup/a")[0].key == "dup/b"
        if read_current(data) != before:  # killed after the swap (reporting, shutdown): published whole
            phases.append("after publishing")
            break
        phases.append(_phase(data, before["version"]))
    print(f"\nclean run {clean:.1f} s; killed during: {phases}")
    assert len(phases) >= 10 and len(set(phases)) >= 4, phases
    if phases[-1] != "after publishing":
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    after = read_current(data)
    assert after["version"] != before["version"] and after["watermark"]["partitions"][-1] == "2026-11-04"
    assert verify(data) == [] and "more/5" in shardvec.open(data)
    out = subprocess.run([str(BIN / "shardvec"), "verify", "--data", str(data)], env=env, capture_output=True,
                         text=True)
    assert out.returncode == 0 and out.stdout.startswith(f"ok: version {after['version']} is whole")


def test_a_dask_worker_killed_mid_run_and_the_flow_completes(tmp_path, dask_cluster):
    address, workers, procs = dask_cluster
    data, before = _published(tmp_path)
    killed = []

    def kill_a_worker():  # the worker process under the first nanny; the nanny restarts it
        for child in psutil.Process(procs[1].pid).children(recursive=True):
            if "python" in child.name().lower() or child.cmdline():
                child.kill()
                killed.append(child.pid)

    timer = threading.Timer(4.0, kill_a_worker)
    timer.start()
    report = run_nightly(small_settings(data, dask={"address": address}))
    timer.join()
    assert killed, "no worker process was killed"
    assert report["status"] == "published" and report["statements"] == 352 + 3 * 300
    assert verify(data) == [] and report["recall"]["similarity rows"]["rows_recall_at_k"] == 1.0


def test_full_disk_is_a_clear_error_and_the_published_version_survives(tmp_path):
    data, before = _published(tmp_path)
    env = _env(tmp_path)

    def small_files():  # files may not grow past 256 KiB: a disk that fills mid-run
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 << 10, 256 << 10))

    out = subprocess.run([str(BIN / "shardvec"), "nightly", "--data", str(data)], env=env, capture_output=True,
                         text=True, preexec_fn=small_files, timeout=300)
    # Prefect's log shows the failed task's traceback; the command ends with one clear sentence
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert out.returncode == 1 and len(errors) == 1 and "File too large" in errors[0]
    assert "Nothing new was published; free space or fix the permissions" in errors[0]
    assert read_current(data) == before and verify(data) == []
    rerun = subprocess.run([str(BIN / "shardvec"), "nightly", "--data", str(data)], env=env, capture_output=True,
                           text=True, timeout=300)
    assert rerun.returncode == 0 and read_current(data)["version"] != before["version"]


def test_parameters_cannot_reach_outside_the_data_directory(tmp_path):
    from shardvec.tasks.corpus import select_partitions
    with pytest.raises(BadInputError, match="No partition named ../../etc"):
        select_partitions(["2026-11-01"], [], mode="update", partitions=["../../etc"])
    data, _ = _published(tmp_path)
    from shardvec.flows.backfill import backfill
    from prefect.task_runners import ThreadPoolTaskRunner
    with pytest.raises(BadInputError, match="No partition named ../corpus"):
        backfill.with_options(task_runner=ThreadPoolTaskRunner(2))(
            partitions=["../corpus"], overrides=json.loads(small_settings(data).model_dump_json()))


def test_published_files_load_without_unpickling(published):
    data = published[0]
    current = read_current(data)
    for name in ("words", "statements"):
        for npy in (data / current["components"][name]).glob("*.npy"):
            np.load(npy, allow_pickle=False, mmap_mode="r")
    for npy in (data / current["components"]["similarity"]).glob("*.npy"):
        np.load(npy, allow_pickle=False, mmap_mode="r")
    json.loads((data / "CURRENT").read_text())


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root to drop to nobody")
def test_no_permission_is_a_clear_error(tmp_path):
    data, before = _published(tmp_path)
    home = tmp_path / "prefect-home"
    home.mkdir(mode=0o777)
    # nobody may enter the folders (this checkout's too: a fresh clone may sit in a 0700 temp
    # folder) and read the code, but not write the data
    repo = Path(__file__).resolve().parents[1]
    for p in [tmp_path, *tmp_path.parents, repo, *repo.parents]:
        if p != Path("/"):
            p.chmod(p.stat().st_mode | 0o005)
    probe = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(BIN / "python"),
                            "-c", "import shardvec"], capture_output=True, text=True)
    if probe.returncode:
        pytest.skip(f"user nobody cannot run this virtualenv: {probe.stderr[-200:]}")
    (tmp_path / "small.toml").chmod(0o644)
    env = {**_env(tmp_path), "PREFECT_HOME": str(home), "HOME": str(home)}
    out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                          str(BIN / "shardvec"), "nightly", "--data", str(data)],
                         env=env, capture_output=True, text=True, timeout=300)
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert out.returncode == 1 and len(errors) == 1 and errors[0].startswith("error: Permission denied")
    assert read_current(data) == before and verify(data) == []
