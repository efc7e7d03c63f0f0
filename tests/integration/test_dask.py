"""The nightly flow on a real `dask scheduler` with two `dask worker` processes. (LocalCluster
runs, the default, are the partitioned-rows nightly of test_partitioned.py, the CLI and killed
runs of test_faults.py, and every run of the end-to-end tests.)"""

from __future__ import annotations

import numpy as np
import pytest

import shardvec
from tests.corpora import write_corpus
from tests.runs import run_nightly, small_settings

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow]


def test_tasks_run_on_both_workers_and_match_the_in_process_run(published, dask_cluster, tmp_path):
    address, workers, _ = dask_cluster
    local_data = published.data
    data = tmp_path / "data"
    write_corpus(data / "corpus")
    report = run_nightly(small_settings(data, dask={"address": address}))
    assert report["status"] == "published"
    assert set(report["workers"]) == set(workers)  # both worker processes ran tasks
    a = shardvec.open(local_data)
    b = shardvec.open(data)
    # same statements, same vectors, same similarity rows as the run on Prefect's thread pool (up
    # to float32 rounding: BLAS sums in another order with one thread per Dask worker)
    sa, sb = a._statements.base, b._statements.base  # the spaces themselves: their shards
    assert list(sa.keys()) == list(sb.keys())
    for shard in range(sa.n_shards):
        assert np.allclose(sa.shard(shard), sb.shard(shard), atol=1e-4)
    for id_ in ("dup/a", "bg/200", "test/7", "2026-11-01/lee.txt:9"):
        assert [h.key for h in a.row(id_)] == [h.key for h in b.row(id_)]
    assert list(a.words.keys()) == list(b.words.keys())
    assert np.allclose(a.vector("fire"), b.vector("fire"), atol=1e-5)  # word2vec seeded the same way
