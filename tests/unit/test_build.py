"""The whole build, stage by stage, on the in-process executor (flows/executors.py InProcess):
what tonight trains and publishes, with no Prefect and no Dask in the process.

The same `Build` runs on Prefect-on-Dask in the flows; tests/integration/test_dask.py checks that a Dask
run publishes what an in-process one does."""

from __future__ import annotations

import json

import pytest

import shardvec
from shardvec.flows import skins
from shardvec.flows.executors import InProcess
from shardvec.flows.pipeline import build_and_publish
from shardvec.tasks.storage.datadir import DataDir
from tests.checks import assert_rows_exact
from tests.corpora import NEAR_DUPLICATES, SENTENCES, write_corpus
from tests.runs import small_settings


def build(data, mode: str = "update", **more) -> dict:
    return build_and_publish(small_settings(data, **more), flow="nightly", mode=mode, executor=InProcess())


@pytest.fixture
def data(tmp_path):
    write_corpus(tmp_path / "data" / "corpus")
    return tmp_path / "data"


def test_a_first_build_publishes_every_statement_with_exact_rows(data):
    report = build(data)
    assert report["status"] == "published" and report["mode"] == "rebuild"
    assert DataDir(data).require_current().version == report["version"]
    store = shardvec.open(data)
    (a, _), (b, _) = NEAR_DUPLICATES
    assert store.row(a)[0].key == b and store.similar(store.text(a), 1)[0].key == a
    assert assert_rows_exact(data) == report["statements"]
    assert report["workers"] and all(r["seconds"] >= 0 for r in report["steps"])  # measured, as on Prefect


def test_the_next_build_continues_the_models_on_the_new_partition_only(data):
    first = build(data)
    part = data / "corpus" / "2026-11-09" / "part.jsonl"
    part.parent.mkdir()
    part.write_text("".join(json.dumps({"id": f"new/{i}", "text": t}) + "\n" for i, t in enumerate(SENTENCES[:20])))
    second = build(data)
    assert second["mode"] == "update" and second["partitions"] == ["2026-11-09"]
    assert second["statements"] == first["statements"] + 20
    assert shardvec.open(data).text("new/3") == SENTENCES[3]
    assert build(data)["status"] == "nothing new"


def test_a_step_that_fails_publishes_nothing(data, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(skins, "merge_tile_task", skins.Step("merge-rows", boom))
    with pytest.raises(RuntimeError, match="disk on fire"):
        build(data)
    assert DataDir(data).current() is None
    monkeypatch.undo()
    assert build(data)["status"] == "published"  # what the failed build left does not get in the way
