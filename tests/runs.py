"""How tests run shardvec: settings scaled to the Lee corpus (for this process and, as TOML,
for the processes tests start), the flows in this process, and the CLI in this process (Typer's
runner)."""

from __future__ import annotations

import json
import sys
import tomllib
import traceback
from dataclasses import dataclass
from pathlib import Path

from shardvec.config import load_settings

# The settings of small_settings(), apart from the data directory and the Dask cluster.
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
nprobe = 8
recall_sample = 50
[quality]
gate = false
"""
# SMALL_TOML for the runs in processes tests start (SHARDVEC_CONFIG: the killed and limited runs
# of test_faults.py, every run of the end-to-end tests), each starting a Dask cluster of its own:
# one worker, since each worker process costs seconds of CPU to start, and shards of 1,024 rows,
# since each Dask task costs ~0.4 CPU-s of Prefect's own (the settings serialized at every submit
# and rebuilt in the worker): the words space's 17 shards of 256 were a fifth of such a run. The
# runs over several workers and shards on Dask are tests/integration/test_dask.py's and the partitioned-rows
# nightly of tests/integration/test_partitioned.py.
SUBPROCESS_TOML = SMALL_TOML.replace("rows_per_shard = 256", "rows_per_shard = 1024") + "[dask]\nn_workers = 1\n"


def small_settings(data: Path, **more):
    """Settings scaled to the Lee corpus (SMALL_TOML): several shards per space, quick training, a
    Dask cluster of two workers; `more` overrides them a section at a time."""
    base = tomllib.loads(SMALL_TOML) | {
        "data_dir": str(data),
        "dask": {"n_workers": 2, "threads_per_worker": 1, "memory_limit": "2GiB"},
    }
    # (quality.gate is off: word-pair metrics on a 350-document corpus are noise; tests/integration/test_quality.py gates for real)
    for key, value in more.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return load_settings(**base)


def run_nightly(settings, runner=None) -> dict:
    """The nightly flow as a deployment would run it, on the given (default: Dask) task runner."""
    from shardvec.flows.nightly import nightly
    from shardvec.flows.runtime import task_runner

    flow = nightly.with_options(task_runner=runner or task_runner(settings))
    return flow(overrides=json.loads(settings.model_dump_json()))


def _threads():
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=2)


def nightly_in_process(data: Path, **more) -> dict:
    """What the nightly flow builds and publishes on `data` with small_settings(data, **more), built
    in this process by the in-process executor (flows/executors.py): for the tests about what the
    data directory holds. No Prefect and no Dask: a build costs about half the CPU of the same
    flow on Prefect's thread pool, and the process starts no Prefect server. The flows themselves
    run in nightly_flow, tests/integration/test_dask.py and the end-to-end tests."""
    return _build(small_settings(data, **more), flow="nightly", mode="update", skip_if_nothing_new=True)


def backfill_in_process(data: Path, mode: str = "update", partitions: list[str] | None = None, **more) -> dict:
    """What the backfill flow of `partitions` (default: all) in `mode` publishes, built in this
    process as nightly_in_process builds."""
    return _build(
        small_settings(data, **more), flow="backfill", mode=mode, partitions=partitions, skip_if_nothing_new=False
    )


def _build(settings, **how) -> dict:
    from shardvec.flows.executors import InProcess
    from shardvec.flows.pipeline import build_and_publish

    return build_and_publish(settings, executor=InProcess(), **how)


def nightly_flow(data: Path, **more) -> dict:
    """The nightly flow on `data` with small_settings(data, **more), run in this process on Prefect's
    thread pool (needs the prefect_server fixture): for the tests of what the flow adds around the
    build (run records, reports, artifacts, Prefect's task states)."""
    return run_nightly(small_settings(data, **more), _threads())


def backfill_flow(data: Path, mode: str = "update", partitions: list[str] | None = None, **more) -> dict:
    """The backfill flow, as nightly_flow runs the nightly."""
    from shardvec.flows.backfill import backfill

    flow = backfill.with_options(task_runner=_threads())
    return flow(mode=mode, partitions=partitions, overrides=json.loads(small_settings(data, **more).model_dump_json()))


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
