"""LSI and word2vec trained from the token cache agree with gensim used directly."""

import numpy as np
import pytest
from gensim.corpora import Dictionary
from gensim.matutils import sparse2full
from gensim.models import LsiModel, TfidfModel, Word2Vec

from shardvec.tasks.inputs.corpus import discover
from shardvec.tasks.search.embed import Embedder, tfidf_matrix
from shardvec.tasks.models.lsi import idf_vector, train_lsi
from shardvec.tasks.storage.spaces import Space
from shardvec.tasks.inputs.tokenize import TokenStream, Tokenizer, tokenize_file
from shardvec.tasks.models.vocab import build_dictionary
from shardvec.tasks.models.word2vec import train_word2vec, write_word_space
from tests.corpora import write_corpus


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("models")
    write_corpus(tmp / "corpus")
    files, _ = discover(tmp / "corpus")
    caches = [
        tokenize_file(
            tmp / "corpus", f, tmp / "cache", tmp / "q", Tokenizer(), batch_size=50, max_record_bytes=100_000
        )["cache"]
        for f in files
    ]
    build_dictionary(caches, tmp / "m" / "dictionary.gensim", max_terms=5000, no_below=2, no_above=0.5)
    return tmp, caches


def test_dictionary_capped_and_filtered(built):
    tmp, caches = built
    dct = Dictionary.load(str(tmp / "m" / "dictionary.gensim"))
    ref = Dictionary(TokenStream(caches))
    ref.filter_extremes(no_below=2, no_above=0.5, keep_n=5000)
    assert dict(dct.token2id) == dict(ref.token2id)
    out = build_dictionary(caches, tmp / "capped.gensim", max_terms=100, no_below=2, no_above=0.5)
    assert out["terms"] == 100


def test_tfidf_matrix_equals_gensim(built):
    tmp, caches = built
    dct = Dictionary.load(str(tmp / "m" / "dictionary.gensim"))
    docs = list(TokenStream(caches))[:30]
    m = tfidf_matrix(docs, dct.token2id.get, idf_vector(dct))
    tfidf = TfidfModel(dictionary=dct)
    for i, doc in enumerate(docs):
        ref = dict(tfidf[dct.doc2bow(doc)])
        row = m.getrow(i)
        assert dict(zip(row.indices.tolist(), row.data)) == pytest.approx(ref)


def test_chunked_lsi_equals_gensim_trained_on_everything(built):
    tmp, caches = built
    dct = Dictionary.load(str(tmp / "m" / "dictionary.gensim"))
    train_lsi(
        caches,
        tmp / "m" / "dictionary.gensim",
        tmp / "m",
        num_topics=20,
        chunksize=100,
        power_iters=2,
        extra_samples=50,
        seed=3,
    )
    docs = list(TokenStream(caches))
    tfidf = TfidfModel(dictionary=dct)
    ref = LsiModel(
        tfidf[[dct.doc2bow(d) for d in docs]],
        id2word=dct,
        num_topics=20,
        chunksize=100,
        power_iters=2,
        extra_samples=50,
        random_seed=3,
    )
    ours = LsiModel.load(str(tmp / "m" / "lsi.gensim"))
    assert np.allclose(ours.projection.s, ref.projection.s, rtol=1e-6)
    emb = Embedder(tmp / "m").embed(docs[:40], normalize=False)
    expected = np.array([sparse2full(ref[tfidf[dct.doc2bow(d)]], 20) for d in docs[:40]])
    assert np.allclose(emb, expected, atol=1e-5)


def _lsi_exported(tmp, caches) -> None:
    """The module's LSI model and its plain exports (terms, idf) in tmp/m, trained once."""
    if not (tmp / "m" / "terms").exists():
        train_lsi(
            caches,
            tmp / "m" / "dictionary.gensim",
            tmp / "m",
            num_topics=20,
            chunksize=100,
            power_iters=2,
            extra_samples=50,
            seed=3,
        )


def test_embedder_on_disk_vocab_equals_in_ram(built):
    tmp, caches = built
    _lsi_exported(tmp, caches)
    docs = list(TokenStream(caches))[:25] + [["zzzq", "qqxv"], []]
    a = Embedder(tmp / "m").embed(docs)
    b = Embedder(tmp / "m", vocab_in_ram=True).embed(docs)
    assert np.array_equal(a, b)
    assert np.allclose(np.linalg.norm(a[:25], axis=1), 1.0, atol=1e-5)
    assert not a[-1].any() and not a[-2].any()  # nothing known: the zero vector, not NaN


def test_one_text_embeds_as_it_does_in_a_batch(built):
    """`embed` of a single text skips scipy's sparse matrix (a reader's query): the same TF-IDF
    weights and sums as the batch path, for repeated words, unknown ones and none at all."""
    tmp, caches = built
    _lsi_exported(tmp, caches)
    docs = list(TokenStream(caches))[:20]
    docs += [docs[0] * 3, docs[1] + ["zzzq", "qqxv"], ["zzzq", "qqxv"], []]
    embedder = Embedder(tmp / "m")
    for normalize in (True, False):
        batch = embedder.embed(docs, normalize=normalize)
        one = np.stack([embedder.embed([d], normalize=normalize)[0] for d in docs])
        assert np.allclose(one, batch, atol=1e-6, rtol=0)
    assert not one[-1].any() and not one[-2].any()


def test_word_vectors_on_disk_equal_the_model(built, tmp_path):
    tmp, caches = built
    out = train_word2vec(
        caches,
        tmp_path / "w2v.gensim",
        vector_size=16,
        window=5,
        min_count=2,
        max_final_vocab=100_000,
        epochs=2,
        sg=0,
        workers=1,
        seed=1,
    )
    model = Word2Vec.load(str(tmp_path / "w2v.gensim"))
    write_word_space(tmp_path / "w2v.gensim", tmp_path / "words", rows_per_shard=100, batch=64)
    space = Space(tmp_path / "words")
    assert len(space) == len(model.wv) == out["words"] and space.n_shards == -(-len(model.wv) // 100)
    for word in model.wv.index_to_key[::37]:
        assert np.array_equal(space.vector(word), model.wv[word])
    assert space.column("count", space.find("the")) == model.wv.get_vecattr("the", "count")


def test_word2vec_update_learns_new_words(built, tmp_path):
    tmp, caches = built
    kw = dict(vector_size=16, window=5, min_count=2, max_final_vocab=100_000, epochs=2, sg=0, workers=1, seed=1)
    first = train_word2vec(caches[:1], tmp_path / "a.gensim", **kw)
    second = train_word2vec(caches[1:], tmp_path / "b.gensim", previous=tmp_path / "a.gensim", **kw)
    assert second["new_words"] > 0 and second["words"] == first["words"] + second["new_words"]
    model = Word2Vec.load(str(tmp_path / "b.gensim"))
    new = set(Word2Vec.load(str(tmp_path / "b.gensim")).wv.index_to_key) - set(
        Word2Vec.load(str(tmp_path / "a.gensim")).wv.index_to_key
    )
    assert new and all(np.linalg.norm(model.wv[w]) > 0 for w in new)


def test_lsi_parts_split_the_documents_one_a_worker_none_under_a_chunk():
    from shardvec.tasks.models.lsi import part_ranges

    assert part_ranges(1000, workers=2, chunksize=200) == [(0, 500), (500, 1000)]
    assert part_ranges(150, workers=2, chunksize=200) == [(0, 150)]  # one chunk's worth: one part
    assert part_ranges(1001, workers=3, chunksize=100) == [(0, 334), (334, 667), (667, 1001)]
    assert part_ranges(0, workers=2, chunksize=200) == [(0, 0)]
