"""Tokenize each input file once into an Arrow cache that every later pass re-reads.

The cache of a source file is an Arrow IPC file of record batches with columns
id, text, tokens (list of strings), line, offset, length. It is named by the file's
fingerprint (path, size, mtime), so an unchanged file is never tokenized twice.
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

from tasks.corpus import Quarantine, SourceFile, batched, read_records

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

    Idempotent: if the cache for this exact file content exists it is reused as is.
    """
    out = cache_path(cache_dir, src)
    if out.exists():
        return {**read_summary(out), "cached": True}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    q = Quarantine(quarantine_dir, src)
    records = tokens = 0
    try:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, CACHE_SCHEMA) as writer:
            for batch in batched(read_records(corpus_dir, src, q, batch_size=batch_size,
                                              max_record_bytes=max_record_bytes), batch_size):
                toks = [tokenizer(r.text) for r in batch]
                records += len(batch)
                tokens += sum(map(len, toks))
                writer.write_batch(pa.record_batch([
                    pa.array([r.id for r in batch], pa.string()),
                    pa.array([r.text for r in batch], pa.string()),
                    pa.array(toks, pa.list_(pa.string())),
                    pa.array([r.line for r in batch], pa.int64()),
                    pa.array([r.offset for r in batch], pa.int64()),
                    pa.array([r.length for r in batch], pa.int64()),
                ], schema=CACHE_SCHEMA))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        summary = {"source": src.name, "root": src.root, "partition": src.partition, "cache": str(out), "records": records,
                   "tokens": tokens, "quarantined": q.counts.records, "reasons": dict(q.counts.reasons)}
        q.commit()
        # The summary lands before the cache, so an existing cache always has its summary.
        _write_summary(out, summary)
        os.replace(tmp, out)
    except BaseException:
        q.discard()
        tmp.unlink(missing_ok=True)
        raise
    return {**summary, "cached": False}


def _summary_path(cache: Path) -> Path:
    return Path(str(cache) + ".json")


def _write_summary(cache: Path, summary: dict) -> None:
    tmp = _summary_path(cache).with_suffix(".tmp")
    tmp.write_text(json.dumps(summary))
    os.replace(tmp, _summary_path(cache))


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
