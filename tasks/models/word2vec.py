"""word2vec trained (or updated) from the streamed token caches, and its vectors written out."""

from __future__ import annotations

import os
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from shardvec.errors import NothingToTrainError
from shardvec.tasks.storage.spaces import SpaceWriter
from shardvec.tasks.inputs.tokenize import TokenStream
from shardvec.tasks.models.vocab import PRUNE_AT

# gensim is imported where it is used: the flow process imports this module to wire its
# tasks and never trains, and gensim (with scipy.stats) is ~0.9 s of every run's start
if TYPE_CHECKING:
    from gensim.corpora import Dictionary


def stable_hash(text: str) -> int:
    """Seeds word2vec's initial vectors. Python's own hash() differs per process, which made
    runs on different Dask workers give different vectors from the same seed."""
    return zlib.crc32(text.encode("utf-8"))


def counts_path(model_path: Path) -> Path:
    return Path(str(model_path) + ".counts")


def _count(caches: list[str], into: Dictionary | None = None) -> Dictionary:
    """Word counts over the caches (capped like the LSI vocabulary, so RAM stays bounded)."""
    from gensim.corpora import Dictionary

    counts = into or Dictionary(prune_at=PRUNE_AT)
    for batch in TokenStream(caches).batches():
        counts.add_documents(batch, prune_at=PRUNE_AT)
    return counts


def train_word2vec(
    caches: list[str],
    out_path: Path,
    *,
    vector_size: int,
    window: int,
    min_count: int,
    max_final_vocab: int,
    epochs: int,
    sg: int,
    workers: int,
    seed: int,
    previous: Path | None = None,
) -> dict:
    """Train on the caches, or given `previous`, grow its vocabulary and continue training.

    Word counts are kept across nights, so a word reaching min_count over several nights gets
    a vector (gensim's build_vocab(update=True) alone counts only the newest night's text).
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # updates train on the iterable: on corpus_file 3 nights scored WordSim-353 0.35, here 0.39
    with nullcontext() if previous else _corpus_file(caches, out_path.parent) as corpus_file:
        return _train(
            caches,
            corpus_file,
            out_path,
            vector_size=vector_size,
            window=window,
            min_count=min_count,
            max_final_vocab=max_final_vocab,
            epochs=epochs,
            sg=sg,
            workers=workers,
            seed=seed,
            previous=previous,
        )


@contextmanager
def _corpus_file(caches: list[str], folder: Path) -> Iterator[str]:
    """The caches as one space-separated line per document, for gensim's `corpus_file` path:
    its worker threads read the file in C, with no Python (and no GIL) between them and the
    data, which trains about 2x faster on 2 cores than an iterable of token lists."""
    fd, path = tempfile.mkstemp(prefix=".corpus-", suffix=".txt", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for batch in TokenStream(caches).batches():
                f.write("".join(" ".join(doc) + "\n" for doc in batch))
        yield path
    finally:
        os.unlink(path)


def _train(
    caches,
    corpus_file,
    out_path,
    *,
    vector_size,
    window,
    min_count,
    max_final_vocab,
    epochs,
    sg,
    workers,
    seed,
    previous,
) -> dict:
    from gensim.corpora import Dictionary
    from gensim.models import Word2Vec

    if previous:
        model = Word2Vec.load(str(previous))
        before = len(model.wv)
        counts = Dictionary.load(str(counts_path(previous)))
        if caches:  # nothing new to learn from: the published model carries over as it is
            new = _count(caches)
            _count(caches, into=counts)
            freqs = {}
            for term_id, n in new.cfs.items():
                word = new[term_id]
                # words already in: this night's count is added; new words: their count so far
                freqs[word] = n if word in model.wv.key_to_index else counts.cfs.get(counts.token2id.get(word), n)
            model.build_vocab_from_freq(freqs, update=True, corpus_count=new.num_docs)
            model.train(TokenStream(caches), total_examples=new.num_docs, epochs=model.epochs)
    else:
        before = 0
        counts = _count(caches)
        model = Word2Vec(
            vector_size=vector_size,
            window=window,
            min_count=min_count,
            max_final_vocab=max_final_vocab,
            epochs=epochs,
            sg=sg,
            workers=workers,
            seed=seed,
            hashfxn=stable_hash,
        )
        model.build_vocab_from_freq({counts[i]: n for i, n in counts.cfs.items()}, corpus_count=counts.num_docs)
        if len(model.wv) == 0:
            raise NothingToTrainError(
                f"No word occurs word2vec.min_count={min_count} times; lower it or add documents."
            )
        model.train(corpus_file=corpus_file, total_words=int(sum(counts.cfs.values())), epochs=model.epochs)
    model.save(str(out_path))
    counts.save(str(counts_path(out_path)))
    return {
        "word2vec": str(out_path),
        "words": len(model.wv),
        "new_words": len(model.wv) - before,
        "sentences": model.corpus_count,
        "words_counted": int(sum(counts.cfs.values())),
    }


def write_word_space(model_path: Path, space_dir: Path, *, rows_per_shard: int, batch: int = 65536) -> dict:
    """The word vectors as a sharded space, keys in the model's order, with their counts."""
    from gensim.models import Word2Vec

    wv = Word2Vec.load(str(model_path), mmap="r").wv
    writer = SpaceWriter(space_dir, wv.vector_size, rows_per_shard, extra_columns=["count"])
    for start in range(0, len(wv), batch):
        keys = wv.index_to_key[start : start + batch]
        counts = [int(wv.get_vecattr(k, "count")) for k in keys]
        writer.append(keys, np.asarray(wv.vectors[start : start + batch]), count=counts)
    manifest = writer.close(normalized=False, meta={"what": "word2vec word vectors"})
    return {
        "space": str(space_dir),
        "rows": manifest["rows"],
        "dim": manifest["dim"],
        "shards": len(manifest["shards"]),
    }
