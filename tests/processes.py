"""The processes tests start and kill: this interpreter's scripts (BIN), free ports, process
groups stopped (SIGTERM, then SIGKILL) or killed with a check that the kill landed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_groups(procs: list[subprocess.Popen]) -> None:
    """SIGTERM the process group each of `procs` leads, then SIGKILL those still there after 30 s."""
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


def kill_group_and_check_it_landed(pgid: int, proc: subprocess.Popen | None = None, *,
                                   seconds: float = 30) -> float:
    """SIGKILL process group `pgid` (a run's flow process, its Dask nannies and workers, its
    Prefect server: everything started in its session) and return only once every process of
    the group is gone, so that what the test checks next is what the kill left behind. `proc`
    (the group's leader, our child) is reaped. Returns the monotonic time of the kill."""
    killed_at = time.monotonic()
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:  # it ended on its own: its group may still have members
        pass
    if proc is not None:
        proc.wait(seconds)
    deadline = time.monotonic() + seconds
    while alive := group_members(pgid):
        assert time.monotonic() < deadline, f"processes {alive} of the killed group {pgid} are still alive"
        time.sleep(0.05)
    return killed_at


def group_members(pgid: int) -> list[int]:
    """The live processes of process group `pgid` (a killed process nobody reaped yet is gone)."""
    return [p.pid for p in psutil.process_iter() if _alive_in_group(p, pgid)]


def _alive_in_group(p: psutil.Process, pgid: int) -> bool:
    try:
        return os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE
    except (ProcessLookupError, PermissionError, psutil.Error):
        return False
