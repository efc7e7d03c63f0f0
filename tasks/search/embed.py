"""Token lists -> LSI statement vectors from the plain exports, with no gensim import.

`tfidf_matrix` builds L2-normalized TF-IDF rows as one sparse matrix per batch; `Embedder`
multiplies them by the exported term vectors (U): one sparse-dense product per batch, equal to
gensim's `lsi[tfidf[bow]]`. Readers, additions and the nightly's projection all embed here.
"""

from __future__ import annotations

import zlib
from array import array
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from shardvec.tasks.storage.spaces import Space


def tfidf_matrix(docs: Sequence[Sequence[str]], lookup: Callable[[str], int | None], idf: np.ndarray) -> sp.csr_matrix:
    """L2-normalized TF-IDF rows (docs x terms) for token lists; unknown tokens are skipped."""
    indptr, indices = array("q", [0]), array("q")  # 8 bytes an entry, not a Python int's 36
    for tokens in docs:
        for t in tokens:
            i = lookup(t)
            if i is not None:
                indices.append(i)
        indptr.append(len(indices))
    indices_a = np.frombuffer(indices, dtype=np.int64) if len(indices) else np.empty(0, np.int64)
    m = sp.csr_matrix(
        (np.ones(len(indices_a)), indices_a, np.frombuffer(indptr, dtype=np.int64)), shape=(len(docs), len(idf))
    )
    m.sum_duplicates()  # repeated terms -> counts
    m.data *= idf[m.indices]
    m.eliminate_zeros()
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return sp.csr_matrix(sp.diags(1.0 / norms) @ m)


class Embedder:
    """Token lists -> LSI statement vectors, from the plain exports (no unpickling)."""

    def __init__(self, models_dir: Path, vocab_in_ram: bool = False):
        """`vocab_in_ram` builds a term dict (fast for bulk projection); else terms are looked up on disk."""
        self.terms = Space(Path(models_dir) / "terms")
        self.idf = np.load(Path(models_dir) / "idf.npy", mmap_mode="r").astype(np.float64)
        self.u = self.terms.shard(0)
        self.dim = self.terms.dim
        hashing = self.terms.manifest.get("hashing")
        if hashing:  # gensim HashDictionary's restricted_hash, without gensim
            id_range = hashing["id_range"]
            self.lookup = lambda t: zlib.adler32(t.encode("utf-8")) % id_range
        elif vocab_in_ram:
            self.lookup = {k: i for i, k in enumerate(self.terms.keys())}.get
        else:
            self.lookup = self.terms.find

    def embed(self, docs: Sequence[Sequence[str]], normalize: bool = True) -> np.ndarray:
        if len(docs) == 1:  # a reader's query: the same sums without building a sparse matrix
            return self._embed_one(docs[0], normalize)[None]
        m = tfidf_matrix(docs, self.lookup, self.idf)
        cols = np.unique(m.indices)  # only the term vectors these documents use are read
        vecs = np.asarray(m[:, cols] @ np.asarray(self.u[cols]), dtype=np.float32)
        if normalize:
            norms = np.linalg.norm(vecs, axis=1, keepdims=True)
            norms[norms == 0] = 1.0
            vecs /= norms
        return vecs

    def _embed_one(self, tokens: Sequence[str], normalize: bool) -> np.ndarray:
        """`embed` of one token list: its TF-IDF weights (L2-normalized) times its terms' rows of U
        (scipy's sparse machinery costs ~0.5 ms a call, most of a query's time)."""
        found = [i for i in map(self.lookup, tokens) if i is not None]
        terms, counts = np.unique(np.asarray(found, dtype=np.int64), return_counts=True)
        weights = counts * self.idf[terms]
        keep = weights != 0
        terms, weights = terms[keep], weights[keep]
        norm = np.sqrt(weights @ weights)
        vec = np.asarray((weights / (norm or 1.0)) @ np.asarray(self.u[terms]), dtype=np.float32)
        if normalize:
            vec /= np.linalg.norm(vec) or 1.0
        return vec
