"""Settings: defaults, environment variables, user TOML files and explicit overrides, validated once;
a wrong knob or value is one sentence naming it."""

import os
import re
from pathlib import Path

import pytest

from shardvec.config import load_settings
from shardvec.config.settings import DEFAULT_TOML, SettingsError
from tests.runs import SUBPROCESS_TOML, shardvec_cli, small_settings


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
    lines = (Path(__file__).parents[2] / "config" / "default.toml").read_text().splitlines()
    is_knob = [("=" in l and not l.lstrip().startswith("#")) for l in lines]
    for i, knob in enumerate(is_knob):
        if knob:
            j = i - 1
            while j >= 0 and is_knob[j]:
                j -= 1
            assert j >= 0 and lines[j].lstrip().startswith("#"), f"uncommented knob: {lines[i]}"


def _toml_literal(value) -> str:
    """How a user writes `value` after `knob = ` in TOML, as an environment variable's text
    (strings bare, as a shell sets them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):  # paths, separated as in PATH
        return os.pathsep.join(value)
    return str(value)


# knobs whose text has a form of its own: another value of that form
OTHER_TEXT = {
    "memory_limit": "3GiB",
    "nightly_cron": "30 4 * * 1-5",
    "timezone": "Europe/Berlin",
    "address": "tcp://127.0.0.1:8786",
    "host": "::1",
    "word_pairs": [str(DEFAULT_TOML), str(DEFAULT_TOML)],
    "analogies": [str(DEFAULT_TOML)],
}


def _another_valid_value(section, knob, value):
    """A value of the knob's type, different from the default, that the knob accepts."""
    from typing import Literal, get_args, get_origin

    if knob in OTHER_TEXT:
        return OTHER_TEXT[knob]
    field = type(section).model_fields[knob]
    if get_origin(field.annotation) is Literal:
        return next(v for v in get_args(field.annotation) if v != value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value / 2
    return f"{value}x" if value else "tcp://127.0.0.1:8786"


def test_every_knob_of_default_toml_is_settable_through_its_environment_variable(monkeypatch):
    """issue 14 item 10: SHARDVEC_<SECTION>_<KNOB> means what `knob = value` means in TOML."""
    import tomllib

    defaults = tomllib.loads((Path(__file__).parents[2] / "config" / "default.toml").read_text())
    base = load_settings()
    expected, checked = {}, 0
    for section, knobs in defaults.items():
        if not isinstance(knobs, dict):
            continue
        for knob, value in knobs.items():
            new = _another_valid_value(getattr(base, section), knob, value)
            monkeypatch.setenv(f"SHARDVEC_{section.upper()}_{knob.upper()}", _toml_literal(new))
            expected[(section, knob)] = new
    monkeypatch.setenv("SHARDVEC_DATA_DIR", "/srv/shardvec")
    s = load_settings()
    for (section, knob), new in expected.items():
        got = getattr(getattr(s, section), knob)
        assert got == new and type(got) is type(new), f"SHARDVEC_{section.upper()}_{knob.upper()}: {got!r} != {new!r}"
        checked += 1
    assert s.data_dir == Path("/srv/shardvec")
    assert checked == sum(len(k) for k in defaults.values() if isinstance(k, dict)) > 40


@pytest.mark.parametrize("text, value", [("0", 0), ("1", 1)])
def test_word2vec_sg_from_the_environment(monkeypatch, text, value):
    monkeypatch.setenv("SHARDVEC_WORD2VEC_SG", text)
    assert load_settings().word2vec.sg == value


def test_environment_integers_may_use_toml_underscores(monkeypatch):
    monkeypatch.setenv("SHARDVEC_CORPUS_MAX_RECORD_BYTES", "2_000_000")
    assert load_settings().corpus.max_record_bytes == 2_000_000


def test_the_processes_tests_start_run_small_settings_on_one_dask_worker(monkeypatch, tmp_path):
    """The runs in processes tests start read SUBPROCESS_TOML (SHARDVEC_CONFIG) where those in
    this process call small_settings: the same settings, but shards of 1,024 rows and one worker."""
    (tmp_path / "small.toml").write_text(SUBPROCESS_TOML)
    monkeypatch.setenv("SHARDVEC_CONFIG", str(tmp_path / "small.toml"))
    from_file = load_settings(data_dir=str(tmp_path))
    assert from_file.store.rows_per_shard == 1024 and from_file.dask.n_workers == 1
    in_process = small_settings(tmp_path, store={"rows_per_shard": 1024}, dask={"n_workers": 1})
    assert from_file.model_dump(exclude={"dask"}) == in_process.model_dump(exclude={"dask"})
    monkeypatch.delenv("SHARDVEC_CONFIG")
    assert from_file.model_dump() != load_settings(data_dir=str(tmp_path)).model_dump()


# issue 33 item 4: values that used to pass validation and fail later (eight tracebacks from the
# Dask workers, a schedule that never fires), each refused at start-up in one sentence that names
# the knob and shows a valid value.
REFUSED = [
    ("DASK_MEMORY_LIMIT", "abc", r"dask\.memory_limit 'abc' is not a memory size.*memory_limit = \"4GiB\""),
    ("DASK_MEMORY_LIMIT", "-1", r"dask\.memory_limit '-1' is not a memory size"),
    ("DASK_MEMORY_LIMIT", "0", r"dask\.memory_limit '0' is not a memory size"),
    ("DASK_MEMORY_LIMIT", "inf", r"dask\.memory_limit 'inf' is not a memory size"),
    ("DASK_MEMORY_LIMIT", "nan", r"dask\.memory_limit 'nan' is not a memory size"),
    ("DASK_MEMORY_LIMIT", "inf GiB", r"dask\.memory_limit 'inf GiB' is not a memory size"),
    ("SCHEDULE_NIGHTLY_CRON", "bad", r"schedule\.nightly_cron 'bad' is not a cron expression.*\"0 2 \* \* \*\""),
    (
        "SCHEDULE_NIGHTLY_CRON",
        "0 25 * * *",
        r"schedule\.nightly_cron '0 25 \* \* \*' is not a cron expression \(Bad hour\)",
    ),
    ("SCHEDULE_NIGHTLY_CRON", "@daily", r"schedule\.nightly_cron '@daily' is not a cron expression"),
    ("SCHEDULE_TIMEZONE", "Mars/Base", r"schedule\.timezone 'Mars/Base' is not a time zone.*\"Europe/Berlin\""),
    ("SCHEDULE_TIMEZONE", "../../etc/passwd", r"schedule\.timezone '\.\./\.\./etc/passwd' is not a time zone"),
    (
        "TOKENIZE_MIN_LEN",
        "30",
        r"tokenize\.min_len \(30\) is above tokenize\.max_len \(20\).*min_len = 2 and max_len = 20",
    ),
    ("DASK_ADDRESS", "abc", r"dask\.address 'abc' is not the address of a Dask scheduler.*tcp://10\.0\.0\.5:8786"),
    ("DASK_ADDRESS", "tcp://host:port", r"dask\.address 'tcp://host:port' is not the address"),
    ("SIMILARITY_MEMORY_BUDGET_MB", "8192", r"similarity\.memory_budget_mb \(8192\) is more than a worker may use"),
    ("WORD2VEC_SEED", "-1", r"word2vec\.seed: Input should be greater than or equal to 0"),
    ("INDEX_SEED", str(2**40), r"index\.seed: Input should be less than or equal to 2147483647"),
    ("INDEX_NPROBE", "0", r"index\.nprobe: Input should be greater than or equal to 1"),
    # Annoy's knobs, from a configuration written before faiss replaced it (issue 35)
    (
        "INDEX_SEARCH_K",
        "20000",
        r"index\.search_k set the Annoy index, which faiss IVF replaced.*remove them and set "
        r"index\.nprobe",
    ),
    (
        "SIMILARITY_METHOD",
        "annoy",
        r"similarity\.method \"annoy\" asked the Annoy index.*set similarity\.method = \"index\"",
    ),
]


@pytest.mark.parametrize("knob, value, message", REFUSED, ids=[f"{k}={v}" for k, v, _ in REFUSED])
def test_a_value_that_would_fail_later_is_refused_at_start_naming_the_knob(monkeypatch, knob, value, message):
    monkeypatch.setenv(f"SHARDVEC_{knob}", value)
    with pytest.raises(SettingsError, match=message) as raised:
        load_settings()
    text = str(raised.value)
    assert not re.search(r"[.!?] [A-Z]", text) and text.endswith("environment variables.")  # one sentence
    assert "Value error" not in text and "\n" not in text


@pytest.mark.parametrize(
    "knob, value",
    [
        ("DASK_MEMORY_LIMIT", "auto"),
        ("DASK_MEMORY_LIMIT", "0.5"),
        ("DASK_MEMORY_LIMIT", "4 GB"),
        ("DASK_MEMORY_LIMIT", "6000000000"),
        ("SCHEDULE_NIGHTLY_CRON", "*/15 1-5 * * MON-FRI"),
        ("SCHEDULE_TIMEZONE", "America/New_York"),
        ("DASK_ADDRESS", "tls://scheduler.example:8786"),
        ("DASK_ADDRESS", "127.0.0.1:8786"),
        ("TOKENIZE_MIN_LEN", "20"),
    ],
)
def test_the_valid_forms_of_those_knobs_pass(monkeypatch, knob, value):
    monkeypatch.setenv(f"SHARDVEC_{knob}", value)
    load_settings()


def test_a_memory_budget_above_an_existing_clusters_limit_is_not_ours_to_judge(monkeypatch):
    """With dask.address the workers are someone else's: their limit is not dask.memory_limit."""
    monkeypatch.setenv("SHARDVEC_SIMILARITY_MEMORY_BUDGET_MB", "8192")
    monkeypatch.setenv("SHARDVEC_DASK_ADDRESS", "tcp://127.0.0.1:8786")
    assert load_settings().similarity.memory_budget_mb == 8192


def test_the_cli_says_a_bad_value_in_one_line_before_starting_anything(tmp_path):
    """`SHARDVEC_DASK_MEMORY_LIMIT=abc shardvec nightly` used to end in eight tracebacks."""
    r = shardvec_cli("nightly", "--data", str(tmp_path), env={"SHARDVEC_DASK_MEMORY_LIMIT": "abc"})
    assert r.returncode == 2 and "Traceback" not in r.stderr + r.stdout
    assert r.stderr.strip().count("\n") == 0 and "dask.memory_limit 'abc' is not a memory size" in r.stderr
    assert not (tmp_path / "versions").exists()


def test_own_evaluation_sets_are_paths_and_a_missing_one_is_no_settings_error(monkeypatch, tmp_path):
    """Named in [quality] word_pairs / analogies (SHARDVEC_QUALITY_WORD_PAIRS: paths as in PATH),
    relative ones in the data directory."""
    (tmp_path / "pairs.tsv").write_text("a\tb\t1\n")
    monkeypatch.setenv("SHARDVEC_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SHARDVEC_QUALITY_WORD_PAIRS", f"pairs.tsv{os.pathsep}{tmp_path / 'pairs.tsv'}")
    assert load_settings().quality.word_pairs == ["pairs.tsv", str(tmp_path / "pairs.tsv")]
    # a set that is not there is no settings error: the evaluation reports it and leaves it out of
    # the gate (tests/integration/test_languages.py), and commands that evaluate nothing never look at it
    monkeypatch.setenv("SHARDVEC_QUALITY_ANALOGIES", "missing.txt")
    assert load_settings().quality.analogies == ["missing.txt"]
