"""Frozen embeddings for downstream models: the PyTorch layer reads the published word vectors
from the shards, and a tiny classifier trains on top of it."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import shardvec
from shardvec.sample import wiki_paragraphs
from tests.corpora import lee_lines

TORCH = "the PyTorch adapter needs `pip install torch==2.13.0`"
# skipped before any fixture is set up (the published nightly), when there is no torch
pytestmark = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason=TORCH)


@pytest.fixture(scope="module")
def torch():
    """PyTorch, imported by the tests that use it, not at collection: every pytest-xdist
    worker collects this module, and importing torch costs each of them over a CPU-second."""
    import torch

    return torch


@pytest.fixture(scope="module")
def FrozenEmbedding(torch):  # noqa: N802 - the class under test
    from shardvec.embedding import FrozenEmbedding

    return FrozenEmbedding


def _docs(store, n):
    """Real text from two sources: Lee's Australian news and gensim's Wikipedia sample."""
    news = [store.tokenizer(t) for t in lee_lines("lee.cor")[:n]]
    wiki = [store.tokenizer(p)[:120] for _, p in wiki_paragraphs()][:n]
    return news, wiki


def test_frozen_layer_feeds_a_classifier_that_learns(published, torch, FrozenEmbedding):
    data = published.data
    store = shardvec.open(data)
    layer = FrozenEmbedding(store.words)
    assert list(layer.parameters()) == []
    news, wiki = _docs(store, 50)
    docs = news + wiki
    labels = torch.tensor([0] * len(news) + [1] * len(wiki))
    ids = layer.ids(docs)
    assert ids.shape[0] == len(docs) and (ids[0, :3] >= 0).all()
    vecs = layer(ids)
    assert not vecs.requires_grad
    assert torch.equal(vecs[0, 0], torch.from_numpy(np.asarray(store.words.vector_at(int(ids[0, 0])))))
    mask = (ids >= 0).unsqueeze(-1).float()
    features = (vecs * mask).sum(1) / mask.sum(1).clamp(min=1)  # mean of the known words
    features = (features - features.mean(0)) / (features.std(0) + 1e-6)

    torch.manual_seed(0)
    order = torch.randperm(len(docs))
    train, test = order[:70], order[70:]
    head = torch.nn.Linear(layer.embedding_dim, 2)
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    accuracy = lambda idx: (head(features[idx]).argmax(1) == labels[idx]).float().mean().item()  # noqa: E731
    before = accuracy(test)
    for _ in range(200):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(features[train]), labels[train])
        loss.backward()
        opt.step()
    print("accuracy before", before, "train", accuracy(train), "test", accuracy(test))
    assert accuracy(train) > 0.8 and accuracy(test) > 0.75 and accuracy(test) > before + 0.15


def test_padding_and_unknown_tokens_embed_to_zero(published, FrozenEmbedding):
    data = published.data
    layer = FrozenEmbedding(shardvec.open(data).words)
    ids = layer.ids([["fire", "no-such-token-here"], []])
    out = layer(ids)
    assert ids.tolist()[0][1] == -1 and ids.tolist()[1] == [-1, -1]
    assert out[0, 0].abs().sum() > 0 and out[0, 1].abs().sum() == 0 and out[1].abs().sum() == 0
