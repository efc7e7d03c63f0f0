"""word2vec trained (or updated) from the streamed token caches, and its vectors written out."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
from gensim.models import Word2Vec

from tasks.store import SpaceWriter
from tasks.tokenize import TokenStream


def stable_hash(text: str) -> int:
    """Seeds word2vec's initial vectors. Python's own hash() differs per process, which made
    runs on different Dask workers give different vectors from the same seed."""
    return zlib.crc32(text.encode("utf-8"))


def train_word2vec(caches: list[str], out_path: Path, *, vector_size: int, window: int, min_count: int,
                   max_final_vocab: int, epochs: int, sg: int, workers: int, seed: int,
                   previous: Path | None = None) -> dict:
    """Train on the caches, or given `previous`, grow its vocabulary and continue training."""
    sentences = TokenStream(caches)
    if previous:
        model = Word2Vec.load(str(previous))
        before = len(model.wv)
        if caches:  # nothing new to learn from: the published model carries over as it is
            model.build_vocab(sentences, update=True)
            model.train(sentences, total_examples=model.corpus_count, epochs=model.epochs)
    else:
        before = 0
        model = Word2Vec(vector_size=vector_size, window=window, min_count=min_count,
                         max_final_vocab=max_final_vocab, epochs=epochs, sg=sg, workers=workers, seed=seed,
                         hashfxn=stable_hash)
        model.build_vocab(sentences)
        if len(model.wv) == 0:
            raise ValueError(f"No word occurs word2vec.min_count={min_count} times; lower it or add documents.")
        model.train(sentences, total_examples=model.corpus_count, epochs=model.epochs)
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    model.save(str(out_path))
    return {"word2vec": str(out_path), "words": len(model.wv), "new_words": len(model.wv) - before,
            "sentences": model.corpus_count, "words_trained": int(model.corpus_total_words)}


def write_word_space(model_path: Path, space_dir: Path, *, rows_per_shard: int, batch: int = 65536) -> dict:
    """The word vectors as a sharded space, keys in the model's order, with their counts."""
    wv = Word2Vec.load(str(model_path), mmap="r").wv
    writer = SpaceWriter(space_dir, wv.vector_size, rows_per_shard, extra_columns=["count"])
    for start in range(0, len(wv), batch):
        keys = wv.index_to_key[start:start + batch]
        counts = [int(wv.get_vecattr(k, "count")) for k in keys]
        writer.append(keys, np.asarray(wv.vectors[start:start + batch]), count=counts)
    manifest = writer.close(normalized=False, meta={"what": "word2vec word vectors"})
    return {"space": str(space_dir), "rows": manifest["rows"], "dim": manifest["dim"],
            "shards": len(manifest["shards"])}
