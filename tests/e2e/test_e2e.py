"""As users run it: a real `prefect server`, `shardvec serve`, deployments triggered through the
API, artifacts read back, the UI page of a finished run rendered in headless Chromium, and a
served nightly SIGKILLed and marked Crashed, with its alert to a webhook (issue 17). The work
pool and local mode are tests/e2e/test_e2e_pool.py, on a server of their own, so that under
pytest-xdist the two modules run side by side.

One server for the module (tests/e2e/harness.py). Screenshots of the UI go to the module's temporary
folder; set SHARDVEC_SCREENSHOTS=DIR to keep them (anyone can regenerate them with this module).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.corpora import write_corpus
from tests.e2e.harness import (
    CHROMIUM,
    CRASH_DEADLINE,
    SILENCE,
    api_run,
    artifacts,
    chart_pixels,
    chromium,
    cron_due_soon,
    flow_run,
    get,
    heartbeats,
    install_alerts,
    offline_chromium,
    post,
    registered_pid,
    run_to_the_end,
    scheduled_run,
    server,
    table,
    trigger,
    wait_for,
)
from tests.processes import BIN, group_members, kill_group_and_check_it_landed, stop_groups

# One server for the module: under pytest-xdist (`make test`) all of it runs on one worker, in
# order (tests/conftest.py, ONE_WORKER).
pytestmark = pytest.mark.slow
__all__ = ["server"]  # the module's own instance of the fixture


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    return Path(os.environ.get("SHARDVEC_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))


@pytest.fixture(scope="module")
def deployment(server):
    tmp = server["tmp"]
    write_corpus(tmp / "data" / "corpus")
    t = time.monotonic()
    cron, due = cron_due_soon()  # the nightly fires by itself a minute or two from now
    proc = subprocess.Popen(
        [BIN / "shardvec", "serve", "--data", str(tmp / "data")],
        env={**server["env"], "SHARDVEC_SCHEDULE_NIGHTLY_CRON": cron},
        stdout=open(tmp / "serve.log", "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    wait_for(lambda: len(post(f"{server['api']}/deployments/filter", json={}).json()) == 3, 120, "the deployments")
    print(f"deployments served in {time.monotonic() - t:.1f} s")
    # `shardvec serve` installed the shipped automations before it registered the deployments
    # (a silence of 90 s): the short one again
    install_alerts(server["env"], server["webhook"], server["tmp"] / "automations.yaml")
    yield {**server, "data": tmp / "data", "serve": proc, "nightly_due": due}
    stop_groups([proc])


def test_the_scheduled_nightly_fires_by_itself_and_reports_in_artifacts(deployment):
    """Issue 32: nobody triggers it; the server's scheduler creates the run from `shardvec serve`'s
    cron, serve runs it, and it reports."""
    run = scheduled_run(deployment, "nightly/shardvec-nightly", deployment["nightly_due"])
    assert run["state_type"] == "COMPLETED" and run["auto_scheduled"]
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
    run = run_to_the_end(
        deployment,
        "add-statements/shardvec-add-statements",
        {"records": [{"id": "x", "text": "smoke over sydney"}], "overrides": {"data_dir": str(elsewhere)}},
        seconds=180,
    )
    assert run["state_type"] == "FAILED" and list(elsewhere.iterdir()) == []
    import shardvec

    assert "x" not in shardvec.open(deployment["data"])


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is installed by `make test`")
def test_the_run_form_describes_every_parameter(deployment, screenshots):
    """Issue 32: a deployment's Custom run page says what each parameter is (from the flow's
    `Args:` docstring), and each knob `overrides` may change (from config/default.toml); here
    opened as a link with [index] nprobe filled in, as the UI's own "Custom run" links do."""
    import html
    from urllib.parse import quote

    d = post(
        f"{deployment['api']}/deployments/filter", json={"deployments": {"name": {"any_": ["shardvec-backfill"]}}}
    ).json()[0]
    schema = d["parameter_openapi_schema"]
    assert list(schema["properties"]) == ["start", "end", "partitions", "mode", "overrides", "force"]
    index = schema["definitions"]["IndexOverrides"]["properties"]
    shot = screenshots / "backfill-run-form.png"
    prefilled = quote(json.dumps({"overrides": {"index": {"nprobe": 50000}}}))
    url = f"http://127.0.0.1:{deployment['port']}/v2/deployments/deployment/{d['id']}/run?parameters={prefilled}"
    dom = " ".join(html.unescape(chromium(deployment["tmp"], url, shot, height=3000)).split())
    for name, spec in [*schema["properties"].items(), *index.items()]:
        assert " ".join(spec["description"].split()) in dom, f"no description of {name}"
    assert 'value="50000"' in dom and "data_dir" not in dom  # what a run may not change is not offered
    assert shot.stat().st_size > 20_000


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
    (inbox / "new.jsonl").write_text(
        json.dumps({"id": "inbox/1", "text": "smoke from the fires drifted over sydney"}) + "\n"
    )
    run = run_to_the_end(deployment, "add-statements/shardvec-add-statements")
    assert run["state_type"] == "COMPLETED"
    import shardvec

    assert "inbox/1" in shardvec.open(deployment["data"])


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is installed by `make test`")
def test_ui_page_of_the_finished_run_shows_state_and_artifacts(deployment, screenshots):
    run_id = deployment.get("nightly_run") or run_to_the_end(deployment, "nightly/shardvec-nightly")["id"]
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


def the_nightly(deployment) -> str:
    """The module's nightly run that built a version (the scheduled one; one triggered now when
    that test was not run): a later nightly finds nothing new and runs few tasks."""
    if "nightly_run" not in deployment:
        deployment["nightly_run"] = run_to_the_end(deployment, "nightly/shardvec-nightly")["id"]
    return deployment["nightly_run"]


def dask_report_of(deployment, run_id: str) -> tuple[str, Path]:
    """The http link of the run's Dask performance report (its link artifact), and its file."""
    base = f"http://127.0.0.1:{deployment['port']}/shardvec/reports/"
    link = re.fullmatch(
        r"\[Dask performance report\]\((.+)\)", artifacts(deployment, run_id)["shardvec-nightly-dask-report"]["data"]
    ).group(1)
    assert link.startswith(base) and link.endswith("/dask-performance.html"), link
    return link, deployment["data"] / "reports" / link.removeprefix(base)


# The view of the report's "Task Stream" tab, found by walking bokeh's views; its task count and
# how many pixels of its canvas bokeh painted in colour (tasks are coloured, axes and text grey)
TASK_STREAM = """(() => {
  const tabs = Bokeh.documents[0].roots()[0];
  const panel = tabs.tabs.findIndex(t => t.title === "Task Stream");
  tabs.active = panel;
  const figure = tabs.tabs[panel].child;
  const walk = function* (v) { yield v; for (const c of v.children()) yield* walk(c); };
  const view = [...Bokeh.index.roots].flatMap(r => [...walk(r)]).find(v => v.model === figure);
  const canvas = view.canvas_view.primary.canvas;
  const px = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let coloured = 0;
  for (let i = 0; i < px.length; i += 4)
    if (px[i + 3] > 0 && Math.max(px[i], px[i + 1], px[i + 2]) - Math.min(px[i], px[i + 1], px[i + 2]) > 60) coloured++;
  return {tasks: figure.renderers[0].data_source.get_length(), pixels: canvas.width * canvas.height, coloured};
})()"""


def test_summary_links_a_dask_performance_report_and_logs_say_what_happens(deployment, screenshots):
    run_id = the_nightly(deployment)
    found = artifacts(deployment, run_id)
    summary = found["shardvec-nightly-summary"]["data"]
    assert "![shardvec trend chart](data:image/png;base64," in summary
    link, html = dask_report_of(deployment, run_id)
    assert html.is_file() and html.parent.parent == deployment["data"] / "reports"
    assert (
        f"]({link})" in summary
        and found["shardvec-nightly-dask-report"]["data"] == f"[Dask performance report]({link})"
    )
    served = get(link)  # over http from `shardvec server`, which a browser follows from the UI (file:// it refuses)
    assert served.status_code == 200 and served.content == html.read_bytes()
    assert "<title>Dask Performance Report</title>" in served.text and (html.parent / "report.json").is_file()
    if CHROMIUM:  # in the UI: the run's Artifacts tab lists the link, whose page (a click away) holds it
        ui = f"http://127.0.0.1:{deployment['port']}/v2"
        dom = chromium(
            deployment["tmp"],
            f"{ui}/runs/flow-run/{run_id}?tab=Artifacts",
            screenshots / "flow-run-artifacts-dask-report.png",
        )
        assert "shardvec-nightly-dask-report" in dom
        shot = screenshots / "dask-report-link-artifact.png"
        dom = chromium(
            deployment["tmp"], f"{ui}/artifacts/artifact/{found['shardvec-nightly-dask-report']['id']}", shot
        )
        assert f'href="{link}"' in dom, shot
    logs = post(
        f"{deployment['api']}/logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200}
    ).json()
    lines = [entry["message"] for entry in logs]
    assert any(m.startswith("tokenize: started, 3 files") for m in lines), lines
    assert any(m.startswith("tokenize: finished in ") and "records 352 (" in m and "/s)" in m for m in lines)
    assert any(m.startswith("similarity-rows: started, ") and " task" in m for m in lines)
    assert any(m.startswith("publish: finished in ") for m in lines)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is installed by `make test`")
def test_the_dask_performance_report_renders_offline(deployment, screenshots):
    """Issue 32: the report inlines bokeh, so it draws with no network; before, it loaded bokeh from
    a CDN and stayed blank offline."""
    run_id = the_nightly(deployment)
    link, html = dask_report_of(deployment, run_id)
    tags = re.findall(r"<(?:script|link)\b[^>]*>", html.read_text())
    external = [t for t in tags if re.search(r"""(?:src|href)=["']?(?:https?:)?//""", t) and "icon" not in t]
    assert len(tags) >= 3 and external == [], external  # distributed's favicon link is the one left: harmless offline
    shot = screenshots / "dask-performance-task-stream.png"
    with offline_chromium(deployment["tmp"]) as page:
        page.call("Page.navigate", url=link)
        wait_for(
            lambda: page.evaluate(
                "typeof Bokeh !== 'undefined' && Bokeh.documents.length === 1 && [...Bokeh.index.roots].length > 0"
            ),
            120,
            "bokeh to render the report",
        )
        drawn = wait_for(
            lambda: (d := page.evaluate(TASK_STREAM))["coloured"] > 0.05 * d["pixels"] and d,
            60,
            "bokeh to draw the task stream",
        )
        page.screenshot(shot)
        elsewhere = [u for u in page.requests if not u.startswith(("data:", "http://127.0.0.1:"))]
    assert drawn["tasks"] >= 20, drawn  # the nightly's Prefect tasks, each a bar
    assert all(u.endswith("favicon.ico") for u in elsewhere), elsewhere
    print(
        f"\ntask stream: {drawn['tasks']} tasks, {drawn['coloured'] / drawn['pixels']:.0%} of the canvas coloured; {shot}"
    )


def test_the_run_says_what_its_wall_time_covers_and_the_three_spans_nest(deployment):
    """Issue 32: the report's wall time (run lock to report) lies within the Dask performance
    report's Duration, which lies within the UI's (the run's time in Running); deploy/README.md
    says what each covers."""
    from shardvec.tasks.quality.report import WALL_COVERS

    run_id = the_nightly(deployment)
    found = artifacts(deployment, run_id)
    assert f"(wall time: {WALL_COVERS})" in " ".join(found["shardvec-nightly-summary"]["data"].split())
    wall = table(found["shardvec-nightly-report"])["wall time (s), run lock to report"]["value"]
    dask = float(re.search(r"Duration: ([0-9.]+) s", dask_report_of(deployment, run_id)[1].read_text()).group(1))
    ui = flow_run(deployment, run_id)["total_run_time"]
    print(f"\nnightly: report wall {wall:.1f} s <= Dask report {dask:.1f} s <= UI (Running) {ui:.1f} s")
    assert 0 < wall <= dask <= ui


def test_the_reports_route_serves_nothing_outside_reports(deployment):
    """`shardvec server` answers files under DATA/reports and 404 for anything else: `..` (plain or
    encoded), a symlink that leads out, the folder itself (no listing)."""
    reports = deployment["data"] / "reports"
    (deployment["data"] / "secret.txt").write_text("not for the web")
    (reports / "leak").symlink_to(deployment["data"] / "secret.txt")
    (reports / "mine.txt").write_text("a report")

    def fetch(path: str) -> tuple[int, str]:  # the path sent as written (httpx would resolve the dots)
        conn = http.client.HTTPConnection("127.0.0.1", deployment["port"], timeout=30)
        try:
            conn.request("GET", "/shardvec/reports" + path)
            r = conn.getresponse()
            return r.status, r.read().decode(errors="replace")
        finally:
            conn.close()

    try:
        assert fetch("/mine.txt") == (200, "a report")
        for path in (
            "/../secret.txt",
            "/%2e%2e/secret.txt",
            "/..%2fsecret.txt",
            "/x/../../secret.txt",
            "/leak",
            "/",
            "/nothing.html",
        ):
            status, body = fetch(path)
            assert status == 404 and "not for the web" not in body, (path, status)
    finally:
        for name in ("leak", "mine.txt"):
            (reports / name).unlink()
        (deployment["data"] / "secret.txt").unlink()


def test_a_killed_served_nightly_is_marked_crashed_and_alerts(deployment):
    """Issue 17: SIGKILL the whole `shardvec serve` process group while its nightly runs (as
    the OOM killer or a reboot would); heartbeats stop, and the automation marks it Crashed."""
    (deployment["data"] / "corpus" / "2026-11-04").mkdir()
    shutil.copy(
        deployment["data"] / "corpus" / "2026-11-01" / "lee.txt",
        deployment["data"] / "corpus" / "2026-11-04" / "again.txt",
    )  # something new to do
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
    state = wait_for(
        lambda: (r := flow_run(deployment, run_id))["state_type"] == "CRASHED" and r["state"],
        CRASH_DEADLINE,
        "the killed run to be marked Crashed",
        every=2,
    )
    seconds = time.monotonic() - killed_at
    print(f"\nSIGKILL -> Crashed in {seconds:.0f} s")
    assert f"No heartbeat for {SILENCE} s" in state["message"]  # the short-silence automation fired
    alert = wait_for(
        lambda: [c for c in deployment["hooks"] if run_id in c and "Crashed" in c],
        60,
        "the webhook call for the crashed nightly",
    )
    assert json.loads(alert[0])["alert"] == "shardvec nightly Crashed"
    deployment["crashed_run"] = run_id


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is installed by `make test`")
def test_runs_list_shows_the_crashed_run(deployment, screenshots):
    run_id = deployment.get("crashed_run")
    if run_id is None:
        pytest.skip("needs the crashed run of test_a_killed_served_nightly_is_marked_crashed_and_alerts")
    shot = screenshots / "runs-with-crashed.png"
    dom = chromium(deployment["tmp"], f"http://127.0.0.1:{deployment['port']}/v2/runs", shot, height=2000)
    assert "Crashed" in dom and flow_run(deployment, run_id)["name"] in dom
    assert shot.stat().st_size > 20_000
