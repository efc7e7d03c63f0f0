"""shardvec: semantic vectors of a growing corpus, kept up to date nightly, read from disk.

>>> import shardvec
>>> store = shardvec.open("data")
>>> store.neighbours("king", 5)          # nearest words (word2vec)
>>> store.similar("the cat sat", 5)      # most similar statements (LSI)
>>> store.row("2026-11-20/lee.txt:3")    # a statement's stored similarity row
>>> shardvec.add([{"id": "s1", "text": "a new thing said"}], data="data")
>>> shardvec.delete(["s1"], data="data"); shardvec.versions("data"); shardvec.rollback(data="data")
>>> shardvec.push(to="s3://bucket/prefix", data="data")   # for readers on other machines:
>>> shardvec.open("s3://bucket/prefix")                   # fetched into a local cache, then memmapped

The functions are shardvec/api.py's, one per CLI verb of the same name and parameters
(`shardvec add` is `shardvec.add`, `shardvec import` is `shardvec.import_vectors`;
`shardvec query neighbours|similar|row` are the Store's methods), and two with no verb:
`adder(data)`, an add path kept open for many small batches, and `settings(data)`, the
validated settings a call with that `data=` runs with. `shardvec.api.sample` is not here:
`shardvec.sample` is the module that builds the sample corpus.

>>> adds = shardvec.adder("data"); adds.add([{"id": "s2", "text": "..."}]); adds.delete("s2")
"""

from shardvec.api import (
    History,
    Verified,
    add,
    adder,
    backfill,
    delete,
    demo,
    export,
    history,
    import_vectors,
    mark_crashed,
    nightly,
    open,
    open_vectors,
    push,
    rollback,
    settings,
    verify,
    versions,
)
from shardvec.errors import QualityGateError, ShardvecError, UsageError
from shardvec.reader import Store, open_store

__all__ = [
    "History",
    "QualityGateError",
    "ShardvecError",
    "Store",
    "UsageError",
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
    "open_store",
    "open_vectors",
    "push",
    "rollback",
    "settings",
    "verify",
    "versions",
]


def __getattr__(name: str):
    if name == "Adder":  # exported before shardvec.adder: say what replaced it
        raise AttributeError(
            "shardvec.Adder is no longer exported: open one with shardvec.adder(data), which screens "
            "adds by the settings' corpus.* knobs."
        )
    raise AttributeError(f"module 'shardvec' has no attribute {name!r}")
