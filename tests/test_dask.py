"""The nightly flow on a real `dask scheduler` with two `dask worker` processes, and two nights
in a row on growing input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import shardvec
from shardvec.tasks.store import Space
from tests.conftest import run_nightly, small_settings, write_corpus

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow]


def test_tasks_run_on_both_workers_and_match_the_in_process_run(published, dask_cluster, tmp_path):
    address, workers, _ = dask_cluster
    local_data, _, local = published
    data = tmp_path / "data"
    write_corpus(data / "corpus")
    report = run_nightly(small_settings(data, dask={"address": address}))
    assert report["status"] == "published"
    assert set(report["workers"]) == set(workers)  # both worker processes ran tasks
    a = shardvec.open(local_data)
    b = shardvec.open(data)
    # same statements, same vectors, same similarity rows as the run on Prefect's thread pool (up
    # to float32 rounding: BLAS sums in another order with one thread per Dask worker)
    sa, sb = a.statements.base, b.statements.base
    assert list(sa.keys()) == list(sb.keys())
    for shard in range(sa.n_shards):
        assert np.allclose(sa.shard(shard), sb.shard(shard), atol=1e-4)
    for id_ in ("dup/a", "bg/200", "test/7", "2026-11-01/lee.txt:9"):
        assert [h.key for h in a.row(id_)] == [h.key for h in b.row(id_)]
    assert list(a.words.keys()) == list(b.words.keys())
    assert np.allclose(a.vector("fire"), b.vector("fire"), atol=1e-5)  # word2vec seeded the same way


def test_two_nights_on_growing_input(tmp_path):
    data = tmp_path / "data"
    write_corpus(data / "corpus")
    night3 = data / "corpus" / "2026-11-03"
    held = tmp_path / "held"
    shutil.move(night3, held)  # the third partition arrives a day later
    s = small_settings(data)
    first = run_nightly(s)
    assert first["partitions"] == ["2026-11-01", "2026-11-02"] and first["statements"] == 302
    words_before = set(shardvec.open(data).words.keys())
    shutil.move(held, night3)
    second = run_nightly(s)
    assert second["partitions"] == ["2026-11-03"]  # only the new partition is trained on
    steps = {r["step"]: r for r in second["steps"]}
    assert "vocabulary" not in steps  # the LSI vocabulary is kept, the models updated
    assert second["statements"] == 352
    store = shardvec.open(data)
    new_words = set(store.words.keys()) - words_before
    assert new_words and all(store.vector(w).any() for w in new_words)
    assert "test/0" in store and store.version == second["version"]
    manifest = json.loads((data / "versions" / second["version"] / "manifest.json").read_text())
    assert manifest["mode"] == "update" and manifest["watermark"]["partitions"][-1] == "2026-11-03"
    third = run_nightly(s)
    assert third["status"] == "nothing new"
