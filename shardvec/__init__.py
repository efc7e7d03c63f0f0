"""shardvec: semantic vectors of a growing corpus, kept up to date nightly, read from disk.

>>> import shardvec
>>> store = shardvec.open("data")
>>> store.neighbours("king", 5)          # nearest words (word2vec)
>>> store.similar("the cat sat", 5)      # most similar statements (LSI)
>>> store.row("2026-11-20/lee.txt:3")    # a statement's stored similarity row
>>> shardvec.add([{"id": "s1", "text": "a new thing said"}], data="data")
"""

from pathlib import Path

from shardvec.reader import Store, open_store
from tasks.additions import Adder

open = open_store  # noqa: A001 - `shardvec.open(path)` reads like `annoy`/`sqlite3` openers


def open_vectors(path: str | Path, name: str | None = None):
    """Vectors imported with `shardvec import` (DATA/vectors/NAME), or any space folder.

    >>> v = shardvec.open_vectors("data", "crawl"); v.vector("cat"); v.vectors(["a", "b"])
    """
    from tasks.vectors_io import Vectors
    return Vectors(Path(path) / "vectors" / name if name else Path(path))


def add(records, data: str | Path | None = None) -> dict:
    """Add statements ({"id": ..., "text": ...}) to the published store.

    When it returns they are durable and visible to every reader that (re)opens the store;
    their similarity rows, and the rows of existing statements they now belong to, are exact.
    To add many batches fast, keep an `Adder(data)` open and call its `add` instead.
    """
    from config import load_settings
    s = load_settings(**({"data_dir": str(data)} if data else {}))
    adder = Adder(s.data, on_duplicate=s.corpus.on_duplicate, max_record_bytes=s.corpus.max_record_bytes)
    return adder.add(records).to_dict()


__all__ = ["Adder", "Store", "add", "open", "open_store", "open_vectors"]
