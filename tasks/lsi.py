"""TF-IDF + LSI: trained chunk by chunk from the token caches, and applied with matrix ops.

Training builds one sparse TF-IDF matrix per chunk and merges its stochastic-SVD projection
into the model (gensim's one-pass algorithm), so RAM is bounded by the chunk size. For
readers, the model is also exported in plain files: `terms/` (a vector space whose keys are
the terms and whose rows are the LSI term vectors U) and `idf.npy`. `Embedder` maps token
lists to statement vectors with one sparse-dense product per batch; it equals gensim's
`lsi[tfidf[bow]]`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from gensim.corpora import Dictionary
from gensim.models import LsiModel, TfidfModel
from gensim.models.lsimodel import Projection

from tasks.atomic import save_npy
from tasks.store import Space, SpaceWriter
from tasks.tokenize import TokenStream


def idf_vector(dct: Dictionary) -> np.ndarray:
    """gensim's default idf (log2(N/df)) as an array indexed by term id."""
    idfs = TfidfModel(dictionary=dct).idfs
    out = np.zeros(len(dct), dtype=np.float64)
    for term_id, value in idfs.items():
        out[term_id] = value
    return out


def tfidf_matrix(docs: Sequence[Sequence[str]], lookup: Callable[[str], int | None],
                 idf: np.ndarray) -> sp.csr_matrix:
    """L2-normalized TF-IDF rows (docs x terms) for token lists; unknown tokens are skipped."""
    indptr, indices = [0], []
    for tokens in docs:
        for t in tokens:
            i = lookup(t)
            if i is not None:
                indices.append(i)
        indptr.append(len(indices))
    m = sp.csr_matrix((np.ones(len(indices)), np.asarray(indices, dtype=np.int64), np.asarray(indptr)),
                      shape=(len(docs), len(idf)))
    m.sum_duplicates()  # repeated terms -> counts
    m.data *= idf[m.indices]
    m.eliminate_zeros()
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return sp.csr_matrix(sp.diags(1.0 / norms) @ m)


def train_lsi(caches: list[str], dictionary_path: Path, out_dir: Path, *, num_topics: int, chunksize: int,
              power_iters: int, extra_samples: int, seed: int, previous: Path | None = None) -> dict:
    """Train (or, given `previous`, update) the LSI model on the caches; save it and its exports."""
    dct = Dictionary.load(str(dictionary_path))
    idf = idf_vector(dct)
    if previous:
        model = LsiModel.load(str(previous))
    else:
        model = LsiModel(num_topics=num_topics, id2word=dct, chunksize=chunksize, power_iters=power_iters,
                         extra_samples=extra_samples, random_seed=seed)
    docs = 0
    pending: list[list[str]] = []
    for batch in TokenStream(caches).batches():
        pending.extend(batch)
        while len(pending) >= chunksize:
            docs += _merge_chunk(model, pending[:chunksize], dct, idf, seed)
            pending = pending[chunksize:]
    if pending:
        docs += _merge_chunk(model, pending, dct, idf, seed)
    if model.projection.u is None:
        raise ValueError("LSI saw no documents; add records to the corpus.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(str(out_dir / "lsi.gensim"))
    save_npy(out_dir / "idf.npy", idf.astype(np.float32))
    u = model.projection.u.astype(np.float32)
    terms = SpaceWriter(out_dir / "terms", u.shape[1], rows_per_shard=max(1, len(dct)), extra_columns=["df"])
    keys = [dct[i] for i in range(len(dct))]
    terms.append(keys, u, df=[dct.dfs.get(i, 0) for i in range(len(dct))])
    terms.close(normalized=False, meta={"what": "LSI term vectors (U)"})
    s = model.projection.s
    return {"lsi": str(out_dir / "lsi.gensim"), "topics": int(u.shape[1]), "terms": len(dct),
            "documents": docs, "total_documents": int(model.docs_processed),
            "energy_top10": float((s[:10] ** 2).sum() / (s ** 2).sum())}


def _merge_chunk(model: LsiModel, docs: list[list[str]], dct: Dictionary, idf: np.ndarray, seed: int) -> int:
    job = tfidf_matrix(docs, dct.token2id.get, idf).T.tocsc()
    update = Projection(model.num_terms, model.num_topics, job, extra_dims=model.extra_samples,
                        power_iters=model.power_iters, dtype=model.dtype, random_seed=seed)
    model.projection.merge(update, decay=1.0)
    model.docs_processed += job.shape[1]
    return job.shape[1]


class Embedder:
    """Token lists -> LSI statement vectors, from the plain exports (no unpickling)."""

    def __init__(self, models_dir: Path, vocab_in_ram: bool = False):
        """`vocab_in_ram` builds a term dict (fast for bulk projection); else terms are looked up on disk."""
        self.terms = Space(Path(models_dir) / "terms")
        self.idf = np.load(Path(models_dir) / "idf.npy", mmap_mode="r").astype(np.float64)
        self.u = self.terms.shard(0)
        self.dim = self.terms.dim
        if vocab_in_ram:
            self.lookup = {k: i for i, k in enumerate(self.terms.keys())}.get
        else:
            self.lookup = self.terms.find

    def embed(self, docs: Sequence[Sequence[str]], normalize: bool = True) -> np.ndarray:
        m = tfidf_matrix(docs, self.lookup, self.idf)
        cols = np.unique(m.indices)  # only the term vectors these documents use are read
        vecs = np.asarray(m[:, cols] @ np.asarray(self.u[cols]), dtype=np.float32)
        if normalize:
            norms = np.linalg.norm(vecs, axis=1, keepdims=True)
            norms[norms == 0] = 1.0
            vecs /= norms
        return vecs
