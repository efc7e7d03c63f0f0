from pathlib import Path

import pytest

from config import load_settings
from config.settings import SettingsError


def test_defaults_are_complete_and_valid():
    s = load_settings()
    assert s.lsi.num_topics == 200 and s.similarity.k == 10 and s.dask.address == ""


def test_environment_overrides_nested_knobs(monkeypatch, tmp_path):
    monkeypatch.setenv("SHARDVEC_DASK_ADDRESS", "tcp://127.0.0.1:8786")
    monkeypatch.setenv("SHARDVEC_LSI_NUM_TOPICS", "50")
    monkeypatch.setenv("SHARDVEC_DATA_DIR", str(tmp_path))
    s = load_settings()
    assert s.dask.address == "tcp://127.0.0.1:8786"
    assert s.lsi.num_topics == 50 and s.lsi.chunksize == load_settings().lsi.chunksize
    assert s.data == tmp_path.resolve()


def test_explicit_overrides_win_and_merge_into_sections(monkeypatch):
    monkeypatch.setenv("SHARDVEC_STORE_ROWS_PER_SHARD", "999")
    s = load_settings(store={"rows_per_shard": 7})
    assert s.store.rows_per_shard == 7


def test_user_toml_file(monkeypatch, tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text("[similarity]\nk = 3\n")
    monkeypatch.setenv("SHARDVEC_CONFIG", str(f))
    s = load_settings()
    assert s.similarity.k == 3 and s.similarity.method == "auto"


def test_invalid_value_is_one_sentence_naming_the_knob(monkeypatch):
    monkeypatch.setenv("SHARDVEC_LSI_NUM_TOPICS", "many")
    with pytest.raises(SettingsError, match=r"lsi\.num_topics: Input should be a valid integer"):
        load_settings()


def test_unknown_knob_is_rejected():
    with pytest.raises(SettingsError, match=r"lsi\.num_topic"):
        load_settings(lsi={"num_topic": 3})


def test_missing_user_config_file(monkeypatch, tmp_path):
    monkeypatch.setenv("SHARDVEC_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(SettingsError, match="not a file"):
        load_settings()


def test_every_knob_in_default_toml_is_commented():
    """Each knob, or the run of knobs it belongs to, has a comment line right above it."""
    lines = (Path(__file__).parents[1] / "config" / "default.toml").read_text().splitlines()
    is_knob = [("=" in l and not l.lstrip().startswith("#")) for l in lines]
    for i, knob in enumerate(is_knob):
        if knob:
            j = i - 1
            while j >= 0 and is_knob[j]:
                j -= 1
            assert j >= 0 and lines[j].lstrip().startswith("#"), f"uncommented knob: {lines[i]}"
