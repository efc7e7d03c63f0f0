"""A run ends with the process that started it.

A Prefect process worker (and `shardvec serve`'s runner) starts each flow run as a child
process, the worker's in a session of its own: SIGKILL of the worker's process group leaves
the flow run alive, heartbeating and holding <data>/.run.lock, with no one to report its end.
`watch_parent()` starts a thread in such a run that, once the run's parent is gone (the run
was handed to another parent: getppid changed), marks the run Crashed with a sentence that
says what to do and kills the run's processes (its Dask workers, and itself), so the OS drops
the run's locks. Until then the run's output passes through a pipe of its own (`relay_output`),
so that the parent's broken pipe cannot kill the run first. A run started from a shell (`shardvec nightly`) is left alone: only a
process Prefect started for one flow run (PREFECT__FLOW_RUN_ID in its environment) is watched.
"""

from __future__ import annotations

import array
import atexit
import fcntl
import os
import signal
import sys
import termios
import threading
import time

import psutil

from shardvec.flows.executors import run_logger

# The process that started this one, taken when the flows are imported (the first thing a
# flow-run process does after Prefect's own imports): a worker killed after this is noticed
# even if the run's watch starts later.
PARENT = os.getppid()
EVERY = 0.5  # seconds between looks at the parent
EXIT_CODE = 70  # what the run's process exits with when its parent is gone (EX_SOFTWARE)

_started = threading.Event()


def watch_parent(every: float = EVERY) -> threading.Thread | None:
    """Start the watch in a flow-run process Prefect started (once per process); None elsewhere."""
    run_id = os.environ.get("PREFECT__FLOW_RUN_ID")
    if not run_id or _started.is_set():
        return None
    _started.set()
    relay_output()
    thread = threading.Thread(
        target=_watch, args=(run_id, PARENT, every, run_logger()), name="shardvec-watchdog", daemon=True
    )
    thread.start()
    return thread


def _watch(run_id: str, parent: int, every: float, log) -> None:
    while os.getppid() == parent:
        time.sleep(every)
    end_run(run_id, parent, log)


def end_run(run_id: str, parent: int, log, mark_seconds: float = 15) -> None:
    """Kill the run's Dask workers (nothing more of the run is computed), mark the run Crashed
    (waiting at most `mark_seconds` for the API: a slow one must not keep the run's lock), then
    end this process and so free its locks."""
    message = (
        f"shardvec: the process that started this run (pid {parent}: a Prefect worker or `shardvec serve`) "
        "is gone, so the run stopped itself; start the worker again and rerun the flow."
    )
    try:
        kill_children()
        marking = threading.Thread(target=_mark_crashed, args=(run_id, message, log), daemon=True)
        marking.start()
        marking.join(mark_seconds)
        if marking.is_alive():
            log.error(
                f"the API did not answer within {mark_seconds:.0f} s: flow run {run_id} is left for the "
                "heartbeat automation to mark Crashed"
            )
    finally:
        drain_prefect_workers(timeout=5)
        if os.getpgrp() == os.getpid():  # a group of our own (a worker's run): what is left of it, at once
            os.killpg(0, signal.SIGKILL)
        os._exit(EXIT_CODE)


def relay_output() -> None:
    """Put a pipe of this process between its output (and the Dask workers' it starts) and the
    parent's. The parent reads the run's output from a pipe: once it is gone, a line written there
    raises SystemExit (rich's console on a broken pipe) in whichever thread or process wrote it,
    and the run would die before the watch could say why. Written to a pipe of ours, a line
    always goes through; only the copy to the parent's pipe fails, and is dropped."""
    for fd in (1, 2):
        out = os.dup(fd)
        read, write = os.pipe()
        os.dup2(write, fd)
        os.close(write)
        copy = threading.Thread(target=_copy, args=(read, out), name=f"shardvec-relay-{fd}", daemon=True)
        copy.start()
        atexit.register(_restore, fd, out, read)


def _copy(read: int, out: int) -> None:
    while chunk := os.read(read, 1 << 16):
        try:
            while chunk:
                chunk = chunk[os.write(out, chunk) :]
        except OSError:  # the parent is gone: drop what it would have shown
            out = os.open(os.devnull, os.O_WRONLY)


def _restore(fd: int, out: int, read: int, seconds: float = 1.0) -> None:
    """At exit: the parent's pipe written directly again, once the lines in ours are copied."""
    flush_std()
    os.dup2(out, fd)
    deadline, waiting = time.monotonic() + seconds, array.array("i", [1])
    while waiting[0] and time.monotonic() < deadline:
        fcntl.ioctl(read, termios.FIONREAD, waiting)  # bytes not read by the copy yet
        time.sleep(0.01)


def flush_std() -> None:
    """Flush Python's stdout and stderr, whatever state they are in."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


def _mark_crashed(run_id: str, message: str, log) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    try:
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(run_id, Crashed(message=message), force=True)
        log.error(message)
    except BaseException as exc:  # the run still ends: the heartbeat automation marks it later
        log.error(f"could not mark flow run {run_id} Crashed: {exc!r}")


def kill_children(seconds: float = 10) -> None:
    """SIGKILL every descendant of this process (the run's Dask workers) and wait for them."""
    children = psutil.Process().children(recursive=True)
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(children, timeout=seconds)


def drain_prefect_workers(timeout: float = 10) -> None:
    """Send Prefect's queued log lines and events to the API (best effort: a lost log line must
    not fail a run, nor keep a dying one alive)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        try:
            worker.drain_all(timeout=timeout)
        except Exception:
            pass


class TaskWatch:
    """Fails a run's waiting tasks, with a sentence, instead of letting the run wait for ever:
    when its Dask cluster has had no worker for `no_worker_seconds` (they died and none came
    back), or no task of the run has finished for `no_progress_seconds` (a task hangs). Each
    waiting future is cancelled with that sentence, which its `result()` raises in the flow; with
    `restart` (the run's own LocalCluster, never a shared scheduler's workers) its workers are
    restarted too, so that a task that ignores the cancel stops."""

    def __init__(
        self, client, no_worker_seconds: float, no_progress_seconds: float, every: float = 2.0, restart: bool = False
    ):
        self.client, self.every, self.restart = client, every, restart
        self.no_worker_seconds, self.no_progress_seconds = no_worker_seconds, no_progress_seconds
        self.waiting: set = set()  # the run's Dask futures not finished yet
        self.progress_at = time.monotonic()  # the last time a task finished, or work arrived
        self.no_worker_since: float | None = None
        self.failed = False
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="shardvec-task-watch", daemon=True)
        self._thread.start()

    def track(self, future) -> None:
        """Watch one of the run's Dask futures until it finishes."""
        with self._lock:
            if not self.waiting:
                self.progress_at = time.monotonic()
            self.waiting.add(future)
        future.add_done_callback(self._finished)

    def _finished(self, future) -> None:
        with self._lock:
            self.waiting.discard(future)
            self.progress_at = time.monotonic()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                why = self.stuck()
                if why:
                    with self._lock:
                        waiting, self.waiting = list(self.waiting), set()
                    self.client.cancel(waiting, reason=why, force=True)
                    if self.restart:  # a task stuck in C code holding the GIL ignores the cancel: its
                        self.client.restart(wait_for_workers=False)  # worker goes, and the run ends now
            except Exception as exc:  # the scheduler is closing, or briefly unreachable: look again
                if not self.failed:  # but say so once: a watch that cannot look guards nothing
                    self.failed = True
                    run_logger().warning(f"the run's task watch could not look at its Dask tasks: {exc!r}")

    def stuck(self) -> str | None:
        """Why the run's waiting tasks will never finish, or None while they may."""
        with self._lock:
            waiting, since = len(self.waiting), time.monotonic() - self.progress_at
        if not waiting:
            self.no_worker_since = None
            return None
        now = time.monotonic()
        if self.client.nthreads():
            self.no_worker_since = None
        elif self.no_worker_since is None:
            self.no_worker_since = now
        elif now - self.no_worker_since >= self.no_worker_seconds:
            return (
                f"the run's Dask cluster has had no worker for {now - self.no_worker_since:.0f} s while "
                f"{waiting} of its tasks waited; see the Dask worker logs for why they died (memory limit, "
                "OOM killer), then rerun"
            )
        if since >= self.no_progress_seconds:
            return (
                f"no task of the run finished for {since:.0f} s while {waiting} waited ([dask] "
                "no_progress_seconds); look for a stuck task in the run's logs, or raise the limit for "
                "this corpus, then rerun"
            )
        return None
