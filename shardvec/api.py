"""The public Python API: one function per `shardvec` verb, of the same name and parameters.

Each takes `data=`, a data directory (None: the configured `data_dir`), returns a small result
(a dict, a list or a frozen dataclass) and raises a ShardvecError (shardvec/errors.py) whose
message says the fix. shardvec/cli.py calls these and only formats what they return; the query
verbs (`shardvec query neighbours|similar|row`) are the methods of the Store `open` returns.
Imports stay inside the functions: the CLI starts fast, and the flows process never loads gensim.

Long because: the public API is one function per CLI verb, each with its docstring, in one
place on purpose.
"""

from __future__ import annotations

import builtins
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from shardvec.errors import UsageError

if TYPE_CHECKING:
    from shardvec.reader import Store
    from shardvec.tasks.changes.additions import Adder

Data = str | Path | None


def open(data: Data = None, cache: str | Path | None = None) -> Store:  # noqa: A001 - reads like sqlite3's opener
    """The version CURRENT names, memmapped: `neighbours`, `similar`, `row`, `vector`, ... (shardvec/reader.py).

    `data` may be an object store URL (s3://bucket/prefix) that `push` wrote to: its newest pushed
    version is fetched into the local `cache` (default ~/.cache/shardvec/s3/bucket/prefix; files
    already there are not fetched again) and read from there; `refresh()` fetches a newer one."""
    from shardvec.reader import open_store
    from shardvec.tasks.storage import is_url

    if is_url(data):
        return open_store(str(data), cache=cache)
    return open_store(Path(data).expanduser() if data else _data(None))  # a reader needs no valid pipeline settings


def push(to: str, data: Data = None) -> dict:
    """Upload the live version (its files, and the additions on top) to the object store `to`
    (s3://bucket/prefix), skipping files already there with the same SHA-256, then commit it as
    the next entry of the store's log: readers that `open(to)` see it from then on. Returns
    {seq, version, uploaded, skipped, committed} (committed False: that state was the newest entry already)."""
    from shardvec.tasks.storage import is_url
    from shardvec.tasks.storage import push as push_to

    if not is_url(to):
        raise UsageError(f"--to {to} is not an object store URL; give one like s3://bucket/prefix.")
    return push_to(_data(data), to)


def open_vectors(path: str | Path, name: str | None = None):
    """Vectors imported with `import_vectors` (DATA/vectors/NAME), or any space folder.

    >>> v = shardvec.open_vectors("data", "crawl"); v.vector("cat"); v.vectors(["a", "b"])
    """
    from shardvec.tasks.models import Vectors
    from shardvec.tasks.storage import Layout

    return Vectors(Layout(Path(path)).vectors / name if name else Path(path))


def add(source: Iterable[dict] | str | Path, data: Data = None, *, fmt: str = "jsonl", replace: bool = False) -> dict:
    """Add statements to the published store: durable, searchable and related when it returns.

    `source`: records ({"id": ..., "text": ...}), a .jsonl, .txt or .parquet file (JSON Lines
    records may also say "op": "replace" or "op": "delete"), or "-" for stdin in `fmt` (jsonl or
    txt). Their similarity rows, and the rows of existing statements they now belong to, are exact
    (in a version with partitioned rows, a batch of up to 64 gets the nightly's recall).
    `replace=True`: a live id gets the new text. To add many small batches fast, keep one
    `adder(data)` open.
    """
    from shardvec.tasks.changes import add_file, add_options, add_records

    s = settings(data)
    options = add_options(s)
    if isinstance(source, (bytes, bytearray)):
        raise UsageError('add takes records, a file\'s path or "-", not bytes; decode the path or pass the records.')
    if not isinstance(source, (str, Path)):  # records, or one record (the Adder takes either)
        return add_records(s.data, source, replace=replace, **options)
    if str(source) != "-":
        return add_file(s.data, Path(source), replace=replace, **options)
    if fmt not in ("jsonl", "txt"):
        raise UsageError(f"--format {fmt} is not supported for stdin; use --format jsonl or --format txt.")
    spool = _spool_stdin(s.data, fmt)
    try:  # named stdin.FMT, not the spool's name: adding the same text again is a no-op
        return add_file(s.data, spool, name=f"stdin.{fmt}", replace=replace, **options)
    finally:
        spool.unlink(missing_ok=True)


def _spool_stdin(data: Path, fmt: str) -> Path:
    """stdin streamed into a file of its own under inbox/.stdin/ (never read whole; two adds in
    one second never share one)."""
    from shardvec.tasks.inputs import BadInputError
    from shardvec.tasks.storage import Layout, not_a_link

    folder = Layout(data).stdin_spool
    for link in (folder.parent, folder):
        not_a_link(link, BadInputError)
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f"stdin-{time.strftime('%Y%m%dT%H%M%S')}-", suffix=f".{fmt}", dir=folder)
    with os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(sys.stdin.buffer, out)
    return Path(name)


def delete(ids: Iterable[str], data: Data = None) -> dict:
    """Delete statements by id (["-"]: read them from stdin, one a line): gone from searches and
    from every row (recomputed exactly) when it returns, and across every later night, until the
    id is added again."""
    from shardvec.tasks.changes import delete_ids

    ids = [ids] if isinstance(ids, str) else list(ids)  # one id, not its characters
    if ids == ["-"]:
        ids = [line.rstrip("\r\n") for line in sys.stdin if line.strip()]
    return delete_ids(_data(data), ids)


def adder(data: Data = None) -> Adder:
    """An add path kept open, to add, replace and delete many small batches fast (`add` opens one
    a call). Its `.add(records, replace=False)` and `.delete(ids)` return an `AddResult` (added,
    replaced, deleted, quarantined...: `add`'s dict as attributes), durable and visible when they
    return. New records are screened as `add` screens them, by the settings' corpus.* read when
    it was opened: open another to take up changed settings.

    >>> adds = shardvec.adder("data"); adds.add([{"id": "s1", "text": "..."}]).added; adds.delete("s1")
    """
    from shardvec.tasks.changes import add_options, adder_of

    s = settings(data)
    return adder_of(s.data, **add_options(s))


def nightly(data: Data = None, force: bool = False) -> dict:
    """Run the nightly flow now (a local Prefect, the configured Dask): new partitions in, models
    updated, a new version published; returns the run's report. `force`: publish even if the
    quality gate refuses the models."""
    from shardvec.flows.nightly import nightly as nightly_flow
    from shardvec.flows.runtime import local_prefect, task_runner

    s = settings(data)
    with local_prefect():
        return nightly_flow.with_options(task_runner=task_runner(s))(overrides={"data_dir": str(s.data)}, force=force)


def backfill(
    start: date | str | None = None,
    end: date | str | None = None,
    partitions: list[str] | None = None,
    mode: str = "update",
    data: Data = None,
    force: bool = False,
) -> dict:
    """Reprocess a range of partitions (`start`..`end`, inclusive, YYYY-MM-DD), or the named
    `partitions`, or all, and publish; `mode` "update" trains on what is not yet in, "rebuild"
    from scratch. Returns the run's report."""
    from shardvec.flows.backfill import backfill as backfill_flow
    from shardvec.flows.runtime import local_prefect, task_runner

    if mode not in ("update", "rebuild"):
        raise UsageError(f"--mode {mode} is not a mode; use --mode update or --mode rebuild.")
    if isinstance(partitions, str):  # one name
        partitions = [partitions]
    if partitions and (start or end):
        raise UsageError("Give either --partition names or a --start/--end range, not both.")
    s = settings(data)
    with local_prefect():
        return backfill_flow.with_options(task_runner=task_runner(s))(
            start=_day(start),
            end=_day(end),
            partitions=list(partitions) if partitions else None,
            mode=mode,
            overrides={"data_dir": str(s.data)},
            force=force,
        )


def _day(value: date | str | None) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise UsageError(f"{value!r} is not a day; give it as YYYY-MM-DD.") from None
    return value


def versions(data: Data = None) -> list[dict]:
    """The kept versions, oldest first: version, created_by, statements, quality, live, was_live
    (False: a killed run finished it but never made it live)."""
    from shardvec.tasks.changes import list_versions

    return list_versions(_data(data))


def rollback(version: str | None = None, data: Data = None) -> dict:
    """Make an earlier kept version live (the one before the live one by default), in one atomic
    step; adds, replaces and deletes acknowledged since are replayed on top. Returns version,
    from and ops_replayed."""
    from shardvec.tasks.changes import rollback as roll_back

    return roll_back(_data(data), version)


@dataclass(frozen=True)
class Verified:
    """What `verify` found: `version` is whole when both lists are empty."""

    version: str
    damaged: tuple[str, ...]  # the version's files and its segments: a rebuild makes them again
    ledger: tuple[str, ...]  # ledger files: nothing makes them again, restore them from a backup
    data: Path | None = None  # the data directory checked

    @property
    def problems(self) -> list[str]:
        return [*self.damaged, *self.ledger]

    @property
    def whole(self) -> bool:
        return not self.problems


def verify(data: Data = None) -> Verified:
    """Check the live version's files against their checksums, and that its addition segments
    and the ledger can be read (`.whole`, or `.problems` to mend)."""
    from shardvec.tasks.changes import verify_parts

    path = _data(data)
    version, built, ledger = verify_parts(path)
    return Verified(version, tuple(built), tuple(ledger), path)


@dataclass(frozen=True)
class History:
    """What `history` read: the last runs' entries (oldest first) and the chart it drew, if asked."""

    runs: list[dict]
    plot: Path | None = None


def history(data: Data = None, last: int = 20, plot: str | Path | None = None) -> History:
    """The quality of the `last` runs, night by night: published or refused, metrics, drift and
    the gate's reasons; `plot`: also draw the trend into this .png or .svg file."""
    from shardvec.tasks.quality import plot_history, read_history

    if last < 1:
        raise UsageError(f"--last {last} asks for no run; give a positive number.")
    runs = read_history(_data(data), last=last)
    return History(runs, plot_history(runs, Path(plot)) if plot and runs else None)


def import_vectors(source: str | Path, name: str, fmt: str = "auto", dtype: str = "float32", data: Data = None) -> dict:
    """Import word vectors (word2vec .txt/.bin, GloVe .txt, fastText .bin) as DATA/vectors/NAME, an
    on-disk space that needs almost no RAM to read (`open_vectors`); bad lines are quarantined
    (`quarantined`, and the folder in `quarantine`)."""
    from shardvec.tasks.models import import_vectors as import_space
    from shardvec.tasks.storage import Layout

    path = _data(data)
    out = import_space(Path(source), path, name, fmt=fmt, dtype=dtype)
    return {**out, "quarantine": str(Layout(path).quarantine)}


EXPORT_FORMATS = ("word2vec", "word2vec-binary", "projector")


def export(
    space: str,
    out: str | Path,
    to: str = "word2vec",
    limit: int | None = None,
    keys: str | Path | Iterable[str] | None = None,
    data: Data = None,
) -> dict:
    """Export a published space (words, statements, or the NAME of imported vectors) as word2vec
    (text or binary), or as TensorBoard projector files for a subset (`keys`: a file of keys, one
    a line, or the keys themselves; the first `limit`, 10,000 by default)."""
    from shardvec.tasks.models import export_projector, export_word2vec

    if to not in EXPORT_FORMATS:
        raise UsageError(f"--to {to} is not a format; use word2vec, word2vec-binary or projector.")
    if limit is not None and limit < 1:
        raise UsageError(f"--limit {limit} exports nothing; give a positive number, or leave it out for all.")
    folder = _space_dir(_data(data), space)
    if to != "projector":
        return export_word2vec(folder, Path(out), binary=to == "word2vec-binary", limit=limit)
    if isinstance(keys, (str, Path)):
        with builtins.open(keys, encoding="utf-8") as f:
            keys = [k.rstrip("\n") for k in f if k.strip()]
    return export_projector(folder, Path(out), keys=list(keys) if keys is not None else None, limit=limit or 10_000)


def _space_dir(data: Path, space: str) -> Path:
    from shardvec.tasks.storage import DataDir

    where = DataDir(data)
    if space in ("words", "statements"):
        return data / where.require_current().components[space]
    path = where.layout.vectors / space
    if not path.exists():
        raise UsageError(f"No space named {space!r}: use words, statements, or a name given to `shardvec import`.")
    return path


def sample(data: Data = None) -> dict[str, int]:
    """Write the bundled sample corpus (real text shipped with gensim) into DATA/corpus; returns
    records written by file."""
    from shardvec.sample import build_sample
    from shardvec.tasks.storage import Layout

    return {str(path): n for path, n in build_sample(Layout(_data(data)).corpus).items()}


def demo(data: Data = None) -> dict:
    """The sample corpus, then a nightly on it: the `sample` and `report` to query (`open(data)`)."""
    written = sample(data)
    return {"sample": written, "report": nightly(data)}


def mark_crashed(data: Data = None) -> list[str]:
    """Mark the runs of DATA whose process is gone (killed, rebooted) as Crashed in Prefect; returns their ids."""
    from shardvec.flows.operate import mark_dead_runs_crashed
    from shardvec.flows.runtime import local_prefect

    path = _data(data)
    with local_prefect():
        return mark_dead_runs_crashed(path)


def settings(data: Data = None):
    """The settings every call with this `data=` runs with: SHARDVEC_CONFIG's file (or the
    defaults), validated, with `data` as the data directory when given."""
    from shardvec.config import load_settings

    return load_settings(**({"data_dir": str(data)} if data else {}))


def _data(data: Data) -> Path:
    return settings(data).data


__all__ = [
    "History",
    "Verified",
    "add",
    "adder",
    "backfill",
    "delete",
    "demo",
    "export",
    "history",
    "import_vectors",
    "mark_crashed",
    "nightly",
    "open",
    "open_vectors",
    "push",
    "rollback",
    "settings",
    "sample",
    "verify",
    "versions",
]
