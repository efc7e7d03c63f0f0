"""Which flow runs are working on a data directory, and which of them have died.

A run writes `<data>/.runs/<flow run id>.json` (its pid and that process's start time) when it
starts and removes it when it ends, however it ends short of being killed. A file whose process
is gone belongs to a run that was killed (SIGKILL, the OOM killer, a reboot): `dead_runs`
finds those, so the orchestrator can be told the run Crashed. Plain Python, no Prefect.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import psutil

from shardvec.tasks.storage.layout import Layout


@dataclass(frozen=True)
class RunRecord:
    flow_run_id: str
    pid: int
    started: float  # the process's create time, so a reused pid is not mistaken for the run
    since: str
    path: Path

    def alive(self) -> bool:
        try:
            return abs(psutil.Process(self.pid).create_time() - self.started) < 1.0
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return False


def register(data: Path, flow_run_id: str, pid: int | None = None) -> Path:
    """Record that process `pid` (this one by default) runs `flow_run_id` on `data`."""
    pid = pid or os.getpid()
    folder = Layout(data).runs
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{flow_run_id}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        json.dumps(
            {
                "flow_run_id": flow_run_id,
                "pid": pid,
                "started": psutil.Process(pid).create_time(),
                "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
        )
    )
    os.replace(tmp, path)
    return path


def records(data: Path) -> list[RunRecord]:
    out = []
    for path in sorted(Layout(data).runs.glob("*.json")):
        try:
            d = json.loads(path.read_text())
            out.append(RunRecord(d["flow_run_id"], int(d["pid"]), float(d["started"]), d["since"], path))
        except (OSError, ValueError, KeyError):  # half-written by a killed run: its id is the name
            out.append(RunRecord(path.stem, -1, 0.0, "", path))
    return out


def dead_runs(data: Path) -> list[RunRecord]:
    """The registered runs whose process no longer exists."""
    return [r for r in records(data) if not r.alive()]
