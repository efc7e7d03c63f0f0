"""Where everything lives in a data directory, named once.

    corpus/<partition>/*             input partitions, dropped in by the user (tasks/corpus.py)
    inbox/, inbox/.done/             files waiting to be added, and those applied (tasks/additions.py)
    cache/tokens/                    each input file tokenized once (tasks/tokenize.py)
    versions/<id>/                   one immutable version: `VersionLayout` below
    CURRENT                          names the live version (tasks/publish.py owns the document)
    ledger/                          every acknowledged add, replace and delete (tasks/ledger.py)
    additions/<version>/<seq>.*      segments of adds and deletes on top of a version
    quarantine/                      every rejected input, byte for byte, and why
    vectors/<name>                   vectors brought in by `shardvec import` (tasks/vectors_io.py)
    reports/<run>/                   each run's report.json and Dask performance report
    history.jsonl                    one line per run: its quality and status (tasks/quality.py)
    .runs/                           the runs at work on it (tasks/runs.py)
    .run.lock, .publish.lock         one run at a time; CURRENT changes one at a time

Plain paths, no I/O: the modules named above read and write what they own through these.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# what a version publishes, each a folder CURRENT names relative to the data directory
COMPONENTS = ("models", "words", "statements", "words_index", "statements_index", "similarity")


@dataclass(frozen=True)
class VersionLayout:
    """versions/<id>/: what one build writes, then publishes as a whole."""

    dir: Path

    @property
    def models(self) -> Path:
        """dictionary, LSI, word2vec (gensim) and their plain exports (terms/, idf.npy)"""
        return self.dir / "models"

    @property
    def words(self) -> Path:
        return self.dir / "spaces" / "words"

    @property
    def statements(self) -> Path:
        return self.dir / "spaces" / "statements"

    @property
    def words_index(self) -> Path:
        return self.dir / "index" / "words"

    @property
    def statements_index(self) -> Path:
        return self.dir / "index" / "statements"

    @property
    def similarity(self) -> Path:
        return self.dir / "similarity"

    @property
    def manifest(self) -> Path:
        return self.dir / "manifest.json"

    @property
    def work(self) -> Path:
        """the build's scratch, removed before the version is published"""
        return self.dir / "work"

    @property
    def plan(self) -> Path:
        """which cached record each statement row holds (tasks/statements.py)"""
        return self.work / "plan.npy"

    @property
    def rows_work(self) -> Path:
        """the similarity rows' candidates before their merge"""
        return self.work / "rows"

    def lsi_part(self, part: int) -> Path:
        return self.work / f"lsi-part-{part}"

    def components(self) -> dict[str, Path]:
        return {name: getattr(self, name) for name in COMPONENTS}


@dataclass(frozen=True)
class Layout:
    """The data directory `data`, and where each thing in it lives."""

    data: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", Path(self.data))

    @property
    def current(self) -> Path:
        return self.data / "CURRENT"

    @property
    def corpus(self) -> Path:
        return self.data / "corpus"

    @property
    def inbox(self) -> Path:
        return self.data / "inbox"

    @property
    def inbox_done(self) -> Path:
        return self.inbox / ".done"

    @property
    def stdin_spool(self) -> Path:
        """where `shardvec add -` keeps what it reads from stdin until it is applied"""
        return self.inbox / ".stdin"

    @property
    def tokens(self) -> Path:
        return self.data / "cache" / "tokens"

    @property
    def versions(self) -> Path:
        return self.data / "versions"

    def version(self, version: str) -> VersionLayout:
        return VersionLayout(self.versions / version)

    @property
    def ledger(self) -> Path:
        return self.data / "ledger"

    @property
    def additions(self) -> Path:
        return self.data / "additions"

    def segments_of(self, version: str) -> Path:
        """the segments of adds and deletes made on top of `version`"""
        return self.additions / version

    def segment(self, version: str, seq: int) -> str:
        """A segment's path prefix (.arrow, .npz), relative to the data directory, as CURRENT names it."""
        return f"{self.additions.name}/{version}/{seq:06d}"

    @property
    def quarantine(self) -> Path:
        return self.data / "quarantine"

    @property
    def quarantine_additions(self) -> Path:
        """records refused by `shardvec add`, the API and the inbox's files"""
        return self.quarantine / "additions"

    @property
    def quarantine_inbox(self) -> Path:
        """inbox entries refused whole (links, unknown formats, unreadable files)"""
        return self.quarantine / "inbox"

    @property
    def vectors(self) -> Path:
        return self.data / "vectors"

    @property
    def reports(self) -> Path:
        return self.data / "reports"

    @property
    def history(self) -> Path:
        return self.data / "history.jsonl"

    @property
    def runs(self) -> Path:
        return self.data / ".runs"

    @property
    def run_lock(self) -> Path:
        return self.data / ".run.lock"

    @property
    def publish_lock(self) -> Path:
        return self.data / ".publish.lock"
