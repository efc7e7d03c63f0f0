"""`shardvec demo`, the first command a new user types, run as that user runs it: its own
temporary Prefect server with Prefect's defaults (telemetry on), no traceback on the screen."""

from __future__ import annotations

import os

import pytest

from tests.environment import LEAN_PREFECT, NO_EPHEMERAL
from tests.processes import BIN, run_in_a_group
from tests.runs import SUBPROCESS_TOML


@pytest.mark.slow
def test_demo_prints_no_traceback(tmp_path):
    """issue 33 item 6: the temporary server's telemetry heartbeat wrote to its SQLite database
    while the run did, and printed a "database is locked" traceback to a new user."""
    (tmp_path / "small.toml").write_text(SUBPROCESS_TOML)  # the sample corpus, trained small
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in LEAN_PREFECT
        and k not in NO_EPHEMERAL
        and k not in ("PREFECT_SERVER_ANALYTICS_ENABLED", "DO_NOT_TRACK", "PREFECT_API_URL")
    }
    env["SHARDVEC_CONFIG"] = str(tmp_path / "small.toml")
    out = run_in_a_group([str(BIN / "shardvec"), "demo", "--data", str(tmp_path / "data")], env=env, timeout=900)
    screen = out.stdout + out.stderr
    assert out.returncode == 0, screen[-3000:]
    assert "Traceback" not in screen and "database is locked" not in screen, screen[-6000:]
    assert "$ shardvec query similar" in screen and "$ shardvec query row" in screen
