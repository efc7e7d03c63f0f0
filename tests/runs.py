"""How tests run shardvec: settings scaled to the Lee corpus, the flows in this process, the CLI
in this process (Typer's runner), and the migrated Prefect database their servers start from."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import tests.environment  # noqa: F401  before Prefect or numpy is imported
from shardvec.config import load_settings
from tests.processes import BIN

# small_settings() as a TOML file, for runs in other processes (SHARDVEC_CONFIG); a test in
# tests/test_config.py checks that the two agree.
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
