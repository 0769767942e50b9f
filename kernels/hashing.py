"""Id -> bucket hashing of the memrec-hash-v1 spec (``docs/hashing.md``, section 2).

Seeds of one hash function are four ``uint64`` values ``(a0, a1, a2, b)``; a table's hash
functions form a ``uint64`` array of shape ``[k, 4]``.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from ._config import JIT

MASK32 = np.uint64(0xFFFFFFFF)  # the low 32 bits of a uint64
_S32 = np.uint64(32)


@numba.njit(inline="always", **JIT)
def bucket_keyed(x: np.int64, a0, a1, c, m: np.uint64) -> np.int64:
    """:func:`bucket` with the slot term folded into ``c = a2*slot + b`` (mod 2**64).

    A kernel computes ``c`` once per feature and hash function, saving a multiply per id.
    """
    u = np.uint64(x)
    v = a0 * (u & MASK32) + a1 * (u >> _S32) + c
    return np.int64(((v >> _S32) * m) >> _S32)


@numba.njit(inline="always", **JIT)
def bucket(x: np.int64, slot: np.uint64, a0, a1, a2, b, m: np.uint64) -> np.int64:
    """Bucket of id ``x`` in ``[0, m)`` for one hash function (spec section 2).

    All of ``slot, a0, a1, a2, b, m`` must be ``uint64`` (mixing in int64 would give floats).
    """
    return bucket_keyed(x, a0, a1, a2 * slot + b, m)


@numba.njit(parallel=True, **JIT)
def _buckets(ids, slot, seeds, m, out):
    s = np.uint64(slot)
    mm = np.uint64(m)
    for i in prange(ids.shape[0]):
        for j in range(seeds.shape[0]):
            out[i, j] = bucket(ids[i], s, seeds[j, 0], seeds[j, 1], seeds[j, 2], seeds[j, 3], mm)


def buckets(ids: np.ndarray, seeds: np.ndarray, m: int, slot: int = 0) -> np.ndarray:
    """Buckets of every id under every hash function.

    Parameters
    ----------
    ids : int64 array [N]
    seeds : uint64 array [k, 4], rows ``(a0, a1, a2, b)``
    m : number of rows addressed, ``1 <= m < 2**31``
    slot : the feature's slot in a shared table (0 if not shared)

    Returns
    -------
    int64 array [N, k]
    """
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    seeds = np.ascontiguousarray(seeds, dtype=np.uint64)
    if seeds.ndim != 2 or seeds.shape[1] != 4:
        raise ValueError(f"seeds must have shape [k, 4], got {seeds.shape}")
    if not 1 <= m < 2**31:
        raise ValueError(f"m must be in [1, 2**31), got {m}")
    if not 0 <= slot < 2**32:
        raise ValueError(f"slot must be in [0, 2**32), got {slot}")
    out = np.empty((ids.shape[0], seeds.shape[0]), dtype=np.int64)
    _buckets(ids, slot, seeds, m, out)
    return out


def draw_seeds(rng: np.random.Generator, k: int) -> np.ndarray:
    """``k`` hash functions' seeds, uniformly random ``uint64``, shape ``[k, 4]``."""
    return rng.integers(0, 2**64, size=(k, 4), dtype=np.uint64, endpoint=False)


def seeds_to_hex(seeds: np.ndarray) -> list[list[str]]:
    """Seeds as JSON-safe hex strings (JSON readers differ on integers above 2**53)."""
    return [[f"0x{int(v):016x}" for v in row] for row in np.asarray(seeds, dtype=np.uint64)]


def seeds_from_hex(rows: list[list[str]] | list[list[int]]) -> np.ndarray:
    """Inverse of :func:`seeds_to_hex`; also accepts plain Python ints."""
    vals = [[int(v, 16) if isinstance(v, str) else int(v) for v in row] for row in rows]
    if not vals:
        return np.zeros((0, 4), np.uint64)
    return np.array(vals, dtype=np.uint64).reshape(len(vals), 4)
