"""As users run it: a real `prefect server`, `shardvec serve`, deployments triggered through the
API, artifacts read back, the UI page of a finished run rendered in headless Chromium; then
the ways it is operated (issue 17): a served nightly SIGKILLed and marked Crashed, alerts to a
webhook, the work-pool deployments of deploy/prefect.yaml on a worker, a killed CLI run.

One server for the whole module. Screenshots of the UI go to the module's temporary folder;
set SHARDVEC_SCREENSHOTS=DIR to keep them (anyone can regenerate them with this module).

Waits are polls with deadlines. So that they are short, the module's server, `shardvec serve`
and the worker poll every second (Prefect's default is 10 s), and the automation that marks
silent runs Crashed is installed from a copy of deploy/automations.yaml whose silence is
SILENCE seconds instead of 90 (heartbeats still come every 30 s, Prefect's minimum).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import SMALL_TOML, free_port, group_members, kill_group_and_check_it_landed, write_corpus

# One server for the module: under pytest-xdist (`make test`) all of it runs on one worker, in
# order (tests/conftest.py, ONE_WORKER).
pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
SMALL = SMALL_TOML + "[schedule]\ninbox_interval_seconds = 0\n"
CHROMIUM = shutil.which("chromium")
HEARTBEAT = 30  # seconds between a run's heartbeats: what shardvec sets, and Prefect's minimum
SILENCE = 60  # seconds without a heartbeat before a run is marked Crashed: two heartbeat periods (shipped: 90)
CRASH_DEADLINE = SILENCE + HEARTBEAT + 90  # from SIGKILL to Crashed we accept: the silence, a heartbeat period, slack


def call_api(method: str, url: str, **kw) -> httpx.Response:
    """One call to the Prefect API. The server answers 503 when its SQLite database is busy (a
    loaded machine, several processes writing) and Prefect's own client retries those: so do we."""
    deadline = time.monotonic() + 60
    while True:
        r = httpx.request(method, url, timeout=30, **kw)
        if r.status_code != 503 or time.monotonic() > deadline:
            return r
        time.sleep(0.5)


def get(url: str, **kw) -> httpx.Response:
    return call_api("GET", url, **kw)


def post(url: str, **kw) -> httpx.Response:
    return call_api("POST", url, **kw)


def wait_for(check, seconds: float, what: str, every: float = 0.5):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (httpx.HTTPError, OSError, KeyError, IndexError, ValueError):
            pass
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


class _Hooks(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        self.server.calls.append(body)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def _stop(procs):
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    return Path(os.environ.get("SHARDVEC_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))


def install_alerts(env: dict, webhook: str, automations: Path) -> None:
    out = subprocess.run([BIN / "shardvec", "alerts", "install", "--webhook", webhook, "--file", automations],
                         env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def automations_with_a_short_silence(tmp: Path) -> Path:
    """deploy/automations.yaml as shipped, but a run is marked Crashed after SILENCE seconds
    without a heartbeat instead of 90."""
    from shardvec.alerts import AUTOMATIONS
    spec = yaml.safe_load(AUTOMATIONS.read_text())
    silent = next(a for a in spec["automations"] if a["name"] == "shardvec: mark silent runs Crashed")
    assert silent["trigger"]["within"] == 90 and "for 90 s" in silent["actions"][0]["message"]
    silent["trigger"]["within"] = SILENCE
    silent["actions"][0]["message"] = silent["actions"][0]["message"].replace("for 90 s", f"for {SILENCE} s")
    path = tmp / "automations.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`shardvec server`, a webhook receiver, and `shardvec alerts install --webhook` pointed at it."""
    tmp = tmp_path_factory.mktemp("e2e")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    (tmp / "small.toml").write_text(SMALL)
    env = {**os.environ, "PREFECT_HOME": str(tmp / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "SHARDVEC_CONFIG": str(tmp / "small.toml"), "SHARDVEC_SERVER_PORT": str(port),
           # `shardvec serve` and the worker look for runs to start every second, not every 10 s
           "PREFECT_RUNNER_POLL_FREQUENCY": "1", "PREFECT_WORKER_QUERY_SECONDS": "1"}
    env.pop("PREFECT_API_URL", None)
    hooks = ThreadingHTTPServer(("127.0.0.1", 0), _Hooks)
    hooks.calls = []
    threading.Thread(target=hooks.serve_forever, daemon=True).start()
    t = time.monotonic()
    proc = subprocess.Popen([BIN / "shardvec", "server"], env=env, stdout=open(tmp / "server.log", "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    wait_for(lambda: get(f"{api}/health").status_code == 200, 120, "the Prefect server")
    print(f"\nprefect server up in {time.monotonic() - t:.1f} s")
    env["PREFECT_API_URL"] = api
    webhook = f"http://127.0.0.1:{hooks.server_port}/hook"
    install_alerts(env, webhook, automations_with_a_short_silence(tmp))
    yield {"api": api, "port": port, "env": env, "tmp": tmp, "hooks": hooks.calls, "server": proc,
           "webhook": webhook}
    hooks.shutdown()
    _stop([proc])


@pytest.fixture(scope="module")
def deployment(server):
    tmp = server["tmp"]
    write_corpus(tmp / "data" / "corpus")
    t = time.monotonic()
    proc = subprocess.Popen([BIN / "shardvec", "serve", "--data", str(tmp / "data")], env=server["env"],
                            stdout=open(tmp / "serve.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    wait_for(lambda: len(post(f"{server['api']}/deployments/filter", json={}).json()) == 3, 120,
             "the deployments")
    print(f"deployments served in {time.monotonic() - t:.1f} s")
    # `shardvec serve` installed the shipped automations before it registered the deployments
    # (a silence of 90 s): the short one again
    install_alerts(server["env"], server["webhook"], server["tmp"] / "automations.yaml")
    yield {**server, "data": tmp / "data", "serve": proc}
    _stop([proc])


def trigger(dep, name: str, *params: str) -> dict:
    """`prefect deployment run NAME --watch` as a user would; returns the finished flow run."""
    args = [str(BIN / "prefect"), "deployment", "run", name, "--watch", "--watch-timeout", "600"]
    for p in params:
        args += ["--param", p]
    out = subprocess.run(args, env=dep["env"], capture_output=True, text=True, timeout=700)
    assert out.returncode == 0, out.stdout + out.stderr
    return flow_run(dep, run_id_in(out.stdout))


def run_id_in(output: str) -> str:
    """The flow run `prefect deployment run` created (it prints `UUID: ...`)."""
    found = re.search(r"UUID: ([0-9a-f-]{36})", output)
    assert found, output
    return found.group(1)


def artifacts(dep, run_id: str) -> dict[str, dict]:
    found = post(f"{dep['api']}/artifacts/filter",
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


def test_a_run_cannot_move_the_deployments_data_directory(deployment):
    elsewhere = deployment["tmp"] / "elsewhere"
    elsewhere.mkdir()
    run_id = api_run(deployment, "add-statements/shardvec-add-statements",
                     {"records": [{"id": "x", "text": "smoke over sydney"}], "overrides": {"data_dir": str(elsewhere)}})
    state = wait_for(lambda: flow_run(deployment, run_id)["state_type"] in ("FAILED", "COMPLETED", "CRASHED")
                     and flow_run(deployment, run_id)["state_type"], 180, "the run to end")
    assert state == "FAILED" and list(elsewhere.iterdir()) == []
    import shardvec
    assert "x" not in shardvec.open(deployment["data"])


def test_backfill_rebuild_with_parameters(deployment):
    run = trigger(deployment, "backfill/shardvec-backfill", "mode=rebuild", "start=2026-11-02")
    assert run["state_type"] == "COMPLETED"
    assert run["parameters"]["mode"] == "rebuild"
    report = table(artifacts(deployment, run["id"])["shardvec-backfill-report"])
    assert report["statements"]["value"] == 352  # what was in stays in; everything retrained
    current = json.loads((deployment["data"] / "CURRENT").read_text())
    assert current["watermark"]["partitions"] == ["2026-11-01", "2026-11-02", "2026-11-03"]
    deployment["backfill_run"] = run["id"]


def test_add_statements_deployment_drains_the_inbox(deployment):
    inbox = deployment["data"] / "inbox"
    inbox.mkdir(exist_ok=True)
    (inbox / "new.jsonl").write_text(json.dumps({"id": "inbox/1", "text": "smoke from the fires drifted over sydney"}) + "\n")
    run = trigger(deployment, "add-statements/shardvec-add-statements")
    assert run["state_type"] == "COMPLETED"
    import shardvec
    assert "inbox/1" in shardvec.open(deployment["data"])


def chromium(tmp: Path, url: str, shot: Path | None = None, height: int = 1000) -> str:
    """The page's DOM after its scripts ran; with `shot`, also a screenshot of it."""
    common = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              f"--window-size=1400,{height}", "--virtual-time-budget=20000"]
    n = len(list(tmp.glob("chromium-*")))
    dom = subprocess.run(common + [f"--user-data-dir={tmp / f'chromium-{n}a'}", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120).stdout
    if shot:
        shot.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(common + [f"--user-data-dir={tmp / f'chromium-{n}b'}", f"--screenshot={shot}", url],
                       capture_output=True, timeout=120)
    return dom


SERIES = [(31, 119, 180), (255, 127, 14), (44, 160, 44)]  # matplotlib's C0, C1, C2: the chart's series


def chart_pixels(png: Path) -> list[int]:
    """Pixels of each of the chart's series colours, which nothing else on a Prefect page is
    drawn in (0 each on a page without the chart): the chart rendered if every one is there."""
    from PIL import Image
    img = Image.open(png).convert("RGB")
    near = lambda p, c: all(abs(a - b) < 20 for a, b in zip(p, c))  # noqa: E731
    return [sum(1 for y in range(img.height) for x in range(img.width) if near(img.getpixel((x, y)), c))
            for c in SERIES]


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is installed by `make test`")
def test_ui_page_of_the_finished_run_shows_state_and_artifacts(deployment, screenshots):
    run_id = deployment.get("nightly_run") or trigger(deployment, "nightly/shardvec-nightly")["id"]
    base = f"http://127.0.0.1:{deployment['port']}/v2"
    shot = screenshots / "flow-run-artifacts.png"
    dom = chromium(deployment["tmp"], f"{base}/runs/flow-run/{run_id}?tab=Artifacts", shot)
    assert "Completed" in dom
    for key in ("shardvec-nightly-report", "shardvec-nightly-summary", "shardvec-nightly-progress"):
        assert key in dom
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one (about 2 KB)
    # the latest summary artifact's own page (two runs in the history): the chart renders
    summary = artifacts(deployment, deployment["backfill_run"])["shardvec-backfill-summary"]
    chart = screenshots / "summary-artifact-chart.png"
    dom = chromium(deployment["tmp"], f"{base}/artifacts/artifact/{summary['id']}", chart, height=2400)
    assert "data:image/png;base64," in dom and "shardvec trend chart" in dom
    assert min(chart_pixels(chart)) > 30, f"the trend chart does not render in {chart}"


def test_summary_links_a_dask_performance_report_and_logs_say_what_happens(deployment):
    run_id = deployment["nightly_run"]
    summary = artifacts(deployment, run_id)["shardvec-nightly-summary"]["data"]
    assert "![shardvec trend chart](data:image/png;base64," in summary
    link = next(word for word in summary.split("(") if word.startswith("file://") and "dask-performance" in word)
    html = Path(link.split(")")[0].removeprefix("file://"))
    assert html.is_file() and html.parent.parent == deployment["data"] / "reports"
    assert "bokeh" in html.read_text()[:20_000].lower() and (html.parent / "report.json").is_file()
    logs = post(f"{deployment['api']}/logs/filter",
                      json={"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200}).json()
    lines = [entry["message"] for entry in logs]
    assert any(m.startswith("tokenize: started, 3 files") for m in lines), lines
    assert any(m.startswith("tokenize: finished in ") and "records 352 (" in m and "/s)" in m for m in lines)
    assert any(m.startswith("similarity-rows: started, ") and "tile" in m for m in lines)
    assert any(m.startswith("publish: finished in ") for m in lines)


def api_run(dep, name: str, parameters: dict | None = None) -> str:
    """Create a flow run of deployment NAME through the API, without waiting; its id."""
    flow, deployment_name = name.split("/")
    d = get(f"{dep['api']}/deployments/name/{flow}/{deployment_name}").json()
    r = post(f"{dep['api']}/deployments/{d['id']}/create_flow_run", json={"parameters": parameters or {}})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def heartbeats(dep, run_id: str) -> list[dict]:
    """The heartbeat events of a flow run the server has received."""
    r = post(f"{dep['api']}/events/filter", json={"filter": {
        "event": {"name": ["prefect.flow-run.heartbeat"]}, "resource": {"id": [f"prefect.flow-run.{run_id}"]}}})
    r.raise_for_status()
    return r.json()["events"]


def flow_run(dep, run_id: str) -> dict:
    return get(f"{dep['api']}/flow_runs/{run_id}").json()


def registered_pid(data: Path, run_id: str, seconds: float = 180) -> int:
    """The pid the run wrote under <data>/.runs once its flow started (flows/operate.py)."""
    path = data / ".runs" / f"{run_id}.json"
    return wait_for(lambda: json.loads(path.read_text())["pid"], seconds, f"{path}")


def test_a_killed_served_nightly_is_marked_crashed_and_alerts(deployment):
    """Issue 17: SIGKILL the whole `shardvec serve` process group while its nightly runs (as
    the OOM killer or a reboot would); heartbeats stop, and the automation marks it Crashed."""
    (deployment["data"] / "corpus" / "2026-11-04").mkdir()
    shutil.copy(deployment["data"] / "corpus" / "2026-11-01" / "lee.txt",
                deployment["data"] / "corpus" / "2026-11-04" / "again.txt")  # something new to do
    run_id = api_run(deployment, "nightly/shardvec-nightly")
    pid = registered_pid(deployment["data"], run_id)
    serve = deployment["serve"]
    assert pid in group_members(serve.pid)  # the flow run is a child in serve's group
    wait_for(lambda: flow_run(deployment, run_id)["state_type"] == "RUNNING", 60, "the run to be Running")
    # the automation watches runs that sent a heartbeat: kill only once the server has the first
    # (sent when the run starts, but through a queue a loaded machine may hold for seconds)
    wait_for(lambda: heartbeats(deployment, run_id), 90, "the run's first heartbeat to reach the server")
    killed_at = kill_group_and_check_it_landed(serve.pid, serve)  # serve, the run, its Dask workers: all gone
    assert pid not in group_members(serve.pid)
    assert flow_run(deployment, run_id)["state_type"] == "RUNNING"  # nobody told the server yet
    state = wait_for(lambda: (r := flow_run(deployment, run_id))["state_type"] == "CRASHED" and r["state"],
                     CRASH_DEADLINE, "the killed run to be marked Crashed", every=2)
    seconds = time.monotonic() - killed_at
    print(f"\nSIGKILL -> Crashed in {seconds:.0f} s")
    assert f"No heartbeat for {SILENCE} s" in state["message"]  # the short-silence automation fired
    alert = wait_for(lambda: [c for c in deployment["hooks"] if run_id in c and "Crashed" in c], 60,
                     "the webhook call for the crashed nightly")
    assert json.loads(alert[0])["alert"] == "shardvec nightly Crashed"
    deployment["crashed_run"] = run_id


@pytest.fixture(scope="module")
def worker(server, deployment):
    """deploy/prefect.yaml deployed on a process work pool, and `prefect worker start --pool shardvec`.
    Its deployments take the names `shardvec serve` registered, and a deployment keeps its id
    when it is deployed again: a `shardvec serve` still running would start their runs itself,
    on its own data directory. So it is stopped first (the crash test has killed it already,
    unless that test failed)."""
    _stop([deployment["serve"]])
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
    for name in ("nightly/shardvec-nightly", "add-statements/shardvec-add-statements"):
        prefect("deployment", "schedule", "clear", name, "-y")  # only the runs this test asks for
    for run in post(f"{server['api']}/flow_runs/filter",
                          json={"flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}}}).json():
        call_api("DELETE", f"{server['api']}/flow_runs/{run['id']}")
    print(f"\nprefect deploy --all took {time.monotonic() - t:.1f} s")
    proc = subprocess.Popen([BIN / "prefect", "worker", "start", "--pool", "shardvec"], cwd=REPO,
                            env={**env, "SHARDVEC_DATA_DIR": str(data)}, stdout=open(tmp / "worker.log", "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    yield {**server, "data": data, "worker": proc}
    _stop([proc])


def test_work_pool_deployments_run_on_a_worker(worker):
    deployments = {d["name"]: d for d in post(f"{worker['api']}/deployments/filter",
                                                    json={"work_pools": {"name": {"any_": ["shardvec"]}}}).json()}
    assert set(deployments) == {"shardvec-nightly", "shardvec-backfill", "shardvec-add-statements"}
    assert deployments["shardvec-nightly"]["job_variables"]["env"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "30"
    t = time.monotonic()
    run = trigger(worker, "nightly/shardvec-nightly")
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
    assert run["state_type"] == "FAILED" and "quality gate" not in run["state_name"]
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
    env = {**server["env"], "PREFECT_HOME": str(tmp / "local-prefect")}
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
    shown = subprocess.run([BIN / "prefect", "flow-run", "inspect", run_id], env=env, capture_output=True,
                           text=True, timeout=120).stdout
    assert "CRASHED" in shown and "is gone" in shown and not path.exists()


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is installed by `make test`")
def test_runs_list_shows_the_crashed_run(deployment, screenshots):
    run_id = deployment.get("crashed_run")
    if run_id is None:
        pytest.skip("needs the crashed run of test_a_killed_served_nightly_is_marked_crashed_and_alerts")
    shot = screenshots / "runs-with-crashed.png"
    dom = chromium(deployment["tmp"], f"http://127.0.0.1:{deployment['port']}/v2/runs", shot, height=2000)
    assert "Crashed" in dom and flow_run(deployment, run_id)["name"] in dom
    assert shot.stat().st_size > 20_000
