"""Benchmark: adding and deleting statements in stores of 25k, 50k and 100k statements (dim 200).

Builds (once per size, cached in benchmarks/work/add*/) a store of real-text statements with
the nightly flow, then measures, against each store:
  - one batch of 1,000 new statements: wall time, vs recomputing every similarity row from
    scratch (the plain alternative), and vs the BLAS limit 2*B*N*d / measured GFLOP/s;
  - single-statement adds with one open Adder: p50 and p99 latency;
  - 1,000 deletes of stored statements in one call, then single deletes: p50 and p99;
  - correctness: the rows after the adds and deletes vs an exact recompute (recall@10, must be 1.0).
Each store is put back as it was at the end. The growth lines give each figure at the largest
size over the smallest. Run: .venv/bin/python -m benchmarks.add_statements [--sizes 25000,50000,100000]

`--data DIR` measures a store published elsewhere instead (the 1M-statement store that
benchmarks/million.py leaves in benchmarks/work/million/data-40, whose rows are partitioned):
results/add_statements_DIRNAME.json, the recompute of every row skipped with --no-recompute
(exact rows of 1M statements take over half an hour), recall given apart for the batch's
rows, the single adds' rows and a sample of the stored ones.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import WORK, blas_gflops, save, statements  # noqa: E402
from shardvec.config import load_settings  # noqa: E402
from shardvec.tasks.changes.additions import Adder  # noqa: E402
from shardvec.tasks.storage.datadir import DataDir  # noqa: E402
from shardvec.tasks.storage.documents import Current  # noqa: E402
from shardvec.tasks.search.rows import rows_for_tile  # noqa: E402
from shardvec.tasks.changes.segments import Statements  # noqa: E402
from shardvec.tasks.search.similarity import tile_count  # noqa: E402
from shardvec.tasks.search.topk import exact_topk, recall_at_k  # noqa: E402

SIZES = (25_000, 50_000, 100_000)


def store_dir(n: int) -> Path:
    return WORK / ("add" if n == 100_000 else f"add-{n}")


def build(data: Path, n: int) -> dict:
    from shardvec.flows.nightly import nightly
    from shardvec.flows.runtime import local_prefect, task_runner

    corpus = data / "corpus" / "2026-01-01"
    corpus.mkdir(parents=True, exist_ok=True)
    with open(corpus / "statements.jsonl", "w", encoding="utf-8") as f:
        for id_, text in statements(n):
            f.write(json.dumps({"id": id_, "text": text}) + "\n")
    overrides = dict(
        data_dir=str(data),
        store={"rows_per_shard": 25_000},
        word2vec={"epochs": 1, "sg": 0},
        index={"recall_sample": 100},
    )
    s = load_settings(**overrides)
    t = time.perf_counter()
    with local_prefect():
        report = nightly.with_options(task_runner=task_runner(s))(overrides=overrides)
    return {"nightly_seconds": round(time.perf_counter() - t, 1), "statements": report["statements"]}


def new_texts(n: int) -> list[str]:
    from tests.corpora import lee_sentences  # real news text the store has not seen

    out = lee_sentences("lee_background.cor", min_words=5)
    return (out * (n // len(out) + 1))[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rebuild", action="store_true", help="rebuild the stores")
    ap.add_argument("--singles", type=int, default=300)
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma-separated store sizes")
    ap.add_argument("--data", type=Path, help="a published store to measure instead of building them")
    ap.add_argument("--no-recompute", action="store_true", help="skip recomputing every row (the plain alternative)")
    args = ap.parse_args()
    if args.data:
        data = args.data.resolve()
        snapshot, current = (data / "CURRENT").read_bytes(), DataDir(data).current()
        try:
            figures = run(data, current, args.singles, recompute=not args.no_recompute)
        finally:
            _put_back(data, snapshot)
        path = save(f"add_statements_{data.name}", figures)
        print(json.dumps(figures, indent=1))
        print(f"written to {path}")
        return
    sizes = sorted(int(x) for x in args.sizes.split(","))
    by_size = {}
    for n in sizes:
        data = store_dir(n)
        if args.rebuild or DataDir(data).current() is None:
            shutil.rmtree(data, ignore_errors=True)
            print(f"building the {n:,}-statement store with the nightly flow ...", flush=True)
            built = build(data, n)
            print(f"  built in {built['nightly_seconds']} s")
        snapshot = (data / "CURRENT").read_bytes()
        current = DataDir(data).current()
        try:
            by_size[n] = run(data, current, args.singles)
        finally:
            _put_back(data, snapshot)
        print(
            f"{n:,}: single add p50 {by_size[n]['single_add_ms']['p50']} ms, single delete p50 "
            f"{by_size[n]['single_delete_ms']['p50']} ms, 1,000 adds {by_size[n]['batch_1000']['seconds']} s, "
            f"1,000 deletes {by_size[n]['delete_1000']['seconds']} s",
            flush=True,
        )
    figures = {
        **by_size[sizes[-1]],
        "sizes": {str(n): by_size[n] for n in sizes},
        "growth": growth(by_size, sizes[0], sizes[-1]),
    }
    path = save("add_statements", figures)
    print(json.dumps(figures, indent=1))
    print(f"written to {path}")


def _put_back(data: Path, snapshot: bytes) -> None:
    """Leave the store as it was: its CURRENT, no additions, no ledger."""
    (data / "CURRENT").write_bytes(snapshot)
    shutil.rmtree(data / "additions", ignore_errors=True)
    shutil.rmtree(data / "ledger", ignore_errors=True)


def growth(by_size: dict, lo: int, hi: int) -> dict:
    """Each figure at the largest size over the smallest (statements grew hi/lo times)."""

    def ratio(get) -> float:
        return round(get(by_size[hi]) / max(get(by_size[lo]), 1e-9), 2)

    return {
        "statements": round(hi / lo, 2),
        "single_add_p50": ratio(lambda f: f["single_add_ms"]["p50"]),
        "single_delete_p50": ratio(lambda f: f["single_delete_ms"]["p50"]),
        "batch_1000_adds": ratio(lambda f: f["batch_1000"]["seconds"]),
        "delete_1000": ratio(lambda f: f["delete_1000"]["seconds"]),
        "recompute_all_rows": ratio(lambda f: f["recompute_all_rows_seconds"]),
    }


def run(data: Path, current: Current, singles: int, deletes: int = 100, recompute: bool = True) -> dict:
    view = Statements(data, current)
    n, d, k = len(view), view.base.dim, view.k
    texts = new_texts(1000 + singles)

    # the plain alternative: recompute every similarity row from scratch (exact, blocked BLAS)
    t = time.perf_counter()
    out = WORK / "add-recompute"
    for tile in range(tile_count(n, 16_384)) if recompute else ():
        rows_for_tile(data / current.components["statements"], tile, out, k=k, tile_rows=16_384, block_rows=1024)
    recompute_s = time.perf_counter() - t if recompute else None
    shutil.rmtree(out, ignore_errors=True)

    t = time.perf_counter()
    adder = Adder(data, on_duplicate="reject", max_record_bytes=1_000_000)
    open_s = time.perf_counter() - t
    batch = [{"id": f"new/{i}", "text": x} for i, x in enumerate(texts[:1000])]
    t = time.perf_counter()
    result = adder.add(batch)
    batch_s = time.perf_counter() - t
    assert result.added == 1000, result

    lat = []
    for i, x in enumerate(texts[1000:]):
        t = time.perf_counter()
        adder.add([{"id": f"one/{i}", "text": x}])
        lat.append(time.perf_counter() - t)
    lat_ms = np.array(lat) * 1000

    # deletes: 1,000 statements of the store in one call, then single deletes
    rng = np.random.default_rng(0)
    victims = [view.key(int(r)) for r in rng.choice(n, 1000 + deletes, replace=False)]
    t = time.perf_counter()
    gone = adder.delete(victims[:1000])
    delete_s = time.perf_counter() - t
    assert gone.deleted == 1000, gone
    del_lat = []
    for key in victims[1000:]:
        t = time.perf_counter()
        adder.delete([key])
        del_lat.append(time.perf_counter() - t)
    del_ms = np.array(del_lat) * 1000

    # correctness: rows after the adds and deletes vs an exact recompute, on every added row + a sample
    view = Statements(data, DataDir(data).current())
    check = np.unique(np.concatenate([np.arange(n, len(view)), rng.choice(n, 2000, replace=False)]))
    check = check[[not view.is_dead(int(r)) for r in check]]
    exact, exact_s = exact_topk(view, view.vectors_at(check), k, exclude=check)
    stored = [view.row(int(r)) for r in check]
    stored_r, stored_s = np.stack([s[0] for s in stored]), np.stack([s[1] for s in stored])
    recall_strict = recall_at_k(stored_r, exact)
    recall = recall_at_k(stored_r, exact, stored_s, exact_s)
    groups = {"batch": (check >= n) & (check < n + 1000), "singles": check >= n + 1000, "stored": check < n}
    recall_of = {
        name: round(recall_at_k(stored_r[m], exact[m], stored_s[m], exact_s[m]), 4)
        for name, m in groups.items()
        if m.any()
    }

    gflops = blas_gflops(d=d, n=n, b=1000)
    limit = 2 * 1000 * n * d / (gflops * 1e9)
    return {
        "store": {"statements": n, "dim": d, "k": k, "shards": view.base.n_shards},
        "batch_1000": {
            "seconds": round(batch_s, 3),
            "target_seconds": 2.0 if n <= 100_000 else 10.0,  # #13, #16
            "rows_updated": result.rows_updated,
        },
        "rows_method": view.base_rows.manifest.get("method"),
        "probed_singles": view.clusters is not None,
        "recompute_all_rows_seconds": recompute_s and round(recompute_s, 2),
        "speedup_vs_recompute": recompute_s and round(recompute_s / batch_s, 1),
        "single_add_ms": {
            "p50": round(float(np.percentile(lat_ms, 50)), 2),
            "p99": round(float(np.percentile(lat_ms, 99)), 2),
            "n": len(lat),
            "target_p50": 20,
        },
        "delete_1000": {"seconds": round(delete_s, 3), "target_seconds": 2.0, "rows_updated": gone.rows_updated},
        "single_delete_ms": {
            "p50": round(float(np.percentile(del_ms, 50)), 2),
            "p99": round(float(np.percentile(del_ms, 99)), 2),
            "n": len(del_ms),
            "target_p50": 20,
        },
        "adder_open_seconds": round(open_s, 3),
        "recall_at_10_vs_exact": recall,
        "recall_at_10_by_rows": recall_of,
        "rows_checked": int(len(check)),
        "recall_at_10_ids_strict": recall_strict,
        "note": "strict recall counts ids; the tie-aware figure accepts an id whose score ties the "
        "k-th exact score to 1e-6 (duplicate texts score equal up to the last float bit)",
        "blas": {
            "gflops_measured": round(gflops, 1),
            "batch_limit_seconds": round(limit, 3),
            "batch_vs_limit": round(batch_s / limit, 1),
        },
    }


if __name__ == "__main__":
    main()
