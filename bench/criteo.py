"""Criteo Kaggle shaped workloads: table cardinalities, MEM-REC table sizes, generated bags.

The 26 cardinalities are those of the Criteo Kaggle Display Advertising Challenge data as
preprocessed by facebookresearch/dlrm (its ``--arch-embedding-size`` for the Kaggle run, e.g.
``1460-583-10131227-...-142572``), 33,762,577 rows in all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from memrec_infer.kernels.hashing import draw_seeds

KAGGLE_CARDINALITIES = (
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
    27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572,
)  # fmt: skip

# A multi-hot bag has 1..MULTI_HOT_MAX ids, uniformly: facebookresearch/dlrm's synthetic data
# generator with its default --num-indices-per-lookup=10 draws bag sizes the same way.
MULTI_HOT_MAX = 10
# Zipf exponent of the "zipf" id distribution (heavy-tailed, like click logs).
ZIPF_S = 1.05
# An odd multiplier coprime to every cardinality above scatters Zipf ranks over a table, so the
# hot rows are not the first rows of memory. (Checked in ``scatter``.)
_SCATTER = 0x9E3779B1


# The Kaggle DLRM's embedding width (facebookresearch/dlrm's --arch-sparse-feature-size=16).
KAGGLE_DIM = 16


@dataclass(frozen=True)
class MemrecSizes:
    """Per-table MEM-REC sizes: token rows ``m``, weight rows ``m_w``, hashes ``k``/``k_w``."""

    m: tuple[int, ...]
    m_w: tuple[int, ...]
    k: int
    k_w: int
    dim: int

    @property
    def token_bytes(self) -> int:
        """Bytes of all token tables (float32)."""
        return sum(self.m) * self.dim * 4

    @property
    def weight_bytes(self) -> int:
        """Bytes of all weight tables (float32, ``k`` weights per row)."""
        return sum(self.m_w) * self.k * 4


def memrec_sizes(
    dim: int,
    budget_bytes: int,
    k: int = 2,
    k_w: int = 2,
    cards: tuple[int, ...] = KAGGLE_CARDINALITIES,
) -> MemrecSizes:
    """Token table rows by water-filling: ``m_t = min(card_t, cap)``, the largest cap in budget.

    Small tables keep one token row per value; the big ones share the rest of the budget equally.
    Weight tables get ``m_w = clip(m / 16, 1, 4096)`` rows; both kinds count toward the budget.
    """

    def sizes(cap: int) -> tuple[list[int], list[int]]:
        m = [max(1, min(c, cap)) for c in cards]
        return m, [int(np.clip(x // 16, 1, 4096)) for x in m]

    def cost(cap: int) -> int:
        m, mw = sizes(cap)
        return sum(m) * dim * 4 + sum(mw) * k * 4

    lo, hi = 1, max(cards)
    if cost(lo) > budget_bytes:
        raise ValueError(f"a budget of {budget_bytes} bytes cannot hold one row per table")
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if cost(mid) <= budget_bytes:
            lo = mid
        else:
            hi = mid - 1
    m, mw = sizes(lo)
    return MemrecSizes(tuple(m), tuple(mw), k, k_w, dim)


def scatter(ranks: np.ndarray, card: int) -> np.ndarray:
    """A bijection of ``[0, card)`` (multiplication by an odd constant coprime to ``card``)."""
    assert np.gcd(_SCATTER, card) == 1, card
    return (ranks.astype(np.uint64) * np.uint64(_SCATTER) % np.uint64(card)).astype(np.int64)


def draw_rows(rng: np.random.Generator, card: int, n: int, dist: str) -> np.ndarray:
    """``n`` row indices in ``[0, card)``: ``uniform``, or ``zipf`` (bounded power law, s=1.05).

    Zipf ranks come from the inverse CDF of the continuous power law on ``[1, card + 1)``, then
    are scattered over the table so the hot rows do not share cache lines by accident.
    """
    if dist == "uniform":
        return rng.integers(0, card, size=n, dtype=np.int64)
    if dist != "zipf":
        raise ValueError(f"dist must be 'zipf' or 'uniform', got {dist!r}")
    u = rng.random(n)
    e = 1.0 - ZIPF_S
    top = (card + 1.0) ** e
    ranks = np.floor((1.0 + u * (top - 1.0)) ** (1.0 / e)).astype(np.int64) - 1
    return scatter(np.clip(ranks, 0, card - 1), card)


@dataclass
class Bags:
    """One batch of bags for F tables, in the layouts every contender wants.

    ``rows``/``offsets`` are feature-major (our kernels: ``offsets`` is ``[F, B + 1]``,
    absolute). ``fused_rows``/``fused_offsets`` are sample-major bags ``(b, f)`` with rows
    shifted into one stacked table, so a single ``EmbeddingBag`` returns ``[B * F, D]`` =
    ``[B, F, D]``; ``fused_offsets`` has ``B * F + 1`` entries. ``table_rows``/``table_offsets``
    are the same bags table-major ``(f, b)``, rows shifted into the stacked table: what the
    per-table modules see, as one call returning ``[F * B, D]`` = ``[F, B, D]``.
    """

    rows: np.ndarray
    offsets: np.ndarray
    fused_rows: np.ndarray
    fused_offsets: np.ndarray
    table_rows: np.ndarray
    table_offsets: np.ndarray

    @property
    def batch(self) -> int:
        """``B``."""
        return self.offsets.shape[1] - 1

    @property
    def num_ids(self) -> int:
        """Ids in the batch, all features."""
        return int(self.rows.shape[0])


def make_bags(
    rng: np.random.Generator, cards: tuple[int, ...], batch: int, dist: str, multi_hot: bool
) -> Bags:
    """A generated batch: one id per bag, or 1..MULTI_HOT_MAX ids per bag."""
    nf = len(cards)
    if multi_hot:
        lengths = rng.integers(1, MULTI_HOT_MAX + 1, size=(nf, batch), dtype=np.int64)
    else:
        lengths = np.ones((nf, batch), dtype=np.int64)
    per_feature = lengths.sum(axis=1)
    rows = np.concatenate(
        [draw_rows(rng, c, int(n), dist) for c, n in zip(cards, per_feature, strict=True)]
    )
    offsets = np.zeros((nf, batch + 1), dtype=np.int64)
    np.cumsum(lengths, axis=1, out=offsets[:, 1:])
    offsets += np.concatenate([[0], np.cumsum(per_feature)[:-1]])[:, None]
    # Sample-major: bag (b, f) = rows[offsets[f, b] : offsets[f, b + 1]] + base[f].
    base = np.concatenate([[0], np.cumsum(cards)[:-1]]).astype(np.int64)
    starts = offsets[:, :-1].T.ravel()
    lens = lengths.T.ravel()
    fused_offsets = np.zeros(nf * batch + 1, dtype=np.int64)
    np.cumsum(lens, out=fused_offsets[1:])
    pos = np.repeat(starts - fused_offsets[:-1], lens) + np.arange(rows.shape[0])
    shift = np.repeat(np.tile(base, batch), lens)
    fused_rows = rows[pos] + shift
    table_rows = rows + np.repeat(base, per_feature)
    table_offsets = np.append(offsets[:, :-1].ravel(), offsets[-1, -1])
    return Bags(rows, offsets, fused_rows, fused_offsets, table_rows, table_offsets)


# A configuration is timed over a rotation of distinct batches, as a served model sees new ids in
# every request: one batch timed over and over finds the full tables' rows in cache from its
# second call on, which no table of 100s of GB allows (D=16, B=1024 zipf, 2 threads, Zen 4, two
# runs of embedding_stage.py before and after: our full-table kernel took 59 us a call on one
# batch repeated, 105 us on fresh batches; torch's fused bag 169 and 249 us). A rotation's
# full-table rows add up to ROTATION_CACHES times the last-level cache, in 2 to MAX_ROTATION
# batches (16384 one-id batches of 26 ids cover 27 MB at D=16, less than 4 caches: the cap
# keeps set-up within seconds).
ROTATION_CACHES = 4
MAX_ROTATION = 16384


def rotation_size(ids_per_batch: int, row_bytes: int, cache_bytes: int) -> int:
    """Batches of ``ids_per_batch`` ids in a rotation: ``ROTATION_CACHES * cache_bytes`` of rows
    of ``row_bytes``, at least 2 batches, at most ``MAX_ROTATION``."""
    want = ROTATION_CACHES * cache_bytes / max(1, ids_per_batch * row_bytes)
    return int(min(MAX_ROTATION, max(2, math.ceil(want))))


def make_rotation(
    seed: int,
    cards: tuple[int, ...],
    batch: int,
    dist: str,
    multi_hot: bool,
    row_bytes: int,
    cache_bytes: int,
) -> list[Bags]:
    """Distinct generated batches (``make_bags``), as many as ``rotation_size`` asks for."""
    rng = np.random.default_rng(seed)
    first = make_bags(rng, cards, batch, dist, multi_hot)
    count = rotation_size(first.num_ids, row_bytes, cache_bytes)
    return [first] + [make_bags(rng, cards, batch, dist, multi_hot) for _ in range(count - 1)]


def kaggle_dlrm_config(
    kind: str, seed: int, budget: int, dense: list[str], sparse: list[str], note: str
) -> dict:
    """The Kaggle DLRM as a checkpoint config (docs/checkpoint.md), for random-weight models.

    ``dense`` columns are log1p-transformed (nulls 0); each of the 26 ``sparse`` columns is a
    one-hot int feature with its own table: ``memrec`` tables water-filled into ``budget`` bytes
    with seeds drawn from ``seed``, or ``full`` tables of the Kaggle cardinalities. MLPs
    512-256-64-16 and 512-256-1, dot interaction, D = ``KAGGLE_DIM``.
    """
    rng = np.random.default_rng(seed)
    sizes = memrec_sizes(KAGGLE_DIM, budget)
    tables = []
    for i, (name, card) in enumerate(zip(sparse, KAGGLE_CARDINALITIES, strict=True)):
        if kind == "full":
            # Rows 1..card hold ids 0..card-1 (build_table's default vocabulary is arange).
            tables.append({"name": name, "kind": "full", "features": [name], "rows": card + 1})
        else:
            tables.append(
                {
                    "name": name,
                    "kind": "memrec",
                    "features": [name],
                    "rows": sizes.m[i],
                    "k": sizes.k,
                    "token_seeds": draw_seeds(rng, sizes.k).tolist(),
                    "weight_rows": sizes.m_w[i],
                    "weight_cols": sizes.k,
                    "k_w": sizes.k_w,
                    "weight_seeds": draw_seeds(rng, sizes.k_w).tolist(),
                }  # fmt: skip
            )
    return {
        "embedding_dim": KAGGLE_DIM,
        "dense": [{"name": n, "transform": "log1p", "fill": 0.0} for n in dense],
        "sparse": [
            {
                "name": n,
                "columns": [n],
                "dtype": "int",
                "multi_hot": False,
                "table": n,
                "pooling": "sum",
            }
            for n in sparse
        ],  # fmt: skip
        "tables": tables,
        "dense_arch": [512, 256, 64, KAGGLE_DIM],
        "over_arch": [512, 256, 1],
        "interaction": "dot",
        "self_interaction": False,
        "label": "click",
        "train": {"note": note},
    }
