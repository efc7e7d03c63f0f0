"""Durable file writes (write a temporary file, fsync it, rename it into place, fsync the
folder), and the read-only mapping of the arrays they wrote."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import numpy as np


NAME_MAX = 255  # bytes in a file name, on Linux and macOS file systems


def fit_name(name: str, room: int = 64) -> str:
    """`name`, or when it leaves less than `room` bytes of NAME_MAX for what is added to it (a
    cache key, `.reasons.jsonl`, `.tmp`), its start and its end (the format) around a hash of it
    whole: a legal 255-byte input file name must not make every file derived from it illegal."""
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) + room <= NAME_MAX:
        return name
    digest = hashlib.sha1(raw).hexdigest()[:16]
    head = NAME_MAX - room - len(digest) - 2 - 16
    return "~".join(part.decode("utf-8", "surrogateescape") for part in (raw[:head], digest.encode(), raw[-16:]))


def unique_stamp() -> str:
    """A file-name prefix that sorts by time and never repeats: local time to the second, this
    process's id and a clock tick (two processes, or two calls in one second, differ)."""
    return time.strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}-{time.monotonic_ns() % 10**6}"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Inside `staged()`, files are written straight to their names with no fsync: the caller is
# building a folder that only becomes visible by one rename after one `fsync_tree`.
_staged: ContextVar[bool] = ContextVar("staged", default=False)


@contextmanager
def staged():
    token = _staged.set(True)
    try:
        yield
    finally:
        _staged.reset(token)


@contextmanager
def atomic_path(final: Path):
    """Yield a temporary path beside `final`; on success it is fsynced and renamed to `final`."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if _staged.get():
        yield final
        return
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
        fsync_dir(final.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_with(final: Path, write: Callable[[Path], object]) -> Path:
    with atomic_path(final) as tmp:
        write(tmp)
    return Path(final)


def write_json(final: Path, obj) -> Path:
    return write_with(final, lambda tmp: tmp.write_text(json.dumps(obj, indent=1, default=str)))


def save_npy(final: Path, array: np.ndarray) -> Path:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)

    return write_with(final, write)


def map_npy(path: Path) -> np.ndarray:
    """A read-only memmapped .npy as a plain ndarray: indexing numpy's memmap subclass costs
    microseconds per call, a plain view of the same pages does not."""
    return np.load(path, mmap_mode="r").view(np.ndarray)


def sha256_file(path: Path, block: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def fsync_tree(root: Path) -> None:
    """fsync every file and folder below root (what a publish makes durable before CURRENT moves)."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))
