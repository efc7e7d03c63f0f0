"""shardvec: semantic vectors of a growing corpus, kept up to date nightly, read from disk.

>>> import shardvec
>>> store = shardvec.open("data")
>>> store.neighbours("king", 5)          # nearest words (word2vec)
>>> store.similar("the cat sat", 5)      # most similar statements (LSI)
>>> store.row("2026-11-20/lee.txt:3")    # a statement's stored similarity row
"""

from shardvec.reader import Store, open_store

open = open_store  # noqa: A001 - `shardvec.open(path)` reads like `annoy`/`sqlite3` openers

__all__ = ["Store", "open", "open_store"]
