"""Id -> bucket hashing of the memrec-hash-v1 spec (``docs/hashing.md``, section 2), in torch.

The Numba kernels (``memrec_infer.kernels.hashing``) work on ``uint64``; torch has no unsigned
64-bit arithmetic, so every step here runs on ``int64`` holding the same bits (two's
complement). Additions and multiplications wrap identically; only right shifts differ (torch's
are arithmetic), which the mask after each shift undoes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

_MASK32 = 0xFFFFFFFF


def seed_to_int64(value: int) -> int:
    """A ``u64`` seed in ``[0, 2**64)`` as the ``int64`` with the same bits."""
    if not 0 <= value < 2**64:
        raise ValueError(f"a seed must be an integer in [0, 2**64), got {value}")
    return value - 2**64 if value >= 2**63 else value


def seeds_tensor(seeds: Sequence[Sequence[int]]) -> torch.Tensor:
    """Seeds as stored in a checkpoint config (``k`` rows of 4 ints in ``[0, 2**64)``).

    Returns
    -------
    LongTensor [k, 4], each value reinterpreted bit for bit as ``int64``.
    """
    rows = [[seed_to_int64(int(v)) for v in row] for row in seeds]
    if any(len(row) != 4 for row in rows):
        raise ValueError(f"seeds must be rows of 4 integers (a0, a1, a2, b), got {seeds!r}")
    return torch.tensor(rows, dtype=torch.int64).reshape(len(rows), 4)


def buckets(ids: torch.Tensor, seeds: torch.Tensor, m: int, slot: int = 0) -> torch.Tensor:
    """Buckets of every id under every hash function.

    Parameters
    ----------
    ids : LongTensor [N]
        Ids (``docs/hashing.md`` section 1).
    seeds : LongTensor [k, 4]
        Rows ``(a0, a1, a2, b)``, the ``u64`` seeds reinterpreted as ``int64``
        (see :func:`seeds_tensor`).
    m : int
        Number of rows addressed, ``1 <= m < 2**31``.
    slot : int
        The feature's slot in a shared table (0 if not shared).

    Returns
    -------
    LongTensor [N, k], values in ``[0, m)``; identical to the Numba ``buckets``.
    """
    if ids.dtype != torch.int64 or seeds.dtype != torch.int64:
        raise TypeError(f"ids and seeds must be int64, got {ids.dtype} and {seeds.dtype}")
    if seeds.dim() != 2 or seeds.shape[1] != 4:
        raise ValueError(f"seeds must have shape [k, 4], got {tuple(seeds.shape)}")
    if not 1 <= m < 2**31:
        raise ValueError(f"m must be in [1, 2**31), got {m}")
    if not 0 <= slot < 2**32:
        raise ValueError(f"slot must be in [0, 2**32), got {slot}")
    x = ids.reshape(-1, 1)
    lo = x & _MASK32
    hi = (x >> 32) & _MASK32  # mask: torch's >> copies the sign bit
    a0, a1, a2, b = (seeds[:, i].reshape(1, -1) for i in range(4))
    # int64 products and sums wrap modulo 2**64 exactly like the u64 spec.
    v = a0 * lo + a1 * hi + (a2 * slot + b)
    t = (v >> 32) & _MASK32
    return (t * m) >> 32  # t < 2**32 and m < 2**31, so t * m < 2**63: no wrap, no sign
