"""Vector spaces on disk: sharded `.npy` memmaps plus keys, opened without loading them.

A space is a folder:
  manifest.json            format, dim, dtype, rows, rows_per_shard, shards with checksums
  vectors-00000.npy ...    float32 rows, `rows_per_shard` per shard (the last may be shorter)
  keys-00000.arrow ...     Arrow IPC file per shard: column `key` (+ extra columns) in row order
  key_hash.npy, key_row.npy  sorted 64-bit key hashes and their rows: key -> row by binary search

Row r lives in shard r // rows_per_shard at offset r % rows_per_shard. Shards are written
independently (one task each), then `finish_space` builds the key index and the manifest.
Everything opens with mmap, so many processes share one copy in the page cache.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from tasks.atomic import save_npy, sha256_file, write_json, write_with

FORMAT = 1


def key_hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "little")


def key_hashes(keys: Iterable[str]) -> np.ndarray:
    return np.fromiter((key_hash(k) for k in keys), dtype=np.uint64)


def shard_name(kind: str, shard: int, ext: str) -> str:
    return f"{kind}-{shard:05d}.{ext}"


def write_shard(space_dir: Path, shard: int, vectors: np.ndarray, keys: Sequence[str],
                extra: dict[str, pa.Array | list] | None = None) -> dict:
    """Write one shard's vectors and keys durably; returns its manifest entry."""
    space_dir = Path(space_dir)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if len(keys) != len(vectors):
        raise ValueError(f"shard {shard}: {len(keys)} keys for {len(vectors)} vectors")
    vec_path = save_npy(space_dir / shard_name("vectors", shard, "npy"), vectors)
    columns = {"key": pa.array(list(keys), pa.string()), **(extra or {})}
    table = pa.table(columns)

    def write_keys(tmp: Path) -> None:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
            w.write_table(table, max_chunksize=1 << 16)

    key_path = write_with(space_dir / shard_name("keys", shard, "arrow"), write_keys)
    return {"shard": shard, "rows": len(vectors), "vectors": vec_path.name, "keys": key_path.name,
            "sha256": {vec_path.name: sha256_file(vec_path), key_path.name: sha256_file(key_path)}}


def finish_space(space_dir: Path, shards: list[dict], *, dim: int, rows_per_shard: int,
                 normalized: bool, meta: dict | None = None) -> dict:
    """Check the shards fit together, build the key index, write manifest.json last."""
    space_dir = Path(space_dir)
    shards = sorted(shards, key=lambda s: s["shard"])
    for i, s in enumerate(shards):
        if s["shard"] != i:
            raise ValueError(f"{space_dir}: shard {i} is missing")
        if i < len(shards) - 1 and s["rows"] != rows_per_shard:
            raise ValueError(f"{space_dir}: shard {i} has {s['rows']} rows, expected {rows_per_shard}")
    hashes = np.empty(sum(s["rows"] for s in shards), dtype=np.uint64)
    start = 0
    for s in shards:
        keys = _open_keys(space_dir / s["keys"]).column("key")
        hashes[start:start + s["rows"]] = key_hashes(k.as_py() for k in keys)
        start += s["rows"]
    order = np.argsort(hashes, kind="stable")
    save_npy(space_dir / "key_hash.npy", hashes[order])
    save_npy(space_dir / "key_row.npy", order.astype(np.int64))
    manifest = {
        "format": FORMAT, "kind": "space", "dim": dim, "dtype": "float32", "rows": int(len(hashes)),
        "rows_per_shard": rows_per_shard, "normalized": normalized, "shards": shards,
        "sha256": {n: sha256_file(space_dir / n) for n in ("key_hash.npy", "key_row.npy")},
        **(meta or {}),
    }
    write_json(space_dir / "manifest.json", manifest)
    return manifest


def _open_keys(path: Path) -> pa.Table:
    return pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()


class SpaceWriter:
    """Append rows in any batch size; full shards are written as they fill (RAM: one shard)."""

    def __init__(self, space_dir: Path, dim: int, rows_per_shard: int, extra_columns: Sequence[str] = ()):
        self.dir, self.dim, self.rows_per_shard = Path(space_dir), dim, rows_per_shard
        self.extra_columns = list(extra_columns)
        self.shards: list[dict] = []
        self._reset()

    def _reset(self) -> None:
        self._vecs: list[np.ndarray] = []
        self._keys: list[str] = []
        self._extra: dict[str, list] = {c: [] for c in self.extra_columns}
        self._n = 0

    def append(self, keys: Sequence[str], vectors: np.ndarray, **extra: Sequence) -> None:
        i = 0
        while i < len(keys):
            take = min(self.rows_per_shard - self._n, len(keys) - i)
            self._vecs.append(np.asarray(vectors[i:i + take], dtype=np.float32))
            self._keys.extend(keys[i:i + take])
            for c in self.extra_columns:
                self._extra[c].extend(extra[c][i:i + take])
            self._n += take
            i += take
            if self._n == self.rows_per_shard:
                self._flush()

    def _flush(self) -> None:
        vecs = np.concatenate(self._vecs) if self._vecs else np.empty((0, self.dim), np.float32)
        self.shards.append(write_shard(self.dir, len(self.shards), vecs, self._keys, self._extra))
        self._reset()

    def close(self, normalized: bool, meta: dict | None = None) -> dict:
        if self._n or not self.shards:
            self._flush()
        return finish_space(self.dir, self.shards, dim=self.dim, rows_per_shard=self.rows_per_shard,
                            normalized=normalized, meta=meta)


class Space:
    """A published vector space, read through mmap: nothing is loaded whole.

    >>> words = Space(path); words.vector("king"); words.find("queen"); words.key(7)
    """

    def __init__(self, space_dir: Path):
        self.dir = Path(space_dir)
        manifest = self.dir / "manifest.json"
        if not manifest.exists():
            raise FileNotFoundError(f"No vector space at {self.dir} (manifest.json missing).")
        self.manifest = json.loads(manifest.read_text())
        if self.manifest.get("format") != FORMAT:
            raise ValueError(f"{self.dir}: space format {self.manifest.get('format')} is not {FORMAT}; "
                             "upgrade shardvec or rebuild the space.")
        self.dim: int = self.manifest["dim"]
        self.rows_per_shard: int = self.manifest["rows_per_shard"]
        self.normalized: bool = self.manifest["normalized"]
        self.n_shards = len(self.manifest["shards"])
        self._vectors: list[np.ndarray | None] = [None] * self.n_shards
        self._keys: list[pa.Table | None] = [None] * self.n_shards
        self._hash = np.load(self.dir / "key_hash.npy", mmap_mode="r")
        self._row = np.load(self.dir / "key_row.npy", mmap_mode="r")

    def __len__(self) -> int:
        return self.manifest["rows"]

    def __contains__(self, key: str) -> bool:
        return self.find(key) is not None

    def shard(self, s: int) -> np.ndarray:
        """The memmapped vectors of shard s."""
        if self._vectors[s] is None:
            self._vectors[s] = np.load(self.dir / self.manifest["shards"][s]["vectors"], mmap_mode="r")
        return self._vectors[s]

    def shard_keys(self, s: int) -> pa.Table:
        if self._keys[s] is None:
            self._keys[s] = _open_keys(self.dir / self.manifest["shards"][s]["keys"])
        return self._keys[s]

    def shard_start(self, s: int) -> int:
        return s * self.rows_per_shard

    def row(self, r: int) -> np.ndarray:
        s, off = divmod(int(r), self.rows_per_shard)
        return self.shard(s)[off]

    def rows(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """Gather many rows (any order) into one array."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        shard_of = rows // self.rows_per_shard
        for s in np.unique(shard_of):
            sel = shard_of == s
            out[sel] = self.shard(int(s))[rows[sel] - s * self.rows_per_shard]
        return out

    def key(self, r: int) -> str:
        s, off = divmod(int(r), self.rows_per_shard)
        return self.shard_keys(s).column("key")[off].as_py()

    def column(self, name: str, r: int):
        s, off = divmod(int(r), self.rows_per_shard)
        return self.shard_keys(s).column(name)[off].as_py()

    def find(self, key: str) -> int | None:
        """The row of `key`, or None: a binary search over the sorted hashes, then a check."""
        h = np.uint64(key_hash(key))
        i = int(np.searchsorted(self._hash, h))
        while i < len(self._hash) and self._hash[i] == h:
            r = int(self._row[i])
            if self.key(r) == key:
                return r
            i += 1
        return None

    def find_all(self, key: str) -> list[int]:
        """Every row holding `key`, in row order (a space of added statements may hold a
        replaced statement and its replacement)."""
        h = np.uint64(key_hash(key))
        i = int(np.searchsorted(self._hash, h))
        rows = []
        while i < len(self._hash) and self._hash[i] == h:
            if self.key(int(self._row[i])) == key:
                rows.append(int(self._row[i]))
            i += 1
        return sorted(rows)

    def vector(self, key: str) -> np.ndarray:
        r = self.find(key)
        if r is None:
            raise KeyError(key)
        return self.row(r)

    def blocks(self, columns: int) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, rows) in pieces of at most `columns` rows, shard by shard, memmapped."""
        for s in range(self.n_shards):
            shard = self.shard(s)
            for c in range(0, len(shard), columns):
                yield self.shard_start(s) + c, shard[c:c + columns]

    def keys(self) -> Iterator[str]:
        for s in range(self.n_shards):
            yield from (k.as_py() for k in self.shard_keys(s).column("key"))

    def verify(self) -> list[str]:
        """Checksum mismatches of this space's files (empty = intact)."""
        bad = [n for n, h in self.manifest["sha256"].items() if sha256_file(self.dir / n) != h]
        for s in self.manifest["shards"]:
            bad += [n for n, h in s["sha256"].items() if sha256_file(self.dir / n) != h]
        return bad
