"""Bring your own vectors: import word2vec / GloVe / fastText files gensim ships, compare with
gensim's own answers; export; storage dtypes; batch lookup."""

from __future__ import annotations

import numpy as np
import pytest
from gensim.models import KeyedVectors
from gensim.models.fasttext import load_facebook_vectors
from gensim.test.utils import datapath

from shardvec.tasks.inputs.corpus import BadInputError
from shardvec.tasks.storage.spaces import Space, SpaceWriter, convert_space
from shardvec.tasks.search.topk import exact_topk, recall_at_k
from shardvec.tasks.models.vectors_io import (
    Vectors,
    detect_format,
    export_projector,
    export_word2vec,
    import_vectors,
    to_keyed_vectors,
)


def _same(vectors: Vectors, kv: KeyedVectors, atol=1e-6):
    assert len(vectors) == len(kv)
    for word in kv.index_to_key:
        assert np.allclose(vectors.vector(word), kv[word], atol=atol), word


@pytest.mark.parametrize(
    "name, fmt, binary",
    [
        ("word2vec_pre_kv_c", "word2vec", False),  # word2vec C text format
        ("crime-and-punishment.vec", "word2vec", False),
        ("lee_fasttext.vec", "word2vec", False),
        ("euclidean_vectors.bin", "word2vec-binary", True),  # word2vec C binary format
    ],
)
def test_word2vec_files_import_as_gensim_reads_them(tmp_path, name, fmt, binary):
    path = datapath(name)
    assert detect_format(path) == fmt
    out = import_vectors(path, tmp_path, "v")
    assert out["format"] == fmt and out["quarantined"] == 0
    _same(Vectors(tmp_path / "vectors" / "v"), KeyedVectors.load_word2vec_format(path, binary=binary))


def test_glove_text_imports_as_gensim_reads_it(tmp_path):
    path = datapath("test_glove.txt")
    assert detect_format(path) == "glove"
    import_vectors(path, tmp_path, "glove")
    _same(Vectors(tmp_path / "vectors" / "glove"), KeyedVectors.load_word2vec_format(path, no_header=True))


@pytest.mark.parametrize("name", ["lee_fasttext.bin", "lee_fasttext_new.bin", "non_ascii_fasttext.bin"])
def test_fasttext_bin_gives_fasttexts_vectors_for_known_and_new_words(tmp_path, name):
    path = datapath(name)
    assert detect_format(path) == "fasttext"  # lee_fasttext.bin is in fastText's older format
    out = import_vectors(path, tmp_path, "ft")
    assert out["subwords"]
    ours, ref = Vectors(tmp_path / "vectors" / "ft"), load_facebook_vectors(path)
    _same(ours, ref, atol=1e-5)
    new = ["shardvecish", "unseenword", "fires-fighting", "zzzq", "ü"]
    for word in new:
        assert word not in ref.key_to_index
        assert np.allclose(ours.vector(word), ref[word], atol=1e-5), word
    assert np.allclose(
        ours.vectors(new + ref.index_to_key[:3]), np.stack([ref[w] for w in new + ref.index_to_key[:3]]), atol=1e-5
    )
    assert (tmp_path / "vectors" / "ft" / "ngrams.npy").stat().st_size > ref.vectors_ngrams.nbytes


def test_bad_lines_are_quarantined_byte_for_byte_and_the_rest_imported(tmp_path):
    good = [f"w{i} " + " ".join(str(i + j / 10) for j in range(4)) for i in range(5)]
    bad = [b"broken 1.0 2.0\n", b"nan-ish 1 2 three 4\n", b"\xff\xfe 1 2 3 4\n"]
    src = tmp_path / "v.txt"
    src.write_bytes(
        b"8 4\n"
        + good[0].encode()
        + b"\n"
        + bad[0]
        + good[1].encode()
        + b"\n"
        + bad[1]
        + good[2].encode()
        + b"\n"
        + bad[2]
        + "\n".join(good[3:]).encode()
        + b"\n"
    )
    out = import_vectors(src, tmp_path, "v", fmt="word2vec")
    assert out["words"] == 5 and out["quarantined"] == 3
    assert (tmp_path / "quarantine" / "v.txt.rejected").read_bytes() == b"".join(bad)
    reasons = (tmp_path / "quarantine" / "v.txt.reasons.jsonl").read_text()
    assert '"line": 3' in reasons and "expected a word and 4 numbers" in reasons and "not UTF-8" in reasons
    assert np.allclose(Vectors(tmp_path / "vectors" / "v").vector("w4"), [4.0, 4.1, 4.2, 4.3])


def test_truncated_binary_file_is_refused_with_a_sentence(tmp_path):
    src = tmp_path / "cut.bin"
    src.write_bytes(open(datapath("euclidean_vectors.bin"), "rb").read()[:500])
    with pytest.raises(BadInputError, match="truncated"):
        import_vectors(src, tmp_path, "cut", fmt="word2vec-binary")
    assert not (tmp_path / "vectors" / "cut").exists()


def test_reimport_swaps_atomically_and_keeps_one_copy(tmp_path):
    import_vectors(datapath("crime-and-punishment.vec"), tmp_path, "v")
    first = (tmp_path / "vectors" / "v").resolve()
    import_vectors(datapath("lee_fasttext.vec"), tmp_path, "v")
    assert (tmp_path / "vectors" / "v").resolve() != first and not first.exists()
    assert len(Vectors(tmp_path / "vectors" / "v")) == len(
        KeyedVectors.load_word2vec_format(datapath("lee_fasttext.vec"))
    )


@pytest.mark.parametrize("binary", [False, True])
def test_export_word2vec_round_trips_through_gensim(tmp_path, binary):
    import_vectors(datapath("lee_fasttext.vec"), tmp_path, "v")
    ref = KeyedVectors.load_word2vec_format(datapath("lee_fasttext.vec"))
    export_word2vec(tmp_path / "vectors" / "v", tmp_path / "out.w2v", binary=binary)
    back = KeyedVectors.load_word2vec_format(tmp_path / "out.w2v", binary=binary)
    assert back.index_to_key == ref.index_to_key and np.allclose(back.vectors, ref.vectors, atol=1e-6)
    kv = to_keyed_vectors(tmp_path / "vectors" / "v")
    assert kv.most_similar("night", topn=3) == ref.most_similar("night", topn=3)


def test_projector_export_of_a_subset(tmp_path):
    import_vectors(datapath("lee_fasttext.vec"), tmp_path, "v")
    out = export_projector(tmp_path / "vectors" / "v", tmp_path / "proj", keys=["night", "fire", "police"])
    assert out["rows"] == 3
    tensors = np.loadtxt(tmp_path / "proj" / "tensors.tsv", delimiter="\t")
    assert tensors.shape == (3, 10)
    assert (tmp_path / "proj" / "metadata.tsv").read_text().split("\n")[:3] == ["night", "fire", "police"]
    assert 'tensor_path: "tensors.tsv"' in (tmp_path / "proj" / "projector_config.pbtxt").read_text()
    with pytest.raises(BadInputError, match="not in"):
        export_projector(tmp_path / "vectors" / "v", tmp_path / "proj2", keys=["night", "no-such-word"])


@pytest.mark.parametrize(
    "dtype, bytes_ratio, min_recall, atol", [("float16", 0.5, 0.97, 2e-3), ("int8", 0.25, 0.9, 0.05)]
)
def test_smaller_dtypes_keep_neighbours(tmp_path, dtype, bytes_ratio, min_recall, atol):
    kv = KeyedVectors.load_word2vec_format(datapath("lee_fasttext.vec"))
    w = SpaceWriter(tmp_path / "f32", kv.vector_size, 700)
    w.append(kv.index_to_key, kv.vectors)
    w.close(normalized=False)
    convert_space(tmp_path / "f32", tmp_path / dtype, dtype)
    a, b = Space(tmp_path / "f32"), Space(tmp_path / dtype)
    assert b.dtype == dtype and b.verify() == []
    size = lambda s: sum((s.dir / sh["vectors"]).stat().st_size for sh in s.manifest["shards"])  # noqa: E731
    assert size(b) < size(a) * bytes_ratio + 4096
    scale = np.abs(kv.vectors).max()
    assert np.allclose(b.vector("night"), kv["night"], atol=atol * scale)
    picks = np.arange(0, len(a), 7)
    truth, truth_s = exact_topk(a, a.vectors_at(picks), 10, exclude=picks)
    found, _ = exact_topk(b, b.vectors_at(picks), 10, exclude=picks)
    assert recall_at_k(found, truth) >= min_recall


def test_batch_lookup_maps_token_sequences_to_ids_and_vectors(tmp_path):
    import_vectors(datapath("lee_fasttext.vec"), tmp_path, "v")
    space = Space(tmp_path / "vectors" / "v")
    docs = [["night", "fire", "no-such-token"], [], ["australia"]]
    ids, vecs = space.lookup(docs)
    assert ids.shape == (3, 3) and vecs.shape == (3, 3, space.dim)
    assert ids[0, 0] == space.find("night") and ids[0, 2] == -1 and (ids[1] == -1).all() and ids[2, 1] == -1
    assert np.array_equal(vecs[0, 1], space.vector("fire")) and not vecs[0, 2].any() and not vecs[1].any()
    keys = [space.key(r) for r in range(len(space))]
    assert np.array_equal(space.find_many(keys + ["nope"]), np.r_[np.arange(len(space)), -1])


def test_supervised_fasttext_model_is_refused_with_a_sentence(tmp_path):
    with pytest.raises(BadInputError, match="supervised fastText model"):
        import_vectors(datapath("pang_lee_polarity_fasttext.bin"), tmp_path, "sup")


def _listing(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*"))


@pytest.mark.parametrize("where", ["outside", "inside, not shardvec's", "another name's"])
def test_reimport_through_a_link_leading_out_of_vectors_is_refused(tmp_path, where):
    """issue 14 item 6: shardvec never removes or writes what DATA/vectors/<name> points at
    unless it made it (a folder of DATA/vectors)."""
    data = tmp_path / "data"
    victim = {"outside": tmp_path / "victim", "another name's": data / "vectors" / ".w-1234"}.get(
        where, data / "versions" / "keep"
    )
    victim.mkdir(parents=True)
    (victim / "precious.txt").write_text("do not delete")
    (data / "vectors").mkdir(parents=True, exist_ok=True)
    (data / "vectors" / "v").symlink_to(victim)
    before = _listing(tmp_path)
    with pytest.raises(BadInputError) as err:
        import_vectors(datapath("crime-and-punishment.vec"), data, "v")
    assert str(err.value) == (
        f"{data / 'vectors' / 'v'} is a link to {victim}, which shardvec did not make; "
        "remove the link or import under another --name."
    )
    assert _listing(tmp_path) == before


def test_import_refuses_a_vectors_folder_that_leads_out_of_the_data_directory(tmp_path):
    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    data.mkdir()
    elsewhere.mkdir()
    (data / "vectors").symlink_to(elsewhere)
    with pytest.raises(BadInputError, match=r"leads out of the data directory; replace the link with a folder"):
        import_vectors(datapath("crime-and-punishment.vec"), data, "v")
    assert list(elsewhere.iterdir()) == []
