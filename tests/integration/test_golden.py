"""A data directory older code wrote (tests/golden/format-1, see its README) still works with
today's code: a reader opens it and answers, an add lands in it, a rollback keeps what was
acknowledged, and verify finds it whole. Changing the format without a migration fails here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import shardvec

GOLDEN = Path(__file__).parents[1] / "golden" / "format-1"
FIRST, SECOND = "20261207T163303-ee7906", "20261207T163412-371f20"


@pytest.fixture
def data(tmp_path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(GOLDEN, copy)
    return copy


def test_the_golden_directory_is_as_it_was_written():
    current = json.loads((GOLDEN / "CURRENT").read_text())
    assert current["format"] == 1 and current["version"] == SECOND


def test_a_reader_answers_from_a_directory_older_code_wrote(data):
    store = shardvec.open(data)
    assert store.version == SECOND
    hits = store.similar(
        "Firefighters battled huge bushfires across New South Wales as strong winds fanned the flames.", 3
    )
    assert hits[0].key == "golden/fire" and hits[0].score > 0.99 and "bushfires" in hits[0].text
    assert all(h.key != "golden/gone" for h in store.similar("added and then deleted so no reader may find it", 10))
    assert [h.key for h in store.row("golden/cricket")]
    word = store.neighbours("fire", 5)
    assert len(word) == 5 and all(h.key != "fire" for h in word)
    assert store.vector("fire").shape == (16,)
    assert shardvec.verify(data=data).whole


def test_adds_and_a_rollback_on_a_directory_older_code_wrote_keep_every_acknowledged_op(data):
    new = "Rain finally reached the bushfire areas west of Sydney."
    shardvec.add([{"id": "golden/new", "text": new}], data=data)
    assert shardvec.open(data).similar(new, 1)[0].key == "golden/new"
    shardvec.rollback(FIRST, data=data)
    store = shardvec.open(data)
    assert store.version == FIRST
    keys = {h.key for h in store.similar("bushfires new south wales cricket sydney rain", 200)}
    assert {"golden/fire", "golden/cricket", "golden/new"} <= keys and "golden/gone" not in keys
    assert shardvec.verify(data=data).whole
