"""A run's evidence within reach (issue 32), the parts that need no nightly on a served
deployment: `shardvec server`'s own options and its reports route, and what a run says of its
Dask performance report when no server serves it. The report of a real served nightly, its link
from the run's page and its offline rendering in Chromium are in test_e2e.py."""

from __future__ import annotations

import os
import re
import subprocess

import httpx
import pytest

from tests.e2e.harness import get, wait_for
from tests.processes import BIN, free_port, stop_groups
from tests.runs import shardvec_cli, small_settings
from tests.shared import migrated_prefect_db


@pytest.mark.slow
def test_server_options_win_over_the_configuration_and_a_taken_port_is_one_sentence(tmp_path, tmp_path_factory):
    port, configured = free_port(), free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "SHARDVEC_SERVER_PORT": str(configured),
        "SHARDVEC_SERVER_HOST": "localhost",
    }
    env.pop("PREFECT_API_URL", None)
    migrated_prefect_db(tmp_path_factory, tmp_path / "prefect" / "prefect.db")
    (tmp_path / "data" / "reports" / "run").mkdir(parents=True)
    (tmp_path / "data" / "reports" / "run" / "r.html").write_text("<p>a report</p>")
    proc = subprocess.Popen(
        [BIN / "shardvec", "server", "--data", tmp_path / "data", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=open(tmp_path / "server.log", "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: get(f"{base}/api/health").status_code == 200, 180, "shardvec server on --port")
        assert get(f"{base}/ui-settings").json()["api_url"] == f"{base}/api"  # the UI asks the API there
        assert get(f"{base}/shardvec/reports/run/r.html").text == "<p>a report</p>"
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{configured}/api/health")
        again = subprocess.run(
            [BIN / "shardvec", "server", "--port", str(port), "--host", "127.0.0.1"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert again.returncode == 2 and again.stderr.strip() == (
            f"error: Cannot listen on 127.0.0.1:{port} (Address already in use): stop what uses it, or pick "
            "another with --port (or --host)."
        ), again.stderr
    finally:
        stop_groups([proc])


def test_a_run_no_server_serves_says_where_its_dask_report_is(prefect_server, tmp_path):
    """Prefect's own server (the test harness, as in local mode) serves no reports: the summary
    names the file and the command that would serve it, not a dead link; the report itself
    carries bokeh inline (no script or stylesheet from elsewhere)."""
    from prefect import flow, task

    from shardvec.flows.operate import operated
    from shardvec.flows.runtime import task_runner
    from shardvec.tasks.quality import report

    s = small_settings(tmp_path / "data", dask={"n_workers": 1})

    @task
    def square(x: int) -> int:
        return x * x

    @flow(task_runner=task_runner(s))
    def measured() -> tuple[str, str]:
        with operated(s, "nightly") as run:
            assert sum(f.result() for f in square.map(range(4))) == 14
            return report.EXTRAS.get()["dask_report"], str(run.dask_report)

    line, path = measured()
    assert line.startswith("Dask performance report of this run") and f"`{path}`" in line
    assert f"`shardvec server --data {s.data}`" in line and "http" not in line
    html = open(path).read()
    assert "<title>Dask Performance Report</title>" in html
    external = [
        t
        for t in re.findall(r"<(?:script|link)\b[^>]*>", html)
        if re.search(r"""(?:src|href)=["']?(?:https?:)?//""", t) and "icon" not in t
    ]
    assert external == []


def test_a_reports_folder_that_leads_outside_the_data_directory_is_refused(tmp_path):
    """A `DATA/reports` link to elsewhere: runs wrote their reports there and the server served
    whatever it led to (a link to /etc served /etc/shadow). Both refuse it in a sentence."""
    from shardvec.config.settings import SettingsError
    from shardvec.server import checked_reports

    data = tmp_path / "data"
    data.mkdir()
    assert checked_reports(data) == data / "reports"  # not there yet: fine, a run makes it
    (data / "reports").symlink_to("/etc")
    with pytest.raises(SettingsError, match=r"reports leads outside the data directory \(to /etc\)"):
        checked_reports(data)
    out = shardvec_cli("server", "--data", data, "--port", free_port())
    assert out.returncode == 2 and "leads outside the data directory" in out.stderr and "Traceback" not in out.stderr
    (data / "reports").unlink()
    (data / "elsewhere").mkdir()
    (data / "reports").symlink_to(data / "elsewhere")  # a link that stays inside is the user's business
    assert checked_reports(data) == data / "reports"
