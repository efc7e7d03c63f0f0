"""Operating shardvec (issue 17), the parts that need no server process of their own: dead runs
found by their registration, the trend chart, the step log lines, the automations file.
The end-to-end parts (Crashed in the API, alerts, work pool, screenshots) are in test_e2e.py."""

from __future__ import annotations

import logging
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from shardvec.cli import app
from shardvec.tasks.storage import runs
from shardvec.tasks.quality.trends import PANELS, plot_history

ENTRIES = [
    {
        "at": f"2026-11-{d:02d}T02:00:00+00:00",
        "flow": "nightly",
        "status": "refused by the quality gate" if d == 3 else "published",
        "metrics": {
            "rows_recall_at_10": 1.0,
            "statements_index_recall_at_10": 0.9 + d / 100,
            "wordsim353_spearman": 0.3 + d / 50,
            "simlex999_spearman": 0.1,
            "analogy_accuracy": None,
            "rows_mean_jaccard": 0.8,
            "rows_changed_share": 0.2,
        },
        "wall_seconds": 40.0 + d,
        "peak_rss_mb": 500.0 + d,
    }
    for d in range(1, 6)
]


def test_a_killed_process_makes_its_run_dead(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        runs.register(tmp_path, "run-a", pid=proc.pid)
        runs.register(tmp_path, "run-b")  # this process: alive
        assert runs.dead_runs(tmp_path) == []
        proc.kill()
        proc.wait(10)
        assert [r.flow_run_id for r in runs.dead_runs(tmp_path)] == ["run-a"]
    finally:
        proc.kill()


def test_a_reused_pid_is_not_the_run(tmp_path):
    path = runs.register(tmp_path, "run-c")
    path.write_text(path.read_text().replace('"started": ', '"started": 1'))  # another start time
    assert [r.flow_run_id for r in runs.dead_runs(tmp_path)] == ["run-c"]


@pytest.mark.parametrize("suffix, magic", [(".png", b"\x89PNG"), (".svg", b"<?xml")])
def test_history_plot_draws_every_panel(tmp_path, suffix, magic):
    out = plot_history(ENTRIES, tmp_path / f"trend{suffix}")
    assert out.read_bytes().startswith(magic) and out.stat().st_size > 10_000
    from shardvec.tasks.quality.trends import _figure

    fig = _figure(ENTRIES)
    assert [ax.get_title() for ax in fig.axes[:4]] == list(PANELS)
    assert sum(len(ax.get_lines()) for ax in fig.axes) >= 8  # every metric given has its line


def test_cli_history_plot_and_its_bad_suffix(tmp_path):
    from shardvec.tasks.quality.evaluation import append_history

    for e in ENTRIES:
        append_history(tmp_path, {k: v for k, v in e.items() if k != "at"})
    result = CliRunner().invoke(app, ["history", "--data", str(tmp_path), "--plot", str(tmp_path / "t.png")])
    assert result.exit_code == 0, result.output
    assert f"drew the last 5 runs into {tmp_path / 't.png'}" in result.output
    assert (tmp_path / "t.png").stat().st_size > 10_000
    from shardvec.tasks.quality.trends import PlotFormatError

    with pytest.raises(
        PlotFormatError, match=r"^t.gif is neither .png nor .svg; name the chart file FILE.png or FILE.svg.$"
    ):
        plot_history(ENTRIES, tmp_path / "t.gif")


def test_alerts_file_names_the_fix_when_missing(tmp_path):
    from shardvec.alerts import AlertsError, load

    with pytest.raises(AlertsError, match="pass --file with the path of shardvec's deploy/automations.yaml"):
        load(tmp_path / "nope.yaml")
    names = [a["name"] for a in load()]
    assert names == [
        "shardvec: mark silent runs Crashed",
        "shardvec: run failed or crashed",
        "shardvec: run refused by the quality gate",
        "shardvec: input quarantined",
    ]


def test_installing_the_alerts_replaces_them_and_removes_retired_names(prefect_server):
    """An automation shardvec installed under an older name would alert a second time: gone, once
    its successor is installed. `shardvec serve` installs again at every start without a webhook:
    it keeps the alerts of the webhook saved before, never leaves the server with none."""
    from prefect.automations import Automation
    from prefect.client.orchestration import get_client
    from shardvec.alerts import BLOCK, RETIRED, install, load

    def names():
        with get_client(sync_client=True) as client:
            return sorted(a.name for a in client.read_automations())

    everything = sorted(a["name"] for a in load())
    old = dict(load()[1], name=RETIRED[0])
    old["actions"] = [{"type": "do-nothing"}]
    Automation.model_validate(old).create()
    assert install() == ["shardvec: mark silent runs Crashed"]  # no webhook saved yet: the rest need one
    assert names() == sorted([RETIRED[0], "shardvec: mark silent runs Crashed"])  # the old alert still alerts
    assert sorted(install(webhook="http://127.0.0.1:9/hook")) == everything
    try:
        assert sorted(install()) == everything  # as serve does: the saved webhook again
        assert names() == everything  # each once, the retired name gone
    finally:  # the harness is the session's: leave it as found
        with get_client(sync_client=True) as client:
            for automation in client.read_automations():
                client.delete_automation(automation.id)
            client.delete_block_document(client.read_block_document_by_name(BLOCK, "webhook").id)


def test_steps_log_start_progress_and_throughput(prefect_server):
    """A step slower than `every` logs how far it is while it runs, then its time and rates."""
    from prefect import flow, task
    from prefect.task_runners import ThreadPoolTaskRunner

    from shardvec.flows.executors import OnPrefect
    from shardvec.flows.progress import RunProgress

    @task
    def slow(i: int) -> dict:  # runs until the step has said how far it is (or 60 s have passed)
        deadline = time.monotonic() + 60
        while not any(m.startswith("tokenize: 0 of 2 files done") for m in lines) and time.monotonic() < deadline:
            time.sleep(0.05)
        return {"records": 100, "tokens": 1000 + i}

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=2))
    def two_slow_steps():
        progress = RunProgress("test", steps=1, every=0.5, executor=OnPrefect())
        try:
            return progress.wait("tokenize", [slow.submit(i) for i in range(2)])
        finally:
            progress.close()

    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("prefect.flow_runs")
    logger.addHandler(handler)
    try:
        two_slow_steps()
    finally:
        logger.removeHandler(handler)
    assert "tokenize: started, 2 files" in lines
    assert any(m.startswith("tokenize: 0 of 2 files done, ") for m in lines), lines
    done = [m for m in lines if m.startswith("tokenize: finished in ")]
    assert len(done) == 1 and "records 200 (" in done[0] and "tokens 2,001 (" in done[0]


def test_the_progress_artifact_is_sent_at_step_ends_and_at_most_every_few_seconds(prefect_server):
    """Each artifact update is a call to the server: a step of many tasks sends one per
    `artifact_every` seconds and one at its end, not one per task."""
    from prefect import flow, task
    from prefect.task_runners import ThreadPoolTaskRunner

    from shardvec.flows.executors import OnPrefect
    from shardvec.flows.progress import RunProgress

    @task
    def quick(i: int) -> dict:
        return {"records": i}

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=2))
    def one_step_of_30_tasks(artifact_every: float) -> int:
        progress = RunProgress("throttle-test", steps=1, artifact_every=artifact_every, executor=OnPrefect())
        try:
            progress.wait("tokenize", [quick.submit(i) for i in range(30)])
            return progress.updates
        finally:
            progress.close()

    assert one_step_of_30_tasks(0.0) == 31  # unthrottled: every task, then the step's end
    assert one_step_of_30_tasks(3600.0) == 2  # the first task's, then the step's end (100 %)
