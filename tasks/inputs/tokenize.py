"""Tokenize each input file once into an Arrow cache that every later pass re-reads.

The cache of a source file is an Arrow IPC file of record batches with columns
id, text, tokens (list of strings), line, offset, length. It is named by a key of everything
its content derives from: the file's fingerprint (path, size, mtime), the tokenizer's settings
and code version, and the record size limit that decides what is quarantined. An unchanged
file read the same way is never tokenized twice; a change of any of these builds a new cache
(and deletes the superseded one). Beside it, `<cache>.json` holds its summary: counts, the
tokenizer it was made with, the cache's size and sha256, and paths relative to the data
directory; a cache that does not match it is built again from its source.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from shardvec.tasks.storage.atomic import fit_name, fsync_dir, sha256_file, write_json
from shardvec.tasks.inputs.corpus import BATCH_BYTES, Quarantine, SourceFile, batched, read_records

CACHE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("text", pa.string()),
        ("tokens", pa.list_(pa.string())),
        ("line", pa.int64()),
        ("offset", pa.int64()),
        ("length", pa.int64()),
    ]
)

_WORD = re.compile(r"(?:(?!\d)\w)+", re.UNICODE)  # alphabetic runs, as gensim's simple_preprocess
# Raise it whenever Tokenizer.__call__ or the cache's layout changes what a cache holds: every
# cache made before is then built again instead of trained on.
TOKENIZER_VERSION = 2


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
        return [t for t in self.words(text) if self.min_len <= len(t) <= self.max_len]

    def words(self, text: str) -> list[str]:
        """The words of `text` normalised as tokens are (lowercased, deaccented if set), whatever their length."""
        return _WORD.findall((_deaccent(text) if self.deaccent else text).lower())

    def normalise(self, word: str) -> str:
        """A word looked up as the build stored it: "Datei" -> "datei" (and "Café" -> "cafe" with deaccent)."""
        word = word.strip()
        return (_deaccent(word) if self.deaccent else word).lower()

    def settings(self) -> dict:
        """What a cache or a model made with this tokenizer records (and is keyed by)."""
        return {
            "min_len": self.min_len,
            "max_len": self.max_len,
            "deaccent": self.deaccent,
            "version": TOKENIZER_VERSION,
        }

    @classmethod
    def from_settings(cls, settings: dict) -> Tokenizer:
        return cls(settings.get("min_len", 2), settings.get("max_len", 20), settings.get("deaccent", False))

    @classmethod
    def of_manifest(cls, manifest: dict) -> Tokenizer:
        """The tokenizer a version's models were trained with: its own record, or the `tokenize`
        settings of its config in versions made before the manifest kept one."""
        return cls.from_settings(manifest.get("tokenizer") or manifest.get("config", {}).get("tokenize", {}))


def cache_key(src: SourceFile, tokenizer: Tokenizer, max_record_bytes: int) -> str:
    """What a cache's content derives from, as a short hash: the source file, the tokenizer, the size limit."""
    what = json.dumps([src.fingerprint, tokenizer.settings(), max_record_bytes], sort_keys=True)
    return hashlib.sha1(what.encode()).hexdigest()[:16]


def cache_path(cache_dir: Path, src: SourceFile, tokenizer: Tokenizer, max_record_bytes: int) -> Path:
    where = Path(src.name)  # partition/file
    return (
        Path(cache_dir) / where.parent / f"{fit_name(where.name)}.{cache_key(src, tokenizer, max_record_bytes)}.arrow"
    )


def tokenize_file(
    corpus_dir: Path,
    src: SourceFile,
    cache_dir: Path,
    quarantine_dir: Path,
    tokenizer: Tokenizer,
    *,
    batch_size: int,
    max_record_bytes: int,
) -> dict:
    """Stream one source file into its token cache; returns a small summary.

    Idempotent: a cache for this exact file content is reused when it matches its summary
    (size and checksum); a missing, truncated or altered one is built again from the source.
    """
    out = cache_path(cache_dir, src, tokenizer, max_record_bytes)
    if (summary := _valid_summary(out, src, tokenizer)) is not None:
        return {**summary, "cache": str(out), "cached": True}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    q = Quarantine(quarantine_dir, src)
    try:
        records, tokens = _write_cache(
            tmp,
            read_records(corpus_dir, src, q, batch_size=batch_size, max_record_bytes=max_record_bytes),
            tokenizer,
            batch_size,
        )
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        # paths relative to the data directory, so a copied data directory reads its own caches
        data = os.path.commonpath([Path(cache_dir).resolve(), Path(quarantine_dir).resolve()])
        summary = {
            "source": src.name,
            "root": src.root,
            "partition": src.partition,
            "cache": os.path.relpath(out.resolve(), data),
            "tokenizer": tokenizer.settings(),
            "max_record_bytes": max_record_bytes,
            "size": tmp.stat().st_size,
            "sha256": sha256_file(tmp),
            "records": records,
            "tokens": tokens,
            "quarantined": q.counts.records,
            "reasons": dict(q.counts.reasons),
        }
        q.commit()
        # The summary lands before the cache, so an existing cache always has its summary.
        write_json(_summary_path(out), summary)
        os.replace(tmp, out)
        fsync_dir(out.parent)
    except BaseException:
        q.discard()
        tmp.unlink(missing_ok=True)
        raise
    _delete_superseded(out, src)
    return {**summary, "cache": str(out), "cached": False}


def _delete_superseded(cache: Path, src: SourceFile) -> None:
    """The caches of this source made under another key (an older file, other settings): only a
    build reads caches, under the run lock, and it reads the ones it has just made."""
    mine = re.compile(re.escape(fit_name(Path(src.name).name)) + r"\.[0-9a-f]{12,16}\.arrow")
    for old in cache.parent.iterdir():
        if old != cache and mine.fullmatch(old.name):
            _summary_path(old).unlink(missing_ok=True)
            old.unlink(missing_ok=True)


def _write_cache(path: Path, records, tokenizer: Tokenizer, batch_size: int) -> tuple[int, int]:
    """Tokenize `records` into an Arrow IPC file at `path`; (records, tokens) written."""
    n = tokens = 0
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, CACHE_SCHEMA) as writer:
        # characters: a bound on the bytes' order, without encoding each text
        for batch in batched(records, batch_size, BATCH_BYTES, weigh=lambda r: len(r.text)):
            toks = [tokenizer(r.text) for r in batch]
            n += len(batch)
            tokens += sum(map(len, toks))
            writer.write_batch(
                pa.record_batch(
                    [
                        pa.array([r.id for r in batch], pa.string()),
                        pa.array([r.text for r in batch], pa.string()),
                        pa.array(toks, pa.list_(pa.string())),
                        pa.array([r.line for r in batch], pa.int64()),
                        pa.array([r.offset for r in batch], pa.int64()),
                        pa.array([r.length for r in batch], pa.int64()),
                    ],
                    schema=CACHE_SCHEMA,
                )
            )
    return n, tokens


def _valid_summary(cache: Path, src: SourceFile, tokenizer: Tokenizer) -> dict | None:
    """The summary of `cache` if the cache is there, of this source and tokenizer, and matches its
    size and checksum."""
    try:
        summary = read_summary(cache)
        size = cache.stat().st_size
    except (OSError, ValueError):
        return None
    if (
        not isinstance(summary, dict)
        or summary.get("source") != src.name
        or summary.get("size") != size
        or summary.get("tokenizer") != tokenizer.settings()
    ):
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
