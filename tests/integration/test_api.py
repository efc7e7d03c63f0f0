"""The Python API (shardvec/api.py) is the CLI's: every verb has a function of its name taking its
parameters, the CLI prints what the function returns, and every add path screens by the same
settings."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import typer.core
import typer.main

import shardvec
from shardvec import api
from shardvec.cli import app
from shardvec.errors import ShardvecError
from shardvec.reader import Store
from tests.corpora import SENTENCES
from tests.runs import nightly_in_process, shardvec_cli

# Verbs with no function, and why: they run a process until it is stopped (Prefect's server and
# `serve`), or talk to the Prefect server's automations (shardvec/alerts.py is their API).
NO_FUNCTION = {
    ("server",): "runs the Prefect server until stopped: `prefect server start`",
    ("serve",): "serves the deployments until stopped: shardvec.flows.serve.serve_all",
    ("alerts", "install"): "installs automations on the server: shardvec.alerts.install",
}
FUNCTION = {("import",): "import_vectors"}  # `import` is a keyword
FORMATTING = {"as_json"}  # --json: how the result is printed, not what is done


def _verbs(group: typer.core.TyperGroup, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        if isinstance(command, typer.core.TyperGroup):
            yield from _verbs(command, (*prefix, name))
        elif not command.hidden:  # the first release's query names, aliases of the same callback
            yield (*prefix, name), command


def _api_of(verb: tuple[str, ...]):
    """The function a verb is, and the parameters it takes besides `data` for the query verbs."""
    if verb[0] == "query":
        return getattr(Store, verb[1])
    return getattr(api, FUNCTION.get(verb, verb[-1].replace("-", "_")), None)


def test_every_cli_verb_is_an_api_function_with_its_parameters():
    verbs = dict(_verbs(typer.main.get_command(app)))
    assert {("add",), ("delete",), ("query", "similar"), ("import",), ("mark-crashed",)} <= set(verbs)
    wrong = []
    for verb, command in verbs.items():
        if verb in NO_FUNCTION:
            continue
        function = _api_of(verb)
        if function is None:
            wrong.append(f"{' '.join(verb)}: no shardvec.api function")
            continue
        takes = inspect.signature(function).parameters
        names = {p.name for p in command.params} - FORMATTING - ({"data"} if verb[0] == "query" else set())
        wrong += [
            f"{' '.join(verb)}: {function.__qualname__} has no parameter {n!r}" for n in sorted(names - set(takes))
        ]
        for p in command.params:  # a default the CLI states is the function's too
            if p.name in takes and p.default not in (None, False) and takes[p.name].default != p.default:
                wrong.append(
                    f"{' '.join(verb)}: {p.name} defaults to {p.default!r}, "
                    f"{function.__qualname__} to {takes[p.name].default!r}"
                )
    assert wrong == []
    assert "data" in inspect.signature(api.open).parameters  # where the query verbs' --data goes
    assert shardvec.add is api.add and shardvec.open is api.open and shardvec.import_vectors is api.import_vectors


def test_the_api_refuses_what_the_cli_refuses_with_a_shardvec_error(tmp_path):
    with pytest.raises(ShardvecError, match="--mode sideways is not a mode"):
        api.backfill(mode="sideways", data=tmp_path)
    with pytest.raises(ShardvecError, match="not both"):
        api.backfill("2026-11-20", partitions=["2026-11-21"], data=tmp_path)
    with pytest.raises(ShardvecError, match="--to csv is not a format"):
        api.export("words", tmp_path / "out", to="csv", data=tmp_path)
    with pytest.raises(ShardvecError, match="Nothing is published"):
        api.verify(tmp_path)
    r = shardvec_cli("backfill", "--mode", "sideways", "--data", tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("error: --mode sideways is not a mode")


def _fields(line: str) -> dict:
    return dict(part.split("=", 1) for part in line.split())


def test_the_cli_prints_what_the_api_returns(published_copy, tmp_path):
    """add, delete, versions, verify, history and rollback on a real store: the function's result
    is what the verb of its name prints."""
    data = published_copy
    found = api.verify(data)
    assert found.whole and shardvec_cli("verify", "--data", data).stdout == f"ok: version {found.version} is whole\n"

    runs = api.history(data).runs
    from shardvec.tasks.quality import history_table

    assert runs and shardvec_cli("history", "--data", data).stdout.startswith(history_table(runs) + "\n")
    drawn = api.history(data, last=1, plot=tmp_path / "trend.svg")
    assert drawn.plot.stat().st_size > 0 and len(drawn.runs) == 1

    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    for path, i in ((one, 1), (two, 2)):
        path.write_text(json.dumps({"id": f"api/{i}", "text": SENTENCES[30 + i]}) + "\n")
    by_api = api.add(one, data)
    printed = _fields(shardvec_cli("add", two, "--data", data).stdout)
    assert set(printed) == set(by_api) - {"segment"} and by_api["added"] == int(printed["added"]) == 1
    piped = _fields(
        shardvec_cli("add", "-", "--data", data, input=json.dumps({"id": "api/3", "text": SENTENCES[33]}) + "\n").stdout
    )
    assert set(piped) == set(printed) and piped["added"] == "1"
    assert api.add([{"id": "api/4", "text": SENTENCES[34]}], data)["added"] == 1

    by_api = api.delete("api/1", data)  # one id as a str: that id, not its characters
    printed = _fields(shardvec_cli("delete", "api/2", "--data", data).stdout)
    assert by_api["deleted"] == int(printed["deleted"]) == 1 and set(printed) <= set(by_api)
    assert "api/1" not in api.open(data) and "api/2" not in api.open(data) and "api/3" in api.open(data)

    first = api.versions(data)[-1]["version"]
    (data / "corpus" / "2026-11-05").mkdir()
    (data / "corpus" / "2026-11-05" / "part.jsonl").write_text(json.dumps({"id": "night/1", "text": SENTENCES[40]}))
    second = nightly_in_process(data)["version"]
    listed = shardvec_cli("versions", "--data", data).stdout.splitlines()
    kept = api.versions(data)
    assert [line[2:].split()[0] for line in listed] == [v["version"] for v in kept]
    assert [line[0] == "*" for line in listed] == [v["live"] for v in kept] and kept[-1]["version"] == second

    printed = shardvec_cli("rollback", "--data", data).stdout  # second -> first
    assert api.rollback(second, data)["version"] == second  # and forward again, by name
    back = api.rollback(data=data)  # second -> first, over the same ledger
    assert (back["version"], back["from"]) == (first, second)
    assert printed == (
        f"live: version {first} (was {second}); {back['ops_replayed']} acknowledged operations made "
        "since it replayed on top\n"
    )
    assert api.open(data).version == first and "api/3" in api.open(data) and "api/1" not in api.open(data)


def test_every_add_path_screens_by_the_settings(published_copy, tmp_path, monkeypatch, prefect_server):
    """shardvec.add of records and of a file, `shardvec add -` and the add-statements flow with
    its inbox all take corpus.max_record_bytes and corpus.on_duplicate from the settings (each
    built its Adder's arguments its own way before: one path screened at 1,000,000 bytes)."""
    from shardvec.flows.add_statements import add_statements

    data = published_copy
    monkeypatch.setenv("SHARDVEC_DATA_DIR", str(data))
    monkeypatch.setenv("SHARDVEC_CORPUS_MAX_RECORD_BYTES", "500")
    long = {f"long/{i}": ("word%d " % i) * 150 for i in range(5)}  # about 1,000 bytes each

    def line(i):
        return json.dumps({"id": f"long/{i}", "text": long[f"long/{i}"]}) + "\n"

    (data / "inbox").mkdir(exist_ok=True)

    def every_path() -> list:
        (tmp_path / "one.jsonl").write_text(line(1))
        (data / "inbox" / "four.jsonl").write_text(line(4))
        out = [api.add([{"id": "long/0", "text": long["long/0"]}]), api.add(tmp_path / "one.jsonl")]
        r = shardvec_cli("add", "-", input=line(2))
        assert r.returncode == 0, r.stderr
        out.append({k: int(v) for k, v in _fields(r.stdout).items() if k not in ("file", "seconds")})
        report = add_statements(records=[{"id": "long/3", "text": long["long/3"]}])
        return [*out, report["records"], report["inbox"]]

    assert [r["quarantined"] for r in every_path()] == [1] * 5
    store = api.open()
    assert not any(key in store for key in long)
    monkeypatch.setenv("SHARDVEC_CORPUS_MAX_RECORD_BYTES", "2000")
    assert [r["added"] for r in every_path()] == [1] * 5
    store = api.open()
    assert all(key in store for key in long)
    monkeypatch.setenv("SHARDVEC_CORPUS_ON_DUPLICATE", "update")  # an id added again is a replace now
    long = {k: v.replace("word", "other") for k, v in long.items()}
    assert [r["replaced"] for r in every_path()] == [1] * 5
    store = api.open()
    assert all(store.text(k) == v for k, v in long.items())


def test_a_reader_gets_small_read_only_views(published):
    """`Store.words` and `Store.statements` hand out what a reader needs, not the spaces that
    the pipeline writes, scans and repairs (20 and 15 public methods before)."""
    import numpy as np

    store = api.open(published.data)
    words, statements = store.words, store.statements
    public = {
        type(words): {n for n in dir(words) if not n.startswith("_")},
        type(statements): {n for n in dir(statements) if not n.startswith("_")},
    }
    assert public[type(words)] == {
        "dim",
        "dtype",
        "dir",
        "keys",
        "key",
        "find",
        "find_many",
        "vector",
        "vector_at",
        "vectors_at",
        "lookup",
    }
    assert public[type(statements)] == {"dim", "dtype", "find", "key", "text", "vector"}
    assert "fire" in words and "qqxzv" not in words and len(words) == len(list(words.keys()))
    assert np.array_equal(words.vector("fire"), store.vector("fire"))
    assert words.key(words.find("fire")) == "fire" and list(words.find_many(["fire", "qqxzv"]))[1] == -1
    ids, vecs = words.lookup([["fire", "qqxzv"]])
    assert ids.tolist() == [[words.find("fire"), -1]] and np.array_equal(vecs[0, 0], words.vector("fire"))
    assert "dup/a" in statements and len(statements) == len(store)
    assert statements.text("dup/a") == store.text("dup/a") and statements.key(statements.find("dup/a")) == "dup/a"
    assert statements.vector("dup/a").shape == (statements.dim,)
    assert np.allclose(statements.vector("dup/a") @ statements.vector("dup/b"), store.row("dup/a")[0].score, atol=1e-4)
    with pytest.raises(ShardvecError, match="No live statement"):
        statements.vector("no-such-id")


def test_the_kept_adder_takes_one_record_or_id_as_add_and_delete_do(published_copy):
    """`adder(data).delete("s1")` deleted the statements "s" and "1" (a string is an iterable of
    ids), and `.add(one_dict)` quarantined its keys: one record or id is one, as in add/delete."""
    data = published_copy
    adds = api.adder(data)
    assert adds.add([{"id": "s", "text": "rain"}, {"id": "1", "text": "more rain"}]).added == 2
    assert adds.add({"id": "s1", "text": "rain at last on the fire grounds"}).added == 1
    assert adds.delete("s1").deleted == 1
    store = api.open(data)
    assert "s" in store and "1" in store and "s1" not in store
    for wrong in ("some/file.jsonl", Path("some/file.jsonl"), b'{"id": "x"}'):
        with pytest.raises(shardvec.UsageError, match="not a file or text"):
            adds.add(wrong)
    with pytest.raises(shardvec.UsageError, match="decode"):
        adds.delete(b"s")
    with pytest.raises(AttributeError, match=r"shardvec\.adder\(data\)"):
        shardvec.Adder  # noqa: B018 - what replaced it is named


def test_the_server_names_ipv6_hosts_in_brackets_and_warns_only_beyond_loopback():
    from shardvec.server import open_to_others, url

    assert url("::1", 4200) == "http://[::1]:4200" and url("127.0.0.1", 4200) == "http://127.0.0.1:4200"
    assert [open_to_others(h) is None for h in ("127.0.0.1", "127.0.0.2", "::1", "localhost")] == [True] * 4
    assert all(open_to_others(h) for h in ("0.0.0.0", "::", "10.1.2.3", "example.org"))
