"""A frozen PyTorch embedding layer whose table stays on disk, in a shardvec space.

Rows are gathered from the memmapped shards on each call, so the table costs no process any
RAM of its own: every model (and every process) that uses it shares the one copy in the page
cache. It has no parameters and passes no gradient. Needs `pip install 'shardvec[torch]'`.

    >>> layer = FrozenEmbedding(shardvec.open("data").words)
    >>> ids = layer.ids([["the", "fire"], ["smoke"]])       # LongTensor, -1 = padding/unknown
    >>> layer(ids).shape                                      # (2, 2, dim)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from shardvec.tasks.storage.lookup import lookup
from shardvec.tasks.storage.spaces import Space

if TYPE_CHECKING:
    from shardvec.reader import WordVectors


class FrozenEmbedding(torch.nn.Module):
    def __init__(self, space: WordVectors | Space | str | Path):
        """`space`: a store's words (`shardvec.open(data).words`), or a space's folder."""
        super().__init__()
        self.space = Space(Path(space)) if isinstance(space, (str, Path)) else space
        self.embedding_dim = self.space.dim

    def ids(self, docs: Sequence[Sequence[str]]) -> torch.Tensor:
        """Token sequences -> row ids, padded with -1 (as are tokens the space does not hold)."""
        ids, _ = lookup(self.space, docs)
        return torch.from_numpy(ids)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.detach().reshape(-1).cpu().numpy()
        out = np.zeros((len(flat), self.embedding_dim), dtype=np.float32)
        known = flat >= 0
        out[known] = self.space.vectors_at(flat[known])
        return torch.from_numpy(out).reshape(*ids.shape, self.embedding_dim).to(ids.device)

    def extra_repr(self) -> str:
        return f"{len(self.space)} x {self.embedding_dim} rows in {self.space.dir}"
