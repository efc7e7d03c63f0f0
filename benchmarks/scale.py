"""Benchmark: shardvec's nightly build against the plain script, and how its cost grows.

On GCIDE (benchmarks/corpus.py: ~126k statements, ~4.6M tokens of real English, from Debian's
dict-gcide), in one run:
  1. the plain script (benchmarks/plain.py) on the whole corpus;
  2. shardvec's nightly, from an empty data directory, on all of it with 2 Dask workers and with
     1 (the per-stage speed-up of a second worker); then on 1/4, 1/2 and all of it with every
     cap binding even at 1/4 (`GROWTH`: vocabulary, shard, chunk and tile sizes), which is what
     keeps RAM flat as the corpus grows;
  3. reads from the published store: key -> vector latency, a 10,000-row gather, and the memory
     (PSS) of 4 reader processes against 1.
Each build runs as its own process tree; a sampler records its wall time, CPU time (all its
processes) and peak RSS (largest process, and the sum over the tree). Both sides use the same
models and settings (`BENCH` below: shardvec's defaults with gensim's default word2vec,
CBOW and 5 epochs, which suit a corpus this size). Prefect's server runs beside, as in
production, and is not counted; its start-up (about 8 s) is printed.

    .venv/bin/python -m benchmarks.scale            # ~15 min; results/scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from benchmarks import corpus
from benchmarks.common import WORK, save

MB = 1 << 20
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
BENCH = {"word2vec": {"sg": 0, "epochs": 5}}
GROWTH = {
    "word2vec": {"sg": 0, "epochs": 5, "max_final_vocab": 20_000},
    "vocab": {"max_terms": 30_000},
    "lsi": {"chunksize": 16_384},
    "store": {"rows_per_shard": 16_384},
}
BIN = Path(sys.executable).parent


class TreeSampler:
    """Peak RSS (largest process and sum over the tree) and CPU time of a process and its descendants.

    RSS summed over processes counts each shared page (libraries, the page cache of mapped
    files) once per process that maps it; PSS splits such a page among its sharers, so the
    tree's summed PSS is what it takes of the machine's memory. PSS costs ~10 ms a GB to read
    (smaps_rollup), so it is sampled every `pss_every` samples (0.5 s)."""

    def __init__(self, pid: int, interval: float = 0.1, pss_every: int = 5):
        self.root = psutil.Process(pid)
        self.interval, self.peak_max, self.peak_sum, self.cpu = interval, 0, 0, {}
        self.anon_max = self.anon_sum = self.pss_sum = 0
        self.pss_every, self._samples = pss_every, 0
        self.pss_timeline: list[tuple[float, int]] = []  # (unix time, summed PSS): per-stage figures
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.root] + self.root.children(recursive=True)
            except psutil.NoSuchProcess:
                break
            total = total_anon = total_pss = 0
            with_pss = self._samples % self.pss_every == 0
            self._samples += 1
            for p in procs:
                try:
                    m = p.memory_info()
                    t = p.cpu_times()
                    total_pss += p.memory_full_info().pss if with_pss else 0
                except psutil.Error:
                    continue
                total += m.rss
                total_anon += m.rss - m.shared
                self.peak_max = max(self.peak_max, m.rss)
                self.anon_max = max(self.anon_max, m.rss - m.shared)
                self.cpu[p.pid] = t.user + t.system  # children_* would count reaped workers twice
            self.peak_sum = max(self.peak_sum, total)
            self.anon_sum = max(self.anon_sum, total_anon)
            self.pss_sum = max(self.pss_sum, total_pss)
            if with_pss:
                self.pss_timeline.append((time.time(), total_pss))
            self._stop.wait(self.interval)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return {
            "peak_rss_mb": round(self.peak_max / MB),
            "peak_rss_tree_mb": round(self.peak_sum / MB),
            "peak_anon_mb": round(self.anon_max / MB),
            "peak_anon_tree_mb": round(self.anon_sum / MB),
            "peak_pss_tree_mb": round(self.pss_sum / MB),
            "cpu_seconds": round(sum(self.cpu.values()), 1),
        }


def measure(cmd: list[str], env: dict | None = None, log: Path | None = None, timeline: list | None = None) -> dict:
    """Run cmd as its own process tree: wall, CPU and memory figures. `timeline`, if given,
    receives the (time, summed PSS) samples."""
    t = time.perf_counter()
    out = open(log, "w") if log else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT)
    sampler = TreeSampler(proc.pid)
    rc = proc.wait()
    figures = sampler.stop()
    if timeline is not None:
        timeline.extend(sampler.pss_timeline)
    if rc:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {rc}); see {log}")
    return {
        "wall_seconds": round(time.perf_counter() - t, 1),
        "load_average_1min": round(os.getloadavg()[0], 1),
        **figures,
    }


def prepare(work: Path) -> dict:
    src = work / "gcide"
    if not (src / "done.json").exists():
        shutil.rmtree(src, ignore_errors=True)
        (src / "done.json").parent.mkdir(parents=True, exist_ok=True)
        (src / "done.json").write_text(json.dumps(corpus.write(src)))
    return json.loads((src / "done.json").read_text())


def data_dir(work: Path, parts: int, source: str = "gcide") -> Path:
    """A fresh data directory whose corpus is the first `parts` parts of work/source (hard links,
    no copies)."""
    data = work / f"data-{parts}"
    shutil.rmtree(data, ignore_errors=True)
    for p in range(parts):
        dst = data / "corpus" / f"part-{p}"
        dst.mkdir(parents=True)
        for f in sorted((work / source / f"part-{p}").glob("*.jsonl")):
            os.link(f, dst / f.name)
    return data


def settings_files(work: Path, name: str, overrides: dict) -> tuple[Path, dict]:
    """Benchmark settings as a TOML for shardvec and as a dict for the plain script."""
    from shardvec.config import load_settings

    s = load_settings(**overrides).model_dump(mode="json")
    toml = work / f"{name}.toml"
    toml.write_text(
        "".join(
            f"[{sec}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in knobs.items())
            for sec, knobs in overrides.items()
        )
    )
    return toml, s


def run_plain(work: Path, settings: dict, parts: int = corpus.PARTS, source: str = "gcide") -> dict:
    """The plain script on the first `parts` parts of work/source."""
    out = work / "plain"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    (out / "settings.json").write_text(json.dumps(settings))
    files = [str(f) for p in range(parts) for f in sorted((work / source / f"part-{p}").glob("*.jsonl"))]
    fig = measure(
        [str(BIN / "python"), "-m", "benchmarks.plain", str(out), str(out / "settings.json"), *files],
        log=out / "log.txt",
    )
    return {**fig, **json.loads((out / "result.json").read_text())}


def run_shardvec(work: Path, parts: int, toml: Path, workers: int = 2, source: str = "gcide") -> dict:
    data = data_dir(work, parts, source)
    env = {"SHARDVEC_CONFIG": str(toml), "SHARDVEC_DASK_N_WORKERS": str(workers)}
    log = work / f"shardvec-{toml.stem}-{parts}-{workers}w.log"
    timeline: list[tuple[float, int]] = []
    fig = measure(
        [str(BIN / "shardvec"), "nightly", "--data", str(data), "--json"], env=env, log=log, timeline=timeline
    )
    report = _report(log)
    stages = {r["step"]: r for r in report["steps"]}
    stage_pss = {
        k: round(max((p for t, p in timeline if v["began"] <= t <= v["ended"]), default=0) / MB)
        for k, v in stages.items()
        if "began" in v
    }
    return {
        **fig,
        "statements": report["statements"],
        "tokens": report["tokens"],
        "terms": report["terms"],
        "words": report["words"],
        "data": str(data),
        "rows_recall_at_10": report["recall"]["similarity rows"]["rows_recall_at_k"],
        "statements_index_recall_at_10": report["recall"]["statements"]["recall_at_k"],
        "stage_wall_seconds": {k: v["wall_s"] for k, v in stages.items()},
        # the stage's tasks' own seconds, summed: its cost, whatever ran beside it on the workers
        "stage_task_seconds": {k: v["seconds"] for k, v in stages.items()},
        # the CPU its tasks' processes used while they ran: a cost that waiting for a core
        # does not inflate (task seconds do, when a stage shares the cores with another)
        "stage_cpu_seconds": {k: v.get("cpu_seconds") for k, v in stages.items()},
        "stage_peak_rss_mb": {k: v["peak_rss_mb"] for k, v in stages.items()},
        "stage_peak_anon_mb": {k: v.get("peak_anon_mb") for k, v in stages.items()},
        "stage_peak_pss_tree_mb": stage_pss,
        "rows_method": report.get("rows_method"),
    }


def _report(log: Path) -> dict:
    text = log.read_text()
    return json.loads(text[text.rindex("\n{\n") + 1 :])


def plain_recall(work: Path, sample: int = 1000) -> float:
    """recall@10 of the plain script's Annoy rows against exact search over its own vectors."""
    from shardvec.tasks.search.topk import RowsInRam, exact_topk, recall_at_k

    vecs = np.load(work / "plain" / "statements.npy", mmap_mode="r")
    rows = np.load(work / "plain" / "rows.npy", mmap_mode="r")
    picks = np.sort(np.random.default_rng(1).choice(len(vecs), size=sample, replace=False))
    exact, exact_s = exact_topk(RowsInRam(vecs), np.asarray(vecs[picks]), rows.shape[1], exclude=picks)
    found = np.asarray(rows[picks])
    found_s = np.einsum("id,ikd->ik", np.asarray(vecs[picks]), np.asarray(vecs[np.maximum(found, 0)]))
    return round(recall_at_k(found, exact, found_s, exact_s), 4)


def reads(data: Path) -> dict:
    """Key -> vector latency (warm), a 10,000-row gather, and 4 readers' memory against 1's."""
    from benchmarks.readers import gather, latency, shared_memory

    return {"latency": latency(data), "gather": gather(data), "readers": shared_memory(data)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--skip", nargs="*", default=[], choices=["plain", "growth", "one-worker", "reads"])
    args = ap.parse_args()
    work = WORK / "scale"
    work.mkdir(parents=True, exist_ok=True)
    figures: dict = {"corpus": prepare(work), "settings": BENCH, "growth_settings": GROWTH}
    print("corpus:", figures["corpus"], flush=True)
    toml, settings = settings_files(work, "bench", BENCH)
    growth_toml, _ = settings_files(work, "growth", GROWTH)
    from shardvec.flows.runtime import local_prefect

    t = time.perf_counter()
    with local_prefect():
        figures["prefect_server_start_seconds"] = round(time.perf_counter() - t, 1)
        if "plain" not in args.skip:
            figures["plain"] = run_plain(work, settings)
            figures["plain"]["rows_recall_at_10"] = plain_recall(work)
            print("plain:", figures["plain"], flush=True)
        if "one-worker" not in args.skip:
            figures["shardvec_1_worker"] = run_shardvec(work, 4, toml, workers=1)
            print("shardvec 1 worker:", figures["shardvec_1_worker"], flush=True)
        figures["shardvec"] = {"4/4": run_shardvec(work, 4, toml)}
        print("shardvec 4/4:", figures["shardvec"]["4/4"], flush=True)
        if "reads" not in args.skip:  # on the full store, before the growth runs replace it
            figures["reads"] = reads(Path(figures["shardvec"]["4/4"]["data"]))
            print("reads:", figures["reads"], flush=True)
        if "growth" not in args.skip:
            figures["growth"] = {}
            for parts in (1, 2, 4):
                figures["growth"][f"{parts}/4"] = run_shardvec(work, parts, growth_toml)
                print(f"growth {parts}/4:", figures["growth"][f"{parts}/4"], flush=True)
    figures["ratios"] = ratios(figures)
    path = save("scale", figures)
    print(json.dumps(figures["ratios"], indent=1))
    print(f"written to {path}")


def ratios(f: dict) -> dict:
    full, out = f["shardvec"]["4/4"], {}
    if "plain" in f:
        p = f["plain"]
        out["wall_vs_plain"] = round(full["wall_seconds"] / p["wall_seconds"], 3)
        out["cpu_vs_plain"] = round(full["cpu_seconds"] / p["cpu_seconds"], 3)
        out["peak_rss_vs_plain"] = round(full["peak_rss_mb"] / p["peak_rss_mb"], 3)
        out["peak_rss_tree_vs_plain"] = round(full["peak_rss_tree_mb"] / p["peak_rss_mb"], 3)
        out["peak_anon_vs_plain"] = round(full["peak_anon_mb"] / p["peak_anon_mb"], 3)
        out["peak_anon_tree_vs_plain"] = round(full["peak_anon_tree_mb"] / p["peak_anon_mb"], 3)
        out["peak_pss_tree_vs_plain"] = round(full["peak_pss_tree_mb"] / p["peak_pss_tree_mb"], 3)
    if "growth" in f:
        base, top = f["growth"]["1/4"], f["growth"]["4/4"]
        out["peak_rss_growth_4x"] = round(top["peak_rss_mb"] / base["peak_rss_mb"], 3)
        out["peak_rss_tree_growth_4x"] = round(top["peak_rss_tree_mb"] / base["peak_rss_tree_mb"], 3)
        out["peak_anon_growth_4x"] = round(top["peak_anon_mb"] / base["peak_anon_mb"], 3)
        out["wall_growth_4x"] = round(top["wall_seconds"] / base["wall_seconds"], 3)
    if "shardvec_1_worker" in f:
        one = f["shardvec_1_worker"]["stage_wall_seconds"]
        out["speedup_2_workers"] = {
            s: round(one[s] / full["stage_wall_seconds"][s], 2)
            for s in ("tokenize", "project-statements", "similarity-rows", "index-statements")
            if s in one and full["stage_wall_seconds"].get(s)
        }
        out["wall_speedup_2_workers"] = round(f["shardvec_1_worker"]["wall_seconds"] / full["wall_seconds"], 2)
    return out


if __name__ == "__main__":
    main()
