"""The flows' parameters as Prefect shows them (issue 32): a description for each one in the run
form, dates for a backfill's range, `overrides` as a form of the tuning knobs that refuses
unknown keys, and deploy/README.md's table naming exactly the flows' parameters. No server: the
schemas are the ones `serve` and `prefect deploy` register, checked as the server checks them."""

import inspect
import json
import re
from collections import defaultdict
from datetime import date
from pathlib import Path

import pytest
from prefect.utilities.callables import parameter_schema, parameter_schema_from_entrypoint
from prefect.utilities.schema_tools.validation import ValidationError, validate

from shardvec.config import Settings
from shardvec.config.settings import SettingsError
from shardvec.flows.add_statements import add_statements
from shardvec.flows.backfill import backfill
from shardvec.flows.nightly import nightly
from shardvec.flows.params import HIDDEN, Overrides, run_settings
from tests.runs import shardvec_cli, small_settings

REPO = Path(__file__).parents[2]
FLOWS = {"nightly": nightly, "backfill": backfill, "add-statements": add_statements}
ENTRYPOINTS = {
    "nightly": "flows/nightly.py:nightly",
    "backfill": "flows/backfill.py:backfill",
    "add-statements": "flows/add_statements.py:add_statements",
}
# the tuning sections a run's form shows: every section of the settings but where things are
# and what is read before (or without) the run's overrides
KNOB_SECTIONS = {name for name in Settings.model_fields if name not in HIDDEN}


def schema(name: str) -> dict:
    return parameter_schema(FLOWS[name].fn).model_dump_for_openapi()


@pytest.mark.parametrize("name", FLOWS)
def test_every_parameter_has_a_description_and_no_docstring_suggests_a_refused_override(name):
    properties = schema(name)["properties"]
    assert list(properties) == list(inspect.signature(FLOWS[name].fn).parameters)
    for parameter, spec in properties.items():
        assert len(spec.get("description") or "") > 20, f"{name}: {parameter} has no description"
    # what a deployment run may not change is neither suggested nor shown
    described = " ".join(spec["description"] for spec in properties.values()) + FLOWS[name].description
    assert not re.search(r"data_dir|dask|server|/srv", described), described
    # `prefect deploy` reads the schema from the source file (deploy/prefect.yaml's entrypoints)
    from_source = parameter_schema_from_entrypoint(str(REPO / ENTRYPOINTS[name])).model_dump_for_openapi()
    assert from_source == schema(name)


def test_overrides_is_a_form_of_every_tuning_knob_each_described():
    definitions = schema("nightly")["definitions"]
    assert schema("nightly")["properties"]["overrides"]["anyOf"][0] == {"$ref": "#/definitions/Overrides"}
    form = definitions["Overrides"]
    assert "a knob left empty keeps its configured value" in form["description"]
    assert set(form["properties"]) == KNOB_SECTIONS and not HIDDEN & set(form["properties"])
    sharing = defaultdict(list)
    for section in KNOB_SECTIONS:
        knobs = definitions[form["properties"][section]["anyOf"][0]["$ref"].rsplit("/", 1)[1]]["properties"]
        assert set(knobs) == set(Settings.model_fields[section].annotation.model_fields), section
        for knob, spec in knobs.items():
            assert len(spec.get("description") or "") > 10, f"{section}.{knob} has no description"
            sharing[spec["description"]].append(f"{section}.{knob}")
    # a comment may describe a pair of knobs together (min_len, max_len); a third knob under it
    # has no comment of its own and shows its neighbours' (word_pairs_drop did)
    assert not [knobs for knobs in sharing.values() if len(knobs) > 2]
    index = definitions["IndexOverrides"]["properties"]
    assert index["nprobe"]["anyOf"][0] == {"type": "integer", "minimum": 1}  # the settings' own bounds
    assert definitions["StoreOverrides"]["properties"]["words_dtype"]["anyOf"][0]["enum"] == [
        "float32",
        "float16",
        "int8",
    ]
    assert "recall" in index["nprobe"]["description"]


def test_a_backfills_range_is_dates():
    properties = schema("backfill")["properties"]
    for bound in ("start", "end"):
        assert properties[bound]["anyOf"][0] == {"type": "string", "format": "date"}  # the UI's date picker
    assert properties["mode"]["enum"] == ["update", "rebuild"]
    # what a deployment run, the CLI and Python callers pass: text, or dates
    got = backfill.validate_parameters({"start": "2026-11-02", "end": date(2026, 11, 3)})
    assert (got["start"], got["end"]) == (date(2026, 11, 2), date(2026, 11, 3))
    with pytest.raises(Exception, match="start"):
        backfill.validate_parameters({"start": "2026-11"})


@pytest.mark.slow
def test_a_backfill_of_a_date_range_builds_those_partitions(corpus_data, prefect_server):
    """The dates reach the partitions' names (a date given, or text as a deployment run gets it)."""
    from prefect.task_runners import ThreadPoolTaskRunner

    flow = backfill.with_options(task_runner=ThreadPoolTaskRunner(max_workers=2))
    report = flow(
        start=date(2026, 11, 2), end="2026-11-03", overrides=json.loads(small_settings(corpus_data).model_dump_json())
    )
    assert report["status"] == "published" and report["partitions"] == ["2026-11-02", "2026-11-03"]


def test_the_cli_reads_the_range_as_dates(tmp_path):
    out = shardvec_cli("backfill", "--start", "2026-13-01", "--data", tmp_path / "data")
    said = " ".join(re.sub(r"[│╭╮╰╯─]", " ", out.stderr).split())  # out of Typer's box
    assert out.returncode == 2 and "'--start': Value error, '2026-13-01' does not match the formats '%Y-%m-%d'" in said
    assert not (tmp_path / "data").exists()


WHOLE = object()  # tests/runs.py's direct calls pass whole settings, data_dir and [dask] included


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (
            {"index": {"nprobe": 1, "target_recall": 0}, "quality": {"gate": True}},  # tests/e2e/test_e2e_pool.py's
            {"index.nprobe": 1, "index.target_recall": 0, "quality.gate": True},
        ),
        (
            {"word2vec": {"sg": "0", "epochs": "3"}, "quality": {"gate": "false"}},  # text, as from SHARDVEC_*
            {"word2vec.sg": 0, "word2vec.epochs": 3, "quality.gate": False},
        ),
        (WHOLE, {"store.rows_per_shard": 256, "dask.n_workers": 2, "lsi.num_topics": 40}),
    ],
)
def test_overrides_take_what_callers_pass(overrides, expected, tmp_path):
    if overrides is WHOLE:
        overrides = json.loads(small_settings(tmp_path / "data").model_dump_json())
    for flow in FLOWS.values():
        assert isinstance(flow.validate_parameters({"overrides": overrides})["overrides"], Overrides)
    s = run_settings(nightly.validate_parameters({"overrides": overrides})["overrides"], deployed=False)
    assert s == run_settings(overrides, deployed=False)  # a dict (e.g. tests/integration/test_hostile.py's) as well
    for knob, value in expected.items():
        section, name = knob.split(".")
        assert getattr(getattr(s, section), name) == value, knob
    if "data_dir" in overrides:
        assert s == small_settings(tmp_path / "data")


def test_unknown_keys_are_refused_by_the_server_and_by_the_run():
    """The server checks a deployment run's parameters against the schema before it creates the
    run (the UI's form too); a direct call is checked by the flow, and run_settings says it in a sentence."""
    form = schema("add-statements")
    for overrides, message in (
        ({"indx": {"nprobe": 1}}, "Unevaluated properties are not allowed ('indx' was"),
        ({"index": {"nprobes": 1}}, "Additional properties are not allowed ('nprobes' was"),
        ({"index": {"nprobe": 0}}, "0 is less than the minimum of 1"),
    ):
        with pytest.raises(ValidationError, match=re.escape(message)):
            validate({"overrides": overrides}, form, raise_on_error=True)
        with pytest.raises(Exception, match="overrides"):
            add_statements.validate_parameters({"overrides": overrides})
    with pytest.raises(SettingsError, match=r"Invalid overrides \(indx: Extra inputs are not permitted\); name only"):
        run_settings({"indx": {"nprobe": 1}})
    with pytest.raises(
        SettingsError,
        match=r"\(index\.nprobe: Input should be greater than or equal to 1\); "
        r"give each a value within its range, or leave it empty",
    ):
        run_settings({"index": {"nprobe": 0}})


def test_a_deployment_run_asking_to_move_its_data_passes_the_schema_and_is_refused_in_a_sentence(tmp_path, monkeypatch):
    """Not shown in the form, but not a schema error either: the run starts and fails saying why."""
    monkeypatch.setenv("SHARDVEC_DATA_DIR", str(tmp_path / "bound"))
    for overrides in (
        {"data_dir": str(tmp_path / "evil")},
        {"dask": {"address": "tcp://127.0.0.1:1"}},
        {"server": {"port": 1}},
    ):
        validate({"overrides": overrides}, schema("nightly"), raise_on_error=True)
        with pytest.raises(SettingsError, match=r"^A deployment run may not change (data_dir|dask.address|server): "):
            run_settings(nightly.validate_parameters({"overrides": overrides})["overrides"], deployed=True)


def test_the_deploy_readme_table_names_each_flows_parameters():
    text = (REPO / "deploy" / "README.md").read_text()
    rows = re.findall(r"^\| `([\w-]+)/shardvec-[\w-]+` \|[^|]*\| (.*) \|$", text, flags=re.M)
    assert [flow for flow, _ in rows] == list(FLOWS)
    for flow, cell in rows:
        named = re.findall(r"`(\w+)`", re.sub(r"\([^)]*\)", "", cell))  # values in parentheses are not names
        assert named == list(inspect.signature(FLOWS[flow].fn).parameters), flow


def test_every_deployment_runs_one_at_a_time_and_queues_the_next(tmp_path):
    """Issue 32/33: a second run of a deployment waits (ENQUEUE) rather than meeting the first's
    files; the add-statements drain too, which on its 5-minute interval can outlast its period."""
    import yaml

    from shardvec.flows.serve import deployments

    served = deployments(small_settings(tmp_path / "data"))
    assert {d.name: (d.concurrency_limit, d.concurrency_options.collision_strategy.value) for d in served} == {
        name: (1, "ENQUEUE") for name in ("shardvec-nightly", "shardvec-backfill", "shardvec-add-statements")
    }
    shipped = yaml.safe_load((Path(__file__).resolve().parents[2] / "deploy" / "prefect.yaml").read_text())
    assert {d["name"]: d["concurrency_limit"] for d in shipped["deployments"]} == {
        name: {"limit": 1, "collision_strategy": "ENQUEUE"}
        for name in ("shardvec-nightly", "shardvec-backfill", "shardvec-add-statements")
    }
