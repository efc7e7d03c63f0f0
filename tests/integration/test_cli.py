"""The shardvec command: help everywhere, one-sentence errors, queries over a published store.
Run in this process (tests/runs.py's shardvec_cli: `shardvec.cli.main` under Typer's runner)."""

import sys

import pytest
from typer.testing import CliRunner

from shardvec.cli import app, query_app
from tests.runs import shardvec_cli as shardvec


@pytest.mark.parametrize(
    "typer_app,name",
    [(app, c.name or c.callback.__name__) for c in app.registered_commands]
    + [(query_app, c.name) for c in query_app.registered_commands],
)
def test_every_command_has_help(typer_app, name):
    result = CliRunner().invoke(typer_app, [name, "--help"])
    assert result.exit_code == 0
    doc = next(c.callback.__doc__ for c in typer_app.registered_commands if (c.name or c.callback.__name__) == name)
    assert doc and doc.split("\n")[0].strip()[:30] in " ".join(result.output.split())


def test_query_before_anything_is_published(tmp_path):
    r = shardvec("query", "word", "fire", "--data", str(tmp_path))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == (
        f"error: Nothing is published in {tmp_path} yet; run `shardvec nightly --data {tmp_path}` first."
    )


def test_invalid_configuration_is_one_sentence(tmp_path):
    r = shardvec("query", "word", "fire", env={"SHARDVEC_SIMILARITY_K": "-3"})
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: Invalid shardvec configuration (similarity.k: Input should be greater")


def test_bad_flag_value_is_refused_by_the_parser():
    r = shardvec("query", "word", "fire", "-k", "0")
    assert r.returncode == 2 and "Invalid value for '-k'" in r.stderr and "Traceback" not in r.stderr


def test_queries_over_the_published_store(published):
    data = published.data
    r = shardvec("query", "word", "fire", "-k", "3", "--data", str(data))
    assert r.returncode == 0 and len(r.stdout.strip().splitlines()) == 3
    r = shardvec("query", "id", "dup/a", "--data", str(data))
    assert r.returncode == 0 and r.stdout.splitlines()[1].split()[1] == "dup/b"
    r = shardvec("query", "text", "firefighters fight bushfires in new south wales", "-k", "2", "--data", str(data))
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 2
    r = shardvec("query", "word", "qqxzv", "--data", str(data))
    assert r.returncode == 2 and r.stderr.startswith("error: 'qqxzv' has no vector")


def test_query_verbs_are_the_readers_and_the_old_names_still_work(published):
    data = published.data
    store = __import__("shardvec").open(data)
    pairs = [
        (("neighbours", "fire", "-k", "3"), ("word", "fire", "-k", "3"), [h.key for h in store.neighbours("fire", 3)]),
        (("row", "dup/a"), ("id", "dup/a"), [h.key for h in store.row("dup/a")]),
        (
            ("similar", "bushfires in new south wales", "-k", "2"),
            ("text", "bushfires in new south wales", "-k", "2"),
            [h.key for h in store.similar("bushfires in new south wales", 2)],
        ),
    ]
    for verb, alias, keys in pairs:
        new, old = shardvec("query", *verb, "--data", str(data)), shardvec("query", *alias, "--data", str(data))
        assert new.returncode == 0 and new.stdout == old.stdout
        lines = new.stdout.splitlines()[1:] if verb[0] == "row" else new.stdout.splitlines()
        assert [line.split()[1] for line in lines] == keys


def test_python_verbs_match_the_cli(published_copy):
    """verify, versions, delete and rollback: the Python function and the CLI verb of one name
    say the same about the same data directory."""
    import shardvec as api
    from shardvec.tasks.storage.versions import NotPublishedError

    data = published_copy
    assert api.verify(data).whole and shardvec("verify", "--data", data).returncode == 0
    found = api.versions(data)
    listed = shardvec("versions", "--data", data).stdout.splitlines()
    assert [line.split()[1] for line in listed] == [v["version"] for v in found] and found[-1]["live"]
    api.delete(["dup/a"], data=data)
    assert "dup/a" not in api.open(data)
    assert shardvec("delete", "dup/b", "--data", data).returncode == 0 and "dup/b" not in api.open(data)
    with pytest.raises(NotPublishedError, match="was ever live") as refused:  # one version is kept
        api.rollback(data=data)
    out = shardvec("rollback", "--data", data)
    assert out.returncode == 2 and out.stderr.strip() == f"error: {refused.value}"


def test_import_and_export_vectors(tmp_path, published):
    import numpy as np
    from gensim.models import KeyedVectors
    from gensim.models.fasttext import load_facebook_vectors
    from gensim.test.utils import datapath

    import shardvec as sv

    r = shardvec(
        "import", datapath("lee_fasttext_new.bin"), "--name", "ft", "--dtype", "float16", "--data", str(tmp_path)
    )
    assert r.returncode == 0, r.stderr
    assert "fastText n-grams" in r.stdout and "as float16" in r.stdout
    ref, ours = load_facebook_vectors(datapath("lee_fasttext_new.bin")), sv.open_vectors(tmp_path, "ft")
    assert np.allclose(ours.vector("unseenwordish"), ref["unseenwordish"], atol=1e-5)  # n-grams stay float32
    assert np.allclose(ours.vector("night"), ref["night"], atol=2e-3 * np.abs(ref.vectors).max())
    r = shardvec("import", str(tmp_path / "nope.vec"), "--name", "x", "--data", str(tmp_path))
    assert r.returncode == 2 and r.stderr.startswith("error: No vector file at")

    data = published.data
    r = shardvec("export", "words", "--to", "word2vec-binary", "--out", str(tmp_path / "w.bin"), "--data", str(data))
    assert r.returncode == 0, r.stderr
    kv = KeyedVectors.load_word2vec_format(tmp_path / "w.bin", binary=True)
    words = sv.open(data).words
    assert len(kv) == len(words) and np.allclose(kv["fire"], words.vector("fire"))
    (tmp_path / "keys.txt").write_text("fire\nsmoke\n")
    r = shardvec(
        "export",
        "words",
        "--to",
        "projector",
        "--keys",
        str(tmp_path / "keys.txt"),
        "--out",
        str(tmp_path / "proj"),
        "--data",
        str(data),
    )
    assert r.returncode == 0 and (tmp_path / "proj" / "metadata.tsv").read_text() == "fire\nsmoke\n"
    r = shardvec("export", "nosuch", "--out", str(tmp_path / "x"), "--data", str(data))
    assert r.returncode == 2 and "No space named 'nosuch'" in r.stderr


def test_only_our_own_errors_become_one_line(published_copy, monkeypatch, capsys):
    import json
    from shardvec.cli import main

    data = published_copy
    monkeypatch.setattr(sys, "argv", ["shardvec", "query", "word", "zzzqqq", "--data", str(data)])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2 and capsys.readouterr().err.startswith("error: 'zzzqqq' has no vector")
    # a damaged index manifest is a bug-shaped KeyError inside, not a user's mistake: it keeps its traceback
    current = json.loads((data / "CURRENT").read_text())
    manifest = data / current["components"]["words_index"] / "manifest.json"
    manifest.write_text(json.dumps({k: v for k, v in json.loads(manifest.read_text()).items() if k != "nprobe"}))
    monkeypatch.setattr(sys, "argv", ["shardvec", "query", "word", "fire", "--data", str(data)])
    with pytest.raises(KeyError, match="nprobe"):
        main()
