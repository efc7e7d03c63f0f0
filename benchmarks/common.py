"""Helpers shared by the benchmarks: a real-text statement corpus, a built store, result files."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
WORK = HERE / "work"
RESULTS = HERE / "results"


def sentences() -> Iterator[str]:
    """Sentences of gensim's English Wikipedia sample (real text, shipped with gensim)."""
    from shardvec.sample import wiki_paragraphs

    for _id, para in wiki_paragraphs():
        for s in para.split(". "):
            if len(s.split()) >= 5:
                yield s.strip()


def statements(n: int) -> Iterator[tuple[str, str]]:
    """n distinct statements: the sample's sentences, then runs of 2, 3, ... consecutive ones."""
    base = list(sentences())
    made, width = 0, 1
    while made < n:
        for i in range(0, len(base) - width + 1):
            yield f"s{width}/{i}", " ".join(base[i : i + width])
            made += 1
            if made == n:
                return
        width += 1


def blas_gflops(d: int = 200, n: int = 100_000, b: int = 1000, repeat: int = 3) -> float:
    """Measured float32 matrix-product rate of this machine, at the shape adds use."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((b, d), dtype=np.float32)
    m = rng.standard_normal((n, d), dtype=np.float32)
    a @ m.T
    best = min(_timed(lambda: a @ m.T) for _ in range(repeat))
    return 2 * b * n * d / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def machine() -> dict:
    import psutil

    return {
        "cpus": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
    }


def save(name: str, figures: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **figures}, indent=1))
    return path
