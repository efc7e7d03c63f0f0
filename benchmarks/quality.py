"""Benchmark: are the pipeline's models as good as gensim trained directly on the same corpus?

On the bundled sample (8,683 statements, 499k tokens) with the default configuration:
  - direct: gensim Word2Vec and Dictionary/TF-IDF/LsiModel on the whole tokenized corpus at once;
  - pipeline, one night: shardvec's nightly flow on all three partitions;
  - pipeline, three nights: one partition a night, models updated (LSI add_documents,
    word2vec build_vocab(update=True) + train).
Prints analogy accuracy, WordSim-353 and SimLex-999 Spearman for each, and the differences.
Targets: analogy within 2 points, WordSim-353 within 0.03 of direct gensim.
Run: .venv/bin/python benchmarks/quality.py
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import WORK, save  # noqa: E402
from shardvec.config import load_settings  # noqa: E402
from shardvec.sample import PARTITIONS, build_sample  # noqa: E402
from shardvec.tasks.quality.evaluation import evaluate_models  # noqa: E402
from shardvec.tasks.inputs.tokenize import TokenStream  # noqa: E402


def pipeline(data: Path, nights: list[list[str]]) -> dict:
    from shardvec.flows.nightly import nightly
    from shardvec.flows.runtime import local_prefect, task_runner

    shutil.rmtree(data, ignore_errors=True)
    build_sample(data / "staging")
    s = load_settings(data_dir=str(data))
    (data / "corpus").mkdir()
    t = time.perf_counter()
    with local_prefect():
        for parts in nights:
            for p in parts:
                shutil.move(data / "staging" / p, data / "corpus" / p)
            report = nightly.with_options(task_runner=task_runner(s))(overrides={"data_dir": str(data)})
    return {"seconds": round(time.perf_counter() - t, 1), **_metrics(report["quality"])}


def direct(caches: list[str], out: Path) -> dict:
    """What a user would write with gensim alone, with the same parameters."""
    from gensim.corpora import Dictionary
    from gensim.models import LsiModel, TfidfModel, Word2Vec

    w = load_settings().word2vec
    lsi_s, v = load_settings().lsi, load_settings().vocab
    stream = TokenStream(caches)
    t = time.perf_counter()
    model = Word2Vec(
        stream,
        vector_size=w.vector_size,
        window=w.window,
        min_count=w.min_count,
        max_final_vocab=w.max_final_vocab,
        epochs=w.epochs,
        sg=w.sg,
        workers=w.workers,
        seed=w.seed,
    )
    dct = Dictionary(stream)
    dct.filter_extremes(no_below=v.no_below, no_above=v.no_above, keep_n=v.max_terms)
    tfidf = TfidfModel(dictionary=dct)
    lsi = LsiModel(
        (tfidf[dct.doc2bow(d)] for d in stream),
        id2word=dct,
        num_topics=lsi_s.num_topics,
        chunksize=lsi_s.chunksize,
        power_iters=lsi_s.power_iters,
        extra_samples=lsi_s.extra_samples,
    )
    seconds = time.perf_counter() - t
    out.mkdir(parents=True, exist_ok=True)
    model.save(str(out / "w2v")), lsi.save(str(out / "lsi"))
    return {"seconds": round(seconds, 1), **_metrics(evaluate_models(out / "w2v", out / "lsi"))}


def _metrics(q: dict) -> dict:
    keys = ("analogy_accuracy", "analogy_coverage", "wordsim353_spearman", "simlex999_spearman", "lsi_energy_top10")
    return {k: q[k] for k in keys}


def main() -> None:
    one = pipeline(WORK / "quality-1", [list(PARTITIONS)])
    three = pipeline(WORK / "quality-3", [[p] for p in PARTITIONS])
    caches = sorted(str(p) for p in (WORK / "quality-1" / "cache" / "tokens").rglob("*.arrow"))
    gensim_direct = direct(caches, WORK / "quality-direct")
    figures = {
        "corpus": "bundled sample: 8,683 statements, 499k tokens",
        "config": "config/default.toml",
        "direct_gensim": gensim_direct,
        "pipeline_one_night": one,
        "pipeline_three_nights": three,
    }
    for name in ("pipeline_one_night", "pipeline_three_nights"):
        p = figures[name]
        figures[f"{name}_vs_direct"] = {
            "analogy_points": round(100 * (p["analogy_accuracy"] - gensim_direct["analogy_accuracy"]), 2),
            "wordsim353": round(p["wordsim353_spearman"] - gensim_direct["wordsim353_spearman"], 4),
            "simlex999": round(p["simlex999_spearman"] - gensim_direct["simlex999_spearman"], 4),
        }
    path = save("quality", figures)
    print(json.dumps(figures, indent=1))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
