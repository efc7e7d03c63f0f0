"""Token sequences -> padded row ids and vectors in one call, for frozen embeddings in other
models (shardvec/embedding.py's PyTorch layer; `Space.lookup` calls it)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def lookup(
    space, docs: Sequence[Sequence[str]], pad: int = -1, normalise: Callable[[str], str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(ids: docs x longest, `pad` past the end and for unknown tokens; vectors: docs x longest
    x dim, zeros there) of a space (anything with `find_many`, `vectors_at` and `dim`).
    `normalise`: how each token is turned into a key first (the tokenizer's, for a corpus' words)."""
    longest = max((len(d) for d in docs), default=0)
    ids = np.full((len(docs), longest), pad, dtype=np.int64)
    found = space.find_many([normalise(t) if normalise else t for d in docs for t in d])
    at = 0
    for i, d in enumerate(docs):
        ids[i, : len(d)] = found[at : at + len(d)]
        at += len(d)
    vectors = np.zeros((len(docs), longest, space.dim), dtype=np.float32)
    known = ids >= 0
    vectors[known] = space.vectors_at(ids[known])
    return ids, vectors
