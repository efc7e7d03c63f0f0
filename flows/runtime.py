"""Where flows run: the Dask task runner and, in local mode, one shared Prefect server.

Without PREFECT_API_URL, Prefect starts a temporary server in every process that runs a task,
so each Dask worker would start its own (seconds and memory each, all writing one SQLite
file). `local_prefect()` starts one and points this process and every worker it spawns at it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import dask
from prefect_dask import DaskTaskRunner

from shardvec.config import Settings


def task_runner(settings: Settings) -> DaskTaskRunner:
    """An existing scheduler if one is configured, else a LocalCluster of worker processes."""
    logging.getLogger("distributed").setLevel(logging.WARNING)  # Dask's INFO lines drown the run's own
    # Workers sample their own stacks every 10 ms by default: CPU the build needs, for a
    # profile nobody reads here. The nanny passes this config to the workers it spawns.
    dask.config.set({"distributed.worker.profile.enabled": False})
    if settings.dask.address:
        return DaskTaskRunner(address=settings.dask.address)
    return DaskTaskRunner(cluster_kwargs={
        "n_workers": settings.dask.n_workers, "threads_per_worker": settings.dask.threads_per_worker,
        "memory_limit": settings.dask.memory_limit, "processes": True, "dashboard_address": None,
        "silence_logs": logging.WARNING,
    })


def api_url() -> str | None:
    from prefect.settings import get_current_settings
    url = get_current_settings().api.url
    return str(url) if url else None


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
    server.start()
    os.environ["PREFECT_API_URL"] = server.api_url  # inherited by the Dask worker processes
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            yield server.api_url
    finally:
        _drain_prefect_workers()  # send queued logs and events while the server still listens
        os.environ.pop("PREFECT_API_URL", None)
        server.stop()


def _drain_prefect_workers() -> None:
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    for worker in (APILogWorker, EventsWorker):
        try:
            worker.drain_all(timeout=10)
        except Exception:  # best effort: a lost log line must not fail a finished run
            pass
