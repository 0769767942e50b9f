"""The DLRM of ``docs/checkpoint.md``: dense_arch, embeddings, interaction, over_arch.

The forward pass is exactly the one written in ``docs/checkpoint.md``, which the ONNX converter
rebuilds from the same text; change one, change both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .embedding import EmbeddingCollection, FeatureRoute, FullEmbeddingBag, MemRecEmbeddingBag

INTERACTIONS = ("dot", "cat")


def interaction_pairs(num_features: int, self_interaction: bool) -> tuple[list[int], list[int]]:
    """Index pairs ``(i, j)`` of the dot interaction, in facebookresearch/dlrm's order.

    ``i = 0..F`` over the F + 1 vectors (dense output first), ``j = 0..i-1`` (``0..i`` with
    ``self_interaction``), row by row.
    """
    li, lj = [], []
    for i in range(num_features + 1):
        for j in range(i + 1 if self_interaction else i):
            li.append(i)
            lj.append(j)
    return li, lj


def _mlp(widths: Sequence[int], n_in: int) -> nn.ModuleList:
    layers = nn.ModuleList()
    for w in widths:
        layers.append(nn.Linear(n_in, int(w)))
        n_in = int(w)
    return layers


class DLRM(nn.Module):
    """Dense MLP + pooled embeddings -> interaction -> over MLP -> probability.

    Parameters
    ----------
    n_dense : int
        Number of dense inputs.
    embeddings : EmbeddingCollection
        F features, each pooled to D.
    embedding_dim : int
        D.
    dense_arch : layer widths of the bottom MLP; the last must be D for ``"dot"``
    over_arch : layer widths of the top MLP; the last must be 1
    interaction : ``"dot"`` or ``"cat"``
    self_interaction : dot only: include each vector's dot with itself
    """

    def __init__(
        self,
        n_dense: int,
        embeddings: EmbeddingCollection,
        embedding_dim: int,
        dense_arch: Sequence[int],
        over_arch: Sequence[int],
        interaction: str = "dot",
        self_interaction: bool = False,
    ) -> None:
        super().__init__()
        if interaction not in INTERACTIONS:
            raise ValueError(f"interaction must be 'dot' or 'cat', got {interaction!r}")
        x_dim = int(dense_arch[-1]) if dense_arch else n_dense
        if interaction == "dot" and x_dim != embedding_dim:
            raise ValueError(
                f"the dot interaction needs the dense_arch output ({x_dim}) to equal the "
                f"embedding dim ({embedding_dim}); end --dense-arch with {embedding_dim}"
            )
        if not over_arch or int(over_arch[-1]) != 1:
            raise ValueError(f"over_arch must end with a width of 1, got {list(over_arch)}")
        num_features = len(embeddings.features)
        self.interaction = interaction
        self.self_interaction = bool(self_interaction)
        self.dense_arch = _mlp(dense_arch, n_dense)
        self.embeddings = embeddings
        li, lj = interaction_pairs(num_features, self.self_interaction)
        self.register_buffer("pair_i", torch.tensor(li, dtype=torch.int64), persistent=False)
        self.register_buffer("pair_j", torch.tensor(lj, dtype=torch.int64), persistent=False)
        if interaction == "dot":
            r_dim = x_dim + len(li)
        else:
            r_dim = x_dim + num_features * embedding_dim
        self.over_arch = _mlp(over_arch, r_dim)

    def logits(
        self, dense: torch.Tensor, values: torch.Tensor, offsets: torch.Tensor
    ) -> torch.Tensor:
        """Scores before the sigmoid, [B]; see :meth:`forward`."""
        x = dense
        for layer in self.dense_arch:
            x = torch.relu(layer(x))
        e = self.embeddings(values, offsets)  # [B, F, D]
        if self.interaction == "dot":
            t = torch.cat([x.unsqueeze(1), e], dim=1)  # [B, F+1, D]
            z = torch.bmm(t, t.transpose(1, 2))  # [B, F+1, F+1]
            y = torch.cat([x, z[:, self.pair_i, self.pair_j]], dim=1)
        else:
            y = torch.cat([x, e.reshape(e.shape[0], -1)], dim=1)
        for layer in self.over_arch[:-1]:
            y = torch.relu(layer(y))
        return self.over_arch[-1](y)[:, 0]

    def forward(
        self, dense: torch.Tensor, values: torch.Tensor, offsets: torch.Tensor
    ) -> torch.Tensor:
        """Probabilities.

        Parameters
        ----------
        dense : FloatTensor [B, n_dense], already transformed
        values : LongTensor [N], ids feature-major
        offsets : LongTensor [F, B + 1], absolute positions into ``values``

        Returns
        -------
        FloatTensor [B]
        """
        return torch.sigmoid(self.logits(dense, values, offsets))


def build_table(spec: Mapping[str, Any], dim: int) -> MemRecEmbeddingBag | FullEmbeddingBag:
    """A table from its checkpoint config entry; a full table's vocab starts as zeros (to load)."""
    if spec["kind"] == "memrec":
        k = len(spec["token_seeds"])
        if spec["weight_cols"] not in (1, k):
            raise ValueError(
                f"table {spec['name']!r}: weight_cols must be 1 (scalar) or k={k}, "
                f"got {spec['weight_cols']}"
            )
        return MemRecEmbeddingBag(
            rows=spec["rows"],
            dim=dim,
            token_seeds=spec["token_seeds"],
            weight_rows=spec["weight_rows"],
            weight_seeds=spec["weight_seeds"],
            scalar_weight=spec["weight_cols"] == 1,
        )
    if spec["kind"] == "full":
        return FullEmbeddingBag(torch.arange(spec["rows"] - 1, dtype=torch.int64), dim)
    raise ValueError(f"table {spec['name']!r}: kind {spec['kind']!r} is not 'memrec' or 'full'")


def build_dlrm(config: Mapping[str, Any]) -> DLRM:
    """The DLRM a checkpoint config describes (``docs/checkpoint.md``), freshly initialised."""
    dim = int(config["embedding_dim"])
    tables = {t["name"]: build_table(t, dim) for t in config["tables"]}
    slots = {(f, t["name"]): i for t in config["tables"] for i, f in enumerate(t["features"])}
    routes = []
    for s in config["sparse"]:
        if (s["name"], s["table"]) not in slots:
            raise ValueError(
                f"sparse feature {s['name']!r} is not in the features list of table {s['table']!r}"
            )
        routes.append(
            FeatureRoute(s["name"], s["table"], slots[s["name"], s["table"]], s["pooling"])
        )
    return DLRM(
        n_dense=len(config["dense"]),
        embeddings=EmbeddingCollection(tables, routes),
        embedding_dim=dim,
        dense_arch=config["dense_arch"],
        over_arch=config["over_arch"],
        interaction=config["interaction"],
        self_interaction=config.get("self_interaction", False),
    )
