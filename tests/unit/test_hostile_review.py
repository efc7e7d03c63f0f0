"""Bugs a hostile review found on 2026-12-07 (each test failed on the code of f7d6c54).

They use a copy of tests/golden/format-1 (a published data directory): no Prefect, no Dask."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import shardvec
from shardvec.errors import ShardvecError

GOLDEN = Path(__file__).parents[1] / "golden" / "format-1"


@pytest.fixture
def golden(tmp_path) -> Path:
    data = tmp_path / "g"
    shutil.copytree(GOLDEN, data)
    return data


def test_add_of_one_record_as_a_dict_adds_it_or_says_why(golden):
    """shardvec.add({"id": ..., "text": ...}) iterated the dict's keys: two quarantined strings,
    "id" and "text", and the record silently not added (delete("s1") had the same bug, 50ee7f0)."""
    try:
        result = shardvec.add({"id": "one/dict", "text": "Firefighters fought the fire"}, data=golden)
    except ShardvecError:
        return  # refused with a message: fine
    assert result["added"] == 1 and result["quarantined"] == 0


def test_export_with_a_negative_limit_is_refused(golden, tmp_path):
    """limit=-1 wrote a word2vec file whose header says -1 rows."""
    out = tmp_path / "o.txt"
    try:
        shardvec.export("words", out, limit=-1, data=golden)
    except ShardvecError:
        return
    assert not out.read_text().startswith("-1 ")


def test_a_data_dir_that_is_a_file_is_a_shardvec_error(tmp_path):
    """open/verify on a file raised a bare NotADirectoryError (the CLI said "free space or fix
    the permissions")."""
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(ShardvecError):
        shardvec.open(f)
    with pytest.raises(ShardvecError):
        shardvec.verify(f)


def test_a_current_whose_next_seq_is_behind_its_segments_loses_no_acknowledged_add(golden):
    """CURRENT's additions.next_seq hand-set below its segments (1, with 000001 and 000002 named)
    is accepted; the next add rewrites segment 000001 and the acknowledged golden/fire and
    golden/cricket vanish from readers while `verify` says whole."""
    current = json.loads((golden / "CURRENT").read_text())
    current["additions"]["next_seq"] = 1
    (golden / "CURRENT").write_text(json.dumps(current))
    try:
        shardvec.add([{"id": "n1", "text": "new fires near the coast"}], data=golden)
    except ShardvecError:
        return  # refused: fine
    store = shardvec.open(golden)
    assert "golden/fire" in store and "golden/cricket" in store and "n1" in store


def test_a_malformed_config_file_is_a_settings_error_not_a_traceback(tmp_path, monkeypatch):
    """SHARDVEC_CONFIG naming a file that is not TOML (`[lsi` or a table declared twice): every
    verb died with tomllib.TOMLDecodeError's traceback; a missing file and a wrong value get one
    sentence ("Invalid shardvec configuration ...")."""
    from shardvec.config import load_settings

    bad = tmp_path / "bad.toml"
    bad.write_text("[lsi\n")
    monkeypatch.setenv("SHARDVEC_CONFIG", str(bad))
    with pytest.raises(ShardvecError):
        load_settings()


@pytest.mark.parametrize("folder", ["ledger", "quarantine"])
def test_an_add_writes_nothing_outside_the_data_directory_through_a_symlinked_folder(golden, tmp_path, folder):
    """design.md: nothing outside the data directory is written through it, every symlink is
    checked to stay inside. DATA/vectors and DATA/inbox are (refused with the fix); DATA/ledger
    and DATA/quarantine are not: an add wrote ops-000000000003.arrow, or a rejected record, into
    the folder outside the link points at."""
    outside = tmp_path / "outside"
    if (golden / folder).exists():
        shutil.move(golden / folder, outside)
    else:
        outside.mkdir()
    (golden / folder).symlink_to(outside)
    before = sorted(p.name for p in outside.rglob("*"))
    try:
        shardvec.add([{"id": "y", "text": "Firefighters fought the fire"}, {"id": "z"}], data=golden)
    except ShardvecError:
        pass
    assert sorted(p.name for p in outside.rglob("*")) == before
