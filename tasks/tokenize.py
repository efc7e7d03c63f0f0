"""Tokenize each input file once into an Arrow cache that every later pass re-reads.

The cache of a source file is an Arrow IPC file of record batches with columns
id, text, tokens (list of strings), line, offset, length. It is named by the file's
fingerprint (path, size, mtime), so an unchanged file is never tokenized twice. Beside it,
`<cache>.json` holds its summary: counts, the cache's size and sha256, and paths relative to
the data directory; a cache that does not match it is built again from its source.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from shardvec.tasks.atomic import fsync_dir, sha256_file, write_json
from shardvec.tasks.corpus import Quarantine, SourceFile, batched, read_records

CACHE_SCHEMA = pa.schema([
    ("id", pa.string()), ("text", pa.string()), ("tokens", pa.list_(pa.string())),
    ("line", pa.int64()), ("offset", pa.int64()), ("length", pa.int64()),
])

_WORD = re.compile(r"(?:(?!\d)\w)+", re.UNICODE)  # alphabetic runs, as gensim's simple_preprocess


def _deaccent(text: str) -> str:
    """gensim.utils.deaccent, without importing gensim (a second per reader process)."""
    norm = unicodedata.normalize("NFD", text)
    return unicodedata.normalize("NFC", "".join(ch for ch in norm if unicodedata.category(ch) != "Mn"))


@dataclass(frozen=True)
class Tokenizer:
    min_len: int = 2
    max_len: int = 20
    deaccent: bool = False

    def __call__(self, text: str) -> list[str]:
        if self.deaccent:
            text = _deaccent(text)
        lo, hi = self.min_len, self.max_len
        return [t for t in _WORD.findall(text.lower()) if lo <= len(t) <= hi]


def cache_path(cache_dir: Path, src: SourceFile) -> Path:
    return Path(cache_dir) / f"{src.name}.{src.fingerprint}.arrow"


def tokenize_file(corpus_dir: Path, src: SourceFile, cache_dir: Path, quarantine_dir: Path,
                  tokenizer: Tokenizer, *, batch_size: int, max_record_bytes: int) -> dict:
    """Stream one source file into its token cache; returns a small summary.

    Idempotent: a cache for this exact file content is reused when it matches its summary
    (size and checksum); a missing, truncated or altered one is built again from the source.
    """
    out = cache_path(cache_dir, src)
    if (summary := _valid_summary(out, src)) is not None:
        return {**summary, "cache": str(out), "cached": True}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    q = Quarantine(quarantine_dir, src)
    try:
        records, tokens = _write_cache(tmp, read_records(corpus_dir, src, q, batch_size=batch_size,
                                                         max_record_bytes=max_record_bytes), tokenizer, batch_size)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        # paths relative to the data directory, so a copied data directory reads its own caches
        data = os.path.commonpath([Path(cache_dir).resolve(), Path(quarantine_dir).resolve()])
        summary = {"source": src.name, "root": src.root, "partition": src.partition,
                   "cache": os.path.relpath(out.resolve(), data), "size": tmp.stat().st_size,
                   "sha256": sha256_file(tmp), "records": records, "tokens": tokens,
                   "quarantined": q.counts.records, "reasons": dict(q.counts.reasons)}
        q.commit()
        # The summary lands before the cache, so an existing cache always has its summary.
        write_json(_summary_path(out), summary)
        os.replace(tmp, out)
        fsync_dir(out.parent)
    except BaseException:
        q.discard()
        tmp.unlink(missing_ok=True)
        raise
    return {**summary, "cache": str(out), "cached": False}


def _write_cache(path: Path, records, tokenizer: Tokenizer, batch_size: int) -> tuple[int, int]:
    """Tokenize `records` into an Arrow IPC file at `path`; (records, tokens) written."""
    n = tokens = 0
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, CACHE_SCHEMA) as writer:
        for batch in batched(records, batch_size):
            toks = [tokenizer(r.text) for r in batch]
            n += len(batch)
            tokens += sum(map(len, toks))
            writer.write_batch(pa.record_batch([
                pa.array([r.id for r in batch], pa.string()),
                pa.array([r.text for r in batch], pa.string()),
                pa.array(toks, pa.list_(pa.string())),
                pa.array([r.line for r in batch], pa.int64()),
                pa.array([r.offset for r in batch], pa.int64()),
                pa.array([r.length for r in batch], pa.int64()),
            ], schema=CACHE_SCHEMA))
    return n, tokens


def _valid_summary(cache: Path, src: SourceFile) -> dict | None:
    """The summary of `cache` if the cache is there, of this source, and matches its size and checksum."""
    try:
        summary = read_summary(cache)
        size = cache.stat().st_size
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or summary.get("source") != src.name or summary.get("size") != size:
        return None
    return summary if summary.get("sha256") == sha256_file(cache) else None


def _summary_path(cache: Path) -> Path:
    return Path(str(cache) + ".json")


def read_summary(cache: Path) -> dict:
    return json.loads(_summary_path(cache).read_text())


def open_cache(path: Path) -> pa.ipc.RecordBatchFileReader:
    """A memory-mapped reader of one cache file (batches are read lazily)."""
    return pa.ipc.open_file(pa.memory_map(str(path), "r"))


def iter_batches(caches: list[str | Path], columns: list[str]) -> Iterator[pa.RecordBatch]:
    for path in caches:
        reader = open_cache(Path(path))
        for i in range(reader.num_record_batches):
            yield reader.get_batch(i).select(columns)


class TokenStream:
    """Re-iterable corpus of token lists over cache files (what gensim expects of a corpus)."""

    def __init__(self, caches: list[str | Path]):
        self.caches = [str(c) for c in caches]

    def __iter__(self) -> Iterator[list[str]]:
        for batch in iter_batches(self.caches, ["tokens"]):
            yield from batch.column(0).to_pylist()

    def batches(self) -> Iterator[list[list[str]]]:
        for batch in iter_batches(self.caches, ["tokens"]):
            yield batch.column(0).to_pylist()
