"""The environment of every test process: set on import, before numpy or Prefect is imported.

tests/conftest.py imports it first, so pytest and its xdist workers have it; the Python scripts
tests start import it first as well (tests/integration/test_lifecycle.py's ENVIRONMENT). The helper modules
do not import it: a benchmark or a shell that imports them gets no temporary folders.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# One BLAS thread per process, as Dask's nannies give their workers: three pytest-xdist workers
# on two cores, each with an OpenBLAS thread per core, spend a quarter of an in-process nightly's
# CPU spinning on each other (the processes tests start inherit it).
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# Prefect writes into its home (a memo store; the results of failed runs under storage/): the
# tests and the processes they start get a temporary one, not the checkout's .prefect or
# ~/.prefect. Set before Prefect is imported, which reads its settings once. Every process that
# imports this module (pytest, its xdist workers, the scripts tests start, SIGKILLed ones
# included) makes its home inside the one folder of the pytest process that started first, which
# removes that folder when it ends (tests/conftest.py): nothing is left in /tmp.
OWNS_TEST_TMP = "SHARDVEC_TEST_TMP" not in os.environ
if OWNS_TEST_TMP:
    os.environ["SHARDVEC_TEST_TMP"] = tempfile.mkdtemp(prefix="shardvec-tests-")
    os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", tempfile.gettempdir())  # pytest's folders: see SCRATCH
PREFECT_HOME = Path(tempfile.mkdtemp(prefix="prefect-", dir=os.environ["SHARDVEC_TEST_TMP"]))
os.environ["PREFECT_HOME"] = str(PREFECT_HOME)
# The scratch the libraries write under the system temp folder or the home directory (Dask's
# worker folders and locks, Prefect's runner storage, torch's kernel cache, matplotlib's font
# cache) goes inside that folder too. pytest's own folders stay in the system temp folder, where
# pytest keeps those of failed tests (pyproject.toml: tmp_path_retention_policy).
SCRATCH = Path(os.environ["SHARDVEC_TEST_TMP"]) / "scratch"
SCRATCH.mkdir(exist_ok=True)
os.environ["TMPDIR"] = tempfile.tempdir = str(SCRATCH)
os.environ["MPLCONFIGDIR"] = str(SCRATCH / "matplotlib")
# What the unit tests need of a Prefect server is flow runs and their states. The services that
# schedule, watch and record runs for the UI, and the log lines every task sends, were 1.7 of the
# 4.4 CPU-seconds the test harness's server spent on one small nightly. The end-to-end tests
# start their servers with Prefect's defaults (tests/e2e/harness.py drops these).
LEAN_PREFECT = {"PREFECT_LOGGING_TO_API_ENABLED": "false"} | {
    f"PREFECT_SERVER_SERVICES_{name}_ENABLED": "false"
    for name in (
        "CANCELLATION_CLEANUP",
        "DB_VACUUM",
        "EVENT_PERSISTER",
        "EVENT_LOGGER",
        "FOREMAN",
        "LATE_RUNS",
        "SCHEDULER",
        "PAUSE_EXPIRATIONS",
        "REPOSSESSOR",
        "CLEANUP_RECONCILER",
        "TASK_RUN_RECORDER",
        "TRIGGERS",
    )
}
for _name, _value in LEAN_PREFECT.items():
    os.environ.setdefault(_name, _value)
# A test that runs a flow asks for the prefect_server fixture (or starts a server it names); one
# that forgets fails at once with "No Prefect API URL provided", instead of silently starting a
# temporary server of its own (seconds of CPU). Builds that need no Prefect run in-process
# (tests/runs.py). The end-to-end tests' processes run as users run them (tests/e2e/harness.py drops it).
NO_EPHEMERAL = {"PREFECT_SERVER_ALLOW_EPHEMERAL_MODE": "false"}
for _name, _value in NO_EPHEMERAL.items():
    os.environ.setdefault(_name, _value)
