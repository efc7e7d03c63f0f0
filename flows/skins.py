"""The build's steps: each plain step function of tasks/ with its name, its retries and its
measurement (time, CPU, peak memory). An executor (flows/executors.py) runs them: as Prefect
tasks on Dask in a flow run, or in this process.

Steps take and return paths and small summaries, so nothing big crosses the orchestrator.
"""

from __future__ import annotations

import functools
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from shardvec.tasks.changes import additions, intake, release
from shardvec.tasks.inputs import tokenize
from shardvec.tasks.models import lsi, statements, vocab, word2vec
from shardvec.tasks.quality import evaluation
from shardvec.tasks.search import index, partitioned, rows, similarity
from shardvec.tasks.storage import ledger
from shardvec.tasks.storage import spaces
from shardvec.tasks.inputs.corpus import discover
from shardvec.tasks.quality.report import MB, PeakRSS


def measured(fn: Callable[..., dict]) -> Callable[..., dict]:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs) -> dict:
        t, cpu, began = time.perf_counter(), time.process_time(), time.time()
        with PeakRSS() as mem:
            result = fn(*args, **kwargs)
        # the process's CPU: the step's own where a worker runs one task at a time (the
        # default), whatever else the machine runs; wall seconds count the waits for a core
        return {
            **result,
            "seconds": round(time.perf_counter() - t, 3),
            "cpu_seconds": round(time.process_time() - cpu, 3),
            "worker": _worker(),
            "began": round(began, 3),
            "ended": round(time.time(), 3),
            "peak_rss_mb": round(mem.peak / MB, 1),
            "peak_anon_mb": round(mem.peak_anon / MB, 1),
            "rss_growth_mb": round((mem.peak - mem.start_rss) / MB, 1),
        }

    return wrapper


def _worker() -> str:
    """The Dask worker that ran this step, or this process (outside Dask: a process that never
    imported Dask runs in none of its workers, and does not import it to find that out)."""
    if "distributed" in sys.modules:
        from distributed import get_worker

        try:
            return get_worker().address
        except ValueError:  # Dask loaded, but this step runs outside its workers
            pass
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Step:
    """A step function under its name (the Prefect UI's task name) and its retries (on Prefect);
    `measure`: its summary gets the step's time, CPU and peak memory."""

    name: str
    fn: Callable
    retries: int = 2
    measure: bool = True
    run: Callable = field(init=False, compare=False, repr=False)  # what an executor calls

    def __post_init__(self) -> None:
        object.__setattr__(self, "run", measured(self.fn) if self.measure else self.fn)


def _discover(corpus_dir, partitions=None, after=None, until=None) -> dict:
    files, skipped = discover(corpus_dir, partitions, after, until)
    return {"files": [f.to_dict() for f in files], "skipped": skipped}


discover_task = Step("discover", _discover)
compact_ledger_task = Step("compact-ledger", ledger.compact_ledger, retries=0, measure=False)
replay_task = Step("replay-ledger", ledger.replay_for_build, retries=0, measure=False)  # a ledger.Replay
tokenize_task = Step("tokenize", tokenize.tokenize_file)
plan_task = Step("plan-statements", statements.plan_statements)
vocab_task = Step("vocabulary", vocab.build_dictionary)
copy_dictionary_task = Step("copy-dictionary", vocab.copy_dictionary)
lsi_part_task = Step("lsi-part", lsi.lsi_part)
lsi_merge_task = Step("train-lsi", lsi.merge_lsi)
word2vec_task = Step("train-word2vec", word2vec.train_word2vec)
words_task = Step("write-word-vectors", word2vec.write_word_space)
project_task = Step("project-statements", statements.project_shard)
finish_space_task = Step("finish-space", spaces.finish_space)
restore_task = Step("store-as-dtype", spaces.restore_as)
index_task = Step("build-index", index.build_index)
rows_task = Step("similarity-rows", rows.rows_for_tile)
own_tile_task = Step("rows-own-tile", rows.own_tile)
tile_pair_task = Step("rows-tile-pair", rows.tile_pair)
merge_tile_task = Step("merge-rows", rows.merge_tile)
finish_rows_task = Step("finish-rows", similarity.finish_rows)
centroids_task = Step("rows-centroids", partitioned.train_centroids)
assign_task = Step("rows-assign", partitioned.assign_shard)
group_task = Step("rows-group", partitioned.group)
keep_clusters_task = Step("rows-keep-clusters", partitioned.keep_clusters)
cluster_own_task = Step("rows-own-clusters", partitioned.own_task)
cluster_bounds_task = Step("rows-bounds", partitioned.bounds)
cluster_score_task = Step("rows-clusters", partitioned.score_task)
cluster_merge_task = Step("merge-rows", partitioned.merge_tiles)

index_recall_task = Step("index-recall", index.index_recall)
rows_recall_task = Step("rows-recall", similarity.rows_recall)
evaluate_words_task = Step("evaluate-words", evaluation.evaluate_words)
lsi_spectrum_task = Step("lsi-spectrum", evaluation.lsi_spectrum)
drift_task = Step("drift", evaluation.drift)
publish_task = Step("publish", release.publish_version, retries=0)
add_task = Step("add-records", additions.add_records)
delete_task = Step("delete-statements", additions.delete_ids)
drain_task = Step("drain-inbox", intake.drain_inbox)
