"""pytest's hooks and the shared fixtures: a Prefect test server, the session's published data
directory (and copies of it to change), a corpus of real text, a real Dask scheduler and workers.

The helpers tests import live beside it (tests/__init__.py lists them)."""

from __future__ import annotations

# First: it sets what numpy and Prefect read when they are imported.
from tests.environment import OWNS_TEST_TMP, PREFECT_HOME  # noqa: I001

import json
import os
import resource
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
    """Under pytest-xdist, the modules of ONE_WORKER go first, then the tests marked slow (stable
    order otherwise): the longest jobs start early instead of leaving one worker busy at the end
    while the other waits (the scheduler below keeps this order)."""
    _check_apart(items)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: (_scope(item.nodeid) == item.nodeid, item.get_closest_marker("slow") is None))


def _cpu() -> float:
    """CPU seconds (user + system) of this process and of the processes it started and waited for."""
    own, waited = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + waited.ru_utime + waited.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    item.cpu_at_start = _cpu()
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A test's teardown report carries the CPU its setup, call and teardown took (`cpu`): what
    bounds `make test` on 2 cores more than waits do. pytest-xdist sends it to the controller."""
    outcome = yield
    if call.when == "teardown":
        outcome.get_result().cpu = _cpu() - item.cpu_at_start


CPU: dict[str, float] = {}  # test -> CPU seconds, in the process that reports


def pytest_runtest_logreport(report):
    if report.when == "teardown" and hasattr(report, "cpu"):
        CPU[report.nodeid] = report.cpu


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Keep the slow mark honest: name the tests that took longer than SLOW_SECONDS without it.
    Then the CPU the tests took, and with --durations=N the N that took the most."""
    unmarked = sorted(
        (r.duration, r.nodeid)
        for r in terminalreporter.stats.get("passed", [])
        if r.when == "call" and r.duration > SLOW_SECONDS and "slow" not in r.keywords
    )
    if unmarked:
        terminalreporter.write_sep(
            "-", f"over {SLOW_SECONDS} s without @pytest.mark.slow (mark them, or make them faster)"
        )
        for duration, nodeid in unmarked:
            terminalreporter.write_line(f"{duration:6.1f} s  {nodeid}")
    if not CPU:
        return
    # A lower bound: a process's CPU counts once a test's process waited for it (servers of a
    # session fixture: in the last test of their worker), and the orphans of a killed group never.
    total = sum(CPU.values())
    terminalreporter.write_sep(
        "-",
        f"CPU of the tests: {total:.0f} CPU-s, {total / 60:.1f} CPU-min (user + system, "
        "with the processes they started and waited for)",
    )
    for nodeid in sorted(CPU, key=CPU.get, reverse=True)[: config.option.durations or 0]:
        terminalreporter.write_line(f"{CPU[nodeid]:6.1f} CPU-s  {nodeid}")


# Modules that run whole, in order, on one pytest-xdist worker: their module-scoped fixtures are
# servers, and their tests build on what the earlier ones left. Their tests that use none of the
# module's fixtures (APART) are units of their own, run beside the module on any worker: each
# module is the longest unit of `make test`, so what it need not run itself comes off the end.
ONE_WORKER = {"test_e2e.py", "test_e2e_pool.py", "test_e2e_worker_kill.py"}
APART = {
    "test_e2e_pool.py": {"test_a_killed_cli_run_in_local_mode_is_marked_crashed"},
    "test_e2e_worker_kill.py": {
        "test_the_watchdog_ends_a_run_whose_parent_is_killed",
        "test_a_dask_run_ends_quietly",
        "test_a_run_whose_dask_workers_are_gone_fails_saying_so",
        "test_a_run_whose_task_hangs_fails_saying_so",
    },
}


def _scope(nodeid: str) -> str:
    """The unit of pytest-xdist work `nodeid` belongs to: its module for the modules of
    ONE_WORKER (but their APART tests), else the test itself."""
    module, _, test = nodeid.partition("::")
    name = module.rsplit("/", 1)[-1]
    return module if name in ONE_WORKER and test.split("[", 1)[0] not in APART.get(name, ()) else nodeid


def _check_apart(items) -> None:
    """APART names tests of its module that use none of the module's own fixtures (its servers)."""
    for item in items:
        name = item.path.name
        if getattr(item, "originalname", None) not in APART.get(name, ()):
            continue
        missing = [test for test in APART[name] if not hasattr(item.module, test)]
        shared = [f for f, defs in item._fixtureinfo.name2fixturedefs.items() if defs[-1].scope == "module"]
        if missing or shared:
            raise pytest.UsageError(
                f"tests/conftest.py APART: {name} has no {missing}"
                if missing
                else f"tests/conftest.py APART: {item.nodeid} uses the module's {shared}: take it out of APART"
            )


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Under pytest-xdist (`make test` runs -n WORKERS) every test is a unit of work of its own,
    but the modules of ONE_WORKER are one unit each, their APART tests aside; units are sent in
    the order of collection (not by size, xdist's default: a module of one test is not a short
    unit). It replaces whatever --dist was asked for. (xdist's --dist loadgroup
    would do this with the xdist_group mark, but it silently stops grouping with pytest >= 9.2:
    pytest-dev/pytest-xdist#1386.)"""
    from xdist.scheduler import LoadScopeScheduling

    class Scheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _scope(nodeid)

    config.option.loadscopereorder = False
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
def published(tmp_path_factory):
    """One nightly run, shared read-only by the tests that query it (and copied by those that
    change it): built by whichever pytest-xdist worker asks first, while the others wait on a
    lock (each built its own before: a nightly of CPU per worker). Built in-process (no Prefect,
    no Dask: tests/runs.py nightly_in_process); the Dask runs have tests of their own
    (tests/integration/test_dask.py compares theirs with this one)."""

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
    procs = [
        subprocess.Popen(
            [BIN / "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    ]
    for i in range(2):
        procs.append(
            subprocess.Popen(
                [
                    BIN / "dask",
                    "worker",
                    address,
                    "--nthreads",
                    "1",
                    "--nworkers",
                    "1",
                    "--name",
                    f"w{i}",
                    "--no-dashboard",
                    "--memory-limit",
                    "2GiB",
                    "--local-directory",
                    str(tmp_path / f"w{i}"),
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
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
