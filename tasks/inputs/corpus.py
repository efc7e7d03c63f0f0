"""Input partitions: discovery, streaming records in fixed-size batches, quarantine.

A partition is a folder under `<data>/corpus/` (e.g. `2026-11-22/`); its files are JSON Lines
(`{"id": "...", "text": "..."}`), plain text (one document per line, id = `file:line`) or
Parquet (string columns `id`, `text`). Files are streamed, never read whole. Every record that
cannot be used goes to `<data>/quarantine/` byte for byte with its line and reason; the good
records around it are still yielded.

Long because: discovery, the three readers (JSON Lines, text, Parquet) and quarantine share one
record contract (what a usable record is, how a bad one is named and kept byte for byte); split,
each reader would restate it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shardvec.tasks.storage.atomic import fit_name
from shardvec.tasks.storage.layout import not_a_link
from shardvec.errors import ShardvecError

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".txt": "text", ".parquet": "parquet"}
# Text turned into Python strings at once at most: Parquet rows and the ledger's puts are decoded
# in slices of this many bytes, and a tokenized batch stops there too (a token list costs about 24x
# its text in RAM: 2,000 legal records of 1 MB each, 48 GB, took a worker down every night).
BATCH_BYTES = 8 << 20


@dataclass(frozen=True)
class SourceFile:
    """One input file, named relative to the corpus root, with what identifies its content."""

    partition: str
    name: str  # path relative to the corpus root, e.g. "2026-11-22/a.jsonl"
    format: str
    size: int
    mtime_ns: int
    root: str = "corpus"  # the folder of the data directory `name` is relative to

    @property
    def fingerprint(self) -> str:
        # a name that is not UTF-8 (a legacy exporter's Latin-1) keeps its bytes, as os gave them
        return hashlib.sha1(f"{self.name}|{self.size}|{self.mtime_ns}".encode("utf-8", "surrogateescape")).hexdigest()[
            :12
        ]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Record:
    id: str
    text: str
    line: int  # 1-based line (row number for Parquet)
    offset: int  # byte offset of the line in the file (-1 for Parquet)
    length: int  # bytes of the raw line (-1 for Parquet)
    op: str = "add"  # "replace" or "delete" (text None) in JSON Lines given to `shardvec add`


@dataclass
class QuarantineCounts:
    records: int = 0
    reasons: Counter = field(default_factory=Counter)


class BadInputError(ValueError, ShardvecError):
    """An input that cannot be used, explained in one sentence."""


def discover(
    corpus_dir: Path, partitions: list[str] | None = None, after: str | None = None, until: str | None = None
) -> tuple[list[SourceFile], list[str]]:
    """Input files of the chosen partitions in a stable order, and the files skipped, with why.

    Partitions are the sub-folders of `corpus_dir`, ordered by name (dates sort naturally).
    `partitions` picks exact names; `after`/`until` pick a name range (after exclusive).
    """
    corpus_dir = Path(corpus_dir)
    if not corpus_dir.is_dir():
        raise BadInputError(
            f"No corpus folder at {corpus_dir}; create it and drop partitions in it "
            "(e.g. corpus/2026-11-22/statements.jsonl)."
        )
    names = sorted(p.name for p in corpus_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if partitions is not None:
        missing = sorted(set(partitions) - set(names))
        if missing:
            raise BadInputError(
                f"No partition named {', '.join(missing)} under {corpus_dir}; "
                f"the partitions there are: {', '.join(names) or 'none'}."
            )
        names = [n for n in names if n in set(partitions)]
    if after is not None:
        names = [n for n in names if n > after]
    if until is not None:
        names = [n for n in names if n <= until]
    files, skipped = [], []
    for part in names:
        for path in sorted((corpus_dir / part).rglob("*")):
            if not path.is_file() or path.name.startswith("."):
                continue
            rel = path.relative_to(corpus_dir).as_posix()
            fmt = FORMATS.get(path.suffix.lower())
            if fmt is None:
                skipped.append(f"{rel}: not .jsonl, .ndjson, .txt or .parquet")
                continue
            st = path.stat()
            files.append(SourceFile(part, rel, fmt, st.st_size, st.st_mtime_ns))
    return files, skipped


def inside_quarantine(folder: Path) -> Path:
    """`folder`, refused if DATA/quarantine above it is a symlink: nothing is written outside the
    data directory through one."""
    for up in (Path(folder), *Path(folder).parents):
        if up.name == "quarantine":
            not_a_link(up, BadInputError)
    return Path(folder)


class Quarantine:
    """Rejected records of one source file: raw bytes in `<name>.rejected`, reasons beside.

    Written under a temporary name and moved into place by `commit()`, so a rerun of the same
    file replaces, never duplicates, what an earlier attempt wrote.
    """

    def __init__(self, quarantine_dir: Path, source: SourceFile):
        where = Path(source.name)  # partition/file
        inside_quarantine(quarantine_dir)
        self.base = Path(quarantine_dir) / where.parent / fit_name(where.name)
        self.source = source
        self.counts = QuarantineCounts()
        self._raw = self._reasons = self._rows = None
        self._tmp: list[Path] = []

    def _open(self, suffix: str, mode: str):
        self.base.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.base.with_name(f".{self.base.name}{suffix}.tmp")
        self._tmp.append(tmp)
        # a file name with bytes that are not UTF-8 (a lone surrogate in `source`) is written as
        # its JSON escape, \udcff, instead of failing the file
        return open(tmp, mode) if "b" in mode else open(tmp, mode, encoding="utf-8", errors="backslashreplace")

    def reject(self, line: int, reason: str, raw: bytes | None = None, row: dict | None = None, **where) -> None:
        """One rejected record; `where` adds what locates it in its source (offset, length, rows)."""
        self.counts.records += 1
        self.counts.reasons[reason.split(":")[0]] += 1
        if self._reasons is None:
            self._reasons = self._open(".reasons.jsonl", "w")
        entry = {"source": self.source.name, "line": line, "reason": reason, **where}
        if raw is not None:
            if self._raw is None:
                self._raw = self._open(".rejected", "wb")
            entry["offset_in_rejected"] = self._raw.tell()
            entry["bytes"] = len(raw)
            self._raw.write(raw)
        if row is not None:
            if self._rows is None:
                self._rows = self._open(".rejected.jsonl", "w")
            self._rows.write(json.dumps({"line": line, **row}, default=repr) + "\n")
        self._reasons.write(json.dumps(entry, ensure_ascii=False) + "\n")

    def reject_file(self, path: Path, reason: str) -> None:
        """The whole file is the rejected record: copied in blocks, never read whole."""
        self.reject_range(path, 0, Path(path).stat().st_size, 0, reason)

    def reject_range(self, path: Path, start: int, size: int, line: int, reason: str, **where) -> None:
        """Bytes start..start+size of `path` are the rejected record (e.g. a Parquet row group)."""
        if self._raw is None:
            self._raw = self._open(".rejected", "wb")
        at = self._raw.tell()
        with open(path, "rb") as f:
            f.seek(start)
            left = size
            while left and (block := f.read(min(left, 1 << 20))):
                self._raw.write(block)
                left -= len(block)
        self.reject(line, reason, offset_in_rejected=at, bytes=self._raw.tell() - at, **where)

    def commit(self) -> None:
        for f in (self._raw, self._reasons, self._rows):
            if f is not None:
                f.flush()
                os.fsync(f.fileno())
                f.close()
        for tmp in self._tmp:
            os.replace(tmp, tmp.with_name(tmp.name[1:-4]))

    def discard(self) -> None:
        for f in (self._raw, self._reasons, self._rows):
            if f is not None:
                f.close()
        for tmp in self._tmp:
            tmp.unlink(missing_ok=True)


def check_record(id_, text, max_bytes: int, nbytes: int) -> str | None:
    """The reason a record is unusable, or None: the one screening of what comes in (size,
    types, blank, NUL, encoding), applied at intake only. What it let in and was acknowledged is
    never screened again, whatever the settings of a later day (the ledger replays it as it is)."""
    if nbytes > max_bytes:
        return f"too large: {nbytes} bytes, over corpus.max_record_bytes={max_bytes}"
    if id_ is None:
        return "missing id"
    if not isinstance(id_, str):
        return f"id must be a string, got {type(id_).__name__}"
    if not id_.strip():
        return "empty id"
    if text is None:
        return "missing text"
    if not isinstance(text, str):
        return f"text must be a string, got {type(text).__name__}"
    if not text.strip():
        return "empty text"
    if "\x00" in text or "\x00" in id_:
        return "NUL byte in id or text"
    try:
        id_.encode("utf-8"), text.encode("utf-8")
    except UnicodeEncodeError:
        return "invalid Unicode: a lone surrogate (an escape like \\udc80) in id or text"
    return None


def check_op(op, id_, text, max_bytes: int, nbytes: int) -> str | None:
    """`check_record` for one operation: a delete needs only its id."""
    if op == "delete":
        if not isinstance(id_, str) or not id_.strip():
            return f"a delete needs a non-empty string id, got {short_repr(id_)}"
        return check_record(id_, "-", max_bytes, nbytes)
    return check_record(id_, text, max_bytes, nbytes)


def short_repr(value, limit: int = 80) -> str:
    """repr() for a reason: cut short, and never raising (an int of 5,000 digits cannot be printed)."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - ValueError (int digits), RecursionError
        return f"a {type(value).__name__} that cannot be printed"
    return text if len(text) <= limit else text[:limit] + "..."


# A UTF-8 byte order mark, which editors on Windows write at a file's start: not part of its first record.
BOM = b"\xef\xbb\xbf"


def _lines(path: Path, max_bytes: int, q: Quarantine) -> Iterator[tuple[int, int, bytes]]:
    """(1-based line number, byte offset, raw line with its newline), streamed.

    A line over `max_bytes` (a file with no newline is one line) is never held whole: its
    first bytes and its length go to `q`, and reading resumes after it.
    """
    offset = 0
    with open(path, "rb") as f:
        number = 0
        while raw := f.readline(max_bytes + 1):
            number += 1
            length = len(raw)
            if length > max_bytes and not raw.endswith(b"\n"):
                length += _skip_line(f, min(max_bytes + 1, 1 << 16))
                q.reject(
                    number,
                    f"too large: {length} bytes, over corpus.max_record_bytes={max_bytes}; "
                    f"its first {len(raw)} bytes are kept",
                    raw=raw,
                    offset=offset,
                    length=length,
                )
            else:
                yield number, offset, raw
            offset += length


def _skip_line(f, chunk: int) -> int:
    """Read past the rest of the current line, chunk by chunk; the bytes skipped."""
    skipped = 0
    while part := f.readline(chunk):
        skipped += len(part)
        if part.endswith(b"\n"):
            break
    return skipped


def _jsonl_records(path: Path, src: SourceFile, max_bytes: int, q: Quarantine, ops: bool = False) -> Iterator[Record]:
    for number, offset, raw in _lines(path, max_bytes, q):
        body = raw.rstrip(b"\r\n").removeprefix(BOM if number == 1 else b"")
        if not body.strip():
            continue
        obj, reason = _decode_json(body)
        op = "add"
        if reason is None:
            op = obj.get("op", "add") if ops and isinstance(obj, dict) else "add"
            if not isinstance(obj, dict):
                reason = f"not a JSON object: got {type(obj).__name__}"
            elif op not in ("add", "replace", "delete"):
                reason = f"unknown op {short_repr(op)}: use add, replace or delete"
            else:
                reason = check_op(op, obj.get("id"), obj.get("text"), max_bytes, len(raw))
        if reason:
            q.reject(number, reason, raw=raw)
        else:
            yield Record(obj["id"], obj.get("text") if op != "delete" else None, number, offset, len(raw), op)


# Python's parser fails at its recursion limit less the caller's depth, which differs from a CLI to
# a Dask worker: a line is refused at a fixed depth instead, the same one wherever it is read.
MAX_JSON_DEPTH = 500
# a JSON string, or an unclosed one to the end of the line; possessive (no backtracking), so a
# line of a million escaped quotes is one linear pass, not one pass per quote (a blocked night)
_STRINGS = re.compile(rb'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.S)
_BRACKETS = re.compile(rb"[\[\]{}]")


def _too_deep(body: bytes) -> bool:
    if body.count(b"[") + body.count(b"{") <= MAX_JSON_DEPTH:
        return False
    depth = 0
    for m in _BRACKETS.finditer(_STRINGS.sub(b'""', body)):
        depth += 1 if m.group() in (b"[", b"{") else -1
        if depth > MAX_JSON_DEPTH:
            return True
    return False


def _decode_json(body: bytes) -> tuple[object, str | None]:
    """(the line's JSON value, None), or (None, why it cannot be decoded). Every way decoding one
    line can fail costs that line only: bad UTF-8, broken JSON, nesting too deep for the parser
    (RecursionError), an integer over Python's digit limit (ValueError), or anything else."""
    if _too_deep(body):
        return None, f"JSON nested more than {MAX_JSON_DEPTH} deep"
    try:
        return json.loads(body.decode("utf-8")), None
    except UnicodeDecodeError as exc:
        return None, f"invalid UTF-8: byte {exc.start}"
    except json.JSONDecodeError as exc:
        return None, f"broken JSON: {exc.msg} at column {exc.colno}"
    except RecursionError:
        return None, "JSON nested too deep to decode"
    except Exception as exc:  # noqa: BLE001 - e.g. ValueError: Exceeds the limit (4300 digits)
        return None, f"JSON that cannot be decoded: {one_line(exc)[:200]}"


def _text_records(path: Path, src: SourceFile, max_bytes: int, q: Quarantine) -> Iterator[Record]:
    for number, offset, raw in _lines(path, max_bytes, q):
        body = raw.rstrip(b"\r\n").removeprefix(BOM if number == 1 else b"")
        if not body.strip():
            continue
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            q.reject(number, f"invalid UTF-8: byte {exc.start}", raw=raw)
            continue
        reason = check_record(f"{src.name}:{number}", text, max_bytes, len(raw))
        if reason:
            q.reject(number, reason, raw=raw)
        else:
            yield Record(f"{src.name}:{number}", text, number, offset, len(raw))


def _parquet_records(path: Path, src: SourceFile, max_bytes: int, batch_size: int, q: Quarantine) -> Iterator[Record]:
    """Row group by row group: a corrupt page costs its row group, a non-UTF-8 string its row."""
    pf = _open_parquet(path, q)
    if pf is None:
        return
    as_dictionary = None
    first = 1
    for rg in range(pf.num_row_groups):
        md = pf.metadata.row_group(rg)
        how, per_read = _read_plan(md, batch_size, max_bytes)
        if how != "plain" and as_dictionary is None:
            as_dictionary = pq.ParquetFile(path, page_checksum_verification=True, read_dictionary=["id", "text"])
        if how == "probe":
            per_read = max(1, min(per_read, BATCH_BYTES // max(1, _longest_dictionary_value(as_dictionary, rg))))
        reader = as_dictionary if how == "dictionary" else pf
        yield from _row_group_records(
            reader, path, rg, first, first + md.num_rows - 1, max_bytes, batch_size, per_read, q
        )
        first += md.num_rows


# Encodings Arrow can read into a dictionary array (it cannot from the DELTA ones).
_DICTIONARY_READABLE = {"PLAIN", "RLE", "BIT_PACKED", "PLAIN_DICTIONARY", "RLE_DICTIONARY"}


def _read_plan(md, batch_size: int, max_bytes: int) -> tuple[str, int]:
    """How to read one row group ("plain", "dictionary" or "probe"), and how many rows a read,
    from the sizes its metadata gives before anything is decoded. Arrow decodes a read whole,
    and a dictionary or delta-encoded column decodes to far more than it stores: 250 copies of
    one 1 MB text store 1 MB and decode to 250 MB. A small row group that may do that is read as
    dictionary arrays (each distinct value decoded once, every row's length known from the
    dictionary's offsets), or, when Arrow cannot, a few rows at a time (no value decodes to more
    than its row group stores). A large one is read about BATCH_BYTES of what it stores at a
    time, and fewer rows if its dictionaries hold long values ("probe": `_longest_dictionary_value`)
    or it shares prefixes (DELTA_BYTE_ARRAY: as many rows as BATCH_BYTES holds at `max_bytes`)."""
    chunks = [c for c in (md.column(j) for j in range(md.num_columns)) if c.path_in_schema in ("id", "text")]
    stored = max(1, sum(c.total_uncompressed_size for c in chunks))
    dictionary = any(c.has_dictionary_page for c in chunks)
    prefixes = any("DELTA_BYTE_ARRAY" in c.encodings for c in chunks)
    if stored > BATCH_BYTES:
        per_read = max(1, min(batch_size, BATCH_BYTES * md.num_rows // stored))
        if prefixes:
            per_read = max(1, min(per_read, BATCH_BYTES // max_bytes))
        return ("probe" if dictionary else "plain"), per_read
    if not dictionary and not prefixes:
        return "plain", batch_size
    if all(set(c.encodings) <= _DICTIONARY_READABLE for c in chunks):
        return "dictionary", batch_size
    return "plain", max(1, min(batch_size, BATCH_BYTES // stored))


def _longest_dictionary_value(reader: pq.ParquetFile, rg: int) -> int:
    """Bytes of the longest value in the dictionary pages of row group `rg` (`reader` reads
    dictionary arrays: its first row brings each whole dictionary page and its first data page)."""
    try:
        batch = next(reader.iter_batches(batch_size=1, row_groups=[rg], columns=["id", "text"]), None)
    except (pa.ArrowException, OSError):
        return 0  # corrupt (the read quarantines it), or pages Arrow cannot read as dictionary arrays
    lengths = [
        pc.max(pc.binary_length(c.dictionary)).as_py()
        for c in (batch.columns if batch else ())
        if pa.types.is_dictionary(c.type)
    ]
    return max([n for n in lengths if n is not None], default=0)


def _open_parquet(path: Path, q: Quarantine) -> pq.ParquetFile | None:
    """The file, or None when nothing of it can be read (then the whole file is quarantined)."""
    try:
        pf = pq.ParquetFile(path, page_checksum_verification=True)
    except (pa.ArrowException, OSError) as exc:
        q.reject_file(path, f"unreadable Parquet file: {one_line(exc)}")
        return None
    schema = pf.schema_arrow
    missing = [
        c
        for c in ("id", "text")
        if schema.names.count(c) != 1  # absent, or twice (ambiguous)
        or not pa.types.is_string(schema.field(c).type)
        and not pa.types.is_large_string(schema.field(c).type)
    ]
    if missing:
        got = ", ".join(f"{f.name}: {f.type}" for f in schema)
        q.reject_file(path, f"wrong Parquet schema: needs one string column id and one text, got {got}")
        return None
    return pf


def _row_group_records(
    pf: pq.ParquetFile,
    path: Path,
    rg: int,
    first: int,
    last: int,
    max_bytes: int,
    batch_size: int,
    per_read: int,
    q: Quarantine,
) -> Iterator[Record]:
    batches = pf.iter_batches(batch_size=per_read, row_groups=[rg], columns=["id", "text"])
    number = first
    while True:
        try:
            batch = _checked(next(batches, None))
        except (pa.ArrowException, OSError) as exc:
            start, length = _row_group_span(pf.metadata.row_group(rg))
            q.reject_range(
                path,
                start,
                length,
                number,
                f"unreadable Parquet row group {rg} (rows {number}-{last}): {one_line(exc)}",
                rows=[number, last],
                offset=start,
                length=length,
            )
            return
        if batch is None:
            return
        yield from _batch_records(batch, number, max_bytes, batch_size, q)
        number += batch.num_rows


def _checked(batch: pa.RecordBatch | None) -> pa.RecordBatch | None:
    """`batch`, whose dictionary indices Arrow did not check: a corrupt page (without checksums)
    reads as indices past the dictionary's end."""
    for column in batch.columns if batch is not None else ():
        if pa.types.is_dictionary(column.type) and len(column.indices.drop_null()):
            low, high = pc.min_max(column.indices).values()
            if low.as_py() < 0 or high.as_py() >= len(column.dictionary):
                raise pa.ArrowInvalid(
                    f"dictionary indices {low}-{high} for {len(column.dictionary)} values (a corrupt page)"
                )
    return batch


def _batch_records(
    batch: pa.RecordBatch, first: int, max_bytes: int, batch_size: int, q: Quarantine
) -> Iterator[Record]:
    """The rows of one Arrow batch as records, turned into Python strings BATCH_BYTES at a time;
    a row over `max_bytes` is quarantined with the first `max_bytes` bytes of each column,
    never decoded whole."""
    ids, texts = batch.column("id"), batch.column("text")
    sizes = _byte_lengths(ids) + _byte_lengths(texts)
    for a, b in _byte_spans(sizes, batch_size, BATCH_BYTES, alone_over=max_bytes):
        if sizes[a] > max_bytes:
            q.reject(
                first + a,
                f"too large: {sizes[a]} bytes, over corpus.max_record_bytes={max_bytes}; "
                f"each column is kept up to its first {max_bytes} bytes",
                row={"id": _head(ids[a : a + 1], max_bytes), "text": _head(texts[a : a + 1], max_bytes)},
            )
            continue
        part = pa.record_batch([_undictionary(ids[a:b]), _undictionary(texts[a:b])], names=["id", "text"])
        for number, nbytes, (id_, text, bad, row) in zip(
            range(first + a, first + b), sizes[a:b].tolist(), _decoded(part)
        ):
            reason = bad or check_record(id_, text, max_bytes, nbytes)
            if reason:
                q.reject(number, reason, row=row or {"id": id_, "text": text})
            else:
                yield Record(id_, text, number, -1, -1)


def _byte_lengths(column: pa.Array) -> np.ndarray:
    """The bytes of each string of `column` (0 for a null), from Arrow's offsets: nothing is decoded
    (of a dictionary array, the lengths of its distinct values, taken by its indices)."""
    if pa.types.is_dictionary(column.type):
        lengths = pc.binary_length(column.dictionary).take(column.indices)
    else:
        lengths = pc.binary_length(column)
    return lengths.fill_null(0).to_numpy().astype(np.int64)


def _byte_spans(
    sizes: np.ndarray, max_rows: int, max_bytes: int, alone_over: int | None = None
) -> Iterator[tuple[int, int]]:
    """(start, stop) ranges of rows, in order, of at most `max_rows` rows and `max_bytes` bytes
    unless one row alone is larger; a row over `alone_over` is a range of its own."""
    ends = np.cumsum(sizes)  # bytes up to each row, that row included
    alone = np.flatnonzero(sizes > alone_over) if alone_over is not None else np.empty(0, np.int64)
    start, n = 0, len(sizes)
    while start < n:
        at = int(np.searchsorted(alone, start))
        if at < len(alone) and alone[at] == start:
            stop = start + 1
        else:
            fits = int(np.searchsorted(ends, ends[start] - sizes[start] + max_bytes, side="right"))
            stop = min(max(fits, start + 1), start + max_rows, int(alone[at]) if at < len(alone) else n)
        yield start, stop
        start = stop


def _undictionary(column: pa.Array) -> pa.Array:
    return column.dictionary_decode() if pa.types.is_dictionary(column.type) else column


def _head(value: pa.Array, limit: int):
    """One string as the quarantine keeps it: itself if within `limit` bytes and UTF-8, else its
    first `limit` bytes in base64 and its length."""
    value = _undictionary(value)
    binary = value.view(pa.large_binary() if pa.types.is_large_string(value.type) else pa.binary())
    length = pc.binary_length(binary)[0].as_py()
    if length is None:
        return None
    head = pc.binary_slice(binary, 0, limit)[0].as_py()
    if length <= limit:
        try:
            return head.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return {"base64": base64.b64encode(head).decode(), "bytes": length}


def _decoded(batch: pa.RecordBatch) -> Iterator[tuple]:
    """(id, text, reason, raw row) per row; Arrow does not check that strings are UTF-8, so a
    batch that fails to decode is decoded again row by row from its bytes."""
    try:
        ids, texts = batch.column("id").to_pylist(), batch.column("text").to_pylist()
        for id_, text in zip(ids, texts):
            yield id_, text, None, None
        return
    except UnicodeDecodeError:
        pass
    raw = {
        name: batch.column(name)
        .view(pa.large_binary() if pa.types.is_large_string(batch.column(name).type) else pa.binary())
        .to_pylist()
        for name in ("id", "text")
    }
    for id_b, text_b in zip(raw["id"], raw["text"]):
        values, reason = {}, None
        for name, value in (("id", id_b), ("text", text_b)):
            try:
                values[name] = None if value is None else value.decode("utf-8")
            except UnicodeDecodeError as exc:
                values[name] = {"base64": base64.b64encode(value).decode()}
                reason = reason or f"invalid UTF-8 in column {name}: byte {exc.start}"
        yield values["id"], values["text"], reason, values if reason else None


def _row_group_span(md) -> tuple[int, int]:
    """(offset, length) of a row group's column chunks in the file."""
    cols = [md.column(j) for j in range(md.num_columns)]
    starts = [c.dictionary_page_offset if c.has_dictionary_page else c.data_page_offset for c in cols]
    end = max(s + c.total_compressed_size for s, c in zip(starts, cols))
    return min(starts), end - min(starts)


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def read_records(
    corpus_dir: Path, src: SourceFile, q: Quarantine, *, batch_size: int, max_record_bytes: int, ops: bool = False
) -> Iterator[Record]:
    """The good records of one file, in file order; the bad ones go to `q`. `ops`: JSON Lines
    records may carry an "op" (the add path), never in corpus partitions."""
    path = Path(corpus_dir) / src.name
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        q.reject(0, f"unreadable file: {exc.strerror}")
        return
    if src.format == "jsonl":
        yield from _jsonl_records(path, src, max_record_bytes, q, ops)
    elif src.format == "text":
        yield from _text_records(path, src, max_record_bytes, q)
    elif src.format == "arrow":
        yield from _acknowledged_records(path)
    else:
        yield from _parquet_records(path, src, max_record_bytes, batch_size, q)


def _acknowledged_records(path: Path) -> Iterator[Record]:
    """Statements shardvec itself wrote (the ledger's puts): acknowledged, so taken as they are,
    never screened again under today's settings (a lower corpus.max_record_bytes must not drop
    what was acknowledged under a higher one)."""
    reader = pa.ipc.open_file(pa.memory_map(str(path), "r"))
    number = 0
    for i in range(reader.num_record_batches):
        batch = reader.get_batch(i)  # mapped, not read: only the slice below becomes Python strings
        sizes = _byte_lengths(batch.column("id")) + _byte_lengths(batch.column("text"))
        for a, b in _byte_spans(sizes, len(sizes), BATCH_BYTES):
            for id_, text in zip(batch.column("id")[a:b].to_pylist(), batch.column("text")[a:b].to_pylist()):
                number += 1
                yield Record(id_, text, number, -1, -1)


def batched(items, n: int, max_bytes: int | None = None, weigh=None):
    """Lists of up to n items from any iterable (the last may be shorter) and, with `max_bytes`,
    of at most that much `weigh(item)` in all, unless one item alone weighs more."""
    batch, weight = [], 0
    for item in items:
        w = weigh(item) if max_bytes else 0
        if batch and max_bytes and weight + w > max_bytes:
            yield batch
            batch, weight = [], 0
        batch.append(item)
        weight += w
        if len(batch) == n:
            yield batch
            batch, weight = [], 0
    if batch:
        yield batch


@dataclass(frozen=True)
class Selection:
    """Which partitions a run builds into its version, and which of them it trains on."""

    in_version: list[str]
    train: list[str]


def select_partitions(
    available: list[str],
    done: list[str],
    *,
    mode: str,
    partitions: list[str] | None = None,
    start: str | None = None,
    end: str | None = None,
) -> Selection:
    """The version holds what was in before plus the chosen partitions (all of them, or those
    named, or those from `start` to `end` inclusive). mode "update" trains the published models
    further on the chosen partitions not yet in; "rebuild" trains from scratch on everything
    the version holds (as does the very first run)."""
    if partitions is not None and (missing := sorted(set(partitions) - set(available))):
        raise BadInputError(
            f"No partition named {', '.join(missing)} in the corpus; "
            f"the partitions there are: {', '.join(available) or 'none'}."
        )
    if start is not None and end is not None and start > end:
        raise BadInputError(f"The range starts at {start} after it ends at {end}; swap --start and --end.")
    chosen = [
        p
        for p in available
        if (partitions is None or p in partitions) and (start is None or p >= start) and (end is None or p <= end)
    ]
    done_here = [p for p in done if p in available]
    in_version = sorted(set(done_here) | set(chosen))
    if mode == "rebuild" or not done_here:
        return Selection(in_version=in_version, train=in_version)
    return Selection(in_version=in_version, train=[p for p in chosen if p not in done_here])
