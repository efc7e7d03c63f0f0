"""Vector spaces on disk: sharded `.npy` memmaps plus keys, opened without loading them.

A space is a folder:
  manifest.json            format, dim, dtype, rows, rows_per_shard, shards with checksums
  vectors-00000.npy ...    rows, `rows_per_shard` per shard (the last may be shorter), stored as
                           float32, float16, or int8: unit rows times a per-dimension scale
                           (scale.npy), each row's length beside (norms-00000.npy)
  keys-00000.arrow ...     Arrow IPC file per shard: column `key` (+ extra columns) in row order
  key_hash.npy, key_row.npy  the key index (tasks/storage/keys.py): key -> row with no dict in RAM

Row r lives in shard r // rows_per_shard at offset r % rows_per_shard. Shards are written
independently (one task each), then `finish_space` builds the key index and the manifest.
Everything opens with mmap, so many processes share one copy in the page cache.

Long because: the shard writer, the reader, `verify` and the dtype conversion all read and write
the format above; split, each would restate it.
"""

from __future__ import annotations

import bisect
import json
import mmap
import os
import shutil
import weakref
from contextlib import ExitStack
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from shardvec.tasks.storage.atomic import atomic_path, map_npy, save_npy, sha256_file, write_json
from shardvec.errors import DamagedFileError, NotASpaceError, ShardvecError
from shardvec.tasks.storage.keys import KeyIndex, key_hashes, write_key_index
from shardvec.tasks.storage.lookup import lookup

# 2: keys hashed with xxh3-64 (was blake2b, a third of a single lookup's time)
FORMAT = 2


def shard_name(kind: str, shard: int, ext: str) -> str:
    return f"{kind}-{shard:05d}.{ext}"


def by_shard(rows: np.ndarray, rows_per_shard: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Rows (global, any order) grouped by the shard they fall in: (the shard, where its rows
    stand in `rows`, their offsets in the shard), for one gather per shard."""
    shard, off = np.divmod(np.asarray(rows, np.int64), rows_per_shard)
    for s in np.unique(shard).tolist():
        at = np.flatnonzero(shard == s)
        yield s, at, off[at]


DTYPES = ("float32", "float16", "int8")


class UnknownKeyError(KeyError, ShardvecError):
    """A word or statement id that is not in the space asked: a user's mistake, said in a sentence."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown key"


class ShardWriter:
    """Write one shard batch by batch (RAM: one batch); its files appear whole, durably, on a
    clean exit and not at all on an error.

    >>> with ShardWriter(space_dir, 0, rows=n, dim=d) as w:
    ...     w.write(vectors, keys, {"text": texts})
    >>> w.entry   # the shard's manifest entry
    """

    def __init__(
        self,
        space_dir: Path,
        shard: int,
        rows: int,
        dim: int,
        dtype: str = "float32",
        extra: dict[str, pa.DataType] | None = None,
    ):
        self.dir, self.shard, self.rows, self.dim = Path(space_dir), shard, rows, dim
        self.dtype = np.dtype(dtype)
        self.schema = pa.schema({"key": pa.string(), **(extra or {})})
        self.written = 0
        self.entry: dict | None = None

    def __enter__(self) -> ShardWriter:
        self._stack = ExitStack()
        self._vec_path = self.dir / shard_name("vectors", self.shard, "npy")
        self._key_path = self.dir / shard_name("keys", self.shard, "arrow")
        vec_tmp = self._stack.enter_context(atomic_path(self._vec_path))
        key_tmp = self._stack.enter_context(atomic_path(self._key_path))
        self._vec_file = self._stack.enter_context(open(vec_tmp, "wb"))
        np.lib.format.write_array_header_1_0(
            self._vec_file,
            {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": (self.rows, self.dim)},
        )
        sink = self._stack.enter_context(pa.OSFile(str(key_tmp), "wb"))
        self._keys = self._stack.enter_context(pa.ipc.new_file(sink, self.schema))
        return self

    def write(self, vectors: np.ndarray, keys: Sequence[str] | pa.Array, extra: dict | None = None) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=self.dtype)
        if vectors.shape[1:] != (self.dim,) or len(keys) != len(vectors):
            raise ValueError(
                f"shard {self.shard}: {len(keys)} keys for vectors of shape {vectors.shape}, expected (n, {self.dim})"
            )
        if self.written + len(vectors) > self.rows:
            raise ValueError(f"shard {self.shard}: more than the {self.rows} rows it was opened for")
        self._vec_file.write(vectors.data)
        columns = {"key": keys, **(extra or {})}
        table = pa.table([_as_arrow(columns[f.name], f.type) for f in self.schema], schema=self.schema)
        self._keys.write_table(table, max_chunksize=1 << 16)
        self.written += len(vectors)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None and self.written != self.rows:
            exc = ValueError(f"shard {self.shard}: {self.written} rows written of the {self.rows} it was opened for")
            self._stack.__exit__(type(exc), exc, None)
            raise exc
        self._stack.__exit__(exc_type, exc, tb)  # on success: fsync, rename; on error: remove
        if exc_type is None:
            v, k = self._vec_path, self._key_path
            self.entry = {
                "shard": self.shard,
                "rows": self.rows,
                "vectors": v.name,
                "keys": k.name,
                "sha256": {v.name: sha256_file(v), k.name: sha256_file(k)},
            }


def _as_arrow(values, type_: pa.DataType) -> pa.Array | pa.ChunkedArray:
    return values.cast(type_) if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values, type_)


def write_shard(
    space_dir: Path,
    shard: int,
    vectors: np.ndarray,
    keys: Sequence[str],
    extra: dict[str, pa.Array | list] | None = None,
    dtype: str = "float32",
) -> dict:
    """Write one shard's vectors (already in the stored dtype) and keys durably; returns its
    manifest entry."""
    extra = {c: v if isinstance(v, pa.Array) else pa.array(v) for c, v in (extra or {}).items()}
    with ShardWriter(
        space_dir, shard, len(vectors), np.shape(vectors)[1], dtype, {c: v.type for c, v in extra.items()}
    ) as w:
        w.write(vectors, keys, extra)
    return w.entry


def finish_space(
    space_dir: Path,
    shards: list[dict],
    *,
    dim: int,
    rows_per_shard: int,
    normalized: bool,
    meta: dict | None = None,
    dtype: str = "float32",
    scale: np.ndarray | None = None,
) -> dict:
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
        hashes[start : start + s["rows"]] = key_hashes(k.as_py() for k in keys)
        start += s["rows"]
    index_files = write_key_index(space_dir, hashes)
    if dtype == "int8":
        save_npy(space_dir / "scale.npy", np.asarray(scale, dtype=np.float32))
        index_files.append("scale.npy")
    manifest = {
        "format": FORMAT,
        "kind": "space",
        "dim": dim,
        "dtype": dtype,
        "rows": int(len(hashes)),
        "rows_per_shard": rows_per_shard,
        "normalized": normalized,
        "shards": shards,
        "sha256": {n: sha256_file(space_dir / n) for n in index_files},
        **(meta or {}),
    }
    write_json(space_dir / "manifest.json", manifest)
    return manifest


def _release(mapped: np.ndarray, lo: int, hi: int) -> None:
    """Drop rows lo..hi-1 of a `map_npy` array from this process's resident pages."""
    memmap = mapped.base
    mm = getattr(memmap, "_mmap", None)  # the mmap.mmap behind np.memmap (absent for empty files)
    if mm is None or not mapped.size:
        return
    # np.memmap maps the file from offset rounded down to the allocation granularity
    at = memmap.offset % mmap.ALLOCATIONGRANULARITY
    start = at + lo * mapped.strides[0]
    end = min(at + min(hi, len(mapped)) * mapped.strides[0], len(mm))
    start -= start % mmap.PAGESIZE
    if end > start:
        mm.madvise(mmap.MADV_DONTNEED, start, end - start)


def _string_views(column: pa.ChunkedArray) -> tuple | None:
    """(first row of each chunk, [(offsets, data)] of each) of a string column, read straight from
    its mapped Arrow buffers: a value is one slice, not a pyarrow scalar (10 us a hit's text);
    None for other columns and columns with nulls."""
    if column.type != pa.string() or column.null_count:
        return None
    starts, chunks = [], []
    for i, chunk in enumerate(column.chunks):
        _, offsets, data = chunk.buffers()
        starts.append(starts[-1] + len(column.chunks[i - 1]) if i else 0)
        chunks.append(
            (
                np.frombuffer(offsets, np.int32)[chunk.offset : chunk.offset + len(chunk) + 1],
                memoryview(data).cast("B") if data is not None else memoryview(b""),
            )
        )
    return starts, chunks


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
            self._vecs.append(np.asarray(vectors[i : i + take], dtype=np.float32))
            self._keys.extend(keys[i : i + take])
            for c in self.extra_columns:
                self._extra[c].extend(extra[c][i : i + take])
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
        return finish_space(
            self.dir, self.shards, dim=self.dim, rows_per_shard=self.rows_per_shard, normalized=normalized, meta=meta
        )


class Space:
    """A published vector space, read through mmap: nothing is loaded whole. It maps the shards
    and decodes their stored dtype to float32; keys are found through its `key_index`.

    >>> words = Space(path); words.vector("king"); words.find("queen"); words.key(7)
    >>> words.vector_at(7); words.vectors_at([7, 3]); words.shard_vectors(0)
    """

    dead = np.empty(0, dtype=np.int64)  # rows a scan never returns (tasks/search/topk.py Scannable): none here

    def __init__(self, space_dir: Path, keep_mapped: bool = False):
        """`keep_mapped`: scans leave the pages they read mapped (readers, which scan again and
        again) instead of releasing each block (one-off scans of a big space: the nightly's)."""
        self.dir, self.keep_mapped = Path(space_dir), keep_mapped
        manifest = self.dir / "manifest.json"
        if not manifest.exists():
            raise NotASpaceError(f"No vector space at {self.dir} (manifest.json missing).")
        self.manifest = json.loads(manifest.read_text())
        if self.manifest.get("format") != FORMAT:
            raise DamagedFileError(
                f"{self.dir}: space format {self.manifest.get('format')} is not {FORMAT}; "
                "upgrade shardvec or rebuild the space."
            )
        self.dim: int = self.manifest["dim"]
        self.rows_per_shard: int = self.manifest["rows_per_shard"]
        self.normalized: bool = self.manifest["normalized"]
        self.n_shards = len(self.manifest["shards"])
        self._vectors: list[np.ndarray | None] = [None] * self.n_shards
        self._files: list[tuple | None] = [None] * self.n_shards
        self._keys: list[pa.Table | None] = [None] * self.n_shards
        self._key_bytes: list[tuple[list[int], list] | None] = [None] * self.n_shards
        self._strings: dict[tuple[int, str], tuple | None] = {}
        # through a weak reference: a Space its own key index held would live until Python's cycle
        # collector ran, its files mapped and the pages it read resident (a Dask worker's RSS grew
        # with every task that opened one: 472 -> 790 MB at benchmarks.scale's 4/4)
        key_bytes = weakref.WeakMethod(self.key_bytes)
        self.key_index = KeyIndex(self.dir, lambda r: key_bytes()(r))  # type: ignore[misc]
        self.dtype: str = self.manifest.get("dtype", "float32")
        self.scale = np.load(self.dir / "scale.npy") if self.dtype == "int8" else None
        self._norms: list[np.ndarray | None] = [None] * self.n_shards

    def __len__(self) -> int:
        return self.manifest["rows"]

    def __contains__(self, key: str) -> bool:
        return self.find(key) is not None

    # --- vectors ------------------------------------------------------------------------
    def shard(self, s: int) -> np.ndarray:
        """The memmapped vectors of shard s, as stored (see `dtype`; `shard_vectors(s)` gives float32)."""
        if self._vectors[s] is None:
            self._vectors[s] = map_npy(self.dir / self.manifest["shards"][s]["vectors"])
        return self._vectors[s]

    def shard_start(self, s: int) -> int:
        return s * self.rows_per_shard

    def shard_vectors(self, s: int) -> np.ndarray:
        """Shard s as float32 (the memmap itself when stored as float32)."""
        return self._get(s, slice(None))

    def _get(self, s: int, index) -> np.ndarray:
        """Rows `index` (an int, slice or array) of shard s as float32: no copy for float32."""
        return self._float32(s, self.shard(s)[index], index)

    def _float32(self, s: int, stored: np.ndarray, index) -> np.ndarray:
        """Rows `index` of shard s, given as stored, as float32."""
        if self.dtype == "float32":
            return stored
        out = stored.astype(np.float32)
        if self.dtype == "int8":
            if self._norms[s] is None:
                self._norms[s] = map_npy(self.dir / self.manifest["shards"][s]["norms"])
            out *= self.scale
            out *= np.asarray(self._norms[s][index])[..., None]
        return out

    def vector(self, key: str) -> np.ndarray:
        """The vector of `key` as float32 (a read-only view of the memmap when stored as float32)."""
        r = self.find(key)
        if r is None:
            raise UnknownKeyError(f"{key!r} is not a key of the space at {self.dir}.")
        return self.vector_at(r)

    def vector_at(self, r: int) -> np.ndarray:
        """The vector of row r as float32: a read-only view of the memmap when stored as float32."""
        r, n = int(r), len(self)
        if not 0 <= r < n:
            raise IndexError(f"row {r} is outside this space's rows 0..{n - 1}")
        s, off = divmod(r, self.rows_per_shard)
        return self._get(s, off)

    def vectors_at(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """The vectors of many rows (any order) gathered into one float32 array."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 1:  # one row (a word's neighbours): its shard, without sorting by shard
            return self.vector_at(rows[0])[None].copy()  # gathered, as many rows are: not a view
        # (a negative row would count from a shard's end, one past the last would read no shard)
        if len(rows) and not (0 <= rows.min() and rows.max() < len(self)):
            raise IndexError(f"rows outside this space's rows 0..{len(self) - 1}")
        if self.n_shards == 1:
            return self._get(0, rows)
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        shard_of = rows // self.rows_per_shard
        order = np.argsort(shard_of, kind="stable")
        bounds = np.searchsorted(shard_of[order], np.arange(self.n_shards + 1))
        for s in range(self.n_shards):
            sel = order[bounds[s] : bounds[s + 1]]
            if len(sel):
                out[sel] = self._get(s, rows[sel] - s * self.rows_per_shard)
        return out

    def read(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """Gather many rows (any order) into one float32 array, read from the files (pread)
        rather than through the mapping. A fault on a mapped file maps a whole folio of the
        rows around (20,000 rows spread over a 1M-row space left 637 MB resident): scattered
        gathers through `rows` leave a process holding most of the space, reads nothing but
        the rows. About 2 us a row."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        shard_of = rows // self.rows_per_shard
        size = self.dim * np.dtype(self.dtype).itemsize
        for s in np.unique(shard_of).tolist():
            sel = np.flatnonzero(shard_of == s)
            local = rows[sel] - self.shard_start(s)
            f, start = self._file(s)
            data = b"".join([os.pread(f.fileno(), size, at) for at in (start + local * size).tolist()])
            out[sel] = self._float32(s, np.frombuffer(data, self.dtype).reshape(len(sel), self.dim), local)
        return out

    def _file(self, s: int):
        """Shard s's vectors file, open for reads, and where its rows begin."""
        if self._files[s] is None:
            self._files[s] = (
                open(self.dir / self.manifest["shards"][s]["vectors"], "rb", buffering=0),
                self.shard(s).base.offset,
            )
        return self._files[s]

    def range(self, lo: int, hi: int) -> np.ndarray:
        """The vectors of rows lo..hi-1 as one float32 array (a view when stored as float32 in one shard)."""
        first, last = lo // self.rows_per_shard, (hi - 1) // self.rows_per_shard
        parts = [
            self._get(
                s,
                slice(
                    max(lo, self.shard_start(s)) - self.shard_start(s),
                    min(hi, self.shard_start(s) + self.rows_per_shard) - self.shard_start(s),
                ),
            )
            for s in range(first, last + 1)
        ]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def blocks(self, columns: int) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, vectors) in pieces of at most `columns` rows, shard by shard, memmapped.

        A scan reads the whole space once. Each block's pages leave this process when the
        next block is asked for (they stay in the page cache: reading them again is a minor
        fault), so a scan holds one block of the space whatever the space's size."""
        for s in range(self.n_shards):
            shard = self.shard(s)
            for c in range(0, len(shard), columns):
                yield self.shard_start(s) + c, self._get(s, slice(c, c + columns))
                if not self.keep_mapped:
                    _release(shard, c, c + columns)

    # --- keys ---------------------------------------------------------------------------
    def shard_keys(self, s: int) -> pa.Table:
        if self._keys[s] is None:
            self._keys[s] = _open_keys(self.dir / self.manifest["shards"][s]["keys"])
        return self._keys[s]

    def key(self, r: int) -> str:
        return bytes(self.key_bytes(int(r))).decode("utf-8")

    def key_bytes(self, r: int) -> memoryview:
        """The UTF-8 bytes of row r's key, read straight from the Arrow buffers (no objects)."""
        s, off = divmod(r, self.rows_per_shard)
        if self._key_bytes[s] is None:
            starts, chunks = [], []
            column = self.shard_keys(s).column("key")
            for i, chunk in enumerate(column.chunks):
                _, offsets, data = chunk.buffers()
                starts.append(starts[-1] + len(column.chunks[i - 1]) if i else 0)
                chunks.append(
                    (
                        np.frombuffer(offsets, np.int32)[chunk.offset : chunk.offset + len(chunk) + 1].tolist(),
                        memoryview(data).cast("B") if data is not None else memoryview(b""),
                    )
                )
            self._key_bytes[s] = (starts, chunks)
        starts, chunks = self._key_bytes[s]
        c = bisect.bisect_right(starts, off) - 1 if len(starts) > 1 else 0
        offsets, data = chunks[c]
        off -= starts[c]
        return data[offsets[off] : offsets[off + 1]]

    def column_at(self, name: str, rows: np.ndarray) -> list:
        """Column `name` ("key", "text", ...) of many rows, in their order: one Arrow take per
        shard they fall in, no Python object per row until the list is made."""
        out: list = [None] * len(rows)
        for s, at, off in by_shard(rows, self.rows_per_shard):
            values = self.shard_keys(s).column(name).take(pa.array(off)).to_pylist()
            for i, value in zip(at.tolist(), values):
                out[i] = value
        return out

    def column(self, name: str, r: int):
        s, off = divmod(int(r), self.rows_per_shard)
        strings = self._strings.get((s, name))
        if strings is None:
            strings = self._strings[(s, name)] = _string_views(self.shard_keys(s).column(name))
        if not strings:  # not a string column, or one with nulls
            return self.shard_keys(s).column(name)[off].as_py()
        starts, chunks = strings
        c = bisect.bisect_right(starts, off) - 1 if len(starts) > 1 else 0
        offsets, data = chunks[c]
        off -= starts[c]
        return str(data[offsets[off] : offsets[off + 1]], "utf-8")

    def release(self) -> None:
        """Drop every page of this space's vectors from this process's resident pages (they stay
        in the page cache). For gathers scattered over the space (`rows`), which would otherwise
        leave a process holding the whole space after enough of them."""
        for v in self._vectors:
            if v is not None:
                _release(v, 0, len(v))

    def keys(self) -> Iterator[str]:
        for s in range(self.n_shards):
            yield from (k.as_py() for k in self.shard_keys(s).column("key"))

    def find(self, key: str) -> int | None:
        """The row of `key`, or None."""
        return self.key_index.find(key)

    def find_many(self, keys: Sequence[str]) -> np.ndarray:
        """Rows of many keys at once (-1 where absent)."""
        return self.key_index.find_many(keys)

    def find_all(self, key: str) -> list[int]:
        """Every row holding `key`, in row order."""
        return self.key_index.find_all(key)

    def lookup(self, docs: Sequence[Sequence[str]], pad: int = -1) -> tuple[np.ndarray, np.ndarray]:
        """Token sequences -> (ids, vectors), padded: see tasks/storage/lookup.py."""
        return lookup(self, docs, pad)

    def verify(self) -> list[str]:
        """Checksum mismatches of this space's files (empty = intact)."""
        bad = [n for n, h in self.manifest["sha256"].items() if sha256_file(self.dir / n) != h]
        for s in self.manifest["shards"]:
            bad += [n for n, h in s["sha256"].items() if sha256_file(self.dir / n) != h]
        return bad


def restore_as(space_dir: Path, dtype: str) -> dict:
    """Rewrite an unpublished space in place with its vectors stored as `dtype`."""
    space_dir = Path(space_dir)
    if Space(space_dir).dtype == dtype:
        return {"space": str(space_dir), "dtype": dtype}
    tmp = space_dir.with_name(f".{space_dir.name}.{dtype}")
    shutil.rmtree(tmp, ignore_errors=True)
    manifest = convert_space(space_dir, tmp, dtype)
    shutil.rmtree(space_dir)
    tmp.rename(space_dir)
    return {"space": str(space_dir), "dtype": dtype, "rows": manifest["rows"]}


def convert_space(src_dir: Path, dst_dir: Path, dtype: str) -> dict:
    """Copy a space with its vectors stored as `dtype`, shard by shard (RAM: one shard).

    float16 halves the bytes; int8 about quarters them: each row is stored as its length
    (float32) and its unit direction in int8, each dimension scaled by its largest magnitude
    over the space (a first pass). A scale per dimension alone loses short rows (rare words)
    to rounding: recall@10 0.75 on word vectors, against 0.98 with the length kept.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}.")
    src = Space(src_dir)
    dst_dir = Path(dst_dir)
    dst_dir.mkdir(parents=True, exist_ok=True)
    scale = None
    if dtype == "int8":
        peak = np.zeros(src.dim, dtype=np.float32)
        for _, block in src.blocks(1 << 16):
            np.maximum(peak, np.abs(_unit_and_norms(block)[0]).max(axis=0), out=peak)
        scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    shards = []
    for s in range(src.n_shards):
        vecs = src.shard_vectors(s)
        if dtype == "int8":
            unit, norms = _unit_and_norms(vecs)
            vecs = np.clip(np.rint(unit / scale), -127, 127)
        keys = src.shard_keys(s)
        extra = {name: keys.column(name) for name in keys.column_names if name != "key"}
        entry = write_shard(dst_dir, s, vecs, keys.column("key").to_pylist(), extra, dtype=dtype)
        if dtype == "int8":
            path = save_npy(dst_dir / shard_name("norms", s, "npy"), norms)
            entry["norms"] = path.name
            entry["sha256"][path.name] = sha256_file(path)
        shards.append(entry)
    meta = {
        k: v
        for k, v in src.manifest.items()
        if k not in ("format", "kind", "dim", "dtype", "rows", "rows_per_shard", "normalized", "shards", "sha256")
    }
    # rounded rows are no longer unit length: searches divide by their norms again
    return finish_space(
        dst_dir,
        shards,
        dim=src.dim,
        rows_per_shard=src.rows_per_shard,
        normalized=src.normalized and dtype == "float32",
        meta=meta,
        dtype=dtype,
        scale=scale,
    )


def _unit_and_norms(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    norms = np.linalg.norm(x, axis=1).astype(np.float32)
    return x / np.where(norms > 0, norms, 1.0)[:, None], norms
