"""`plan_build`: what a build trains, on what, continuing which models, and why, decided over
real data directories (tests/golden/format-1, written by older code: two nights, then two adds
and a delete acknowledged after the second) with no Prefect and no Dask; and the ledger's two
steps a build runs on its plan: compaction, then a replay that discards nothing."""

from __future__ import annotations

import copy
import shutil
import tomllib
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pytest

from shardvec.config import load_settings
from shardvec.errors import ShardvecError
from shardvec.tasks.inputs.corpus import discover
from shardvec.tasks.models.plan import LEDGER_NEW, LEDGER_OLD, plan_build
from shardvec.tasks.storage.ledger import Ledger, Op, acknowledged, compact_ledger, replay_for_build
from shardvec.tasks.storage.datadir import DataDir
from shardvec.tasks.storage.documents import Manifest

GOLDEN = Path(__file__).parents[1] / "golden" / "format-1"
LIVE = "20261207T163412-371f20"  # the golden directory's live version: partitions 2026-11-01 and -02
ACKED = 2  # the ledger batches acknowledged after it was built (two adds, then a delete)


@pytest.fixture
def data(tmp_path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(GOLDEN, copy)
    return copy


def settings(data: Path, **more):
    """The settings the golden directory was written with (`more` overrides a section at a time)."""
    base = tomllib.loads((GOLDEN.parent / "format-1.toml").read_text())
    for knob in ("n_trees", "search_k"):  # the Annoy index's, refused since faiss (format 3) replaced it
        base["index"].pop(knob)
    for section, knobs in more.items():
        base[section] = {**base.get(section, {}), **knobs}
    return load_settings(data_dir=str(data), **base)


def plan(data: Path, s=None, *, live: Manifest | None = None, **request):
    """The plan of a build of `data` as the pipeline makes it: CURRENT, the live manifest, the
    corpus's partitions and the ledger's last acknowledged op, read from disk."""
    current = DataDir(data).current()
    if live is None and current:
        live = DataDir(data).manifest(current.version)
    files, _ = discover(data / "corpus")
    return plan_build(
        s or settings(data),
        current,
        live,
        available=sorted({f.partition for f in files}),
        acknowledged=acknowledged(data, current),
        **request,
    )


def live_with(data: Path, **summary) -> Manifest:
    """The golden live version's manifest, as if its build had recorded `summary` too."""
    live = DataDir(data).manifest(LIVE)
    return replace(live, summary={**copy.deepcopy(live.summary), **summary})


def partition(data: Path, name: str) -> None:
    (data / "corpus" / name).mkdir(parents=True)
    (data / "corpus" / name / "more.txt").write_text("Bushfires burned across the state again.\n")


def test_the_first_night_trains_new_models_on_everything(tmp_path):
    data = tmp_path / "data"
    for name in ("2026-11-01", "2026-11-02"):
        partition(data, name)
    p = plan(data, skip_if_nothing_new=True)
    assert (p.mode, p.continues, p.previous_models) == ("rebuild", None, None)
    assert p.in_version == p.train == ("2026-11-01", "2026-11-02")
    assert p.builds_vocabulary and p.skip is None and "first build" in p.why
    assert (p.acknowledged, p.built, p.ops_trained_after) == (0, 0, 0)


def test_a_nightly_with_a_new_partition_continues_the_live_models_on_it_alone(data):
    partition(data, "2026-11-03")
    p = plan(data, skip_if_nothing_new=True)
    assert (p.mode, p.continues, p.skip) == ("update", LIVE, None)
    assert p.previous_models == DataDir(data).current().components["models"]
    assert p.train == ("2026-11-03",) and p.in_version == ("2026-11-01", "2026-11-02", "2026-11-03")
    assert not p.builds_vocabulary  # a fixed vocabulary (LSI cannot grow its terms) is kept
    assert p.trains("2026-11-03") and not p.trains("2026-11-01")
    assert p.trains(LEDGER_NEW) and not p.trains(LEDGER_OLD)


def test_a_hashed_vocabulary_is_built_on_every_update(data):
    partition(data, "2026-11-03")
    live = live_with(data)
    live.summary["config"]["vocab"]["hashing"] = True  # as if the live version had been made with hashing
    p = plan(data, settings(data, vocab={"hashing": True}), live=live)
    assert p.mode == "update" and p.builds_vocabulary


def test_acknowledged_ops_make_a_nightly_build_even_with_no_new_partition(data):
    """The golden live version holds no ledger op; the two batches after it are new to its models."""
    p = plan(data, skip_if_nothing_new=True)
    assert p.train == () and not p.nothing_new and p.skip is None
    assert (p.acknowledged, p.built, p.new_ops, p.ops_trained_after) == (ACKED, 0, ACKED, 0)


def test_a_nightly_with_nothing_new_builds_nothing_and_a_backfill_builds_all_the_same(data):
    live = live_with(data, ledger=ACKED)  # a live version that holds every op
    nightly = plan(data, live=live, skip_if_nothing_new=True)
    assert nightly.nothing_new and nightly.skip == f"All partitions are in version {LIVE}; nothing to do."
    backfill = plan(data, live=live)
    assert backfill.nothing_new and backfill.skip is None and backfill.mode == "update"


def test_a_backfill_of_a_range_trains_on_its_partitions_not_yet_in(data):
    for name in ("2026-11-03", "2026-11-04", "2026-11-05"):
        partition(data, name)
    p = plan(data, start="2026-11-02", end="2026-11-04")
    assert p.mode == "update" and p.train == ("2026-11-03", "2026-11-04")  # 11-02 is in already
    assert p.in_version == ("2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04")  # 11-05 waits
    named = plan(data, partitions=["2026-11-05"])
    assert named.train == ("2026-11-05",) and "2026-11-04" not in named.in_version


@pytest.mark.parametrize(
    "request_, match",
    [
        ({"partitions": ["2026-12-31"]}, "No partition named 2026-12-31 in the corpus"),
        ({"start": "2026-11-02", "end": "2026-11-01"}, "swap --start and --end"),
    ],
)
def test_a_request_the_corpus_cannot_meet_is_refused_in_one_sentence(data, request_, match):
    with pytest.raises(ShardvecError, match=match):
        plan(data, **request_)


def test_a_rebuild_trains_new_models_on_everything_and_every_acknowledged_op(data):
    partition(data, "2026-11-03")
    live = live_with(data, ledger=1)
    p = plan(data, live=live, mode="rebuild")
    assert (p.mode, p.continues, p.previous_models) == ("rebuild", None, None)
    assert p.train == p.in_version == ("2026-11-01", "2026-11-02", "2026-11-03")
    assert p.builds_vocabulary and p.ops_trained_after == 0 and p.acknowledged == ACKED
    assert not p.changed and "rebuild was asked for" in p.why


@pytest.mark.parametrize(
    "more, says",
    [
        ({"tokenize": {"min_len": 3}}, "tokenize {'min_len': 2, "),
        ({"tokenize": {"deaccent": True}}, "'deaccent': True"),
        ({"lsi": {"num_topics": 32}}, "lsi.num_topics 16 -> 32"),
        ({"word2vec": {"vector_size": 24}}, "word2vec.vector_size 16 -> 24"),
        ({"vocab": {"hashing": True}}, "vocab.hashing False -> True"),
    ],
)
def test_a_setting_that_shapes_the_models_changed_since_the_live_ones_forces_a_rebuild(data, more, says):
    """An update would continue models made with the old setting (LSI keeps its topics, word2vec
    its width, the tokens would mix two tokenizers): the plan rebuilds and says why, even when
    nothing else is new."""
    p = plan(data, settings(data, **more), live=live_with(data, ledger=ACKED), skip_if_nothing_new=True)
    assert (p.mode, p.continues, p.skip) == ("rebuild", None, None)
    assert p.train == p.in_version and p.builds_vocabulary and p.ops_trained_after == 0
    assert len(p.changed) == 1 and says in p.changed[0]
    assert p.why.startswith(f"Settings that shape the models changed since version {LIVE} was trained")
    assert p.why.endswith("this run rebuilds the models from scratch.")


@pytest.mark.parametrize(
    "more",
    [
        {"store": {"rows_per_shard": 64}},
        {"similarity": {"method": "exact"}},
        {"lsi": {"chunksize": 50}},
        {"vocab": {"hash_buckets": 64}},
    ],
)
def test_other_settings_changed_keep_the_update(data, more):
    partition(data, "2026-11-03")
    p = plan(data, settings(data, **more))
    assert p.mode == "update" and not p.changed and p.train == ("2026-11-03",)


def test_an_older_manifest_without_the_settings_it_was_made_with_is_continued(data):
    live = DataDir(data).manifest(LIVE)
    live = replace(live, summary={k: v for k, v in live.summary.items() if k not in ("config", "tokenizer")})
    p = plan(data, settings(data, lsi={"num_topics": 32}), live=live)
    assert p.mode == "update" and not p.changed


# --- the ledger's steps on the plan ------------------------------------------------------------
def _ids(path: Path | None) -> list[str]:
    return pa.ipc.open_file(pa.memory_map(str(path))).read_all().column("id").to_pylist() if path else []


def _ledger_files(data: Path) -> list[str]:
    return sorted(p.name for p in (data / "ledger").iterdir())


def test_replay_discards_nothing_and_needs_the_ledger_compacted_first(data):
    """Replay is a read: on the golden ledger (two batches, not compacted) it refuses rather than
    fold them itself, and after compaction it only derives the puts, however often it runs."""
    p = plan(data)
    before = _ledger_files(data)
    assert before == ["ops-000000000001.arrow", "ops-000000000002.arrow"]
    with pytest.raises(RuntimeError, match="compact_ledger first"):
        replay_for_build(data, None, p.ops_trained_after, rebuild=not p.update, upto=p.acknowledged)
    assert _ledger_files(data) == before
    net = Ledger(data).net(ACKED).to_pylist()
    assert compact_ledger(data, p.acknowledged) == {"upto": ACKED, "files": 2}
    assert _ledger_files(data) == ["upto-000000000002.arrow"]
    assert Ledger(data).net(ACKED).to_pylist() == net  # folding loses no acknowledged op
    first = replay_for_build(data, None, p.ops_trained_after, rebuild=not p.update, upto=p.acknowledged)
    after = _ledger_files(data)
    again = replay_for_build(data, None, p.ops_trained_after, rebuild=not p.update, upto=p.acknowledged)
    assert again == first and _ledger_files(data) == after
    assert set(after) - {"upto-000000000002.arrow"} == {first.new.name}  # only the derived puts


def test_the_plans_ops_are_replayed_split_where_the_live_models_stopped(data):
    """Every acknowledged op is in the version; those after the live version's are trained on
    (a delete is no put); a rebuild trains on them all; an op acknowledged beyond CURRENT's
    position (CURRENT restored from an older copy) is carried too."""
    ledger = Ledger(data)
    ledger.append(3, [Op("add", "late", "Acknowledged after CURRENT was backed up.")])
    ledger.confirm_one(3)
    live = live_with(data, ledger=1)  # its models learned the first batch
    p = plan(data, live=live)
    assert (p.acknowledged, p.built, p.ops_trained_after) == (3, 1, 1)
    compact_ledger(data, p.acknowledged)
    replay = replay_for_build(data, None, p.ops_trained_after, rebuild=not p.update, upto=p.acknowledged)
    assert replay.acknowledged == 3 and replay.count == 4  # golden/fire, golden/cricket, golden/gone, late
    assert _ids(replay.old) == ["golden/fire", "golden/cricket"] and _ids(replay.new) == ["late"]
    rebuild = plan(data, live=live, mode="rebuild")
    everything = replay_for_build(data, None, rebuild.ops_trained_after, rebuild=True, upto=rebuild.acknowledged)
    assert everything.old is None and _ids(everything.new) == ["golden/fire", "golden/cricket", "late"]
