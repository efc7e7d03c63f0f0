"""Reads from a published store: latency of key -> vector, a gather of rows, and the memory of
several reader processes sharing one copy (PSS, from /proc/<pid>/smaps).

    .venv/bin/python -m benchmarks.readers DATA_DIR      # a published data directory
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil

MB = 1 << 20


def _pcts(ns: list[int]) -> dict:
    us = np.asarray(ns) / 1000
    return {
        "p50_us": round(float(np.percentile(us, 50)), 2),
        "p99_us": round(float(np.percentile(us, 99)), 2),
        "max_us": round(float(us.max()), 1),
        "n": len(us),
    }


def latency(data: Path, n: int = 20_000, rounds: int = 5) -> dict:
    """store.vector(word) and statements.vector(id) for random keys, warm: the best of
    `rounds` passes (noise on a shared machine only ever adds), with every pass's p50."""
    import shardvec

    store = shardvec.open(data)
    out = {}
    for name, space in (
        ("word", store._words),
        ("statement", store._statements.base),
    ):  # the base space, as measured before
        rng = np.random.default_rng(0)
        keys = [space.key(int(r)) for r in rng.integers(0, len(space), size=n)]
        for k in keys:  # warm: pages and per-shard state loaded
            space.vector(k)
        passes = []
        clock = time.perf_counter_ns
        for _ in range(rounds):
            times = []
            for k in keys:
                t = clock()
                space.vector(k)
                times.append(clock() - t)
            passes.append(_pcts(times))
        out[name] = {**min(passes, key=lambda p: p["p50_us"]), "p50_us_every_pass": [p["p50_us"] for p in passes]}
        # the plain alternative, in the same run: every key in a dict, every vector in RAM
        ram = np.concatenate([np.asarray(space.shard_vectors(s)) for s in range(space.n_shards)])
        index = {space.key(r): r for r in range(len(space))}
        plain = []
        for _ in range(rounds):
            times = []
            for k in keys:
                t = clock()
                ram[index[k]]
                times.append(clock() - t)
            plain.append(_pcts(times))
        out[name]["dict_and_ram_p50_us"] = min(p["p50_us"] for p in plain)
        out[name]["vs_dict_and_ram"] = round(out[name]["p50_us"] / out[name]["dict_and_ram_p50_us"], 2)
    return out


def gather(data: Path, n: int = 10_000, repeat: int = 5) -> dict:
    """Space.rows of n random rows vs numpy fancy indexing of the same array held in RAM."""
    import shardvec

    space = shardvec.open(data)._statements.base  # the space itself: its shards
    ram = np.concatenate([np.asarray(space.shard(s)) for s in range(space.n_shards)])
    rng = np.random.default_rng(1)
    rows = rng.integers(0, len(space), size=n)
    assert np.array_equal(space.vectors_at(rows), ram[rows])
    best = lambda fn: min(_timed(fn) for _ in range(repeat))  # noqa: E731
    store_s, ram_s = best(lambda: space.vectors_at(rows)), best(lambda: ram[rows])
    return {
        "rows": n,
        "store_ms": round(store_s * 1e3, 2),
        "numpy_in_ram_ms": round(ram_s * 1e3, 2),
        "ratio": round(store_s / ram_s, 2),
    }


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


READER = """
import sys, time, numpy as np, shardvec
store = shardvec.open(sys.argv[1])
total = 0.0
for space in (store._words, store._statements.base):  # touch every vector page
    for s in range(space.n_shards):
        total += float(np.asarray(space.shard(s), dtype=np.float64).sum())
    for r in range(0, len(space), 97):
        space.vector(space.key(r))
print("ready", flush=True)
time.sleep(600)
"""


def _pss(pid: int, under: Path) -> tuple[int, int]:
    """(PSS of the whole process, PSS of its mappings of files under `under`)."""
    p = psutil.Process(pid)
    store = sum(m.pss for m in p.memory_maps(grouped=True) if m.path.startswith(str(under)))
    return p.memory_full_info().pss, store


def shared_memory(data: Path, readers: int = 4) -> dict:
    """PSS of 1 reader alone, then of `readers` readers at once, each having read every vector.
    This process must map none of the store: a page's PSS is split among every process mapping
    it, so a store left mapped here (a Store of `latency` or `gather` not yet collected: its views
    and spaces hold each other) would halve one reader's figure and fake a sharing ratio."""
    import gc

    data = Path(data).resolve()
    gc.collect()
    if _pss(os.getpid(), data)[1]:
        raise RuntimeError(f"this process still maps files of {data}: the readers' PSS would be split with it")

    def start(n):
        procs = [
            subprocess.Popen([sys.executable, "-c", READER, str(data)], stdout=subprocess.PIPE, text=True)
            for _ in range(n)
        ]
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        return procs

    out = {}
    for n in (1, readers):
        procs = start(n)
        try:
            pss = [_pss(p.pid, data) for p in procs]
        finally:
            for p in procs:
                p.kill()
                p.wait()
        out[n] = {
            "pss_mb": round(sum(a for a, _ in pss) / MB, 1),
            "store_pss_mb": round(sum(b for _, b in pss) / MB, 1),
        }
    one, many = out[1], out[readers]
    return {
        "one": one,
        f"{readers}": many,
        "readers": readers,
        "total_ratio": round(many["pss_mb"] / one["pss_mb"], 2),
        "store_ratio": round(many["store_pss_mb"] / one["store_pss_mb"], 2),
    }


if __name__ == "__main__":
    d = Path(sys.argv[1])
    print(json.dumps({"latency": latency(d), "gather": gather(d), "readers": shared_memory(d)}, indent=1))
