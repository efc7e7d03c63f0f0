"""pytest's hooks and the shared fixtures: a Prefect test server, the session's published data
directory (and copies of it to change), a corpus of real text, a real Dask scheduler and workers.

The helpers tests import live beside it (tests/__init__.py lists them)."""

from __future__ import annotations

# First: it sets what numpy and Prefect read when they are imported.
from tests.environment import OWNS_TEST_TMP, PREFECT_HOME  # noqa: I001

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from tests.corpora import write_corpus
from tests.processes import BIN, free_port, stop_groups
from tests.runs import nightly_in_process, small_settings
from tests.shared import migrated_prefect_db, once_per_session


def pytest_unconfigure(config):
    shutil.rmtree(os.environ["SHARDVEC_TEST_TMP"] if OWNS_TEST_TMP else PREFECT_HOME, ignore_errors=True)


SLOW_SECONDS = 20


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist, the tests marked slow go first (stable order otherwise): the longest
    jobs start early instead of leaving one worker busy at the end while the other waits."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Keep the slow mark honest: name the tests that took longer than SLOW_SECONDS without it."""
    unmarked = sorted((r.duration, r.nodeid) for r in terminalreporter.stats.get("passed", [])
                      if r.when == "call" and r.duration > SLOW_SECONDS and "slow" not in r.keywords)
    if unmarked:
        terminalreporter.write_sep("-", f"over {SLOW_SECONDS} s without @pytest.mark.slow (mark them, or make them faster)")
        for duration, nodeid in unmarked:
            terminalreporter.write_line(f"{duration:6.1f} s  {nodeid}")


# Modules that run whole, in order, on one pytest-xdist worker: their module-scoped fixtures are
# servers, and their tests build on what the earlier ones left.
ONE_WORKER = {"test_e2e.py", "test_e2e_pool.py", "test_e2e_worker_kill.py"}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Under pytest-xdist (`make test` runs -n WORKERS) every test is a unit of work of its own,
    but the modules of ONE_WORKER are one unit each (sent first: xdist orders units by size). It
    replaces whatever --dist was asked for. (xdist's --dist loadgroup would do
    this with the xdist_group mark, but it silently stops grouping with pytest >= 9.2:
    pytest-dev/pytest-xdist#1386.)"""
    from xdist.scheduler import LoadScopeScheduling

    class Scheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if module.rsplit("/", 1)[-1] in ONE_WORKER else nodeid

    return Scheduling(config, log)

@pytest.fixture
def corpus_data(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    write_corpus(data / "corpus")
    return data


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """Prefect's test harness: a real temporary server and database for the session. The
    harness puts its database in a folder of its own making (`mkdtemp`); it is given one that
    already holds a migrated database."""
    from contextlib import ExitStack
    from unittest import mock

    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL
    from prefect.testing.utilities import prefect_test_harness
    folder = tmp_path_factory.mktemp("prefect-harness")
    db = migrated_prefect_db(tmp_path_factory, folder / "prefect-test.db")
    with ExitStack() as harness:
        with mock.patch("prefect.testing.utilities.mkdtemp", return_value=str(folder)):
            harness.enter_context(prefect_test_harness(server_startup_timeout=120))
        # a harness that names its database otherwise would start from nothing, silently
        assert PREFECT_SERVER_DATABASE_CONNECTION_URL.value().endswith(str(db)), "the harness moved its database"
        yield


class Published(NamedTuple):
    data: Path  # the data directory: read it, never change it (published_copy is a copy to change)
    settings: Any  # the small_settings it was built with
    report: dict  # what the nightly returned


@pytest.fixture(scope="session")
def published(tmp_path_factory, prefect_server):
    """One nightly run, shared read-only by the tests that query it (and copied by those that
    change it): built by whichever pytest-xdist worker asks first, while the others wait on a
    lock (each built its own before: a nightly of CPU per worker). On Prefect's thread pool: a
    Dask run of the same flow costs 3-4x the CPU here (a task's start in a Dask worker, ~0.1-0.2 s,
    is most of a task on this corpus), and the Dask runs have tests of their own
    (tests/test_dask.py compares theirs with this one)."""
    def build(shared: Path) -> None:
        write_corpus(shared / "data" / "corpus")
        (shared / "report.json").write_text(json.dumps(nightly_in_process(shared / "data")))

    shared = once_per_session(tmp_path_factory, "published", build)
    data = shared / "data"
    return Published(data, small_settings(data), json.loads((shared / "report.json").read_text()))


@pytest.fixture
def published_copy(published, tmp_path) -> Path:
    """A copy of the session's published data directory, this test's to change."""
    data = tmp_path / "data"
    shutil.copytree(published.data, data)
    return data


@pytest.fixture
def dask_cluster(tmp_path):
    """A real `dask scheduler` and two `dask worker` processes: (address, worker addresses, processes)."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    procs = [subprocess.Popen([BIN / "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)]
    for i in range(2):
        procs.append(subprocess.Popen([BIN / "dask", "worker", address, "--nthreads", "1", "--nworkers", "1",
                                       "--name", f"w{i}", "--no-dashboard", "--memory-limit", "2GiB",
                                       "--local-directory", str(tmp_path / f"w{i}")], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
    from distributed import Client
    deadline = time.monotonic() + 90
    while True:
        try:
            with Client(address, timeout=5) as c:
                c.wait_for_workers(2, timeout=60)
                workers = sorted(c.scheduler_info()["workers"])
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    yield address, workers, procs
    stop_groups(procs)
