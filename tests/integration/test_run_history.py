"""What a run tells its operators after the fact (issue 32): the trend chart's recall axis and
crashed runs, the summary's history table, the drift lines, the `crashed` lines shardvec writes
into history.jsonl when it finds a dead run, and the warning of quarantined input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shardvec.tasks.quality import report as run_report
from shardvec.tasks.storage import runs
from shardvec.tasks.quality.evaluation import _words_moved, append_history, read_history
from shardvec.tasks.storage.spaces import Space
from shardvec.tasks.quality.trends import _figure


def _entry(day: int, recall: float, status: str = "published") -> dict:
    return {
        "at": f"2026-11-{day:02d}T02:00:00+00:00",
        "flow": "nightly",
        "status": status,
        "version": f"202611{day:02d}T020000Z-1a2b3c4d",
        "statements": 123456,
        "metrics": {
            "rows_recall_at_10": 1.0,
            "statements_index_recall_at_10": recall,
            "words_index_recall_at_10": 0.99,
            "wordsim353_spearman": 0.41,
            "simlex999_spearman": 0.2,
            "analogy_accuracy": 0.12,
            "rows_mean_jaccard": 0.9,
            "rows_changed_share": 0.1,
        },
        "wall_seconds": 40.0,
        "peak_rss_mb": 500.0,
    }


def test_the_recall_axis_shows_0_9995_next_to_1_as_close():
    fig = _figure([_entry(1, 1.0), _entry(2, 0.9995), _entry(3, 1.0)])
    fig.canvas.draw()
    recall = fig.axes[0]
    assert recall.get_title() == "recall@10"
    low, high = recall.get_ylim()
    assert 0.0005 / (high - low) < 0.01  # the dip is under 1 % of the panel's height, not all of it
    assert recall.yaxis.get_offset_text().get_text() == ""  # no "+1" above the axis
    assert all(not t.get_text().startswith(("−", "-")) for t in recall.get_yticklabels())


def test_a_crashed_run_is_a_line_across_every_panel():
    crashed = {"at": "2026-11-02T02:40:00+00:00", "flow": "nightly", "status": "crashed", "flow_run_id": "x"}
    fig = _figure([_entry(1, 1.0), crashed, _entry(3, 1.0)])
    for ax in fig.axes[:4]:
        marks = [line for line in ax.get_lines() if list(line.get_xdata()) == [2, 2]]
        assert len(marks) == 1 and marks[0].get_linestyle() == ":", ax.get_title()
    assert "crashed" in fig.axes[0].get_legend_handles_labels()[1]


def test_the_summarys_history_table_is_narrow_and_shows_crashes(tmp_path):
    for e in [_entry(1, 1.0), _entry(2, 0.9995, "refused by the quality gate")]:
        append_history(tmp_path, e)
    append_history(
        tmp_path, {"at": "2026-11-03T02:00:00+00:00", "flow": "backfill", "status": "crashed", "flow_run_id": "x"}
    )
    token = run_report.EXTRAS.set({"data": tmp_path})
    try:
        text = run_report.render_markdown({"flow": "nightly", "status": "published"})
    finally:
        run_report.EXTRAS.reset(token)
    tables = [line for line in text[text.index("## History (last 3 runs)") :].splitlines() if line.startswith("|")]
    # Prefect's UI neither wraps nor scrolls a table: the one table of before (134 characters a
    # line) lost its last five columns in a 1400 px wide window; 70 characters fit with room
    assert len(tables) == 10 and max(len(line) for line in tables) <= 70, "\n".join(tables)
    assert "| 11-02 02:00 | nightly | refused | 123456 | 1.0000 | 0.9995 |" in tables
    assert "| 11-03 02:00 | backfill | crashed |  |  |  |" in tables[4]
    assert "| 11-01 02:00 | 0.410 | 0.200 | 0.120 | 0.900 |" in tables


def test_no_word_is_said_to_have_moved_when_its_neighbours_are_the_same(published):
    words = Space(_words_dir(published.data))
    assert _words_moved(words, words, 1000) == []  # the same space twice: nothing moved
    report = {
        "flow": "nightly",
        "status": "published",
        "quality": {"words_moved_most": [{"word": "aberdeen", "jaccard": 1.0}, {"word": "fire", "jaccard": 0.5}]},
    }
    text = run_report.render_text(report)
    assert "neighbours moved: fire (jaccard 0.5)" in text and "aberdeen" not in text


def _words_dir(data: Path) -> Path:
    from tests.checks import read_current

    return data / read_current(data)["components"]["words"]


def test_a_run_that_quarantined_input_warns_of_it(published, tmp_path):
    """The session's nightly read write_corpus's broken JSON line and completed; what its report
    says of it, kept by a run (OperatedRun.keep), is a warning artifact on the run's page naming
    the file, the reason and the quarantine folder."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.context import FlowRunContext

    from shardvec.flows.operate import OperatedRun
    from tests.runs import small_settings

    assert published.report["status"] == "published"
    files = published.report["quarantined_input"]
    assert files == [{"source": "2026-11-02/lee.jsonl", "records": 1, "reasons": {"broken JSON": 1}}]
    assert (published.data / "quarantine" / "2026-11-02" / "lee.jsonl.reasons.jsonl").is_file()

    @flow(name="nightly")
    def keeps_the_report() -> str:
        ctx = FlowRunContext.get()
        OperatedRun(small_settings(tmp_path), "nightly", str(ctx.flow_run.id), ctx).keep(dict(published.report))
        return str(ctx.flow_run.id)

    run_id = keeps_the_report()
    with get_client(sync_client=True) as client:
        found = {
            a.key: a.data
            for a in client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
            )
        }
    warning, folder = found["shardvec-nightly-quarantine"], tmp_path / "quarantine"
    assert warning.startswith("# Warning: 1 input record quarantined")
    assert "| `2026-11-02/lee.jsonl` | 1 | 1 broken JSON |" in warning
    assert f"The quarantine folder is `{folder}`" in warning
    assert f"`{folder / '2026-11-02' / 'lee.jsonl'}.reasons.jsonl`" in warning


@pytest.mark.usefixtures("prefect_server")
def test_a_dead_run_gets_a_crashed_line_in_the_history(tmp_path):
    """Whoever marks it Crashed: shardvec itself (its process is gone, the run still Running), or
    the heartbeat automation before (the run already Crashed in the API)."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed, Running

    from shardvec.flows.operate import mark_dead_runs_crashed

    @flow(name="nightly")
    def nightly():
        pass

    with get_client(sync_client=True) as client:
        running = client.create_flow_run(nightly, state=Running())
        crashed = client.create_flow_run(nightly, state=Running())
        client.set_flow_run_state(crashed.id, Crashed(message="No heartbeat for 90 s"), force=True)
        crashed_at = client.read_flow_run(crashed.id).state.timestamp
    for run in (running, crashed):
        _register_dead(tmp_path, str(run.id))

    assert mark_dead_runs_crashed(tmp_path) == [str(running.id)]
    lines = {e["flow_run_id"]: e for e in read_history(tmp_path)}
    assert set(lines) == {str(running.id), str(crashed.id)}
    assert all(e["status"] == "crashed" and e["flow"] == "nightly" for e in lines.values())
    assert "is gone" in lines[str(running.id)]["message"]
    assert lines[str(crashed.id)]["message"] == "No heartbeat for 90 s"
    assert lines[str(crashed.id)]["at"] == crashed_at.isoformat(timespec="seconds")
    assert mark_dead_runs_crashed(tmp_path) == [] and len(read_history(tmp_path)) == 2  # one line a run


def _register_dead(data: Path, run_id: str) -> Path:
    """A registration whose process has exited (a short-lived child's pid and start time)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path = runs.register(data, run_id, pid=proc.pid)
    finally:
        proc.kill()
        proc.wait(30)
    return path
