"""Operated as Prefect users do (issue 17), on a real `prefect server` of its own: the
work-pool deployments of deploy/prefect.yaml on `prefect worker start`, a run the quality gate
refuses calling the webhook, and a killed CLI run in local mode marked Crashed.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time

import pytest

from tests.corpora import write_corpus
from tests.e2e import (REPO, artifacts, call_api, flow_run, get, post, run_id_in, run_to_the_end, server, table,
                       wait_for)
from tests.processes import BIN, group_members, kill_group_and_check_it_landed, stop_groups

pytestmark = pytest.mark.slow  # whole on one pytest-xdist worker (tests/conftest.py, ONE_WORKER)
__all__ = ["server"]  # the module's own instance of the fixture


@pytest.fixture(scope="module")
def worker(server):
    """deploy/prefect.yaml deployed on a process work pool, and `prefect worker start --pool shardvec`.
    (On a server with no `shardvec serve`: its deployments have the same names, and a serve
    still running would start their runs itself, on its own data directory.)"""
    tmp, env = server["tmp"], {**server["env"]}
    data = tmp / "pool-data"
    write_corpus(data / "corpus")

    def prefect(*args):
        out = subprocess.run([str(BIN / "prefect"), "--no-prompt", *args], env=env, cwd=REPO, capture_output=True,
                             text=True, timeout=300, stdin=subprocess.DEVNULL)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout
    t = time.monotonic()
    prefect("work-pool", "create", "shardvec", "--type", "process")
    prefect("deploy", "--all", "--prefect-file", "deploy/prefect.yaml")
    for name in ("nightly/shardvec-nightly", "add-statements/shardvec-add-statements"):  # only the runs asked for
        found = get(f"{server['api']}/deployments/name/{name}")
        assert found.is_success, f"no deployment {name}: {found.text}"
        d = found.json()
        for schedule in d["schedules"]:
            assert call_api("DELETE", f"{server['api']}/deployments/{d['id']}/schedules/{schedule['id']}").is_success
    for run in post(f"{server['api']}/flow_runs/filter",
                          json={"flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}}}).json():
        call_api("DELETE", f"{server['api']}/flow_runs/{run['id']}")
    print(f"\nprefect deploy --all took {time.monotonic() - t:.1f} s")
    proc = subprocess.Popen([BIN / "prefect", "worker", "start", "--pool", "shardvec"], cwd=REPO,
                            env={**env, "SHARDVEC_DATA_DIR": str(data)}, stdout=open(tmp / "worker.log", "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    yield {**server, "data": data, "worker": proc}
    stop_groups([proc])


def test_work_pool_deployments_run_on_a_worker(worker):
    deployments = {d["name"]: d for d in post(f"{worker['api']}/deployments/filter",
                                                    json={"work_pools": {"name": {"any_": ["shardvec"]}}}).json()}
    assert set(deployments) == {"shardvec-nightly", "shardvec-backfill", "shardvec-add-statements"}
    assert deployments["shardvec-nightly"]["job_variables"]["env"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "30"
    t = time.monotonic()
    run = run_to_the_end(worker, "nightly/shardvec-nightly")
    print(f"\nnightly on the work pool: {time.monotonic() - t:.0f} s from trigger to Completed")
    assert run["state_type"] == "COMPLETED" and run["work_pool_name"] == "shardvec"
    report = table(artifacts(worker, run["id"])["shardvec-nightly-report"])
    assert report["statements"]["value"] == 352
    assert json.loads((worker["data"] / "CURRENT").read_text())["watermark"]["partitions"][-1] == "2026-11-03"


def test_a_run_refused_by_the_quality_gate_calls_the_webhook(worker):
    # a far weaker index than the published one's: its recall@10 drops, and the gate refuses it
    overrides = json.dumps({"index": {"n_trees": 1, "search_k": 10}, "quality": {"gate": True}})
    args = [str(BIN / "prefect"), "deployment", "run", "backfill/shardvec-backfill", "--watch",
            "--watch-timeout", "600", "--param", "mode=rebuild", "--param", f"overrides={overrides}"]
    out = subprocess.run(args, env=worker["env"], capture_output=True, text=True, timeout=700)
    run = flow_run(worker, run_id_in(out.stdout))
    assert run["state_type"] == "FAILED" and run["state_name"] == "Failed"  # a plain failure in the UI
    assert "Not published" in run["state"]["message"]
    alert = wait_for(lambda: [c for c in worker["hooks"] if run["id"] in c and "quality gate" in c], 60,
                     "the webhook call for the refused run")
    body = json.loads(alert[0])
    assert body["alert"] == "shardvec quality gate refused a run" and "recall" in body["message"]


def test_a_killed_cli_run_in_local_mode_is_marked_crashed(server):
    """`shardvec nightly` with no server configured runs beside a temporary one, which dies with
    it; `shardvec mark-crashed` (and the start of the next run) marks the dead run Crashed."""
    tmp = server["tmp"]
    data = tmp / "local-data"
    write_corpus(data / "corpus")
    env = {**server["env"], "PREFECT_HOME": str(tmp / "local-prefect")}  # no database yet: a new user's first run
    env.pop("PREFECT_API_URL")
    proc = subprocess.Popen([BIN / "shardvec", "nightly", "--data", str(data)], env=env, start_new_session=True,
                            stdout=open(tmp / "local.log", "w"), stderr=subprocess.STDOUT)
    path = wait_for(lambda: next((data / ".runs").glob("*.json"), None), 180, "the local run to register")
    run_id = path.stem
    assert group_members(proc.pid)
    killed_at = kill_group_and_check_it_landed(proc.pid, proc)  # the run and its temporary server: all gone
    out = subprocess.run([BIN / "shardvec", "mark-crashed", "--data", str(data)], env=env, capture_output=True,
                         text=True, timeout=120)
    print(f"\nlocal run: SIGKILL -> Crashed in {time.monotonic() - killed_at:.0f} s (mark-crashed)")
    assert out.stdout.strip() == f"marked flow run {run_id} Crashed", out.stdout + out.stderr
    # what the temporary server of mark-crashed stored, read from local mode's database itself
    # (`prefect flow-run inspect` would start a third temporary server, ~10 s of CPU, to say it)
    with sqlite3.connect(tmp / "local-prefect" / "prefect.db") as db:
        state = db.execute("SELECT s.type, s.message FROM flow_run AS r JOIN flow_run_state AS s ON s.id = r.state_id"
                           " WHERE r.id = ?", (run_id,)).fetchone()
    assert state is not None and state[0] == "CRASHED" and "is gone" in state[1], state
    assert not path.exists()
