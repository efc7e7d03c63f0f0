"""Where everything lives in a data directory, named once.

    corpus/<partition>/*             input partitions, dropped in by the user (tasks/inputs/corpus.py)
    inbox/, inbox/.done/             files waiting to be added, and those applied (tasks/changes/intake.py)
    cache/tokens/                    each input file tokenized once (tasks/inputs/tokenize.py)
    versions/<id>/                   one immutable version: `VersionLayout` below
    CURRENT                          names the live version (tasks/storage/documents.py owns the document)
    versions.live                    every version made live, one id a line (tasks/storage/versions.py)
    ledger/                          every acknowledged add, replace and delete (tasks/storage/ledger.py)
    additions/<version>/<seq>.*      segments of adds and deletes on top of a version (tasks/changes/segments.py)
    quarantine/                      every rejected input, byte for byte, and why
    vectors/<name>                   vectors brought in by `shardvec import` (tasks/models/vectors_io.py)
    reports/<run>/                   each run's report.json and Dask performance report
    history.jsonl                    one line per run: its quality and status (tasks/quality/evaluation.py)
    .runs/                           the runs at work on it (tasks/storage/runs.py)
    .run.lock, .publish.lock         one run at a time; CURRENT changes one at a time

Plain paths, no I/O: the modules named above read and write what they own through these.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# what a version publishes, each a folder CURRENT names relative to the data directory
COMPONENTS = ("models", "words", "statements", "words_index", "statements_index", "similarity")


def _at(*parts: str, doc: str | None = None) -> property:
    """A path below the layout's root."""
    return property(lambda self: self.root.joinpath(*parts), doc=doc)


@dataclass(frozen=True)
class VersionLayout:
    """versions/<id>/: what one build writes, then publishes as a whole."""

    root: Path

    models = _at("models", doc="dictionary, LSI, word2vec (gensim) and their plain exports (terms/, idf.npy)")
    words = _at("spaces", "words")
    statements = _at("spaces", "statements")
    words_index = _at("index", "words")
    statements_index = _at("index", "statements")
    similarity = _at("similarity")
    manifest = _at("manifest.json")
    work = _at("work", doc="the build's scratch, removed before the version is published")
    plan = _at("work", "plan.npy", doc="which cached record each statement row holds (tasks/models/statements.py)")
    rows_work = _at("work", "rows", doc="the similarity rows' candidates before their merge")

    def lsi_part(self, part: int) -> Path:
        return self.work / f"lsi-part-{part}"

    def components(self) -> dict[str, Path]:
        return {name: getattr(self, name) for name in COMPONENTS}


@dataclass(frozen=True)
class Layout:
    """The data directory `root`, and where each thing in it lives."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    current = _at("CURRENT")
    live_log = _at("versions.live", doc="every version made live, appended just before its swap")
    corpus = _at("corpus")
    inbox = _at("inbox")
    inbox_done = _at("inbox", ".done")
    inbox_progress = _at(
        "inbox", ".progress", doc="how many records of each inbox file are acknowledged, while it is drained"
    )
    stdin_spool = _at("inbox", ".stdin", doc="what `shardvec add -` reads from stdin, until it is applied")
    tokens = _at("cache", "tokens")
    versions = _at("versions")
    ledger = _at("ledger")
    additions = _at("additions")
    quarantine = _at("quarantine")
    quarantine_additions = _at(
        "quarantine", "additions", doc="records refused by `shardvec add`, the Python API and the inbox's files"
    )
    quarantine_inbox = _at(
        "quarantine", "inbox", doc="inbox entries refused whole (links, unknown formats, unreadable files)"
    )
    vectors = _at("vectors")
    reports = _at("reports")
    history = _at("history.jsonl")
    runs = _at(".runs")
    run_lock = _at(".run.lock")
    publish_lock = _at(".publish.lock")

    def version(self, version: str) -> VersionLayout:
        return VersionLayout(self.versions / version)

    def segments_of(self, version: str) -> Path:
        """the segments of adds and deletes made on top of `version`"""
        return self.additions / version

    def segment(self, version: str, seq: int) -> str:
        """A segment's path prefix (.arrow, .npz), relative to the data directory, as CURRENT names it."""
        return f"{self.additions.name}/{version}/{seq:06d}"


def not_a_link(folder: Path, error: type[Exception]) -> Path:
    """`folder`, refused with `error` if it is a symlink: nothing outside the data directory is
    written through one."""
    if Path(folder).is_symlink():
        raise error(f"{folder} is a symlink; make it a folder inside the data directory and move its files into it.")
    return Path(folder)
