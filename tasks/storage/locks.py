"""The data directory's two locks: the publish lock (CURRENT changes one at a time) and the run
lock (one run at a time). Both are advisory flocks the OS drops when the process dies."""

from __future__ import annotations

import fcntl
import os
import time
from datetime import datetime, timezone
from pathlib import Path

from shardvec.errors import ShardvecError
from shardvec.tasks.storage.layout import Layout


class LockedError(RuntimeError, ShardvecError):
    pass


class PublishLock:
    """Held while CURRENT changes (an add batch, a run's final swap, a rollback): short, blocking."""

    def __init__(self, data: Path):
        self.path = Layout(data).publish_lock

    def __enter__(self) -> "PublishLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)


class RunLock:
    """One run at a time per data directory (an advisory flock the OS drops if the process dies).

    A run that finds the lock held waits up to `wait_seconds` for it (a nightly that meets a long
    backfill runs after it instead of failing), telling `say` who holds it when it starts waiting
    and every `say_every` seconds after; then it gives up with LockedError."""

    def __init__(self, data: Path, wait_seconds: float = 0.0, say=None, say_every: float = 60.0):
        self.path = Layout(data).run_lock
        self.wait_seconds = wait_seconds
        self.say, self.say_every = say, say_every
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        began = time.monotonic()
        said = None
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another run"
                waited = time.monotonic() - began
                if waited >= self.wait_seconds:
                    os.close(fd)
                    raise LockedError(
                        f"Another shardvec run holds {self.path} ({holder}); "
                        + (f"waited {waited:.0f} s for it; " if self.wait_seconds else "")
                        + "wait for it to finish, then run again."
                    ) from None
                if self.say and (said is None or time.monotonic() - said >= self.say_every):
                    self.say(
                        f"waiting for the run that holds {self.path} ({holder}) to finish: "
                        f"{waited:.0f} s so far, at most {self.wait_seconds:.0f} s"
                    )
                    said = time.monotonic()
                time.sleep(0.5)
        if said is not None and self.say:
            self.say(f"the run lock is free after {time.monotonic() - began:.0f} s; starting")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {datetime.now(timezone.utc).isoformat(timespec='seconds')}".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
