"""Embedding bags for training: MEM-REC tables, full tables, and the collection of both.

Vocabulary (torchrec's): B rows, F features, D embedding dim. Ids of a batch are jagged:
``values`` holds every id feature-major and ``offsets[f, b]:offsets[f, b + 1]`` is row ``b``'s
bag of feature ``f`` (absolute positions into ``values``). Example, F=2, B=2, feature 0
one-hot, feature 1 multi-hot with bags ``[7, 8]`` and ``[]``::

    values  = [id_a, id_b, 7, 8]
    offsets = [[0, 1, 2],
               [2, 4, 4]]

Parameter names are the checkpoint contract (``docs/checkpoint.md``): a MEM-REC table has
``token`` and ``weight``, a full table ``table`` and the buffer ``vocab``. Hash seeds are kept
as non-persistent buffers: they live in the checkpoint's config, not its state_dict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .hashing import buckets, seeds_tensor

POOLINGS = ("sum", "mean")

# Std of a freshly initialised embedding z(x), for both table kinds, so that MEM-REC and
# full-table models start from the same scale and compare fairly.
INIT_STD = 0.05


def _pool(
    table: torch.Tensor,
    rows: torch.Tensor,
    row_weights: torch.Tensor | None,
    bag_offsets: torch.Tensor,
    per_value: int,
    pooling: str,
) -> torch.Tensor:
    """Pool ``table[rows]`` (optionally weighted) into bags.

    ``rows`` holds ``per_value`` rows for each of the N values, value-major, and
    ``bag_offsets`` [B + 1] counts values, starting at 0.
    """
    out = F.embedding_bag(
        rows.reshape(-1),
        table,
        bag_offsets * per_value,
        mode="sum",
        per_sample_weights=None if row_weights is None else row_weights.reshape(-1),
        include_last_offset=True,
    )
    if pooling == "mean":
        lengths = (bag_offsets[1:] - bag_offsets[:-1]).clamp_min(1)
        out = out / lengths.to(out.dtype).unsqueeze(1)
    return out


class MemRecEmbeddingBag(nn.Module):
    """A MEM-REC table: ``z(x) = sum_j alpha_j(x) * token[h_j(x)]``.

    ``alpha(x) = sum_i weight[g_i(x)]``, one weight per token hash (or one scalar).

    Parameters
    ----------
    rows : int
        m, rows of the token table.
    dim : int
        D.
    token_seeds : k rows of 4 ints in ``[0, 2**64)``
        Seeds of the k token hashes ``h_j`` (``docs/hashing.md`` section 2).
    weight_rows : int
        m_w, rows of the weight table.
    weight_seeds : k_w rows of 4 ints in ``[0, 2**64)``
        Seeds of the k_w weight hashes ``g_i``.
    scalar_weight : bool
        One weight per value (``weight`` is m_w x 1) instead of one per token hash (m_w x k).

    Notes
    -----
    Initialisation: ``weight`` starts at ``1 / k_w`` everywhere, so every ``alpha_j(x)`` starts
    at exactly 1 and the table starts as a plain multi-hash embedding (the sum of k token
    rows); a random ``alpha`` would multiply noise by noise and scale some values' gradients
    towards zero. ``token`` starts ``N(0, INIT_STD**2 / k)``, so ``z(x)`` starts with std
    ``INIT_STD`` whatever k is, the same scale as :class:`FullEmbeddingBag`. The weights then
    learn, per value, how much each of its k rows counts, which is what separates values
    whose hashes collide.
    """

    def __init__(
        self,
        rows: int,
        dim: int,
        token_seeds: Sequence[Sequence[int]],
        weight_rows: int,
        weight_seeds: Sequence[Sequence[int]],
        scalar_weight: bool = False,
    ) -> None:
        super().__init__()
        self.register_buffer("token_seeds", seeds_tensor(token_seeds), persistent=False)
        self.register_buffer("weight_seeds", seeds_tensor(weight_seeds), persistent=False)
        self.k = int(self.token_seeds.shape[0])
        self.k_w = int(self.weight_seeds.shape[0])
        if self.k < 1 or self.k_w < 1:
            raise ValueError(
                f"need at least one token and one weight hash, got {self.k}, {self.k_w}"
            )
        self.rows = int(rows)
        self.weight_rows = int(weight_rows)
        cols = 1 if scalar_weight else self.k
        self.token = nn.Parameter(torch.empty(self.rows, dim))
        self.weight = nn.Parameter(torch.empty(self.weight_rows, cols))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The initialisation described in the class notes."""
        with torch.no_grad():
            self.token.normal_(0.0, INIT_STD / math.sqrt(self.k))
            self.weight.fill_(1.0 / self.k_w)

    def forward(
        self, ids: torch.Tensor, bag_offsets: torch.Tensor, slot: int = 0, pooling: str = "sum"
    ) -> torch.Tensor:
        """Pooled embeddings of B bags.

        Parameters
        ----------
        ids : LongTensor [N]
        bag_offsets : LongTensor [B + 1], ``bag_offsets[0] == 0``, ``bag_offsets[B] == N``
        slot : the feature's position in this table's ``features`` list
        pooling : ``"sum"`` or ``"mean"``

        Returns
        -------
        FloatTensor [B, D]
        """
        h = buckets(ids, self.token_seeds, self.rows, slot)  # [N, k]
        g = buckets(ids, self.weight_seeds, self.weight_rows, slot)  # [N, k_w]
        n = ids.shape[0]
        # alpha(x) = sum_i weight[g_i(x)]: a bag of k_w weight rows per value.
        value_offsets = torch.arange(n + 1, dtype=torch.int64)
        alpha = F.embedding_bag(
            g.reshape(-1), self.weight, value_offsets * self.k_w, mode="sum",
            include_last_offset=True,
        )  # fmt: skip
        alpha = alpha.expand(n, self.k)  # scalar weight: the same alpha for every token hash
        return _pool(self.token, h, alpha, bag_offsets, self.k, pooling)


class FullEmbeddingBag(nn.Module):
    """A full table: one row per id of its sorted ``vocab``; row 0 for every other id.

    Parameters
    ----------
    vocab : LongTensor [rows - 1]
        Strictly increasing ids; id ``vocab[i]`` maps to row ``i + 1``.
    dim : int
        D.
    """

    def __init__(self, vocab: torch.Tensor, dim: int) -> None:
        super().__init__()
        vocab = torch.as_tensor(vocab, dtype=torch.int64).reshape(-1)
        if vocab.numel() > 1 and not bool((vocab[1:] > vocab[:-1]).all()):
            raise ValueError("vocab must be strictly increasing (sorted unique ids)")
        self.register_buffer("vocab", vocab.clone())
        self.rows = vocab.numel() + 1
        self.table = nn.Parameter(torch.empty(self.rows, dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``N(0, INIT_STD**2)``, the scale a MEM-REC embedding starts at."""
        with torch.no_grad():
            self.table.normal_(0.0, INIT_STD)

    def row_of(self, ids: torch.Tensor) -> torch.Tensor:
        """Row of every id: ``1 + position`` in ``vocab``, or 0 if absent."""
        if self.vocab.numel() == 0:
            return torch.zeros_like(ids)
        pos = torch.searchsorted(self.vocab, ids)
        found = self.vocab[pos.clamp_max(self.vocab.numel() - 1)] == ids
        return torch.where(found, pos + 1, torch.zeros_like(pos))

    def forward(
        self, ids: torch.Tensor, bag_offsets: torch.Tensor, slot: int = 0, pooling: str = "sum"
    ) -> torch.Tensor:
        """Pooled embeddings [B, D] of B bags; ``slot`` is unused (ids never collide here)."""
        return _pool(self.table, self.row_of(ids), None, bag_offsets, 1, pooling)


@dataclass(frozen=True)
class FeatureRoute:
    """Where a sparse feature's ids go: its table, slot in that table, and pooling."""

    name: str
    table: str
    slot: int
    pooling: str


class EmbeddingCollection(nn.ModuleDict):
    """Tables keyed by name, and the F features routed to them.

    A ``ModuleDict`` itself, so parameters are named ``{table}.token`` etc. directly under
    the owner's attribute (``embeddings.{table}.token`` in the DLRM), as the checkpoint
    layout requires.

    Parameters
    ----------
    tables : mapping of table name -> :class:`MemRecEmbeddingBag` or :class:`FullEmbeddingBag`
    features : F routes, in the F order of the pooled output
    """

    def __init__(
        self,
        tables: Mapping[str, MemRecEmbeddingBag | FullEmbeddingBag],
        features: Sequence[FeatureRoute],
    ) -> None:
        super().__init__(dict(tables))
        for f in features:
            if f.table not in self:
                raise ValueError(f"feature {f.name!r} uses table {f.table!r}, which is not defined")
            if f.pooling not in POOLINGS:
                raise ValueError(f"feature {f.name!r}: pooling {f.pooling!r} is not sum or mean")
        self.features = list(features)

    def forward(self, values: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Pooled embeddings.

        Parameters
        ----------
        values : LongTensor [N], every id, feature-major
        offsets : LongTensor [F, B + 1], absolute positions into ``values``

        Returns
        -------
        FloatTensor [B, F, D]
        """
        pooled = []
        for f, route in enumerate(self.features):
            start, stop = int(offsets[f, 0]), int(offsets[f, -1])
            table = self[route.table]
            pooled.append(table(values[start:stop], offsets[f] - start, route.slot, route.pooling))
        return torch.stack(pooled, dim=1)
