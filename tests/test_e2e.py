"""As users run it: a real `prefect server`, `shardvec serve`, deployments triggered through the
API, artifacts read back, the UI page of a finished run rendered in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import SMALL_TOML, free_port, write_corpus

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
SMALL = SMALL_TOML + "[schedule]\ninbox_interval_seconds = 0\n"


def wait_for(check, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (httpx.HTTPError, OSError, KeyError, IndexError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    (tmp / "small.toml").write_text(SMALL)
    write_corpus(tmp / "data" / "corpus")
    env = {**os.environ, "PREFECT_HOME": str(tmp / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "SHARDVEC_CONFIG": str(tmp / "small.toml"), "SHARDVEC_SERVER_PORT": str(port)}
    env.pop("PREFECT_API_URL", None)
    procs = []
    t = time.monotonic()
    procs.append(subprocess.Popen([BIN / "shardvec", "server"], env=env, stdout=open(tmp / "server.log", "w"),
                                  stderr=subprocess.STDOUT, start_new_session=True))
    wait_for(lambda: httpx.get(f"{api}/health").status_code == 200, 120, "the Prefect server")
    server_start = time.monotonic() - t
    env["PREFECT_API_URL"] = api
    t = time.monotonic()
    procs.append(subprocess.Popen([BIN / "shardvec", "serve", "--data", str(tmp / "data")], env=env,
                                  stdout=open(tmp / "serve.log", "w"), stderr=subprocess.STDOUT,
                                  start_new_session=True))
    wait_for(lambda: len(httpx.post(f"{api}/deployments/filter", json={}).json()) == 3, 120, "the deployments")
    serve_start = time.monotonic() - t
    print(f"\nprefect server up in {server_start:.1f} s, deployments served in {serve_start:.1f} s")
    yield {"api": api, "port": port, "env": env, "data": tmp / "data", "tmp": tmp}
    for p in procs:
        os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


def trigger(dep, name: str, *params: str) -> dict:
    """`prefect deployment run NAME --watch` as a user would; returns the finished flow run."""
    args = [str(BIN / "prefect"), "deployment", "run", name, "--watch", "--watch-timeout", "600"]
    for p in params:
        args += ["--param", p]
    out = subprocess.run(args, env=dep["env"], capture_output=True, text=True, timeout=700)
    assert out.returncode == 0, out.stdout + out.stderr
    runs = httpx.post(f"{dep['api']}/flow_runs/filter", json={"sort": "EXPECTED_START_TIME_DESC", "limit": 1}).json()
    return runs[0]


def artifacts(dep, run_id: str) -> dict[str, dict]:
    found = httpx.post(f"{dep['api']}/artifacts/filter",
                       json={"artifacts": {"flow_run_id": {"any_": [run_id]}}}).json()
    return {a["key"]: a for a in found}


def table(artifact: dict) -> dict:
    data = artifact["data"]
    rows = json.loads(data) if isinstance(data, str) else data
    return {r["item"]: r for r in rows}


def test_nightly_triggered_through_the_api_reports_in_artifacts(deployment):
    run = trigger(deployment, "nightly/shardvec-nightly")
    assert run["state_type"] == "COMPLETED"
    found = artifacts(deployment, run["id"])
    assert {"shardvec-nightly-report", "shardvec-nightly-summary", "shardvec-nightly-progress"} <= set(found)
    report = table(found["shardvec-nightly-report"])
    assert report["records read"]["value"] == 353 and report["records quarantined"]["value"] == 1
    assert report["statements"]["value"] == 352 and report["recall@10 similarity rows"]["value"] == 1.0
    assert report["word vectors"]["value"] > 100 and report["LSI vocabulary"]["value"] > 1000
    steps = {k: v for k, v in report.items() if k.startswith("step ")}
    assert len(steps) >= 8 and all(v["seconds"] is not None and v["peak_rss_mb"] > 0 for v in steps.values())
    assert "published" in found["shardvec-nightly-summary"]["data"]
    assert float(found["shardvec-nightly-progress"]["data"]) == 100.0
    deployment["nightly_run"] = run["id"]


def test_backfill_rebuild_with_parameters(deployment):
    run = trigger(deployment, "backfill/shardvec-backfill", "mode=rebuild", "start=2026-11-02")
    assert run["state_type"] == "COMPLETED"
    assert run["parameters"]["mode"] == "rebuild"
    report = table(artifacts(deployment, run["id"])["shardvec-backfill-report"])
    assert report["statements"]["value"] == 352  # what was in stays in; everything retrained
    current = json.loads((deployment["data"] / "CURRENT").read_text())
    assert current["watermark"]["partitions"] == ["2026-11-01", "2026-11-02", "2026-11-03"]


def test_add_statements_deployment_drains_the_inbox(deployment):
    inbox = deployment["data"] / "inbox"
    inbox.mkdir(exist_ok=True)
    (inbox / "new.jsonl").write_text(json.dumps({"id": "inbox/1", "text": "smoke from the fires drifted over sydney"}) + "\n")
    run = trigger(deployment, "add-statements/shardvec-add-statements")
    assert run["state_type"] == "COMPLETED"
    import shardvec
    assert "inbox/1" in shardvec.open(deployment["data"])


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is installed by `make test`")
def test_ui_page_of_the_finished_run_shows_state_and_artifacts(deployment):
    run_id = deployment.get("nightly_run") or trigger(deployment, "nightly/shardvec-nightly")["id"]
    url = f"http://127.0.0.1:{deployment['port']}/v2/runs/flow-run/{run_id}?tab=Artifacts"
    shot = deployment["tmp"] / "flow-run.png"
    common = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--window-size=1400,1000", "--virtual-time-budget=20000"]
    dom = subprocess.run(common + [f"--user-data-dir={deployment['tmp'] / 'c1'}", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120).stdout
    subprocess.run(common + [f"--user-data-dir={deployment['tmp'] / 'c2'}", f"--screenshot={shot}", url],
                   capture_output=True, timeout=120)
    assert "Completed" in dom
    for key in ("shardvec-nightly-report", "shardvec-nightly-summary", "shardvec-nightly-progress"):
        assert key in dom
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one (about 2 KB)
