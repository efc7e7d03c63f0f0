"""The key index of a space: key -> row with no dict of the keys in RAM.

Two files beside a space's shards (tasks/storage/spaces.py): `key_hash.npy`, the 64-bit xxh3 hash of
every key, sorted, and `key_row.npy`, the row of each, both memmapped. A lookup hashes the key
(0.2 µs), finds its place among the sorted hashes through a directory of their top bits (a
bisect over one or two entries, read as Python ints through memoryviews: numpy's scalar
searchsorted alone costs 1.2 µs), then compares the key itself, as 64-bit hashes can collide.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
from xxhash import xxh3_64_intdigest

from shardvec.tasks.storage.atomic import map_npy, save_npy

HASHES, ROWS = "key_hash.npy", "key_row.npy"


def key_hash(key: str) -> int:
    return xxh3_64_intdigest(key.encode("utf-8"))


def key_hashes(keys: Iterable[str]) -> np.ndarray:
    return np.fromiter((key_hash(k) for k in keys), dtype=np.uint64)


def write_key_index(space_dir: Path, hashes: np.ndarray) -> list[str]:
    """Write the index of keys whose hashes are `hashes` (in row order); returns its file names."""
    order = np.argsort(hashes, kind="stable")
    save_npy(Path(space_dir) / HASHES, hashes[order])
    save_npy(Path(space_dir) / ROWS, order.astype(np.int64))
    return [HASHES, ROWS]


class KeyIndex:
    """Rows by key over a space's key index. `key_bytes(row)` gives the UTF-8 bytes of a row's
    key (the space reads them from its shards' Arrow buffers)."""

    def __init__(self, space_dir: Path, key_bytes: Callable[[int], bytes | memoryview]):
        self._hash = map_npy(Path(space_dir) / HASHES)
        self._row = map_npy(Path(space_dir) / ROWS)
        self._key_bytes = key_bytes
        self._lookup: tuple | None = None  # see _directory

    def find(self, key: str) -> int | None:
        """The row of `key`, or None: its hash's place in the sorted hashes, then a key check."""
        kb = key.encode("utf-8")
        h = xxh3_64_intdigest(kb)
        r = self._walk(kb, h, self._first(h))
        return None if r < 0 else r

    def find_many(self, keys: Sequence[str]) -> np.ndarray:
        """Rows of many keys at once (-1 where absent): one vectorized binary search."""
        encoded = [k.encode("utf-8") for k in keys]
        hashes = np.fromiter((xxh3_64_intdigest(b) for b in encoded), dtype=np.uint64, count=len(encoded))
        at = self._hash.searchsorted(hashes)
        return np.fromiter(
            (self._walk(kb, h, i) for kb, h, i in zip(encoded, hashes.tolist(), at.tolist())),
            dtype=np.int64,
            count=len(encoded),
        )

    def find_all(self, key: str) -> list[int]:
        """Every row holding `key`, in row order (a space of added statements may hold a
        replaced statement and its replacement)."""
        kb = key.encode("utf-8")
        h = xxh3_64_intdigest(kb)
        return sorted(self._walk(kb, h, self._first(h), every=True))

    def _directory(self) -> tuple[int, memoryview, memoryview, memoryview]:
        """(shift, directory, hashes, rows) for single lookups, built on first use.

        The hashes are uniform, so a directory of their top bits (8 bytes per 1-2 keys, at most
        8 MB) leaves a bisect over one or two entries, and memoryviews read them as plain Python
        ints: a few hundred nanoseconds in all."""
        if self._lookup is None:
            n = len(self._hash)
            bits = min(20, max(0, n.bit_length() - 1))
            shift = 64 - bits
            bounds = np.arange(1, 1 << bits, dtype=np.uint64) << np.uint64(shift)
            directory = np.concatenate([[0], self._hash.searchsorted(bounds), [n]]).astype(np.int64)
            self._lookup = (
                shift,
                memoryview(directory),
                memoryview(self._hash).cast("B").cast("Q"),
                memoryview(self._row).cast("B").cast("q"),
            )
        return self._lookup

    def _first(self, h: int) -> int:
        """The first index of hash `h` in the sorted hashes (or where it would go)."""
        shift, directory, hashes, _ = self._directory()
        b = h >> shift
        return bisect.bisect_left(hashes, h, directory[b], directory[b + 1])

    def _walk(self, kb: bytes, h: int, i: int, every: bool = False) -> int | list[int]:
        """The row whose key is `kb`, from the first index `i` of its hash `h`, or -1 (`every`:
        all such rows): the keys of the run of equal hashes are compared, as 64-bit hashes
        can collide."""
        _, _, hashes, rows = self._directory()
        found = []
        while i < len(hashes) and hashes[i] == h:
            if self._key_bytes(rows[i]) == kb:
                if not every:
                    return rows[i]
                found.append(rows[i])
            i += 1
        return found if every else -1
