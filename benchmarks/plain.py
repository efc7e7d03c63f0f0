"""The plain alternative shardvec is measured against: one script, the way a user writes it
from gensim's tutorials and "NLP in Action" ch. 13, with the same models and settings.

A re-iterable corpus that re-reads and re-tokenizes the JSONL on every pass (simple_preprocess);
Dictionary + filter_extremes; TfidfModel; LsiModel over tfidf[bow]; Word2Vec over the same
iterable; each statement embedded one at a time (lsi[tfidf[bow]]) into an Annoy index built
with n_trees = ln(N); the top-k similar statements of each from that index; a word Annoy index.
Vectors are saved as .npy so the benchmark can score the rows against exact search.

    python -m benchmarks.plain OUT_DIR SETTINGS_JSON FILE.jsonl ...
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from annoy import AnnoyIndex
from gensim import matutils
from gensim.corpora import Dictionary
from gensim.models import LsiModel, TfidfModel, Word2Vec
from gensim.utils import simple_preprocess


class Statements:
    def __init__(self, files):
        self.files = files

    def __iter__(self):
        for path in self.files:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    yield simple_preprocess(json.loads(line)["text"])


class Bow:
    def __init__(self, docs, dictionary):
        self.docs, self.dictionary = docs, dictionary

    def __iter__(self):
        for tokens in self.docs:
            yield self.dictionary.doc2bow(tokens)


def main(out: Path, s: dict, files: list[str]) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    timings = {}
    t = time.perf_counter()
    docs = Statements(files)
    ids = [json.loads(line)["id"] for path in files for line in open(path, encoding="utf-8")]
    dictionary = Dictionary(docs)
    dictionary.filter_extremes(
        no_below=s["vocab"]["no_below"], no_above=s["vocab"]["no_above"], keep_n=s["vocab"]["max_terms"]
    )
    bow = Bow(docs, dictionary)
    tfidf = TfidfModel(bow)
    timings["dictionary+tfidf"] = time.perf_counter() - t
    t = time.perf_counter()
    l = s["lsi"]
    lsi = LsiModel(
        tfidf[bow],
        id2word=dictionary,
        num_topics=l["num_topics"],
        chunksize=l["chunksize"],
        power_iters=l["power_iters"],
        extra_samples=l["extra_samples"],
        random_seed=1,
    )
    timings["lsi"] = time.perf_counter() - t
    t = time.perf_counter()
    w = s["word2vec"]
    w2v = Word2Vec(
        docs,
        vector_size=w["vector_size"],
        window=w["window"],
        min_count=w["min_count"],
        max_final_vocab=w["max_final_vocab"],
        epochs=w["epochs"],
        sg=w["sg"],
        workers=w["workers"],
        seed=w["seed"],
    )
    timings["word2vec"] = time.perf_counter() - t
    t = time.perf_counter()
    dim = l["num_topics"]
    vectors = np.lib.format.open_memmap(out / "statements.npy", mode="w+", dtype=np.float32, shape=(len(ids), dim))
    index = AnnoyIndex(dim, "angular")
    for i, b in enumerate(bow):
        v = matutils.sparse2full(lsi[tfidf[b]], dim)
        vectors[i] = v / (np.linalg.norm(v) or 1.0)
        index.add_item(i, vectors[i])
    vectors.flush()
    index.build(max(1, int(math.log(len(ids)))))
    index.save(str(out / "statements.ann"))
    timings["embed+index statements"] = time.perf_counter() - t
    t = time.perf_counter()
    k = s["similarity"]["k"]
    rows = np.full((len(ids), k), -1, dtype=np.int64)
    for i in range(len(ids)):
        nns = [j for j in index.get_nns_by_item(i, k + 1) if j != i][:k]
        rows[i, : len(nns)] = nns
    np.save(out / "rows.npy", rows)
    timings["similarity rows"] = time.perf_counter() - t
    t = time.perf_counter()
    words = AnnoyIndex(w["vector_size"], "angular")
    for i, v in enumerate(w2v.wv.vectors):
        words.add_item(i, v)
    words.build(max(1, int(math.log(len(w2v.wv)))))
    words.save(str(out / "words.ann"))
    lsi.save(str(out / "lsi.gensim"))
    w2v.save(str(out / "word2vec.gensim"))
    dictionary.save(str(out / "dictionary.gensim"))
    timings["word index+save"] = time.perf_counter() - t
    return {
        "statements": len(ids),
        "terms": len(dictionary),
        "words": len(w2v.wv),
        "steps": {k: round(v, 2) for k, v in timings.items()},
    }


if __name__ == "__main__":
    result = main(Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text()), sys.argv[3:])
    (Path(sys.argv[1]) / "result.json").write_text(json.dumps(result))
    print(json.dumps(result))
