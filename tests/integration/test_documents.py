"""CURRENT and a version's manifest as typed documents (tasks/storage/documents.py): each loads
what it writes, what older code wrote (tests/golden/format-1) loads and writes back byte for
byte, and a hand-broken CURRENT is refused with one sentence naming the problem and the fix."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from shardvec.tasks.storage.atomic import write_json
from shardvec.tasks.storage.datadir import DataDir
from shardvec.tasks.storage.documents import (
    Additions,
    Current,
    DamagedCurrentError,
    DamagedManifestError,
    Manifest,
    NotPublishedError,
)
from shardvec.tasks.storage.layout import COMPONENTS

GOLDEN = Path(__file__).parents[1] / "golden" / "format-1"
V1, V2 = "20261207T163303-ee7906", "20261207T163412-371f20"


def _current(**changes) -> Current:
    base = Current(
        V2,
        {c: f"versions/{V2}/{c}" for c in COMPONENTS},
        {"partitions": ["2026-11-01"]},
        published_at="2026-12-07T16:34:29+00:00",
        ledger=4,
    )
    return Current(**{**base.__dict__, **changes})


CURRENTS = {
    "published": _current(),
    "first, no ledger yet": _current(ledger=0, published_at=None),
    "with additions": _current(additions=Additions(V2, (f"additions/{V2}/000001", f"additions/{V2}/000003"), 4, 205)),
    "additions before a segment": _current(additions=Additions(V2)),
    "rolled back": _current(rolled_back_from="20261208T010000-abcdef"),
}


@pytest.mark.parametrize("name", CURRENTS)
def test_current_loads_what_it_writes(tmp_path, name):
    current = CURRENTS[name]
    assert Current.from_json(current.to_json(), tmp_path) == current
    where = DataDir(tmp_path)
    where.swap(current)
    assert where.current() == current
    assert json.loads(where.layout.current.read_text()) == current.to_json()


def test_a_manifest_loads_what_it_writes(tmp_path):
    summary = {
        "created_by": "nightly",
        "mode": "update",
        "counts": {"statements": 3},
        "quality": {"x": 0.5},
        "config": {"tokenize": {"min_len": 3}},
        "code_version": "abc",
        "ledger": 7,
    }
    manifest = Manifest(
        V1,
        {c: f"versions/{V1}/{c}" for c in COMPONENTS},
        {"partitions": ["a"]},
        summary,
        {"models/lsi.gensim": "0" * 64},
    )
    assert Manifest.from_json(manifest.to_json()) == manifest
    write_json(tmp_path / "manifest.json", manifest.to_json())
    loaded = Manifest.load(tmp_path / "manifest.json")
    assert loaded == manifest and loaded.ledger == 7 and loaded.created_by == "nightly"
    assert loaded.tokenizer == {"min_len": 3}  # before manifests kept the tokenizer: the config's
    assert list(loaded.to_json()) == ["format", "version", "components", "watermark", *summary, "files"]


def test_the_golden_documents_load_and_write_back_byte_for_byte():
    current = DataDir(GOLDEN).require_current()
    assert current.version == V2 and current.ledger == 2 and current.partitions == ["2026-11-01", "2026-11-02"]
    assert current.additions.base == V2 and len(current.segments) == 2 and current.additions.next_seq == 3
    assert json.dumps(current.to_json(), indent=1) == (GOLDEN / "CURRENT").read_text()  # as write_json writes
    for version in (V1, V2):
        manifest = DataDir(GOLDEN).manifest(version)
        assert manifest.version == version and manifest.files
        path = GOLDEN / "versions" / version / "manifest.json"
        assert json.dumps(manifest.to_json(), indent=1) == path.read_text()


def test_a_data_directory_without_current_is_not_published(tmp_path):
    assert DataDir(tmp_path).current() is None
    with pytest.raises(NotPublishedError, match="Nothing is published .* run `shardvec nightly"):
        DataDir(tmp_path).require_current()


def _golden_json() -> dict:
    return json.loads((GOLDEN / "CURRENT").read_text())


def _without(key):
    def broken(doc):
        del doc[key]

    return broken


def _set(key, value):
    def broken(doc):
        doc[key] = value

    return broken


def _set_in(key, inner, value):
    def broken(doc):
        doc[key][inner] = value

    return broken


# each hand-broken CURRENT, and what the refusal says of it
BROKEN = {
    "missing format": (_without("format"), "has format None, this shardvec reads 1; upgrade shardvec"),
    "unknown format version": (_set("format", 2), "has format 2, this shardvec reads 1; upgrade shardvec"),
    "format as a string": (_set("format", "1"), "has format '1'"),
    "missing version": (_without("version"), "names None as its version, which is not a version id"),
    "version of another form": (_set("version", "latest"), "names 'latest' as its version, which is not a version id"),
    "version as a number": (_set("version", 20261207), "names 20261207 as its version"),
    "ledger as a string": (_set("ledger", "2"), "names '2' as its ledger position"),
    "ledger negative": (_set("ledger", -1), "names -1 as its ledger position"),
    "ledger as a boolean": (_set("ledger", True), "names True as its ledger position"),
    "missing components": (_without("components"), "does not name the components of a version"),
    "components as a list": (_set("components", []), "does not name the components of a version"),
    "a component missing": (lambda d: d["components"].pop("similarity"), "does not name the components"),
    "a component outside": (_set_in("components", "models", "../../etc"), "names '../../etc', which is not inside"),
    "a component absolute": (_set_in("components", "words", "/etc"), "names '/etc', which is not inside"),
    "a component as a number": (_set_in("components", "words", 3), "names 3, which is not inside"),
    "watermark as a list": (_set("watermark", ["2026-11-01"]), "names ['2026-11-01'] as its watermark"),
    "partitions as a string": (_set_in("watermark", "partitions", "2026-11-01"), "as its watermark"),
    "additions as a list": (_set("additions", ["x"]), "names ['x'] as its additions"),
    "additions without a base": (lambda d: d["additions"].pop("base"), "as its additions"),
    "segments as a string": (_set_in("additions", "segments", "additions/x"), "as its additions"),
    "next_seq as a string": (_set_in("additions", "next_seq", "3"), "as its additions"),
    "a segment outside": (_set_in("additions", "segments", ["versions/x"]), "names 'versions/x', which is not inside"),
}


@pytest.mark.parametrize("name", BROKEN)
def test_a_damaged_current_is_refused_saying_what_and_how_to_recover(tmp_path, name):
    shutil.copy(GOLDEN / "CURRENT", tmp_path / "CURRENT")
    where = DataDir(tmp_path)
    assert where.current() is not None  # whole, it loads: the refusal below is the hand-made damage
    breaks, says = BROKEN[name]
    doc = _golden_json()
    breaks(doc)
    write_json(where.layout.current, doc)
    with pytest.raises(DamagedCurrentError) as err:
        where.current()
    message = str(err.value)
    assert message.startswith(str(where.layout.current)) and says in message, message
    assert "shardvec backfill --mode rebuild" in message and "\n" not in message


@pytest.mark.parametrize("text", ["{", "", "\xff\xfe", "[1, 2]", "null"])
def test_a_current_that_is_no_json_document_is_refused(tmp_path, text):
    (tmp_path / "CURRENT").write_bytes(text.encode("latin-1"))
    with pytest.raises(DamagedCurrentError, match=r"(is not valid JSON|has format None).*backfill --mode rebuild"):
        DataDir(tmp_path).current()


def test_a_damaged_manifest_is_refused_saying_what_to_do(tmp_path):
    (tmp_path / "manifest.json").write_text('{"format": 1, "version": ')
    with pytest.raises(DamagedManifestError, match="is not valid JSON.*roll back to another kept version"):
        Manifest.load(tmp_path / "manifest.json")
    (tmp_path / "manifest.json").write_text('{"format": 1, "components": {}}')
    with pytest.raises(DamagedManifestError, match="is not a version manifest"):
        Manifest.load(tmp_path / "manifest.json")


def test_the_data_directory_owns_its_layout_and_locks(tmp_path):
    where = DataDir(str(tmp_path))
    assert where.root == tmp_path and where.layout.current == tmp_path / "CURRENT"
    with where.publish_lock() as lock:
        assert lock.path == where.layout.publish_lock
    with where.run_lock() as lock:
        assert lock.path == where.layout.run_lock and "pid" in lock.path.read_text()


BY_KEY = re.compile(
    r"""current(\[|\.get\()["']|\[["']components["']\]|\.get\(["']additions["']\)"""
    r"""|(?<![.\w])(?<!def )(read_current|require_current|read_manifest)\(|["']CURRENT["']\)\.read"""
)


def test_current_and_manifests_are_read_by_key_in_one_module_only():
    """Outside tasks/storage/documents.py, code reads CURRENT and the manifests as typed documents:
    a key read by string elsewhere is a second, unvalidated reading of the format."""
    root = Path(__file__).parents[2]
    found = []
    for folder in ("tasks", "flows", "shardvec", "config"):
        for path in sorted((root / folder).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if rel == "tasks/storage/documents.py" or "/.venv/" in rel:
                continue
            found += [
                f"{rel}:{i}: {line.strip()}"
                for i, line in enumerate(path.read_text().splitlines(), 1)
                if BY_KEY.search(line) and "index_dir" not in line
            ]
    assert found == [], "read these through DataDir(data).current() / .manifest(version):\n" + "\n".join(found)
