"""shardvec: semantic vectors of a growing corpus, kept up to date nightly, read from disk.

>>> import shardvec
>>> store = shardvec.open("data")
>>> store.neighbours("king", 5)          # nearest words (word2vec)
>>> store.similar("the cat sat", 5)      # most similar statements (LSI)
>>> store.row("2026-11-20/lee.txt:3")    # a statement's stored similarity row
>>> shardvec.add([{"id": "s1", "text": "a new thing said"}], data="data")
>>> shardvec.delete(["s1"], data="data"); shardvec.versions("data"); shardvec.rollback(data="data")

Each function here is the CLI verb of the same name (`shardvec add`, `delete`, `versions`,
`rollback`, `verify`; `shardvec query neighbours|similar|row` are the Store's methods).
"""

from pathlib import Path

from shardvec.reader import Store, open_store
from shardvec.tasks.changes.additions import Adder

open = open_store  # noqa: A001 - `shardvec.open(path)` reads like `annoy`/`sqlite3` openers


def open_vectors(path: str | Path, name: str | None = None):
    """Vectors imported with `shardvec import` (DATA/vectors/NAME), or any space folder.

    >>> v = shardvec.open_vectors("data", "crawl"); v.vector("cat"); v.vectors(["a", "b"])
    """
    from shardvec.tasks.storage.layout import Layout
    from shardvec.tasks.models.vectors_io import Vectors
    return Vectors(Layout(path).vectors / name if name else Path(path))


def add(records, data: str | Path | None = None, replace: bool = False) -> dict:
    """Add statements ({"id": ..., "text": ...}) to the published store.

    When it returns they are durable and visible to every reader that (re)opens the store;
    their similarity rows, and the rows of existing statements they now belong to, are exact
    (in a version with partitioned rows, a batch of up to 64 gets the nightly's recall).
    `replace=True`: a live id gets the new text. To add many batches fast, keep an
    `Adder(data)` open and call its `add` instead.
    """
    return _adder(data).add(records, replace=replace).to_dict()


def delete(ids, data: str | Path | None = None) -> dict:
    """Delete statements by id: gone from searches and from every row (recomputed exactly)
    when it returns, and across every later night, until the id is added again."""
    return _adder(data).delete(ids).to_dict()


def versions(data: str | Path | None = None) -> list[dict]:
    """The kept versions, oldest first: when, statements, the run's quality line, which is live."""
    from shardvec.tasks.changes.release import list_versions
    return list_versions(_data(data))


def rollback(version: str | None = None, data: str | Path | None = None) -> dict:
    """Make an earlier kept version live (the one before the live one by default), in one atomic
    step; adds, replaces and deletes acknowledged since are replayed on top."""
    from shardvec.tasks.changes.release import rollback as roll_back
    return roll_back(_data(data), version)


def verify(data: str | Path | None = None) -> list[str]:
    """Problems with the published version, its additions and its ledger (empty: it is whole)."""
    from shardvec.tasks.changes.release import verify as verify_store
    return verify_store(_data(data))


def _data(data) -> Path:
    from shardvec.config import load_settings
    return load_settings(**({"data_dir": str(data)} if data else {})).data


def _adder(data) -> Adder:
    from shardvec.config import load_settings
    s = load_settings(**({"data_dir": str(data)} if data else {}))
    return Adder(s.data, on_duplicate=s.corpus.on_duplicate, max_record_bytes=s.corpus.max_record_bytes)


__all__ = ["Adder", "Store", "add", "delete", "open", "open_store", "open_vectors", "rollback", "verify", "versions"]
