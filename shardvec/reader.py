"""Read what a deployment published, through CURRENT, without loading it into RAM.

Everything is memmapped (vectors, keys, Annoy indexes, similarity rows), so many processes
share one copy in the page cache. A Store stays on the version it opened (`refresh()` moves
it on), with one exception: shards are opened lazily, so once later publishes have pruned
its version (`publish.keep_versions`), a query that needs a file of it re-opens the version
CURRENT names and is answered from there.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shardvec.tasks.index import ShardedIndex
from shardvec.tasks.embed import Embedder
from shardvec.tasks.layout import Layout
from shardvec.tasks.lookup import lookup
from shardvec.tasks.publish import require_current
from shardvec.tasks.segments import Statements
from shardvec.tasks.store import Space, UnknownKeyError
from shardvec.tasks.tokenize import Tokenizer
from shardvec.tasks.topk import exact_topk

# Up to this many rows a one-off query scans the memmap exactly (fast enough, recall 1.0);
# above it, it asks the Annoy indexes.
EXACT_MAX_ROWS = 2_000_000


@dataclass(frozen=True)
class Hit:
    key: str
    score: float
    text: str | None = None


def _reopens(method):
    """Answer from the version CURRENT names now when the open one lost a file because CURRENT
    moved on (its folder pruned after newer publishes); a file missing from the live version
    is still an error."""
    @functools.wraps(method)
    def query(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except OSError:
            if not self.refresh():
                raise
        return method(self, *args, **kwargs)
    return query


class Store:
    def __init__(self, data_dir: str | Path):
        self.data = Path(data_dir).resolve()
        for attempt in range(3):
            try:
                self._open()
                return
            except FileNotFoundError:  # CURRENT moved on while we opened what it named
                if attempt == 2:
                    raise

    def _open(self) -> None:
        self.current = require_current(self.data)
        comp = {name: self.data / rel for name, rel in self.current["components"].items()}
        self.version: str = self.current["version"]
        self.words = Space(comp["words"])
        self.statements = Statements(self.data, self.current)
        self._paths = comp
        self._embedder: Embedder | None = None
        self._indexes: dict[str, ShardedIndex] = {}
        self.tokenizer = Tokenizer.of_manifest(_json(Layout(self.data).version(self.version).manifest))
        self.search_k = _json(comp["words_index"] / "manifest.json")["search_k"]

    # --- words -------------------------------------------------------------------------
    def word(self, word: str) -> str:
        """`word` as the build stored it: normalised as its tokenizer normalised the corpus
        ("Datei" -> "datei"; "Café" -> "cafe" with tokenize.deaccent)."""
        return self.tokenizer.normalise(word)

    @_reopens
    def vector(self, word: str) -> np.ndarray:
        """The word2vec vector of `word` (normalised as the corpus was; a read-only view of the memmap)."""
        return self.words.vector_at(self._word_row(word))

    @_reopens
    def neighbours(self, word: str, k: int = 10, exact: bool | None = None) -> list[Hit]:
        """The k words nearest to `word` (normalised as the corpus was) by cosine, best first."""
        row = self._word_row(word)
        return self._search("words", self.words.vector_at(row), k, exclude=row, exact=exact)

    def lookup(self, docs, pad: int = -1) -> tuple[np.ndarray, np.ndarray]:
        """Token sequences -> (row ids, vectors) of the word space, padded, each token normalised as
        the corpus was (tasks/lookup.py; `self.words.lookup` takes the keys as they are)."""
        return lookup(self.words, docs, pad, normalise=self.word)

    def _word_row(self, word: str) -> int:
        key = self.word(word)
        row = self.words.find(key)
        if row is None:
            as_stored = f" (looked up as {key!r}, as the corpus was tokenized)" if key != word else ""
            raise UnknownKeyError(f"{word!r} has no vector{as_stored}: it is not in the word2vec vocabulary of "
                                  f"version {self.version}.")
        return row

    # --- statements ----------------------------------------------------------------------
    @_reopens
    def embed(self, text: str) -> np.ndarray:
        """The LSI vector (unit length) a new text gets from the published models."""
        if self._embedder is None:
            self._embedder = Embedder(self._paths["models"])
        return self._embedder.embed([self.tokenizer(text)])[0]

    @_reopens
    def similar(self, text: str, k: int = 10, exact: bool | None = None) -> list[Hit]:
        """The k published statements most similar to a new text."""
        vec = self.embed(text)
        if not vec.any():
            return []
        return self._search("statements", vec, k, exclude=-1, exact=exact)

    @_reopens
    def row(self, statement_id: str) -> list[Hit]:
        """The stored similarity row of a published statement: its top-k, self excluded."""
        rows, scores = self.statements.row(self._statement(statement_id))
        return [self._hit(self.statements, int(n), float(s)) for n, s in zip(rows, scores) if n >= 0]

    @_reopens
    def text(self, statement_id: str) -> str:
        return self.statements.text(self._statement(statement_id))

    @_reopens
    def __contains__(self, statement_id: str) -> bool:
        return self.statements.find(statement_id) is not None

    def __len__(self) -> int:
        """Live statements, additions included."""
        return self.statements.live

    def refresh(self) -> bool:
        """Move to what CURRENT names now (a newer version or more additions); True if it moved."""
        latest = require_current(self.data)
        if latest == self.current:
            return False
        self.__init__(self.data)
        return True

    # --- internals -------------------------------------------------------------------------
    def _statement(self, statement_id: str) -> int:
        r = self.statements.find(statement_id)
        if r is None:
            raise UnknownKeyError(f"No statement with id {statement_id!r} in version {self.version}.")
        return r

    def _search(self, name: str, vec: np.ndarray, k: int, *, exclude: int, exact: bool | None) -> list[Hit]:
        space = self.words if name == "words" else self.statements
        if exact is None:
            exact = len(space) <= EXACT_MAX_ROWS
        if name == "statements" and not exact and self.statements.segments:
            exact = True  # the Annoy indexes do not cover additions; an exact scan does
        if exact:
            rows, scores = exact_topk(space, vec[None, :], k, exclude=np.array([exclude]))
            rows, scores = rows[0], scores[0]
        else:
            if name not in self._indexes:
                self._indexes[name] = ShardedIndex(self._paths[f"{name}_index"], getattr(space, "base", space))
            rows, scores = self._indexes[name].search(np.asarray(vec), k, search_k=self.search_k, exclude=exclude)
        return [self._hit(space, int(r), float(s)) for r, s in zip(rows, scores) if r >= 0]

    def _hit(self, space, r: int, score: float) -> Hit:
        text = space.text(r) if space is self.statements else None
        return Hit(space.key(r), round(score, 6), text)


def _json(path: Path) -> dict:
    import json
    return json.loads(Path(path).read_text())


def open_store(data_dir: str | Path) -> Store:
    """Open the version CURRENT names in `data_dir`."""
    return Store(data_dir)
