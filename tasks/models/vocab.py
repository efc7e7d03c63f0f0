"""The LSI vocabulary: a gensim Dictionary streamed from the token caches, capped in size, or
with `hashing`, a HashDictionary whose fixed id range takes new words night after night."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from shardvec.config.settings import SettingsError
from shardvec.tasks.inputs.tokenize import TokenStream

# gensim is imported where it is used: the flow process imports this module to wire its
# tasks and never trains, and gensim (with scipy.stats) is ~0.9 s of every run's start
if TYPE_CHECKING:
    from gensim.corpora import Dictionary, HashDictionary

# gensim prunes the rarest terms past this many while counting, which bounds RAM on any corpus.
PRUNE_AT = 2_000_000


def build_dictionary(
    caches: list[str],
    out_path: Path,
    *,
    max_terms: int,
    no_below: int,
    no_above: float,
    hashing: bool = False,
    hash_buckets: int = 100_000,
    previous: Path | None = None,
) -> dict:
    """Count terms over the caches batch by batch, keep the `max_terms` most useful, save.

    With `hashing`, count document frequencies per bucket instead, continuing `previous`."""
    from gensim.corpora import Dictionary

    if hashing:
        return _hash_dictionary(caches, Path(out_path), hash_buckets, previous)
    dct = Dictionary(prune_at=PRUNE_AT)
    for batch in TokenStream(caches).batches():
        dct.add_documents(batch, prune_at=PRUNE_AT)
    seen = len(dct)
    dct.filter_extremes(no_below=no_below, no_above=no_above, keep_n=max_terms)
    if len(dct) == 0:
        raise SettingsError(
            f"No term is left after filtering ({seen} seen, vocab.no_below={no_below}, "
            f"vocab.no_above={no_above}); lower vocab.no_below or add documents."
        )
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    dct.save(str(out_path))
    return {"dictionary": str(out_path), "terms": len(dct), "terms_seen": seen, "documents": dct.num_docs}


def _hash_dictionary(caches: list[str], out_path: Path, buckets: int, previous: Path | None) -> dict:
    from gensim.corpora import HashDictionary

    dct = HashDictionary.load(str(previous)) if previous else HashDictionary(id_range=buckets, debug=False)
    dfs = dct.dfs
    for batch in TokenStream(caches).batches():
        for doc in batch:
            # gensim counts document frequencies only with debug=True, which also keeps every
            # word seen (RAM growing with the vocabulary); the buckets' counts are all LSI needs
            for bucket, _ in dct.doc2bow(doc, allow_update=True):
                dfs[bucket] = dfs.get(bucket, 0) + 1
    out_path.parent.mkdir(parents=True, exist_ok=True)
    dct.save(str(out_path))
    return {
        "dictionary": str(out_path),
        "terms": len(dct),
        "terms_seen": len(dct.dfs),
        "documents": dct.num_docs,
        "hashing": True,
    }


def copy_dictionary(src: Path, dst: Path) -> dict:
    """A saved dictionary (and the files gensim saved beside it) copied under a new name: an
    update keeps the first build's fixed vocabulary."""
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    for f in src.parent.glob(src.name + "*"):
        shutil.copy2(f, dst.parent / f.name.replace(src.name, dst.name))
    return {"dictionary": str(dst)}


def load_dictionary(path: Path) -> Dictionary | HashDictionary:
    """Either kind (both are gensim pickles with the same loader)."""
    from gensim.corpora import Dictionary

    return Dictionary.load(str(path))


def term_lookup(dct: Dictionary | HashDictionary):
    """token -> term id (None where a fixed vocabulary does not hold it)."""
    from gensim.corpora import HashDictionary

    return dct.restricted_hash if isinstance(dct, HashDictionary) else dct.token2id.get
