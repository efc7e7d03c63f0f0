"""Vectors in and out of shardvec's on-disk spaces, streamed (RAM holds one batch).

In: word2vec text and binary, GloVe text, and fastText `.bin`, whose n-gram bucket matrix is
copied beside the word vectors (`ngrams.npy`, memmapped) so an out-of-vocabulary word gets the
vector fastText would give. Out: word2vec text or binary (what gensim's KeyedVectors loads),
a gensim KeyedVectors, and the TensorBoard projector's files for a chosen subset.

`import_vectors` publishes like the nightly: it builds a new directory, fsyncs it, then swaps a
symlink (`DATA/vectors/<name>`) to it atomically, so readers see the old vectors or the new.

Long because: import and export share the formats' readers and writers and the vocabulary
checks; split, each direction would restate them.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from shardvec.tasks.storage.atomic import atomic_path, fsync_dir, fsync_tree, write_json
from shardvec.tasks.inputs.corpus import BadInputError, Quarantine, SourceFile
from shardvec.tasks.storage.layout import Layout
from shardvec.tasks.storage.spaces import DTYPES, Space, SpaceWriter, UnknownKeyError, map_npy, convert_space

FORMATS = ("word2vec", "word2vec-binary", "glove", "fasttext")
FASTTEXT_MAGIC = 793712314
BATCH = 16384


def detect_format(path: Path) -> str:
    """fastText by its magic number (or a .bin without a word2vec header: fastText's older
    format); word2vec by its "count dim" header line, binary if the first record is not text;
    GloVe otherwise."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) == 8 and struct.unpack("@2i", head)[0] == FASTTEXT_MAGIC:
            return "fasttext"
        f.seek(0)
        first = f.readline(1 << 16).split()
        if len(first) == 2 and all(x.isdigit() for x in first):
            sample = f.read(int(first[1]) * 4 + 256)
            try:
                line = sample.split(b"\n", 1)[0].decode("utf-8").rstrip()
                return "word2vec" if len(line.split(" ")) == int(first[1]) + 1 else "word2vec-binary"
            except UnicodeDecodeError:
                return "word2vec-binary"
    return "fasttext" if Path(path).suffix == ".bin" else "glove"


def import_vectors(
    src: Path, data: Path, name: str, *, fmt: str = "auto", dtype: str = "float32", rows_per_shard: int = 500_000
) -> dict:
    """Import a vector file as DATA/vectors/<name> (a space; fastText adds its n-grams)."""
    src, data = Path(src), Path(data)
    if not src.is_file():
        raise BadInputError(f"No vector file at {src}.")
    if dtype not in DTYPES:
        raise BadInputError(f"--dtype {dtype} is not one of {', '.join(DTYPES)}.")
    fmt = detect_format(src) if fmt == "auto" else fmt
    if fmt not in FORMATS:
        raise BadInputError(f"--format {fmt} is not one of auto, {', '.join(FORMATS)}.")
    if not name or "/" in name or name.startswith("."):
        raise BadInputError(f"{name!r} cannot name vectors; use letters, digits, - and _.")
    root = _vectors_root(data)
    _check_link(root / name, root)
    build = root / f".{name}-{secrets.token_hex(4)}"
    st = src.stat()
    q = Quarantine(Layout(data).quarantine, SourceFile("", src.name, fmt, st.st_size, st.st_mtime_ns, root="vectors"))
    try:
        raw = build / "float32" if dtype != "float32" else build
        summary = _write(src, fmt, raw, rows_per_shard, q)
        if dtype != "float32":  # the word vectors shrink; fastText's n-gram rows stay float32
            convert_space(raw, build, dtype)
            if summary.get("subwords"):
                os.replace(raw / summary["subwords"]["file"], build / summary["subwords"]["file"])
            shutil.rmtree(raw)
        if summary.get("subwords"):
            manifest = json.loads((build / "manifest.json").read_text())
            write_json(build / "manifest.json", {**manifest, "subwords": summary["subwords"]})
        fsync_tree(build)
        q.commit()
        _swap_link(root / name, build)
    except BaseException:
        q.discard()
        shutil.rmtree(build, ignore_errors=True)
        raise
    return {
        "vectors": str(root / name),
        "format": fmt,
        "dtype": dtype,
        "words": summary["words"],
        "dim": summary["dim"],
        "quarantined": q.counts.records,
        "subwords": bool(summary.get("subwords")),
    }


def _vectors_root(data: Path) -> Path:
    """DATA/vectors, refused if it leads out of the data directory (a link elsewhere)."""
    root = Layout(data).vectors
    if not root.resolve().is_relative_to(data.resolve()):
        raise BadInputError(
            f"{root} leads out of the data directory; replace the link with a folder of the data directory."
        )
    return root


def _check_link(link: Path, root: Path) -> None:
    """A re-import removes what `link` pointed at: only a folder shardvec made in `root` may be it."""
    target = link.resolve()
    if link.is_symlink() and (target.parent != root.resolve() or not target.name.startswith(f".{link.name}-")):
        raise BadInputError(
            f"{link} is a link to {target}, which shardvec did not make; "
            "remove the link or import under another --name."
        )


def _swap_link(link: Path, target: Path) -> None:
    """Point `link` at `target` atomically (rename of a new symlink), then drop the old target."""
    old = link.resolve() if link.is_symlink() else None
    if link.exists() and not link.is_symlink():
        raise BadInputError(f"{link} is a directory shardvec did not make; move it away first.")
    tmp = link.with_name(f".{link.name}.link")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target.name)
    os.replace(tmp, link)
    fsync_dir(link.parent)
    if old is not None and old != target.resolve():
        shutil.rmtree(old, ignore_errors=True)


def _write(src: Path, fmt: str, out: Path, rows_per_shard: int, q: Quarantine) -> dict:
    if fmt == "fasttext":
        return _write_fasttext(src, out, rows_per_shard)
    rows = _binary_rows(src, q) if fmt == "word2vec-binary" else _text_rows(src, q, header=fmt == "word2vec")
    dim = next(rows)
    writer = SpaceWriter(out, dim, rows_per_shard)
    n = 0
    for keys, vecs in _batches(rows, dim):
        writer.append(keys, vecs)
        n += len(keys)
    if n == 0:
        raise BadInputError(f"{src}: no vector could be read; see the quarantine for why.")
    writer.close(normalized=False, meta={"what": f"imported {fmt} vectors", "source": src.name})
    return {"words": n, "dim": dim}


def _batches(rows: Iterator[tuple[str, np.ndarray]], dim: int) -> Iterator[tuple[list[str], np.ndarray]]:
    keys, vecs = [], np.empty((BATCH, dim), dtype=np.float32)
    for key, vec in rows:
        vecs[len(keys)] = vec
        keys.append(key)
        if len(keys) == BATCH:
            yield keys, vecs
            keys, vecs = [], np.empty((BATCH, dim), dtype=np.float32)
    if keys:
        yield keys, vecs[: len(keys)]


def _text_rows(src: Path, q: Quarantine, header: bool):
    """Yields the dimension, then (word, vector) per good line; bad lines go to quarantine."""
    with open(src, "rb") as f:
        dim = None
        if header:
            first = f.readline().split()
            if len(first) != 2 or not all(x.isdigit() for x in first):
                raise BadInputError(f"{src}:1: expected a 'count dimension' header line, found {first[:3]!r}.")
            dim = int(first[1])
            yield dim
        for line_no, raw in enumerate(f, 2 if header else 1):
            if not raw.strip():
                continue
            try:
                parts = raw.decode("utf-8").rstrip().split(" ")
            except UnicodeDecodeError as exc:
                q.reject(line_no, f"not UTF-8: {exc.reason} at byte {exc.start}", raw=raw)
                continue
            if dim is None:  # GloVe: the first line tells the dimension
                dim = len(parts) - 1
                yield dim
            if len(parts) != dim + 1:
                q.reject(line_no, f"expected a word and {dim} numbers, found {len(parts) - 1} fields", raw=raw)
                continue
            try:
                vec = np.asarray(parts[1:], dtype=np.float32)
            except ValueError:
                q.reject(line_no, "a field is not a number", raw=raw)
                continue
            yield parts[0], vec
    if dim is None:
        raise BadInputError(f"{src} holds no vectors.")


def _binary_rows(src: Path, q: Quarantine):
    """word2vec's C binary format: a "count dim" line, then per word its UTF-8 bytes, a space and
    dim little-endian float32s (newlines between records are tolerated, as gensim does)."""
    with open(src, "rb") as f:
        first = f.readline().split()
        if len(first) != 2 or not all(x.isdigit() for x in first):
            raise BadInputError(f"{src}:1: expected a 'count dimension' header line, found {first[:3]!r}.")
        count, dim = int(first[0]), int(first[1])
        yield dim
        width, buf, pos = dim * 4, b"", 0
        for i in range(count):
            while True:
                space = buf.find(b" ", pos)
                if space != -1 and len(buf) - space - 1 >= width:
                    break
                more = f.read(1 << 20)
                if not more:
                    raise BadInputError(f"{src}: record {i + 1} of {count} is cut short; the file is truncated.")
                buf, pos = buf[pos:] + more, 0
            word = buf[pos:space].lstrip(b"\n")
            vec = np.frombuffer(buf, dtype="<f4", count=dim, offset=space + 1)
            record = buf[pos : space + 1 + width]
            pos = space + 1 + width
            try:
                yield word.decode("utf-8"), vec
            except UnicodeDecodeError as exc:
                q.reject(i + 1, f"word not UTF-8: {exc.reason} at byte {exc.start}", raw=record)


def _write_fasttext(src: Path, out: Path, rows_per_shard: int) -> dict:
    """Word vectors composed as fastText composes them (its own row plus its n-grams' rows,
    averaged, as gensim's adjust_vectors), and the n-gram rows copied as they are."""
    from gensim.models import _fasttext_bin as ftb
    from gensim.models.fasttext import ft_ngram_hashes

    with open(src, "rb") as fin:
        magic, _version = ftb._struct_unpack(fin, "@2i")
        new = magic == FASTTEXT_MAGIC  # the older format starts with dim and ws instead
        header = {
            name: ftb._struct_unpack(fin, fmt)[0]
            for name, fmt in (ftb._NEW_HEADER_FORMAT if new else ftb._OLD_HEADER_FORMAT)
        }
        if not (0 < header["minn"] <= header["maxn"] < 100 or header["maxn"] == 0):
            raise BadInputError(f"{src}: not a fastText .bin (its header is not one); give --format.")
        try:
            vocab, _size, nwords, _tokens = ftb._load_vocab(fin, new)
        except NotImplementedError:
            raise BadInputError(
                f"{src}: a supervised fastText model (it has labels); only word vectors "
                "(fasttext skipgram or cbow) can be imported."
            ) from None
        if new and ftb._struct_unpack(fin, "@?")[0]:
            raise BadInputError(f"{src}: quantized fastText models (.ftz) cannot be imported; use the .bin.")
        rows, dim = ftb._struct_unpack(fin, "@2q")
        offset = fin.tell()
    bucket, minn, maxn = header["bucket"], header["minn"], header["maxn"]
    if rows != nwords + bucket:
        raise BadInputError(f"{src}: {rows} input rows for {nwords} words and {bucket} buckets; the file is damaged.")
    matrix = np.memmap(src, dtype=np.float32, mode="r", offset=offset, shape=(rows, dim))
    words = list(vocab)[:nwords]
    writer = SpaceWriter(out, dim, rows_per_shard)
    for start in range(0, nwords, BATCH):
        keys = words[start : start + BATCH]
        vecs = np.array(matrix[start : start + len(keys)])
        if bucket:
            for i, word in enumerate(keys):
                hashes = np.asarray(ft_ngram_hashes(word, minn, maxn, bucket), dtype=np.int64)
                vecs[i] = (vecs[i] + matrix[nwords + hashes].sum(axis=0)) / (len(hashes) + 1)
        writer.append(keys, vecs)
    writer.close(normalized=False, meta={"what": "imported fastText word vectors", "source": src.name})
    subwords = None
    if bucket:
        ngrams = np.lib.format.open_memmap(out / "ngrams.npy", mode="w+", dtype=np.float32, shape=(bucket, dim))
        for start in range(0, bucket, BATCH * 4):
            ngrams[start : start + BATCH * 4] = matrix[nwords + start : nwords + min(bucket, start + BATCH * 4)]
        ngrams.flush()
        del ngrams
        subwords = {"file": "ngrams.npy", "minn": minn, "maxn": maxn, "bucket": bucket}
    return {"words": nwords, "dim": dim, "subwords": subwords}


class Vectors:
    """Word vectors read from disk: a space, plus fastText's n-grams when it has them.

    >>> v = Vectors("data/vectors/crawl"); v.vector("cat"); v.vector("catlike")  # OOV via n-grams
    """

    def __init__(self, path: Path):
        self.space = Space(path)
        self.dim = self.space.dim
        sub = self.space.manifest.get("subwords")
        self.ngrams = map_npy(self.space.dir / sub["file"]) if sub else None
        self.minn, self.maxn, self.bucket = (sub["minn"], sub["maxn"], sub["bucket"]) if sub else (0, 0, 0)

    def __contains__(self, word: str) -> bool:
        return self.space.find(word) is not None

    def __len__(self) -> int:
        return len(self.space)

    def vector(self, word: str) -> np.ndarray:
        """The word's vector; for a word not in the vocabulary, the mean of its n-gram rows (as
        fastText), or KeyError when the space has no n-grams."""
        r = self.space.find(word)
        if r is not None:
            return self.space.vector_at(r)
        if self.ngrams is None:
            raise UnknownKeyError(
                f"{word!r} is not in the vocabulary (and these vectors have no n-grams for new words)."
            )
        from gensim.models.fasttext import ft_ngram_hashes

        hashes = ft_ngram_hashes(word, self.minn, self.maxn, self.bucket)
        if not hashes:
            return np.zeros(self.dim, dtype=np.float32)
        return self.ngrams[np.asarray(hashes, dtype=np.int64)].sum(axis=0) / len(hashes)

    def vectors(self, words: Sequence[str]) -> np.ndarray:
        """Vectors of many words: out-of-vocabulary ones from their n-grams, or zeros when the
        space has none."""
        rows = self.space.find_many(words)
        out = self.space.vectors_at(np.maximum(rows, 0))
        for i in np.flatnonzero(rows < 0):
            out[i] = self.vector(words[i]) if self.ngrams is not None else 0.0
        return out


def export_word2vec(space_dir: Path, out: Path, *, binary: bool = False, limit: int | None = None) -> dict:
    """The space in word2vec format (text or binary), rows in order, streamed; written under a
    temporary name and renamed."""
    space = Space(space_dir)
    n = len(space) if limit is None else min(limit, len(space))
    out = Path(out)
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        f.write(f"{n} {space.dim}\n".encode())
        for start in range(0, n, BATCH):
            vecs = space.vectors_at(np.arange(start, min(n, start + BATCH)))
            for r, vec in enumerate(vecs, start):
                key = space.key(r)
                if binary:
                    f.write(key.encode("utf-8") + b" " + vec.astype("<f4").tobytes())
                else:
                    f.write((key + " " + " ".join(map(repr, vec.tolist())) + "\n").encode("utf-8"))
    return {"path": str(out), "rows": n, "dim": space.dim, "binary": binary}


def to_keyed_vectors(space_dir: Path, limit: int | None = None):
    """A gensim KeyedVectors of the space (in RAM: for handing to gensim-based code)."""
    from gensim.models import KeyedVectors

    space = Space(space_dir)
    n = len(space) if limit is None else min(limit, len(space))
    kv = KeyedVectors(space.dim, count=n, dtype=np.float32)
    for start in range(0, n, BATCH):
        stop = min(n, start + BATCH)
        kv.add_vectors([space.key(r) for r in range(start, stop)], space.vectors_at(np.arange(start, stop)))
    return kv


def export_projector(
    space_dir: Path, out_dir: Path, *, keys: Sequence[str] | None = None, limit: int = 10_000, name: str = "shardvec"
) -> dict:
    """TensorBoard projector files for `keys` (or the first `limit` rows): tensors.tsv,
    metadata.tsv (one key per line) and projector_config.pbtxt. Open with
    `tensorboard --logdir OUT_DIR`, or load the two .tsv files at projector.tensorflow.org."""
    space = Space(space_dir)
    if keys is None:
        rows = np.arange(min(limit, len(space)))
    else:
        rows = space.find_many(keys)
        missing = [k for k, r in zip(keys, rows) if r < 0]
        if missing:
            raise BadInputError(
                f"{len(missing)} keys are not in {space_dir} (e.g. {missing[0]!r}); export only keys the space holds."
            )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with (
        open(out_dir / "tensors.tsv", "w", encoding="utf-8") as t,
        open(out_dir / "metadata.tsv", "w", encoding="utf-8") as m,
    ):
        for start in range(0, len(rows), BATCH):
            chunk = rows[start : start + BATCH]
            for r, vec in zip(chunk, space.vectors_at(chunk)):
                t.write("\t".join(f"{x:.6g}" for x in vec.tolist()) + "\n")
                m.write(" ".join(space.key(int(r)).split()) + "\n")  # the projector splits on tabs/newlines
    (out_dir / "projector_config.pbtxt").write_text(
        f'embeddings {{\n  tensor_name: "{name}"\n  tensor_path: "tensors.tsv"\n  metadata_path: "metadata.tsv"\n}}\n'
    )
    return {"dir": str(out_dir), "rows": int(len(rows)), "dim": space.dim}
