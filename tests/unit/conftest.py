"""The unit tier (`make unit`): pure functions over small real data, with no Prefect server and
no Dask cluster, the whole tier in under a minute on 2 cores.

A test here that asks for a fixture which starts Prefect or Dask fails at collection, and a
`make unit` run that imported Prefect or Dask at all fails at its end: such a test belongs
in tests/integration/.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
HARNESS = {"prefect_server", "published", "published_copy", "dask_cluster"}  # tests/conftest.py's
ORCHESTRATION = ("prefect", "prefect_dask", "distributed")  # dask.utils alone: config checks sizes with it


def _unit(item) -> bool:
    return Path(str(item.fspath)).is_relative_to(HERE)


def pytest_collection_modifyitems(config, items):
    wrong = [
        f"{item.nodeid} uses {', '.join(sorted(HARNESS & set(item.fixturenames)))}"
        for item in items
        if _unit(item) and HARNESS & set(item.fixturenames)
    ]
    if wrong:
        raise pytest.UsageError(
            "tests/unit/ starts no Prefect or Dask; move these to tests/integration/: " + "; ".join(wrong)
        )


def pytest_sessionfinish(session, exitstatus):
    """When only unit tests ran, nothing imported Prefect or Dask (a tasks/ module that does
    would break the layers anyway; this catches a unit test importing the flows)."""
    items = getattr(session, "items", [])
    if items and all(_unit(item) for item in items):
        loaded = sorted(m for m in ORCHESTRATION if m in sys.modules)
        if loaded:
            session.config.get_terminal_writer().line(
                f"tests/unit/ imported {', '.join(loaded)}: a unit test needs neither; move it to tests/integration/",
                red=True,
            )
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
