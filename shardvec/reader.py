"""Read what a deployment published, through CURRENT, without loading it into RAM.

Everything is memmapped (vectors, keys, the faiss IVF indexes' lists, similarity rows), so many
processes share one copy in the page cache, and a Store keeps what it mapped while open. The one
exception: the statements added since the version, whose vectors each reader copies into a small
index of its own (8 MB per 10,000 statements of 200 floats).
`similar` and `neighbours` ask the space's index (at the nprobe the nightly tuned to its target
recall; a version published with Annoy indexes is searched with Annoy at its search_k). The
statements added since the version are searched with its index: placed in its lists once per
segment, and scored when a query probes their list (with an Annoy index they are scanned exactly
and merged). `exact=True` scans everything. A Store stays on the version
it opened (`refresh()` moves it on), with one exception: shards are opened lazily, so once later publishes have pruned
its version (`publish.keep_versions`), a query that needs a file of it re-opens the version
CURRENT names and is answered from there.

A store pushed to an object store (`shardvec push --to s3://...`) is read the same way from a
local cache of its files (tasks/storage/remote.py `sync`): `open_store("s3://bucket/prefix")`.

Long because: the reader's one class answers every query of a published store (words,
statements, rows, search, refresh); its views and the search merge belong to it.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shardvec.errors import UsageError
from shardvec.tasks.search.index import SpaceIndex, index_manifest, open_index
from shardvec.tasks.search.embed import Embedder
from shardvec.tasks.storage.lookup import lookup
from shardvec.tasks.storage.datadir import DataDir
from shardvec.tasks.changes.segments import Segment, Statements
from shardvec.tasks.storage.spaces import Space, UnknownKeyError
from shardvec.tasks.inputs.tokenize import Tokenizer
from shardvec.tasks.search.topk import exact_topk, merge_topk

# A space this small (rows x dimensions: 4 MB of float32) is scanned exactly unless a query asks
# for the index: a scan costs about what the index does, at recall 1.0.
EXACT_MAX_CELLS = 1 << 20
# Up to this many hits in all (whatever the number of queries) are looked up row by row; more, per
# shard at once (one Arrow take each).
ROW_BY_ROW_HITS_MAX = 64


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


class WordVectors:
    """The word space as a reader sees it (`Store.words`): vectors by word or row, the words, and
    token lookup; read-only views of the memmap. Words are taken as stored (`Store.word`
    normalises them as the corpus was)."""

    def __init__(self, space: Space):
        self._space = space

    @property
    def dim(self) -> int:
        return self._space.dim

    @property
    def dtype(self) -> str:
        """As stored (float32, float16 or int8); vectors come out as float32."""
        return self._space.dtype

    @property
    def dir(self) -> Path:
        return self._space.dir

    def __len__(self) -> int:
        return len(self._space)

    def __contains__(self, word: str) -> bool:
        return word in self._space

    def keys(self):
        """The words in row order, streamed."""
        return self._space.keys()

    def key(self, row: int) -> str:
        return self._space.key(row)

    def find(self, word: str) -> int | None:
        return self._space.find(word)

    def find_many(self, words) -> np.ndarray:
        """Rows of `words`, -1 for a word not in the space."""
        return self._space.find_many(words)

    def vector(self, word: str) -> np.ndarray:
        return self._space.vector(word)

    def vector_at(self, row: int) -> np.ndarray:
        return self._space.vector_at(row)

    def vectors_at(self, rows) -> np.ndarray:
        return self._space.vectors_at(rows)

    def lookup(self, docs, pad: int = -1) -> tuple[np.ndarray, np.ndarray]:
        """Token sequences -> (row ids, vectors), padded (tasks/storage/lookup.py)."""
        return lookup(self._space, docs, pad)


class StatementVectors:
    """The live statements as a reader sees them (`Store.statements`), additions included: ids,
    texts and vectors by id or row; the searches and stored rows are the Store's."""

    def __init__(self, statements: Statements):
        self._statements = statements

    @property
    def dim(self) -> int:
        return self._statements.base.dim

    @property
    def dtype(self) -> str:
        """As the build stored them (float32, float16 or int8); vectors come out as float32."""
        return self._statements.base.dtype

    def __len__(self) -> int:
        """Live statements."""
        return self._statements.live

    def __contains__(self, statement_id: str) -> bool:
        return self._statements.find(statement_id) is not None

    def find(self, statement_id: str) -> int | None:
        """The row of a live statement (None: not live)."""
        return self._statements.find(statement_id)

    def key(self, row: int) -> str:
        return self._statements.key(row)

    def text(self, statement_id: str) -> str:
        return self._statements.text(self._row(statement_id))

    def vector(self, statement_id: str) -> np.ndarray:
        return self._statements.vectors_at(np.array([self._row(statement_id)]))[0]

    def _row(self, statement_id: str) -> int:
        r = self._statements.find(statement_id)
        if r is None:
            raise UnknownKeyError(f"No live statement with id {statement_id!r}.")
        return r


class Store:
    def __init__(self, data_dir: str | Path, remote: dict | None = None):
        """`remote`: {"url": ..., "cache": ..., **storage options} when `data_dir` is the local
        cache of an object store's data directory (`open_store("s3://...")`): `refresh` fetches first."""
        self.data = Path(data_dir).resolve()
        self.remote = remote
        # (segment prefix, its .arrow's inode, size and mtime, the index's sha256) -> the index's
        # list of each of the segment's statements
        self._placements: dict[tuple, np.ndarray] = {}
        self._reopen()

    def _reopen(self) -> None:
        for attempt in range(3):
            try:
                self._open()
                return
            except FileNotFoundError:  # CURRENT moved on while we opened what it named
                if attempt == 2:
                    raise

    def _open(self) -> None:
        self.current = DataDir(self.data).require_current()
        comp = {name: self.data / rel for name, rel in self.current.components.items()}
        self.version: str = self.current.version
        self._words = Space(comp["words"], keep_mapped=True)
        self._statements = Statements(self.data, self.current, keep_mapped=True)
        self.words = WordVectors(self._words)
        self.statements = StatementVectors(self._statements)
        self._paths = comp
        self._embedder: Embedder | None = None
        self._indexes: dict = {}
        live = {str(seg.prefix) for seg in self._statements.segments}
        self._placements = {key: lists for key, lists in self._placements.items() if key[0] in live}
        self.tokenizer = Tokenizer.from_settings(DataDir(self.data).manifest(self.version).tokenizer)
        self._index_manifests = {name: index_manifest(comp[f"{name}_index"]) for name in ("words", "statements")}
        # each index's recall/speed setting as the nightly tuned it: nprobe (faiss IVF; search_k of
        # a version indexed with Annoy)
        self.effort = {
            name: m["nprobe"] if m.get("format", 0) >= 3 else m["search_k"] for name, m in self._index_manifests.items()
        }

    # --- words -------------------------------------------------------------------------
    def word(self, word: str) -> str:
        """`word` as the build stored it: normalised as its tokenizer normalised the corpus
        ("Datei" -> "datei"; "Café" -> "cafe" with tokenize.deaccent)."""
        return self.tokenizer.normalise(word)

    @_reopens
    def vector(self, word: str) -> np.ndarray:
        """The word2vec vector of `word` (normalised as the corpus was; a read-only view of the memmap)."""
        return self._words.vector_at(self._word_row(word))

    @_reopens
    def neighbours(self, word: str, k: int = 10, exact: bool | None = None) -> list[Hit]:
        """The k words nearest to `word` (normalised as the corpus was) by cosine, best first:
        from the words' index (`exact=True`: a scan of every word)."""
        return self.neighbours_many([word], k, exact)[0]

    @_reopens
    def neighbours_many(self, words: list[str], k: int = 10, exact: bool | None = None) -> list[list[Hit]]:
        """`neighbours` of each word, in one pass (exact: one matrix product per block)."""
        _check_k(k)
        if isinstance(words, str):  # one word, not its letters
            words = [words]
        if not len(words):
            return []
        rows = np.array([self._word_row(w) for w in words], dtype=np.int64)
        return self._search("words", self._words.vectors_at(rows), k, exclude=rows, exact=exact)

    def lookup(self, docs, pad: int = -1) -> tuple[np.ndarray, np.ndarray]:
        """Token sequences -> (row ids, vectors) of the word space, padded, each token normalised as
        the corpus was (tasks/storage/lookup.py; `self.words.lookup` takes the words as they are)."""
        return lookup(self._words, docs, pad, normalise=self.word)

    def _word_row(self, word: str) -> int:
        key = self.word(word)
        row = self._words.find(key)
        if row is None:
            as_stored = f" (looked up as {key!r}, as the corpus was tokenized)" if key != word else ""
            raise UnknownKeyError(
                f"{word!r} has no vector{as_stored}: it is not in the word2vec vocabulary of version {self.version}."
            )
        return row

    # --- statements ----------------------------------------------------------------------
    @_reopens
    def embed(self, text: str) -> np.ndarray:
        """The LSI vector (unit length) a new text gets from the published models."""
        return self._embed([text])[0]

    def _embed(self, texts: list[str]) -> np.ndarray:
        if self._embedder is None:
            self._embedder = Embedder(self._paths["models"])
        return self._embedder.embed([self.tokenizer(t) for t in texts])

    @_reopens
    def similar(self, text: str, k: int = 10, exact: bool | None = None) -> list[Hit]:
        """The k live statements most similar to a new text, best first: from the statements'
        index and an exact scan of the additions since it was built (`exact=True`: a scan of
        every statement)."""
        return self.similar_many([text], k, exact)[0]

    @_reopens
    def similar_many(self, texts: list[str], k: int = 10, exact: bool | None = None) -> list[list[Hit]]:
        """`similar` of each text: one embedding of them all, one pass of the search."""
        _check_k(k)
        if isinstance(texts, str):  # one text, not its characters
            texts = [texts]
        return self.similar_vectors(self._embed(texts), k, exact) if len(texts) else []

    @_reopens
    def similar_vectors(self, vectors: np.ndarray, k: int = 10, exact: bool | None = None) -> list[list[Hit]]:
        """`similar` of each statement vector (rows of `vectors`, e.g. `embed`'s)."""
        _check_k(k)
        vecs = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if not vecs.size:
            return []
        known = np.flatnonzero(vecs.any(axis=1))  # a text of no known word is similar to nothing
        out: list[list[Hit]] = [[] for _ in vecs]
        if len(known):
            for i, hits in zip(known, self._search("statements", vecs[known], k, exclude=None, exact=exact)):
                out[i] = hits
        return out

    @_reopens
    def row(self, statement_id: str) -> list[Hit]:
        """The stored similarity row of a published statement: its top-k, self excluded."""
        rows, scores = self._statements.row(self._statement(statement_id))
        return [self._hit(self._statements, int(n), float(s)) for n, s in zip(rows, scores) if n >= 0]

    @_reopens
    def text(self, statement_id: str) -> str:
        return self._statements.text(self._statement(statement_id))

    @_reopens
    def __contains__(self, statement_id: str) -> bool:
        return self._statements.find(statement_id) is not None

    def __len__(self) -> int:
        """Live statements, additions included."""
        return self._statements.live

    def refresh(self) -> bool:
        """Move to what CURRENT names now (a newer version or more additions); True if it moved.
        A store opened from an object store first fetches its newest pushed version beside the
        one open (files already in the cache are not fetched again)."""
        if self.remote:
            from shardvec.tasks.storage import sync

            sync(**self.remote)
        latest = DataDir(self.data).require_current()
        if latest == self.current:
            return False
        self._reopen()
        return True

    # --- internals -------------------------------------------------------------------------
    def _statement(self, statement_id: str) -> int:
        r = self._statements.find(statement_id)
        if r is None:
            raise UnknownKeyError(f"No statement with id {statement_id!r} in version {self.version}.")
        return r

    def _search(
        self, name: str, vecs: np.ndarray, k: int, *, exclude: np.ndarray | None, exact: bool | None
    ) -> list[list[Hit]]:
        """Hits of each query vector; `exclude[i]`: query i's own row, never returned."""
        space = self._words if name == "words" else self._statements
        small = len(space) * self._base(name).dim <= EXACT_MAX_CELLS
        index = None if exact or (exact is None and small) else self._index(name)
        if index is None:
            rows, scores = exact_topk(space, vecs, k, exclude=exclude)
        else:
            rows, scores = index.search_many(vecs, k, effort=self.effort[name], exclude=exclude, drop=space.dead)
            if name == "statements" and self._statements.segments and not isinstance(index, SpaceIndex):
                # an Annoy index (format 2) cannot place additions: they are scanned exactly
                rows, scores = merge_topk(rows, scores, *exact_topk(self._statements.additions, vecs, k), k)
        return self._hits(space, rows, scores)

    def _index(self, name: str):
        """The space's index, mapped once; None for a version indexed per shard (scanned exactly)."""
        if name not in self._indexes:
            index = open_index(self._paths[f"{name}_index"], self._base(name).dim, self._index_manifests[name])
            if name == "statements" and isinstance(index, SpaceIndex):
                index.add([(seg.start, seg.vectors, self._placed(index, seg)) for seg in self._statements.segments])
            self._indexes[name] = index
        return self._indexes[name]

    def _placed(self, index: SpaceIndex, seg: Segment) -> np.ndarray:
        """The index's list of each statement of an addition segment, computed once per segment
        file and index (a segment never changes; a compacted one has a new name; but a rollback
        writes its version's segment numbers again, new files): a refresh places only the new."""
        arrow = os.stat(str(seg.prefix) + ".arrow")
        key = (str(seg.prefix), arrow.st_ino, arrow.st_size, arrow.st_mtime_ns, index.manifest["sha256"])
        if key not in self._placements:
            self._placements[key] = index.place(seg.vectors)
        return self._placements[key]

    def _base(self, name: str) -> Space:
        """The space a version's index covers: the words, or the statements without additions."""
        return self._words if name == "words" else self._statements.base

    def _hits(self, space, rows: np.ndarray, scores: np.ndarray) -> list[list[Hit]]:
        """The Hits of each query's (rows, scores), -1 rows left out. Many at once (a batch) are
        looked up in one Arrow take per shard instead of row by row."""
        if rows.size <= ROW_BY_ROW_HITS_MAX:  # a query or a few: Python lists beat numpy scalars
            return [
                [self._hit(space, r, s) for r, s in zip(rr, ss) if r >= 0]
                for rr, ss in zip(rows.tolist(), scores.tolist())
            ]
        found = rows >= 0
        flat = rows[found]
        keys = space.column_at("key", flat)
        texts = space.column_at("text", flat) if space is self._statements else [None] * len(flat)
        hits = [_hit(key, score, text) for key, score, text in zip(keys, scores[found].tolist(), texts)]
        ends = np.cumsum(found.sum(axis=1)).tolist()
        return [hits[a:b] for a, b in zip([0] + ends[:-1], ends)]

    def _hit(self, space, r: int, score: float) -> Hit:
        return _hit(space.key(r), score, space.text(r) if space is self._statements else None)


def _check_k(k) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise UsageError(f"k is how many hits to return: a whole number of at least 1, not {k!r}.")


def _hit(key: str, score: float, text: str | None) -> Hit:
    """A Hit as every path makes it: the score rounded to 6 places."""
    return Hit(key, round(score, 6), text)


def open_store(data_dir: str | Path, cache: str | Path | None = None, **options) -> Store:
    """Open the version CURRENT names in `data_dir`; or, for an object store URL (s3://bucket/prefix,
    where `shardvec push` put it), its newest pushed version, fetched into the local `cache`
    (default ~/.cache/shardvec/s3/bucket/prefix) and read from there. `options` go to fsspec
    (for s3fs: endpoint_url, key, secret...)."""
    from shardvec.tasks.storage import is_url

    if is_url(data_dir):
        from shardvec.tasks.storage import sync

        remote = {"url": str(data_dir), "cache": cache, **options}
        local, _entry = sync(**remote)
        return Store(local, remote)
    return Store(data_dir)
