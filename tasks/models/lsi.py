"""TF-IDF + LSI: trained chunk by chunk from the token caches, and applied with matrix ops.

Training builds one sparse TF-IDF matrix per chunk and merges its stochastic-SVD projection
into the model (gensim's one-pass algorithm), so RAM is bounded by the chunk size. For
readers, the model is also exported in plain files: `terms/` (a vector space whose keys are
the terms and whose rows are the LSI term vectors U) and `idf.npy`, which `shardvec.tasks.search.embed.Embedder`
reads to map token lists to statement vectors without gensim.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from shardvec.errors import NothingToTrainError
from shardvec.tasks.storage.atomic import save_npy
from shardvec.tasks.search.embed import tfidf_matrix
from shardvec.tasks.storage.spaces import SpaceWriter
from shardvec.tasks.inputs.tokenize import TokenStream
from shardvec.tasks.models.vocab import load_dictionary, term_lookup

# gensim is imported where it is used: the flow process imports this module to wire its
# tasks and never trains, and gensim (with scipy.stats) is ~0.9 s of every run's start
if TYPE_CHECKING:
    from gensim.corpora import Dictionary
    from gensim.models.lsimodel import Projection

# float32 halves the memory and time of the SVD's dense products against gensim's float64,
# at no loss that the evaluation sets can measure (benchmarks/quality.py).
DTYPE = np.float32


def idf_vector(dct: Dictionary) -> np.ndarray:
    """gensim's default idf (log2(N/df)) as an array indexed by term id."""
    from gensim.models.tfidfmodel import df2idf

    out = np.zeros(len(dct), dtype=np.float64)
    if dct.dfs:
        ids = np.fromiter(dct.dfs.keys(), dtype=np.int64, count=len(dct.dfs))
        out[ids] = df2idf(np.fromiter(dct.dfs.values(), dtype=np.float64, count=len(dct.dfs)), dct.num_docs)
    return out


def train_lsi(
    caches: list[str],
    dictionary_path: Path,
    out_dir: Path,
    *,
    num_topics: int,
    chunksize: int,
    power_iters: int,
    extra_samples: int,
    seed: int,
    previous: Path | None = None,
) -> dict:
    """Train (or, given `previous`, update) the LSI model on the caches in one process."""
    part = lsi_part(
        caches,
        dictionary_path,
        Path(out_dir) / "lsi-part-0",
        docs=(0, None),
        num_topics=num_topics,
        chunksize=chunksize,
        power_iters=power_iters,
        extra_samples=extra_samples,
        seed=seed,
    )
    return merge_lsi(
        [part],
        dictionary_path,
        out_dir,
        num_topics=num_topics,
        chunksize=chunksize,
        power_iters=power_iters,
        extra_samples=extra_samples,
        seed=seed,
        previous=previous,
    )


def part_ranges(records: int, workers: int, chunksize: int) -> list[tuple[int, int]]:
    """The document ranges the LSI parts decompose: one part a worker, but no part smaller than
    a chunk (and at least one part)."""
    n = max(1, min(workers, -(-records // chunksize)))
    bounds = [round(records * i / n) for i in range(n + 1)]
    return list(zip(bounds, bounds[1:]))


def lsi_part(
    caches: list[str],
    dictionary_path: Path,
    out_prefix: Path,
    *,
    docs: tuple[int, int | None],
    num_topics: int,
    chunksize: int,
    power_iters: int,
    extra_samples: int,
    seed: int,
) -> dict:
    """The stochastic-SVD projection of documents docs[0]..docs[1]-1 of the caches, chunk by
    chunk merged into one; saved as <out_prefix>.u.npy / .s.npy. Parts run on different
    workers and `merge_lsi` merges them, as gensim's distributed LSI does."""
    from gensim.models.lsimodel import Projection

    dct = load_dictionary(dictionary_path)
    idf = idf_vector(dct)
    projection = Projection(len(dct), num_topics, dtype=DTYPE)
    lo, hi = docs
    if hi is not None:  # equal chunks: 2 x 31.5k costs less than 1 x 63k + 1 x 100 would
        chunksize = -(-(hi - lo) // max(1, -(-(hi - lo) // chunksize)))
    lookup = term_lookup(dct)
    seen = done = 0
    # Documents wait for a full chunk as TF-IDF rows (about 16 bytes a term), not as token
    # lists (about 60 bytes a token as Python strings): rows are normalized one by one, so
    # batches stacked give the chunk's matrix exactly.
    pending: list[sp.csr_matrix] = []
    waiting = 0
    for batch in TokenStream(caches).batches():
        first, seen = seen, seen + len(batch)
        if seen <= lo:
            continue
        if hi is not None and first >= hi:
            break
        batch = batch[max(0, lo - first) : None if hi is None else hi - first]
        pending.append(tfidf_matrix(batch, lookup, idf).astype(DTYPE))
        waiting += len(batch)
        while waiting >= chunksize:
            rows = sp.vstack(pending, format="csr")
            done += _merge_chunk(projection, rows[:chunksize], num_topics, extra_samples, power_iters, seed)
            pending, waiting = [rows[chunksize:]], waiting - chunksize
    if waiting:
        done += _merge_chunk(projection, sp.vstack(pending, format="csr"), num_topics, extra_samples, power_iters, seed)
    out = {"documents": done, "u": None, "s": None}
    if projection.u is not None:
        out["u"] = str(save_npy(Path(f"{out_prefix}.u.npy"), projection.u))
        out["s"] = str(save_npy(Path(f"{out_prefix}.s.npy"), projection.s))
    return out


def merge_lsi(
    parts: list[dict],
    dictionary_path: Path,
    out_dir: Path,
    *,
    num_topics: int,
    chunksize: int,
    power_iters: int,
    extra_samples: int,
    seed: int,
    previous: Path | None = None,
) -> dict:
    """Merge the parts' projections into the model (new, or `previous`); save it and its exports."""
    from gensim.corpora import HashDictionary
    from gensim.models import LsiModel
    from gensim.models.lsimodel import Projection

    dct = load_dictionary(dictionary_path)
    if previous:
        model = LsiModel.load(str(previous))
    else:
        model = LsiModel(
            num_topics=num_topics,
            id2word=dct,
            chunksize=chunksize,
            power_iters=power_iters,
            extra_samples=extra_samples,
            random_seed=seed,
            dtype=DTYPE,
        )
    docs = 0
    for part in parts:
        if part["u"] is None:
            continue
        projection = Projection(model.num_terms, model.num_topics, dtype=model.dtype)
        projection.u, projection.s = np.load(part["u"]), np.load(part["s"])
        model.projection.merge(projection, decay=1.0)
        model.docs_processed += part["documents"]
        docs += part["documents"]
        for key in ("u", "s"):
            Path(part[key]).unlink()
    if model.projection.u is None:
        raise NothingToTrainError("LSI saw no documents; add records to the corpus.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(str(out_dir / "lsi.gensim"))
    save_npy(out_dir / "idf.npy", idf_vector(dct).astype(np.float32))
    u = model.projection.u.astype(np.float32)
    terms = SpaceWriter(out_dir / "terms", u.shape[1], rows_per_shard=max(1, len(dct)), extra_columns=["df"])
    hashed = isinstance(dct, HashDictionary)
    keys = [f"#{i}" if hashed else dct[i] for i in range(len(dct))]  # a bucket has no one term
    terms.append(keys, u, df=[dct.dfs.get(i, 0) for i in range(len(dct))])
    terms.close(
        normalized=False,
        meta={
            "what": "LSI term vectors (U)",
            **({"hashing": {"id_range": dct.id_range, "hash": "adler32"}} if hashed else {}),
        },
    )
    s = model.projection.s
    return {
        "lsi": str(out_dir / "lsi.gensim"),
        "topics": int(u.shape[1]),
        "terms": len(dct),
        "documents": docs,
        "total_documents": int(model.docs_processed),
        "energy_top10": float((s[:10] ** 2).sum() / (s**2).sum()),
    }


def _merge_chunk(
    projection: Projection, rows: sp.csr_matrix, num_topics: int, extra_samples: int, power_iters: int, seed: int
) -> int:
    """Fold one chunk of TF-IDF rows (docs x terms) into the projection."""
    from gensim.models.lsimodel import Projection

    job = rows.T.tocsc()
    update = Projection(
        projection.m, num_topics, job, extra_dims=extra_samples, power_iters=power_iters, dtype=DTYPE, random_seed=seed
    )
    projection.merge(update, decay=1.0)
    return job.shape[1]
