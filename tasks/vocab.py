"""The LSI vocabulary: a gensim Dictionary streamed from the token caches, capped in size."""

from __future__ import annotations

from pathlib import Path

from gensim.corpora import Dictionary

from tasks.tokenize import TokenStream

# gensim prunes the rarest terms past this many while counting, which bounds RAM on any corpus.
PRUNE_AT = 2_000_000


def build_dictionary(caches: list[str], out_path: Path, *, max_terms: int, no_below: int,
                     no_above: float) -> dict:
    """Count terms over the caches batch by batch, keep the `max_terms` most useful, save."""
    dct = Dictionary(prune_at=PRUNE_AT)
    for batch in TokenStream(caches).batches():
        dct.add_documents(batch, prune_at=PRUNE_AT)
    seen = len(dct)
    dct.filter_extremes(no_below=no_below, no_above=no_above, keep_n=max_terms)
    if len(dct) == 0:
        raise ValueError(f"No term is left after filtering ({seen} seen, vocab.no_below={no_below}, "
                         f"vocab.no_above={no_above}); lower vocab.no_below or add documents.")
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    dct.save(str(out_path))
    return {"dictionary": str(out_path), "terms": len(dct), "terms_seen": seen, "documents": dct.num_docs}
