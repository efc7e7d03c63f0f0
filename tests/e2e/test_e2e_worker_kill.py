"""A worker killed in the middle of a run, as an operator would see it (issue 32): deploy/prefect.yaml's
backfill on a process work pool of a real `shardvec server`, a `mode=rebuild` run triggered through
the API, and SIGKILL of the worker's process group alone (the flow-run process is in a session of
its own and is not signalled) at several phases of the run. Each time the run leaves Running within
two minutes, its processes are gone, `.run.lock` is free, the live version is whole, and a fresh
worker's next run gets the lock, and the last run publishes. Also the watchdog alone, on a child
process whose parent is killed; and runs on a LocalCluster in this process: one that ends quietly,
and those whose Dask workers are gone or whose task hangs, which fail saying so.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from prefect import flow, task

from shardvec.tasks.storage.versions import LockedError, RunLock
from tests.e2e.harness import (
    api_run,
    deploy_to_pool,
    start_pool_worker,
    flow_run,
    post,
    run_to_the_end,
    server,
    wait_for,
)
from tests.processes import BIN, group_members, kill_group_and_check_it_landed, stop_groups

pytestmark = pytest.mark.slow  # whole on one pytest-xdist worker (tests/conftest.py, ONE_WORKER)
__all__ = ["server"]  # the module's own instance of the fixture

BACKFILL = "backfill/shardvec-backfill"
LEFT_RUNNING = 120  # seconds from the kill to the run's leaving Running that the issue accepts
# where the run is when the worker is killed: what shows it, in the data directory (in the run's
# version folder unless said otherwise), or through the API
PHASES = {
    "registered": "DATA/.runs/<run id>.json (flows/operate.py), before any task",
    "tokenize": "a task run `tokenize-...` recorded (the copied data directory has the token caches)",
    "train": "work/plan.npy, the statement plan, beside the vocabulary and word2vec",
    "search": "index/, the Annoy indexes, beside the similarity rows",
    "publish": "manifest.json, or DATA/CURRENT naming the version (the run's end follows)",
}


@pytest.fixture(scope="module")
def pool(server, published):
    """deploy/prefect.yaml's backfill on a process work pool, a way to start its worker, and a copy
    of the session's published data directory (`shardvec verify` needs a live version)."""
    tmp, env = server["tmp"], {**server["env"]}
    data = tmp / "pool-data"
    shutil.copytree(published.data, data)

    deploy_to_pool(env, "--name", "shardvec-backfill", "--prefect-file", "deploy/prefect.yaml")
    workers = []

    def start_worker() -> subprocess.Popen:
        workers.append(start_pool_worker(env, data, tmp / f"worker-{len(workers)}.log"))
        return workers[-1]

    yield {**server, "data": data, "start_worker": start_worker}
    stop_groups(workers)


def reached(dep, run_id: str, phase: str, before: set[str], live_before: str) -> bool:
    data = dep["data"]
    if phase == "registered":
        return (data / ".runs" / f"{run_id}.json").exists()
    if phase == "tokenize":
        runs = post(f"{dep['api']}/task_runs/filter", json={"flow_runs": {"id": {"any_": [run_id]}}}).json()
        return any(r["name"].rsplit("-", 1)[0] == "tokenize" for r in runs)
    if phase == "publish" and live(data) != live_before:
        return True
    marker = {"train": "work/plan.npy", "search": "index", "publish": "manifest.json"}[phase]
    return any((data / "versions" / v / marker).exists() for v in versions(data) - before)


def versions(data: Path) -> set[str]:
    return {v.name for v in (data / "versions").iterdir()}


def live(data: Path) -> str:
    return (data / "CURRENT").read_text()


def run_lock_is_free(data: Path) -> bool:
    try:
        with RunLock(data):
            return True
    except LockedError:
        return False


def verify(dep) -> str:
    out = subprocess.run(
        [BIN / "shardvec", "verify", "--data", str(dep["data"])],
        env=dep["env"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and "is whole" in out.stdout, out.stdout + out.stderr
    return out.stdout


def test_a_run_whose_worker_is_killed_leaves_running_at_every_phase(pool):
    data, t = pool["data"], time.monotonic()
    worker = pool["start_worker"]()
    seconds = {}
    for phase in PHASES:
        before, live_before = versions(data), live(data)
        run_id = api_run(pool, BACKFILL, {"mode": "rebuild"})
        wait_for(lambda: reached(pool, run_id, phase, before, live_before), 300, f"the run to reach {phase}", every=0.2)
        pid = json.loads((data / ".runs" / f"{run_id}.json").read_text())["pid"]
        assert psutil.Process(pid).ppid() == worker.pid  # the worker started it...
        assert os.getpgid(pid) == pid  # ...in a group of its own (its Dask workers join it): not killed below
        killed_at = kill_group_and_check_it_landed(worker.pid, worker)
        ended = wait_for(
            lambda: (r := flow_run(pool, run_id))["state_type"] != "RUNNING" and r,
            LEFT_RUNNING,
            f"run {run_id} killed at {phase} to leave Running",
            every=0.5,
        )
        seconds[phase] = round(time.monotonic() - killed_at, 1)
        print(f"\nkilled at {phase}: {ended['state_name']} {seconds[phase]} s after the kill", flush=True)
        assert ended["state_type"] == "CRASHED", ended["state"]
        assert "process that started this run" in ended["state"]["message"]
        wait_for(lambda: not group_members(pid), 30, "the run's process and its Dask workers to be gone")
        wait_for(lambda: run_lock_is_free(data), 30, f"{data / '.run.lock'} to be free")
        worker = pool["start_worker"]()  # the next phase's run gets the lock
        verify(pool)
    print(f"from the worker's SIGKILL to the run leaving Running, by phase (s): {seconds}")
    last = run_to_the_end(pool, BACKFILL, {"mode": "rebuild"})
    assert last["state_type"] == "COMPLETED", last["state"]
    verify(pool)
    print(f"five kills and a published run on the pool in {time.monotonic() - t:.0f} s")


@pytest.mark.parametrize("own_session", [True, False], ids=["as-a-worker's-run", "as-shardvec-serve's-run"])
def test_the_watchdog_ends_a_run_whose_parent_is_killed(tmp_path, own_session):
    """A parent (as a worker, or `shardvec serve`) starts a child (as the flow-run process, in a
    session of its own as a worker's are, or in the parent's group as serve's are; its output read
    by the parent) that starts the watch and a grandchild (as a Dask worker), then writes a line
    every 50 ms through rich, as Prefect's console logging does. SIGKILL of the parent alone: the
    child is not killed by the broken pipe (SystemExit from rich) but by its watch, which takes the
    grandchild with it. (Marking the run Crashed fails here, with no server: the run still ends.)"""
    script = tmp_path / "parent.py"
    script.write_text(f"""
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", {CHILD!r}, {str(tmp_path / "watching")!r}],
                         start_new_session={own_session}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
print(child.pid, flush=True)
for line in child.stdout:
    pass
""")
    env = {
        **os.environ,
        "PREFECT__FLOW_RUN_ID": "00000000-0000-0000-0000-000000000000",
        "PREFECT_API_URL": "http://127.0.0.1:9/api",
        "PREFECT_HOME": str(tmp_path / "prefect"),
    }
    parent = subprocess.Popen(
        [sys.executable, script], stdout=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    child = psutil.Process(int(parent.stdout.readline()))
    wait_for(lambda: (tmp_path / "watching").exists(), 60, "the watch to start")
    grandchild = child.children()[0]
    if own_session:
        killed_at = kill_group_and_check_it_landed(parent.pid, parent)
    else:  # the parent alone: its group is also the child's
        killed_at = time.monotonic()
        parent.kill()
        parent.wait(30)
    alive = psutil.wait_procs([child, grandchild], timeout=60)[1]
    assert not alive, alive
    print(f"\nthe watched child and its own child gone {time.monotonic() - killed_at:.1f} s after the parent's kill")


CHILD = """
import subprocess, sys, time
from pathlib import Path
from rich.console import Console
from shardvec.flows import watchdog
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
watchdog.watch_parent(every=0.1)
Path(sys.argv[1]).touch()
while True:
    Console().print("working")
    time.sleep(0.05)
"""


# --- the run's own Dask cluster, in this process (Prefect's test harness, a LocalCluster) ---------
@task
def nap(seconds: float) -> float:
    import shardvec.flows.skins  # noqa: F401 - what a run's Dask worker holds (gensim, scipy, pyarrow...)

    time.sleep(seconds)
    return seconds


def dask_run(tmp_path, body, **dask):
    """A flow of `body(task_runner)` on SettingsTaskRunner's LocalCluster of two workers; its final
    state, and the warnings logged by Dask meanwhile."""
    from shardvec.flows.runtime import SettingsTaskRunner
    from tests.runs import small_settings

    s = small_settings(tmp_path / "data", dask={"n_workers": 2} | dask)

    @flow(task_runner=SettingsTaskRunner(s))
    def run():
        from prefect.context import FlowRunContext

        return body(FlowRunContext.get().task_runner)

    seen = Seen()
    logging.getLogger("distributed").addHandler(seen)
    try:
        state = run(return_state=True)
    finally:
        logging.getLogger("distributed").removeHandler(seen)
    return state, seen.lines


class Seen(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.mark.usefixtures("prefect_server")
def test_a_dask_run_ends_quietly(tmp_path, caplog):
    """No nanny killing a worker that did not exit in 4 s, no dashboard announced that is not there."""
    state, dask_lines = dask_run(tmp_path, lambda runner: [f.result() for f in [nap.submit(0.1) for _ in range(4)]])
    assert state.is_completed(), state.message
    assert not [line for line in dask_lines if "still alive" in line], dask_lines
    assert not [r.getMessage() for r in caplog.records if "dashboard" in r.getMessage().lower()]


@pytest.mark.usefixtures("prefect_server")
def test_a_run_whose_dask_workers_are_gone_fails_saying_so(tmp_path):
    def body(runner):
        nap.submit(0).result()  # the cluster is up
        runner.client.cluster.scale(0)  # its workers close, and none come back
        wait_for(lambda: not runner.client.nthreads(), 60, "the workers to close")
        return nap.submit(0).result()

    t = time.monotonic()
    state, _ = dask_run(tmp_path, body, n_workers=1, no_worker_seconds=2)
    assert state.is_failed() and "has had no worker for" in state.message, state.message
    print(f"\nfailed {time.monotonic() - t:.0f} s after the start: {state.message}")


@pytest.mark.usefixtures("prefect_server")
def test_a_run_whose_task_hangs_fails_saying_so(tmp_path):
    """The task sleeps for 10 minutes, deaf to the cancel (as one stuck in C code holding the GIL
    is): its worker is restarted, and the run ends soon after no_progress_seconds."""
    began = time.monotonic()
    state, _ = dask_run(tmp_path, lambda runner: nap.submit(600).result(), n_workers=1, no_progress_seconds=2)
    assert state.is_failed() and "no task of the run finished for" in state.message, state.message
    assert time.monotonic() - began < 240  # the worker's sleep would have kept the run 10 minutes
