"""Where flows run: the Dask task runner, built when a run starts, and, in local mode, one
shared Prefect server.

Without PREFECT_API_URL, Prefect starts a temporary server in every process that runs a task,
so each Dask worker would start its own (seconds and memory each, all writing one SQLite
file). `local_prefect()` starts one and points this process and every worker it spawns at it.
"""

from __future__ import annotations

import atexit
import logging
import os
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

import dask
from distributed.diagnostics.plugin import WorkerPlugin
from prefect_dask import DaskTaskRunner

from shardvec.config import Settings, load_settings
from shardvec.flows.watchdog import TaskWatch, drain_prefect_workers, flush_std

# Workers sample their own stacks every 10 ms by default: CPU the build needs, for a profile
# nobody reads here. Given to each worker's nanny, which sets it in the worker it spawns; nothing
# in this process's Dask configuration changes.
WORKER_CONFIG = {"distributed.worker.profile.enabled": False}


class QuickExit(WorkerPlugin):
    """A LocalCluster worker process that has closed exits at once.

    Once closed (its Prefect log and event queues drained as Python's threads shut down), a
    worker process spent seconds more tearing down the interpreter (prefect, pydantic, gensim...,
    no Python frame left to run), and the nanny, which waits 4 s for it, killed it with a warning
    "Worker process still alive after 4.0 seconds, killing" at the end of every run. Nothing is
    left to do in that teardown: the process ends as the first step of its exit instead."""

    name = "shardvec-quick-exit"

    def teardown(self, worker) -> None:
        atexit.register(_exit_now)  # atexit runs after threading's shutdown, which drains Prefect's queues


def _exit_now() -> None:
    flush_std()
    os._exit(0)


class SettingsTaskRunner(DaskTaskRunner):
    """The Dask task runner the settings describe: an existing scheduler if `dask.address` is
    set, else a LocalCluster of worker processes.

    The settings are read when a run starts, not when a flow module is imported: the flows name
    this class in their decorator (Prefect makes one with no settings, which reads them then),
    and a caller holding settings passes `task_runner(settings)` through
    `flow.with_options(task_runner=...)`."""

    def __init__(self, settings: Settings | None = None):
        super().__init__()
        self.settings = settings
        self.dask = None  # the [dask] settings, read when a run starts
        self.watch: TaskWatch | None = None

    def duplicate(self) -> SettingsTaskRunner:  # Prefect starts a duplicate for each run
        return type(self)(self.settings)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SettingsTaskRunner) and other.settings == self.settings

    def __enter__(self) -> SettingsTaskRunner:
        s = self.settings or load_settings()
        self.dask = s.dask
        logging.getLogger("distributed").setLevel(logging.WARNING)  # Dask's INFO lines drown the run's own
        if s.dask.address:
            self.address = s.dask.address
        else:
            self.cluster_kwargs = {
                "n_workers": s.dask.n_workers,
                "threads_per_worker": s.dask.threads_per_worker,
                "memory_limit": s.dask.memory_limit,
                "processes": True,
                "dashboard_address": None,
                # no dashboard, but the scheduler's HTTP server (health, metrics) still listens: on a
                # free port, not 8787, which a second run's cluster found taken and warned about
                "scheduler_kwargs": {"dashboard_address": "127.0.0.1:0"},
                "silence_logs": logging.WARNING,
                "config": WORKER_CONFIG,
                "plugins": (QuickExit(),),
            }
        self._tls = plain_http_settings()
        self._tls.__enter__()
        try:
            return super().__enter__()
        except BaseException:
            self._tls.__exit__(None, None, None)
            raise

    @property
    def client(self):
        if self._client is not None or self.address:
            return super().client
        # A LocalCluster's scheduler serves HTTP (health, metrics) even with dashboard_address=None,
        # and prefect_dask announces a dashboard at its /status, which answers 404: no link, no line.
        with dask.config.set({"distributed.dashboard.link": ""}):
            return super().client

    def submit(self, task, parameters, wait_for=None, dependencies=None):
        future = super().submit(task, parameters, wait_for, dependencies)
        if self.watch is None:
            self.watch = TaskWatch(
                self.client, self.dask.no_worker_seconds, self.dask.no_progress_seconds, restart=not self.dask.address
            )
        self.watch.track(future.wrapped_future)
        return future

    def __exit__(self, *exc) -> None:
        try:
            if self.watch is not None:
                self.watch.stop()
            self._close_own_workers()
            super().__exit__(*exc)
        finally:
            self._tls.__exit__(*exc)

    def _close_own_workers(self, seconds: float = 30) -> None:
        """The run's own LocalCluster closes its workers before its scheduler. Closed the other way
        (the scheduler first, as the cluster's own close does), a worker's heartbeat could find the
        scheduler gone and log "Failed to communicate with scheduler during heartbeat" with a
        traceback at the end of a run that had succeeded (distributed#7105; seen once in
        `make run`). A shared scheduler's workers are not the run's to close."""
        cluster = self._cluster
        if self.address or cluster is None:
            return
        try:
            cluster.scale(0)
            deadline = time.monotonic() + seconds
            while cluster.workers and time.monotonic() < deadline:
                time.sleep(0.05)
        except Exception:  # closing anyway: the cluster's own close follows
            pass


def plain_http_settings() -> AbstractContextManager:
    """Prefect settings for the tasks of a run whose API is plain http://.

    A Prefect task in a Dask worker opens two API clients, and each builds a TLS context that
    loads the whole CA store (~20-40 ms each: in py-spy, the largest part of a small nightly's
    CPU after the settings Prefect rebuilds per task). Over http:// nothing is ever verified, so
    the run's clients (a worker takes the settings of the run that submits to it) get a store
    of one certificate, which no connection uses. An https API is left alone."""
    from prefect.settings import PREFECT_API_SSL_CERT_FILE, get_current_settings, temporary_settings

    url, current = api_url(), get_current_settings()
    if not url or not url.startswith("http://"):
        return nullcontext()
    one = str(_one_certificate(Path(current.home)))
    if current.api.ssl_cert_file == one:  # a task in a worker, which enters its run's runner again
        return nullcontext()
    return temporary_settings(updates={PREFECT_API_SSL_CERT_FILE: one})


def _one_certificate(home: Path) -> Path:
    """A PEM file holding the first certificate of certifi's bundle, written once."""
    path = home / "shardvec-plain-http-ca.pem"
    if not path.exists():
        import certifi

        pem, begun = [], False
        with open(certifi.where(), encoding="ascii") as f:
            for line in f:
                begun = begun or line.startswith("-----BEGIN CERTIFICATE-----")
                if begun:
                    pem.append(line)
                    if line.startswith("-----END CERTIFICATE-----"):
                        break
        home.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text("".join(pem), encoding="ascii")
        tmp.replace(path)
    return path


def task_runner(settings: Settings) -> SettingsTaskRunner:
    """The task runner for runs with these settings."""
    return SettingsTaskRunner(settings)


def api_url() -> str | None:
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    return str(url) if url else None


STARTUP_TIMEOUT = 120  # seconds for the local Prefect server to answer


@contextmanager
def local_prefect() -> Iterator[str]:
    """Yield the Prefect API URL, starting one local server first if none is configured."""
    url = api_url()
    if url:
        yield url
        return
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, temporary_settings

    server = SubprocessASGIServer()
    # The temporary server's telemetry heartbeat writes to its SQLite database at start-up while
    # the run writes there too, and prints a "database is locked" traceback when they collide: a
    # throwaway server has no use for it (a user's own setting wins).
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Prefect's default (20 s) is too short on a busy 2-core machine, where a cold start of its
    # database and API took longer and `mark-crashed` / `nightly` failed before doing anything.
    server.start(timeout=STARTUP_TIMEOUT)
    os.environ["PREFECT_API_URL"] = server.api_url  # inherited by the Dask worker processes
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            yield server.api_url
    finally:
        drain_prefect_workers()  # send queued logs and events while the server still listens
        os.environ.pop("PREFECT_API_URL", None)
        server.stop()
