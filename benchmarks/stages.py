"""Benchmark: the tokenize and projection stages on 1 and on 2 Dask workers, each stage alone.

In the nightly run the stages share the workers with whatever else is ready (word2vec trains
beside tokenize's tail, word evaluation beside projection), so their wall times there do not
say how a stage scales. Here each runs alone on a LocalCluster of worker processes, as the
flow runs them: tokenize_file per input file (8 files of GCIDE), project_shard per shard (4
equal shards), with the published LSI model of the scale benchmark's full store.

Beside them, the same cluster runs 8 tasks of pure-Python arithmetic (no I/O, nothing shared):
what a second worker can give at best on this machine at that moment. Its 2 vCPUs have
measured anywhere from 1.45x to 1.92x on such work within minutes, so each round reports it.

    .venv/bin/python -m benchmarks.stages        # after benchmarks.scale; results/stages.json
"""

from __future__ import annotations

import json
import shutil
import time
from functools import partial
from pathlib import Path

from distributed import Client, LocalCluster

from benchmarks.common import WORK, save
from shardvec.tasks.inputs.corpus import discover
from shardvec.tasks.models.statements import plan_statements, project_shard, shard_count
from shardvec.tasks.inputs.tokenize import Tokenizer, tokenize_file


def _spin(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def run(workers: int, data: Path, models: Path, scratch: Path) -> dict:
    shutil.rmtree(scratch, ignore_errors=True)
    files, _ = discover(data / "corpus")
    with (
        LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        client.run(lambda: None)  # workers up before the clock starts
        t = time.perf_counter()
        client.gather(client.map(_spin, [4_000_000] * 8, pure=False))
        spin_s = time.perf_counter() - t
        t = time.perf_counter()
        tokenize = partial(
            tokenize_file,
            cache_dir=scratch / "cache",
            quarantine_dir=scratch / "q",
            tokenizer=Tokenizer(),
            batch_size=2000,
            max_record_bytes=1_000_000,
        )  # map has a batch_size
        tok = client.gather(client.map(tokenize, [data / "corpus"] * len(files), files, pure=False))
        tokenize_s = time.perf_counter() - t
        plan = plan_statements(tok, scratch / "plan.npy", data, scratch / "q", on_duplicate="reject")
        per_shard = -(-plan["statements"] // 4)
        caches = [r["cache"] for r in tok]
        t = time.perf_counter()
        client.gather(
            client.map(
                project_shard,
                [scratch / "plan.npy"] * 4,
                [caches] * 4,
                range(4),
                rows_per_shard=per_shard,
                models_dir=models,
                space_dir=scratch / "space",
                pure=False,
            )
        )
        project_s = time.perf_counter() - t
    assert shard_count(plan["statements"], per_shard) == 4
    return {
        "tokenize_seconds": round(tokenize_s, 2),
        "project_seconds": round(project_s, 2),
        "pure_python_seconds": round(spin_s, 2),
        "files": len(files),
        "statements": plan["statements"],
    }


def main() -> None:
    data = WORK / "scale" / "data-4"
    current = json.loads((data / "CURRENT").read_text())
    models = data / current["components"]["models"]
    figures = {}
    for workers in (1, 2) * 3:  # three times each, interleaved: the machine is noisy
        r = run(workers, data, models, WORK / "stages")
        figures.setdefault(f"{workers}_worker", []).append(r)
        print(workers, "worker(s):", r, flush=True)
    timed = ("tokenize_seconds", "project_seconds", "pure_python_seconds")
    best = {w: {k: min(r[k] for r in figures[f"{w}_worker"]) for k in timed} for w in (1, 2)}
    figures["speedup_2_workers"] = {k.removesuffix("_seconds"): round(best[1][k] / best[2][k], 2) for k in best[1]}
    # and round by round (each 2-worker run against the 1-worker run just before it)
    figures["speedup_by_round"] = [
        {k.removesuffix("_seconds"): round(one[k] / two[k], 2) for k in one if k.endswith("_seconds")}
        for one, two in zip(figures["1_worker"], figures["2_worker"])
    ]
    print(json.dumps({"best": figures["speedup_2_workers"], "by_round": figures["speedup_by_round"]}))
    shutil.rmtree(WORK / "stages", ignore_errors=True)
    print(f"written to {save('stages', figures)}")


if __name__ == "__main__":
    main()
