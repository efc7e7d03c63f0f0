"""The thin Prefect task skins over the plain step functions (retries, names, measurement).

Steps take and return paths and small summaries, so nothing big crosses the orchestrator.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

from prefect import task
from prefect.cache_policies import NO_CACHE

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
        return {**result, "seconds": round(time.perf_counter() - t, 3),
                "cpu_seconds": round(time.process_time() - cpu, 3), "worker": _worker(),
                "began": round(began, 3), "ended": round(time.time(), 3),
                "peak_rss_mb": round(mem.peak / MB, 1), "peak_anon_mb": round(mem.peak_anon / MB, 1),
                "rss_growth_mb": round((mem.peak - mem.start_rss) / MB, 1)}
    return wrapper


def _worker() -> str:
    """The Dask worker that ran this step (or this process, outside Dask)."""
    try:
        from distributed import get_worker
        return get_worker().address
    except (ImportError, ValueError):
        import os
        import socket
        return f"{socket.gethostname()}:{os.getpid()}"


def _skin(fn, name: str, retries: int = 2, measure: bool = True):
    """A step as a Prefect task; `measure`: its summary gets the step's time and peak memory."""
    return task(measured(fn) if measure else fn, name=name, retries=retries, retry_delay_seconds=[2, 10, 30],
                cache_policy=NO_CACHE, persist_result=False)


def _discover(corpus_dir, partitions=None, after=None, until=None) -> dict:
    files, skipped = discover(corpus_dir, partitions, after, until)
    return {"files": [f.to_dict() for f in files], "skipped": skipped}


discover_task = _skin(_discover, "discover")
compact_ledger_task = _skin(ledger.compact_ledger, "compact-ledger", retries=0, measure=False)
replay_task = _skin(ledger.replay_for_build, "replay-ledger", retries=0, measure=False)  # a ledger.Replay
tokenize_task = _skin(tokenize.tokenize_file, "tokenize")
plan_task = _skin(statements.plan_statements, "plan-statements")
vocab_task = _skin(vocab.build_dictionary, "vocabulary")
copy_dictionary_task = _skin(vocab.copy_dictionary, "copy-dictionary")
lsi_part_task = _skin(lsi.lsi_part, "lsi-part")
lsi_merge_task = _skin(lsi.merge_lsi, "train-lsi")
word2vec_task = _skin(word2vec.train_word2vec, "train-word2vec")
words_task = _skin(word2vec.write_word_space, "write-word-vectors")
project_task = _skin(statements.project_shard, "project-statements")
finish_space_task = _skin(spaces.finish_space, "finish-space")
restore_task = _skin(spaces.restore_as, "store-as-dtype")
index_task = _skin(index.build_index, "build-index")
rows_task = _skin(rows.rows_for_tile, "similarity-rows")
own_tile_task = _skin(rows.own_tile, "rows-own-tile")
tile_pair_task = _skin(rows.tile_pair, "rows-tile-pair")
merge_tile_task = _skin(rows.merge_tile, "merge-rows")
finish_rows_task = _skin(similarity.finish_rows, "finish-rows")
centroids_task = _skin(partitioned.train_centroids, "rows-centroids")
assign_task = _skin(partitioned.assign_shard, "rows-assign")
group_task = _skin(partitioned.group, "rows-group")
keep_clusters_task = _skin(partitioned.keep_clusters, "rows-keep-clusters")
cluster_own_task = _skin(partitioned.own_task, "rows-own-clusters")
cluster_bounds_task = _skin(partitioned.bounds, "rows-bounds")
cluster_score_task = _skin(partitioned.score_task, "rows-clusters")
cluster_merge_task = _skin(partitioned.merge_tiles, "merge-rows")

index_recall_task = _skin(index.index_recall, "index-recall")
rows_recall_task = _skin(similarity.rows_recall, "rows-recall")
evaluate_words_task = _skin(evaluation.evaluate_words, "evaluate-words")
lsi_spectrum_task = _skin(evaluation.lsi_spectrum, "lsi-spectrum")
drift_task = _skin(evaluation.drift, "drift")
publish_task = _skin(release.publish_version, "publish", retries=0)
add_task = _skin(additions.add_records, "add-records")
delete_task = _skin(additions.delete_ids, "delete-statements")
drain_task = _skin(intake.drain_inbox, "drain-inbox")
