"""What the end-to-end modules share: a real `prefect server` with a webhook receiver and the
short-silence automations (`server`, a module-scoped fixture each module imports and so gets
its own of), polls with deadlines, the Prefect API (retried on 503), triggering deployments
as users do, reading artifacts, Chromium.

Waits are polls with deadlines. So that they are short, `shardvec serve` and the worker look
for runs to start every second (Prefect's default is 10 s), and the automation that marks silent
runs Crashed is installed from a copy of deploy/automations.yaml whose silence is SILENCE
seconds instead of 90 (heartbeats still come every 30 s, Prefect's minimum).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml

from tests.environment import LEAN_PREFECT, NO_EPHEMERAL
from tests.processes import BIN, free_port, stop_groups
from tests.runs import SUBPROCESS_TOML
from tests.shared import migrated_prefect_db

REPO = Path(__file__).resolve().parents[2]
# SUBPROCESS_TOML with no inbox drain on a schedule: the tests start each run they wait for
E2E_TOML = SUBPROCESS_TOML + "[schedule]\ninbox_interval_seconds = 0\n"
CHROMIUM = shutil.which("chromium")
SCHEDULER_LOOP = 5  # seconds between the scheduler service's loops (Prefect's default: 60)
HEARTBEAT = 30  # seconds between a run's heartbeats: what shardvec sets, and Prefect's minimum
SILENCE = 60  # seconds without a heartbeat before a run is marked Crashed: two heartbeat periods (shipped: 90)
CRASH_DEADLINE = SILENCE + HEARTBEAT + 90  # from SIGKILL to Crashed we accept: the silence, a heartbeat period, slack


def call_api(method: str, url: str, retry: bool | None = None, **kw) -> httpx.Response:
    """One call to the Prefect API. The server answers 503 when its SQLite database is busy (a
    loaded machine, several processes writing) and Prefect's own client retries those: so do we.
    On a loaded CI machine the server can also take longer than a read timeout to answer; a call
    that is safe to repeat (a GET, or one the caller says is idempotent) is then tried again."""
    retry = method == "GET" if retry is None else retry
    deadline = time.monotonic() + 120
    while True:
        try:
            r = httpx.request(method, url, timeout=30, **kw)
        except httpx.TimeoutException:
            if not retry or time.monotonic() > deadline:
                raise
            continue
        if r.status_code != 503 or time.monotonic() > deadline:
            return r
        time.sleep(0.5)


def get(url: str, **kw) -> httpx.Response:
    return call_api("GET", url, **kw)


def post(url: str, retry: bool = False, **kw) -> httpx.Response:
    return call_api("POST", url, retry=retry, **kw)


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


def install_alerts(env: dict, webhook: str, automations: Path) -> None:
    out = subprocess.run(
        [BIN / "shardvec", "alerts", "install", "--webhook", webhook, "--file", automations],
        env=env,
        capture_output=True,
        text=True,
    )
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


def users_env(tmp: Path, port: int | None = None) -> dict:
    """The environment of the end-to-end modules' processes, as users run them (no server named
    yet): Prefect's home and <tmp>/small.toml (E2E_TOML) in `tmp`, every service of a server they
    start, logs sent to it; `port` is the one `shardvec server` listens on."""
    (tmp / "small.toml").write_text(E2E_TOML)
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "SHARDVEC_CONFIG": str(tmp / "small.toml"),
        # `shardvec serve` and the worker look for runs to start every second, not every 10 s
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        # the server's scheduler creates the runs of a schedule every SCHEDULER_LOOP s, not every 60 s
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": str(SCHEDULER_LOOP),
    }
    if port is not None:
        env["SHARDVEC_SERVER_PORT"] = str(port)
    env.pop("PREFECT_API_URL", None)
    for name in {**LEAN_PREFECT, **NO_EPHEMERAL}:  # as users run it: every service of the server, logs sent to it
        env.pop(name, None)
    return env


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`shardvec server` (serving the reports of <tmp>/data), a webhook receiver, and `shardvec
    alerts install --webhook` pointed at it."""
    tmp = tmp_path_factory.mktemp("e2e")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = users_env(tmp, port)
    migrated_prefect_db(tmp_path_factory, tmp / "prefect" / "prefect.db")
    hooks = ThreadingHTTPServer(("127.0.0.1", 0), _Hooks)
    hooks.calls = []
    threading.Thread(target=hooks.serve_forever, daemon=True).start()
    t = time.monotonic()
    proc = subprocess.Popen(
        [BIN / "shardvec", "server", "--data", tmp / "data"],
        env=env,
        stdout=open(tmp / "server.log", "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:  # stopped even when what follows fails: pytest runs no teardown for a fixture that raised
        wait_for(lambda: get(f"{api}/health").status_code == 200, 120, "the Prefect server")
        print(f"\nprefect server up in {time.monotonic() - t:.1f} s")
        env["PREFECT_API_URL"] = api
        webhook = f"http://127.0.0.1:{hooks.server_port}/hook"
        install_alerts(env, webhook, automations_with_a_short_silence(tmp))
        yield {
            "api": api,
            "port": port,
            "env": env,
            "tmp": tmp,
            "hooks": hooks.calls,
            "server": proc,
            "webhook": webhook,
        }
    finally:
        hooks.shutdown()
        stop_groups([proc])


def trigger(dep, name: str, *params: str) -> dict:
    """`prefect deployment run NAME --watch` as a user would; returns the finished flow run."""
    args = [str(BIN / "prefect"), "deployment", "run", name, "--watch", "--watch-timeout", "600"]
    for p in params:
        args += ["--param", p]
    out = subprocess.run(args, env=dep["env"], capture_output=True, text=True, timeout=700)
    assert out.returncode == 0, out.stdout + out.stderr
    return flow_run(dep, run_id_in(out.stdout))


def prefect_cli(env: dict, *args) -> str:
    """`prefect ARGS` against the test's server, answering no prompt; its stdout, or the test fails."""
    out = subprocess.run(
        [str(BIN / "prefect"), "--no-prompt", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def deploy_to_pool(env: dict, *deploy_args) -> None:
    """The process work pool "shardvec" and `prefect deploy DEPLOY_ARGS` onto it."""
    prefect_cli(env, "work-pool", "create", "shardvec", "--type", "process")
    prefect_cli(env, "deploy", *deploy_args)


def start_pool_worker(env: dict, data: Path, log: Path) -> subprocess.Popen:
    """A process worker of the "shardvec" pool in a session of its own, its runs on `data`."""
    return subprocess.Popen(
        [BIN / "prefect", "worker", "start", "--pool", "shardvec"],
        cwd=REPO,
        env={**env, "SHARDVEC_DATA_DIR": str(data)},
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def run_to_the_end(dep, name: str, parameters: dict | None = None, seconds: float = 600) -> dict:
    """A run of deployment NAME created through the API, as the UI's Run button does (no
    `prefect` CLI process to start: trigger() is that path); returns the finished flow run."""
    run_id = api_run(dep, name, parameters)
    return wait_for(
        lambda: (r := flow_run(dep, run_id))["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") and r,
        seconds,
        f"the run of {name} to end",
    )


def run_id_in(output: str) -> str:
    """The flow run `prefect deployment run` created (it prints `UUID: ...`)."""
    found = re.search(r"UUID: ([0-9a-f-]{36})", output)
    assert found, output
    return found.group(1)


def artifacts(dep, run_id: str) -> dict[str, dict]:
    found = post(f"{dep['api']}/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run_id]}}}).json()
    return {a["key"]: a for a in found}


def table(artifact: dict) -> dict:
    data = artifact["data"]
    rows = json.loads(data) if isinstance(data, str) else data
    return {r["item"]: r for r in rows}


def chromium(tmp: Path, url: str, shot: Path | None = None, height: int = 1000) -> str:
    """The page's DOM after its scripts ran; with `shot`, also a screenshot of it."""
    common = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--window-size=1400,{height}",
        "--virtual-time-budget=20000",
    ]
    n = len(list(tmp.glob("chromium-*")))
    args = [f"--user-data-dir={tmp / f'chromium-{n}'}", "--dump-dom"]
    if shot:  # one page load gives both
        shot.parent.mkdir(parents=True, exist_ok=True)
        args.append(f"--screenshot={shot}")
    home = tmp / "chromium-home"  # its crash reports and dconf cache: not in the user's home
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
    }
    return subprocess.run(common + args + [url], capture_output=True, text=True, timeout=120, env=env).stdout


class DevTools:
    """One page of a headless Chromium, driven over the DevTools protocol: what --dump-dom cannot
    do (act on the page, read canvases and shadow DOM). `requests` are the URLs it asked for."""

    def __init__(self, ws):
        self.ws, self.last_id, self.requests = ws, 0, []

    def call(self, method: str, **params) -> dict:
        self.last_id += 1
        self.ws.send(json.dumps({"id": self.last_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=120))
            if message.get("id") == self.last_id:
                assert "error" not in message, message
                return message["result"]
            if message.get("method") == "Network.requestWillBeSent":
                self.requests.append(message["params"]["request"]["url"])

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        return path


@contextmanager
def offline_chromium(tmp: Path, height: int = 1000) -> Iterator[DevTools]:
    """Headless Chromium with no network but this machine's loopback (every other host goes through
    a proxy that refuses: a port bound and never listened on), network events recorded."""
    from websockets.sync.client import connect

    profile = tmp / f"chromium-{len(list(tmp.glob('chromium-*')))}"
    home = tmp / "chromium-home"
    with socket.socket() as refusing:
        refusing.bind(("127.0.0.1", 0))
        proc = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-sync",
                "--disable-background-networking",
                "--disable-component-update",
                f"--window-size=1400,{height}",
                f"--user-data-dir={profile}",
                "--remote-debugging-port=0",
                f"--proxy-server=http://127.0.0.1:{refusing.getsockname()[1]}",
                "about:blank",
            ],
            env={
                **os.environ,
                "HOME": str(home),
                "XDG_CONFIG_HOME": str(home / ".config"),
                "XDG_CACHE_HOME": str(home / ".cache"),
            },
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            port = wait_for(lambda: (profile / "DevToolsActivePort").read_text().split()[0], 60, "Chromium's DevTools")
            page = wait_for(
                lambda: next(
                    (t for t in httpx.get(f"http://127.0.0.1:{port}/json/list").json() if t["type"] == "page"), None
                ),
                60,
                "Chromium's page",
            )
            with connect(page["webSocketDebuggerUrl"], max_size=None) as ws:
                tools = DevTools(ws)
                tools.call("Network.enable")
                yield tools
        finally:
            stop_groups([proc])


SERIES = [(31, 119, 180), (255, 127, 14), (44, 160, 44)]  # matplotlib's C0, C1, C2: the chart's series


def chart_pixels(png: Path) -> list[int]:
    """Pixels of each of the chart's series colours, which nothing else on a Prefect page is
    drawn in (0 each on a page without the chart): the chart rendered if every one is there."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(png).convert("RGB"), dtype=np.int16)  # height x width x 3
    return [int((np.abs(pixels - np.array(c, dtype=np.int16)) < 20).all(axis=-1).sum()) for c in SERIES]


def api_run(dep, name: str, parameters: dict | None = None) -> str:
    """Create a flow run of deployment NAME through the API, without waiting; its id."""
    flow, deployment_name = name.split("/")
    d = get(f"{dep['api']}/deployments/name/{flow}/{deployment_name}").json()
    # the idempotency key makes a retried create (the first timed out) return the same run
    r = post(
        f"{dep['api']}/deployments/{d['id']}/create_flow_run",
        retry=True,
        json={"parameters": parameters or {}, "idempotency_key": uuid.uuid4().hex},
    )
    assert r.status_code in (200, 201), r.text  # 200: the retried create found its run
    return r.json()["id"]


def heartbeats(dep, run_id: str) -> list[dict]:
    """The heartbeat events of a flow run the server has received."""
    r = post(
        f"{dep['api']}/events/filter",
        json={
            "filter": {
                "event": {"name": ["prefect.flow-run.heartbeat"]},
                "resource": {"id": [f"prefect.flow-run.{run_id}"]},
            }
        },
    )
    r.raise_for_status()
    return r.json()["events"]


def cron_due_soon(seconds: float = 60) -> tuple[str, datetime]:
    """A daily cron (UTC) whose next firing is the first whole minute at least `seconds` from
    now: late enough for the deployments to be registered (up to ~40 s on a loaded machine) and
    the server's scheduler service (a loop every SCHEDULER_LOOP seconds here) to have created the
    run before it is due, and it fires once in a test's life."""
    due = (datetime.now(timezone.utc) + timedelta(seconds=seconds + 59)).replace(second=0, microsecond=0)
    return f"{due.minute} {due.hour} * * *", due


def scheduled_run(dep, deployment: str, due: datetime, seconds: float = 600) -> dict:
    """The run the scheduler created for DEPLOYMENT at `due` (nobody triggered it), once it ended."""
    flow, name = deployment.split("/")
    d = get(f"{dep['api']}/deployments/name/{flow}/{name}").json()

    def ended():
        found = post(
            f"{dep['api']}/flow_runs/filter",
            json={
                "flow_runs": {
                    "deployment_id": {"any_": [d["id"]]},
                    "expected_start_time": {"after_": (due - timedelta(seconds=1)).isoformat()},
                }
            },
        ).json()
        run = next(
            (r for r in found if r["auto_scheduled"] and datetime.fromisoformat(r["expected_start_time"]) == due), None
        )
        return run and run["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") and run

    return wait_for(
        ended,
        (due - datetime.now(timezone.utc)).total_seconds() + seconds,
        f"the scheduled run of {deployment} due at {due:%H:%M} UTC to end",
        every=2,
    )


def flow_run(dep, run_id: str) -> dict:
    return get(f"{dep['api']}/flow_runs/{run_id}").json()


def registered_pid(data: Path, run_id: str, seconds: float = 180) -> int:
    """The pid the run wrote under <data>/.runs once its flow started (flows/operate.py)."""
    path = data / ".runs" / f"{run_id}.json"
    return wait_for(lambda: json.loads(path.read_text())["pid"], seconds, f"{path}")
