"""What the pytest-xdist workers of one session build once and share: the session's folder, a
build under a lock (whichever worker asks first builds, the others wait), and the migrated
Prefect database every test server starts from."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.processes import BIN


def session_root(tmp_path_factory) -> Path:
    """The temporary folder of the whole session, shared by its pytest-xdist workers."""
    root = tmp_path_factory.getbasetemp()
    return root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root


def once_per_session(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """The session's folder `name`, filled by `build(folder)` in whichever worker asks first while
    the others wait on a lock. A folder whose build did not finish (it raised, or its worker was
    killed) is emptied and built again by the next to ask."""
    root = session_root(tmp_path_factory)
    folder, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


def migrated_prefect_db(tmp_path_factory, dest: Path) -> Path:
    """At `dest`, a copy of an empty Prefect database already migrated to this Prefect's schema.
    A server started on no database runs every Alembic migration first: half of the ~14 CPU-s
    its start costs here, paid by each of the session's servers (five under `make test` on 2
    cores: a harness per xdist worker and the two end-to-end servers; the local-mode test starts
    from nothing, as a new user's first run does). The migrated database is made once per session
    (`prefect server database upgrade`)."""

    def upgrade(folder: Path) -> None:
        url = f"sqlite+aiosqlite:///{folder / 'prefect.db'}"
        out = subprocess.run(
            [str(BIN / "prefect"), "server", "database", "upgrade", "-y"],
            env={**os.environ, "PREFECT_SERVER_DATABASE_CONNECTION_URL": url},
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
        assert out.returncode == 0, out.stdout + out.stderr

    template = once_per_session(tmp_path_factory, "prefect-migrated", upgrade) / "prefect.db"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, dest)
    return dest
