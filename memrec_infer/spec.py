"""The model spec: what a family adapter produces and the conversion pipeline consumes.

A spec is declarative: feature schema, tables (metadata), MLP layer list, interaction, and a
dict of tensors under **canonical names** (the functions below are the only place those names
are spelled). Family adapters map their source names onto these; nothing downstream knows a
checkpoint's own naming.

Vocabulary: B is the batch size, F the number of sparse features, D the embedding dim.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "DenseSpec",
    "FeatureSpec",
    "LayerSpec",
    "ModelSpec",
    "TableSpec",
    "interaction_pairs",
    "layer_bias",
    "over_arch_input",
    "layer_weight",
    "table_rows",
    "table_vocab",
    "table_weight",
    "TRANSFORMS",
    "POOLINGS",
    "FEATURE_DTYPES",
    "INTERACTIONS",
    "TABLE_KINDS",
]

TRANSFORMS = ("identity", "log1p", "standard")
POOLINGS = ("sum", "mean")
FEATURE_DTYPES = ("int", "string", "cross")
INTERACTIONS = ("dot", "cat")
TABLE_KINDS = ("memrec", "full")


def float32_finite(v: Any, positive: bool = False) -> bool:
    """True for a number (not a bool) that stays finite as float32, and is > 0 there if
    ``positive``: feature prep computes in float32, where 1e39 overflows and a ``std`` of 1e-46
    becomes 0, either of which makes every score NaN."""
    if not isinstance(v, int | float) or isinstance(v, bool) or not abs(v) < 2**128:
        return False  # (NaN fails the comparison too)
    with np.errstate(over="ignore", under="ignore"):
        x = np.float32(v)
    return bool(np.isfinite(x) and (x > 0 or not positive))


def table_rows(table: str) -> str:
    """Canonical name of a table's rows: MEM-REC token rows ``M`` or a full table, [rows, D]."""
    return f"sparse.{table}.token"


def table_weight(table: str) -> str:
    """Canonical name of a MEM-REC weight table ``W``, [weight_rows, weight_cols]."""
    return f"sparse.{table}.weight"


def table_vocab(table: str) -> str:
    """Canonical name of a full table's sorted vocabulary of ids, int64 [rows - 1]."""
    return f"sparse.{table}.vocab"


def layer_weight(arch: str, i: int) -> str:
    """Canonical name of layer ``i``'s weight [out, in] in ``dense_arch`` or ``over_arch``."""
    return f"{arch}.{i}.weight"


def layer_bias(arch: str, i: int) -> str:
    """Canonical name of layer ``i``'s bias [out] in ``dense_arch`` or ``over_arch``."""
    return f"{arch}.{i}.bias"


@dataclass(frozen=True)
class DenseSpec:
    """One dense input column: nulls become ``fill``, then ``transform`` applies (float32)."""

    name: str
    transform: str
    fill: float
    mean: float | None = None
    std: float | None = None


@dataclass(frozen=True)
class FeatureSpec:
    """One sparse feature (one slot of the F axis), looked up in ``table`` at ``slot``."""

    name: str
    columns: tuple[str, ...]
    dtype: str
    multi_hot: bool
    table: str
    slot: int
    pooling: str


@dataclass(frozen=True)
class TableSpec:
    """One embedding table's metadata; its arrays are in :attr:`ModelSpec.tensors`.

    ``kind`` is ``"memrec"`` (token rows, weight table, hash seeds) or ``"full"`` (one row per
    vocabulary id plus the out-of-vocabulary row 0). ``cardinality`` is the number of distinct
    training values (for ``full`` it is ``rows - 1``; for ``memrec`` as recorded by the
    trainer, or None if unknown).
    """

    name: str
    kind: str
    features: tuple[str, ...]
    rows: int
    cardinality: int | None = None
    k: int = 0
    token_seeds: np.ndarray | None = None  # uint64 [k, 4]
    weight_rows: int = 0
    weight_cols: int = 0
    k_w: int = 0
    weight_seeds: np.ndarray | None = None  # uint64 [k_w, 4]


@dataclass(frozen=True)
class LayerSpec:
    """One linear layer ``y = x @ weight.T + bias``; ``relu`` tells whether ReLU follows."""

    arch: str
    index: int
    in_features: int
    out_features: int
    relu: bool

    @property
    def weight(self) -> str:
        return layer_weight(self.arch, self.index)

    @property
    def bias(self) -> str:
        return layer_bias(self.arch, self.index)


@dataclass(frozen=True)
class ModelSpec:
    """A whole model: schema, tables, MLPs, interaction and tensors by canonical name."""

    family: str
    family_revision: int
    embedding_dim: int
    dense: tuple[DenseSpec, ...]
    sparse: tuple[FeatureSpec, ...]
    tables: tuple[TableSpec, ...]
    dense_arch: tuple[LayerSpec, ...]
    over_arch: tuple[LayerSpec, ...]
    interaction: str
    self_interaction: bool
    label: str | None
    tensors: dict[str, np.ndarray]
    train: dict[str, Any] = field(default_factory=dict)

    @property
    def n_dense(self) -> int:
        return len(self.dense)

    @property
    def n_sparse(self) -> int:
        return len(self.sparse)


def interaction_pairs(n_sparse: int, self_interaction: bool) -> list[tuple[int, int]]:
    """The ``(i, j)`` entries of ``Z`` kept by the dot interaction, in facebookresearch/dlrm order.

    Rows of ``T`` are the bottom-MLP output (0) then the F features; pairs are ``i = 0..F``,
    ``j = 0..i-1`` (``j = 0..i`` with ``self_interaction``).
    """
    extra = 1 if self_interaction else 0
    return [(i, j) for i in range(n_sparse + 1) for j in range(i + extra)]


def over_arch_input(
    interaction: str, dense_out: int, n_sparse: int, dim: int, self_interaction: bool
) -> int:
    """Width of the top MLP's input ``R`` for the given interaction."""
    if interaction == "dot":
        return dense_out + len(interaction_pairs(n_sparse, self_interaction))
    return dense_out + n_sparse * dim
