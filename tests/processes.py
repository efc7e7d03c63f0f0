"""The processes tests start and kill: this interpreter's scripts (BIN), free ports, process
groups stopped (SIGTERM, then SIGKILL) or killed with a check that the kill landed, and commands
run in a group of their own."""

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


def stop_groups(procs: list[subprocess.Popen], seconds: float = 30) -> None:
    """Stop the process group each of `procs` leads (started with start_new_session): SIGTERM,
    then SIGKILL whatever of the groups is still alive after `seconds`, and return once every
    process of them is gone. A group whose leader was reaped earlier is signalled only while it
    has members: once it has none, its number may belong to someone else's new session."""
    groups = [_own_group(p) for p in procs if p.returncode is None or group_members(p.pid)]
    for pgid in groups:
        _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + seconds
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for pgid in groups:
        while group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if group_members(pgid):
            kill_group_and_check_it_landed(pgid)
    for p in procs:
        p.wait(10)  # reaped, so it is not left a zombie


def run_in_a_group(args: list[str], *, timeout: float, **popen) -> subprocess.CompletedProcess:
    """subprocess.run(args, capture_output=True, text=True, timeout=...) in a session of its own,
    which is stopped whole when the command ends or times out: a timed-out nightly's Dask nanny
    and workers do not outlive it, as they would when only the leader is killed."""
    with subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **popen
    ) as p:
        try:
            out, err = p.communicate(timeout=timeout)
        finally:
            stop_groups([p], seconds=5)
    return subprocess.CompletedProcess(args, p.returncode, out, err)


def kill_group_and_check_it_landed(pgid: int, proc: subprocess.Popen | None = None, *, seconds: float = 30) -> float:
    """SIGKILL process group `pgid` (a run's flow process, its Dask nannies and workers, its
    Prefect server: everything started in its session) and return only once every process of
    the group is gone, so that what the test checks next is what the kill left behind. `proc`
    (the group's leader, our child) is reaped. Returns the monotonic time of the kill."""
    assert pgid > 1 and pgid != os.getpgrp(), f"{pgid} is not the group of a process the test started"
    killed_at = time.monotonic()
    if proc is None or proc.returncode is None or group_members(pgid):  # a reaped leader's empty group: not ours now
        _signal_group(pgid, signal.SIGKILL)  # if it ended on its own, its group may still have members
    if proc is not None:
        proc.wait(seconds)
    deadline = time.monotonic() + seconds
    while alive := group_members(pgid):
        assert time.monotonic() < deadline, f"processes {alive} of the killed group {pgid} are still alive"
        time.sleep(0.05)
    return killed_at


def _own_group(p: subprocess.Popen) -> int:
    """The group `p` leads; a child started without start_new_session would share pytest's."""
    try:
        leads = p.returncode is not None or os.getpgid(p.pid) == p.pid  # unreaped: its pid is still its own
    except ProcessLookupError:
        leads = True
    assert leads and p.pid != os.getpgrp(), f"process {p.pid} was not started in a session of its own"
    return p.pid


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def group_members(pgid: int) -> list[int]:
    """The live processes of process group `pgid` (a killed process nobody reaped yet is gone)."""
    return [p.pid for p in psutil.process_iter() if _alive_in_group(p, pgid)]


def _alive_in_group(p: psutil.Process, pgid: int) -> bool:
    try:
        return os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE
    except (ProcessLookupError, PermissionError, psutil.Error):
        return False
