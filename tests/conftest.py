"""Shared fixtures: real text from gensim's test data, small settings, a Prefect test server."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

# One BLAS thread per process, as Dask's nannies give their workers: three pytest-xdist workers
# on two cores, each with an OpenBLAS thread per core, spend a quarter of an in-process nightly's
# CPU spinning on each other (set before numpy is imported; the processes tests start inherit it).
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import psutil  # noqa: E402
import pytest  # noqa: E402
from gensim.test.utils import datapath  # noqa: E402

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# Prefect writes into its home (a memo store; the results of failed runs under storage/): the
# tests and the processes they start get a temporary one, not the checkout's .prefect or
# ~/.prefect. Set before Prefect is imported, which reads its settings once. Every process that
# imports this module (pytest, its xdist workers, the scripts tests start, SIGKILLed ones
# included) makes its home inside the one folder of the pytest process that started first, which
# removes that folder when it ends: nothing is left in /tmp.
OWNS_TEST_TMP = "SHARDVEC_TEST_TMP" not in os.environ
if OWNS_TEST_TMP:
    os.environ["SHARDVEC_TEST_TMP"] = tempfile.mkdtemp(prefix="shardvec-tests-")
PREFECT_HOME = Path(tempfile.mkdtemp(prefix="prefect-", dir=os.environ["SHARDVEC_TEST_TMP"]))
os.environ["PREFECT_HOME"] = str(PREFECT_HOME)
# What the unit tests need of a Prefect server is flow runs and their states. The services that
# schedule, watch and record runs for the UI, and the log lines every task sends, were 1.7 of the
# 4.4 CPU-seconds the test harness's server spent on one small nightly. The end-to-end tests
# start their servers with Prefect's defaults (tests/e2e.py drops these).
LEAN_PREFECT = {"PREFECT_LOGGING_TO_API_ENABLED": "false"} | {
    f"PREFECT_SERVER_SERVICES_{name}_ENABLED": "false"
    for name in ("CANCELLATION_CLEANUP", "DB_VACUUM", "EVENT_PERSISTER", "EVENT_LOGGER", "FOREMAN", "LATE_RUNS",
                 "SCHEDULER", "PAUSE_EXPIRATIONS", "REPOSSESSOR", "CLEANUP_RECONCILER", "TASK_RUN_RECORDER",
                 "TRIGGERS")}
for _name, _value in LEAN_PREFECT.items():
    os.environ.setdefault(_name, _value)


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
ONE_WORKER = {"test_e2e.py", "test_e2e_pool.py"}


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

from shardvec.config import load_settings  # noqa: E402

# Two statements that say the same thing in other words; each must be the other's top row.
NEAR_DUPLICATES = (
    ("dup/a", "Firefighters battled huge bushfires across New South Wales as strong winds fanned the flames."),
    ("dup/b", "Across New South Wales firefighters battled the huge bushfires as the strong winds fanned flames."),
)


def lee_lines(name: str = "lee_background.cor") -> list[str]:
    with open(datapath(name), encoding="utf-8", errors="replace") as f:
        return [line.strip() for line in f if line.strip()]


def write_corpus(corpus: Path) -> dict[str, Path]:
    """Three partitions in the three formats, from the Lee corpora (real news text)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    bg = lee_lines()
    p1 = corpus / "2026-11-01" / "lee.txt"
    p1.parent.mkdir(parents=True)
    p1.write_text("\n".join(bg[:150]) + "\n", encoding="utf-8")
    p2 = corpus / "2026-11-02" / "lee.jsonl"
    p2.parent.mkdir(parents=True)
    with open(p2, "w", encoding="utf-8") as f:
        for i, line in enumerate(bg[150:], 150):
            f.write(json.dumps({"id": f"bg/{i}", "text": line}) + "\n")
        for id_, text in NEAR_DUPLICATES:
            f.write(json.dumps({"id": id_, "text": text}) + "\n")
        f.write('{"id": "bad/1", "text": "a broken line\n')  # quarantined, the rest goes on
    p3 = corpus / "2026-11-03" / "lee.parquet"
    p3.parent.mkdir(parents=True)
    test = lee_lines("lee.cor")
    pq.write_table(pa.table({"id": [f"test/{i}" for i in range(len(test))], "text": test}), p3)
    return {"text": p1, "jsonl": p2, "parquet": p3}


# small_settings() as a TOML file, for runs in other processes (SHARDVEC_CONFIG)
SMALL_TOML = """
[lsi]
num_topics = 40
chunksize = 200
[word2vec]
vector_size = 32
min_count = 2
epochs = 3
workers = 1
sg = 0
[store]
rows_per_shard = 256
[index]
n_trees = 10
search_k = 2000
recall_sample = 50
[quality]
gate = false
"""
# SMALL_TOML for runs in other processes that start their own Dask cluster (the killed and limited
# runs of test_faults.py, every run of the end-to-end tests): one worker, since each worker process
# costs seconds of CPU to start, and shards of 1,024 rows, since each Dask task costs ~0.4 CPU-s of
# Prefect's own (the settings serialized at every submit and rebuilt in the worker): the words
# space's 17 shards of 256 were a fifth of such a run. The runs over several workers and shards
# on Dask are tests/test_dask.py's and the partitioned-rows nightly of tests/test_partitioned.py.
ONE_DASK_WORKER_TOML = SMALL_TOML.replace("rows_per_shard = 256", "rows_per_shard = 1024") + "[dask]\nn_workers = 1\n"
assert "rows_per_shard = 1024" in ONE_DASK_WORKER_TOML


def small_settings(data: Path, **more):
    """Settings scaled to the Lee corpus: several shards per space, quick training."""
    base = dict(
        data_dir=str(data),
        lsi={"num_topics": 40, "chunksize": 200},
        word2vec={"vector_size": 32, "min_count": 2, "epochs": 3, "workers": 1, "sg": 0},
        store={"rows_per_shard": 256},
        index={"n_trees": 10, "search_k": 2000, "recall_sample": 50},
        dask={"n_workers": 2, "threads_per_worker": 1, "memory_limit": "2GiB"},
        # word-pair metrics on a 350-document corpus are noise; tests/test_quality.py gates for real
        quality={"gate": False},
    )
    for key, value in more.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return load_settings(**base)


@pytest.fixture
def corpus_data(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    write_corpus(data / "corpus")
    return data


def session_root(tmp_path_factory) -> Path:
    """The temporary folder of the whole session, shared by its pytest-xdist workers."""
    root = tmp_path_factory.getbasetemp()
    return root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root


def migrated_prefect_db(tmp_path_factory, dest: Path) -> Path:
    """At `dest`, a copy of an empty Prefect database already migrated to this Prefect's schema.
    A server started on no database runs every Alembic migration first: half of the ~14 CPU-s
    its start costs here, paid by each of the session's servers (five under `make test` on 2
    cores: a harness per xdist worker and the two end-to-end servers; the local-mode test starts
    from nothing, as a new user's first run does). The migrated database is made once (`prefect
    server database upgrade`), by whichever worker asks first."""
    root = session_root(tmp_path_factory)
    template = root / "prefect-migrated.db"
    with open(root / "prefect-migrated.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not template.exists():
            partial = root / "prefect-migrating.db"
            for leftover in (partial, root / f"{partial.name}-wal", root / f"{partial.name}-shm"):
                leftover.unlink(missing_ok=True)  # of an upgrade that timed out
            env = {**os.environ, "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{partial}"}
            out = subprocess.run([str(BIN / "prefect"), "server", "database", "upgrade", "-y"], env=env,
                                 capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
            assert out.returncode == 0, out.stdout + out.stderr
            partial.rename(template)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, dest)
    return dest


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


def run_nightly(settings, runner=None) -> dict:
    """The nightly flow as a deployment would run it, on the given (default: Dask) task runner."""
    from shardvec.flows.nightly import nightly
    from shardvec.flows.runtime import task_runner
    flow = nightly.with_options(task_runner=runner or task_runner(settings))
    return flow(overrides=json.loads(settings.model_dump_json()))


def nightly_in_process(data: Path) -> dict:
    """The nightly on `data` with small_settings, in this process on Prefect's thread pool: for
    the runs that are about what the data directory holds, not about Dask (a Dask run of the same
    flow costs 3-4x the CPU on this corpus)."""
    from prefect.task_runners import ThreadPoolTaskRunner
    return run_nightly(small_settings(data), ThreadPoolTaskRunner(max_workers=2))


def backfill_in_process(data: Path, **params) -> dict:
    """The backfill flow on `data` with small_settings and `params` (mode, partitions, ...), in
    this process on Prefect's thread pool, as nightly_in_process runs the nightly."""
    from prefect.task_runners import ThreadPoolTaskRunner

    from shardvec.flows.backfill import backfill
    flow = backfill.with_options(task_runner=ThreadPoolTaskRunner(max_workers=2))
    return flow(**params, overrides=json.loads(small_settings(data).model_dump_json()))


@pytest.fixture(scope="session")
def published(tmp_path_factory, prefect_server):
    """One nightly run, shared read-only by the tests that query it (and copied by those that
    change it): built by whichever pytest-xdist worker asks first, while the others wait on a
    lock (each built its own before: a nightly of CPU per worker). On Prefect's thread pool: a
    Dask run of the same flow costs 3-4x the CPU here (a task's start in a Dask worker, ~0.1-0.2 s,
    is most of a task on this corpus), and the Dask runs have tests of their own
    (tests/test_dask.py compares theirs with this one)."""
    root = session_root(tmp_path_factory)
    shared, data = root / "published", root / "published" / "data"
    with open(root / "published.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (shared / "report.json").exists():
            shutil.rmtree(shared, ignore_errors=True)
            write_corpus(data / "corpus")
            report = nightly_in_process(data)
            (shared / "report.json").write_text(json.dumps(report))
    return data, small_settings(data), json.loads((shared / "report.json").read_text())


@pytest.fixture
def published_copy(published, tmp_path) -> Path:
    """A copy of the session's published data directory, this test's to change."""
    data = tmp_path / "data"
    shutil.copytree(published[0], data)
    return data


BIN = Path(sys.executable).parent


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def shardvec_cli(*args, input: str | None = None, env: dict[str, str | None] | None = None) -> CliResult:
    """`shardvec ARGS` run in this process, as the console script runs it (`shardvec.cli.main`,
    with its one-line errors and exit codes), through Typer's CliRunner: no interpreter to start.
    An exception that main lets through prints its traceback on stderr and exits 1, as Python
    would. Tests that must kill, limit or drop the privileges of the process start it instead."""
    import prefect.main  # noqa: F401  Prefect binds its log handlers to sys.stderr on import: the real one
    from typer.testing import CliRunner

    from shardvec.cli import main
    argv = sys.argv
    with CliRunner().isolation(input=input, env=env) as (out, err, _):
        sys.argv = ["shardvec", *map(str, args)]
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = 0 if exc.code is None else exc.code
            if not isinstance(code, int):  # sys.exit("message"): printed, exit status 1
                print(code, file=sys.stderr)
                code = 1
        except Exception:
            traceback.print_exc()
            code = 1
        finally:
            sys.argv = argv
            sys.stdout.flush()
            sys.stderr.flush()
        return CliResult(code, out.getvalue().decode(), err.getvalue().decode())


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
    while alive := [p.pid for p in psutil.process_iter() if _alive_in_group(p, pgid)]:
        assert time.monotonic() < deadline, f"processes {alive} of the killed group {pgid} are still alive"
        time.sleep(0.05)
    return killed_at


def _alive_in_group(p: psutil.Process, pgid: int) -> bool:
    """In the group and not a zombie (a killed process nobody reaped yet is gone for our purposes)."""
    try:
        return os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE
    except (ProcessLookupError, PermissionError, psutil.Error):
        return False


def group_members(pgid: int) -> list[int]:
    """The live processes of process group `pgid`."""
    return [p.pid for p in psutil.process_iter() if _alive_in_group(p, pgid)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dask_cluster(tmp_path):
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
    for p in procs:
        os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        p.wait(30)


