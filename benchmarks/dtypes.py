"""Benchmark: storage dtypes of a space (float32, float16, int8) - bytes, recall@10, latency.

For the word vectors and the statement vectors of a published store, and for imported
fastText vectors (gensim's lee_fasttext_new.bin): each space is converted to every
dtype; printed are the bytes of its vectors, recall@10 of exact search over the converted space
against float32 (1,000 sampled rows as queries, themselves excluded), and the p50 of a single
key -> vector read.

    .venv/bin/python -m benchmarks.dtypes [DATA_DIR]   # default: the scale benchmark's full store
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import WORK, save
from shardvec.tasks.search.topk import exact_topk, recall_at_k
from shardvec.tasks.storage.spaces import DTYPES, Space, convert_space


def _latency(ns: list[int]) -> dict:
    us = np.asarray(ns) / 1000
    return {
        "vector_p50_us": round(float(np.percentile(us, 50)), 2),
        "vector_p99_us": round(float(np.percentile(us, 99)), 2),
        "vector_max_us": round(float(us.max()), 1),
    }


def oov(vectors_dir: Path, model: str) -> dict:
    """Words the fastText model never saw (from the Lee corpus): our vectors vs gensim's."""
    from gensim.models.fasttext import load_facebook_vectors
    from gensim.test.utils import datapath
    from shardvec.tasks.models.vectors_io import Vectors

    ref, ours = load_facebook_vectors(datapath(model)), Vectors(vectors_dir)
    words = sorted(
        {
            w
            for line in open(datapath("lee.cor"), encoding="utf-8", errors="replace")
            for w in line.lower().split()
            if w not in ref.key_to_index
        }
    )[:2000]
    times, diff = [], 0.0
    for w in words:
        t = time.perf_counter_ns()
        v = ours.vector(w)
        times.append(time.perf_counter_ns() - t)
        diff = max(diff, float(np.abs(v - ref[w]).max()))
    return {
        "oov_words": len(words),
        "max_abs_diff_vs_gensim": diff,
        **{f"oov_{k}": v for k, v in _latency(times).items()},
    }


def measure(space_dir: Path, sample: int = 1000) -> dict:
    base = Space(space_dir)
    picks = np.sort(np.random.default_rng(0).choice(len(base), size=min(sample, len(base)), replace=False))
    truth, truth_s = exact_topk(base, base.vectors_at(picks), 10, exclude=picks)
    keys = [base.key(int(r)) for r in picks]
    out = {}
    with tempfile.TemporaryDirectory(dir=WORK) as tmp:
        for dtype in DTYPES:
            path = space_dir if dtype == base.dtype else Path(tmp) / dtype
            if path != space_dir:
                convert_space(space_dir, path, dtype)
            space = Space(path)
            found, found_s = exact_topk(space, space.vectors_at(picks), 10, exclude=picks)
            for k in keys:  # warm
                space.vector(k)
            times = []
            for k in keys:
                t = time.perf_counter_ns()
                space.vector(k)
                times.append(time.perf_counter_ns() - t)
            size = sum(
                (space.dir / f).stat().st_size
                for s in space.manifest["shards"]  # vectors (+ int8 norms)
                for f in s["sha256"]
                if not f.startswith("keys-")
            )
            out[dtype] = {
                "vector_bytes": size,
                "mb": round(size / 2**20, 1),
                "recall_at_10_vs_float32": round(recall_at_k(found, truth, found_s, truth_s), 4),
                **_latency(times),
            }
    f32 = out["float32"]["vector_bytes"]
    for row in out.values():
        row["bytes_vs_float32"] = round(row["vector_bytes"] / f32, 3)
    return {"rows": len(base), "dim": base.dim, "dtypes": out}


def main() -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    data = Path(sys.argv[1]) if len(sys.argv) > 1 else WORK / "scale" / "data-4"
    current = json.loads((data / "CURRENT").read_text())
    figures = {"store": str(data)}
    for name in ("words", "statements"):
        figures[name] = measure(data / current["components"][name])
        print(name, json.dumps(figures[name]), flush=True)
    from gensim.test.utils import datapath
    from shardvec.tasks.models.vectors_io import import_vectors

    tmp = Path(tempfile.mkdtemp(dir=WORK))
    try:
        import_vectors(datapath("lee_fasttext_new.bin"), tmp, "ft")
        figures["fasttext_imported"] = {
            **measure(tmp / "vectors" / "ft"),
            **oov(tmp / "vectors" / "ft", "lee_fasttext_new.bin"),
        }
        print("fasttext_imported", json.dumps(figures["fasttext_imported"]), flush=True)
    finally:
        shutil.rmtree(tmp)
    print(f"written to {save('dtypes', figures)}")


if __name__ == "__main__":
    main()
