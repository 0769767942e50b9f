"""Categorical value -> 64-bit id of the memrec-hash-v1 spec (``docs/hashing.md``, section 1).

Works on Arrow buffers handed over as NumPy views, so a column of strings is hashed in one Numba
loop with no Python call per row.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from ._config import JIT

NULL_ID = np.int64(-(2**63))
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_C1 = np.uint64(0xFF51AFD7ED558CCD)
_C2 = np.uint64(0xC4CEB9FE1A85EC53)
_S33 = np.uint64(33)


@numba.njit(inline="always", **JIT)
def fmix64(h):
    """MurmurHash3's 64-bit finaliser (a bijection on u64)."""
    h ^= h >> _S33
    h *= _C1
    h ^= h >> _S33
    h *= _C2
    h ^= h >> _S33
    return h


@numba.njit(inline="always", **JIT)
def _fnv1a64(data, start, stop):
    h = _FNV_OFFSET
    for p in range(start, stop):
        h = (h ^ np.uint64(data[p])) * _FNV_PRIME
    return h


@numba.njit(inline="always", **JIT)
def bytes_id(data, start, stop):
    """Id of the string ``data[start:stop]`` (its UTF-8 bytes, ``data`` a uint8 array)."""
    return np.int64(fmix64(_fnv1a64(data, start, stop)))


@numba.njit(inline="always", **JIT)
def _string_id(offsets, data, valid, i):
    if valid[i]:
        return bytes_id(data, offsets[i], offsets[i + 1])
    return NULL_ID


@numba.njit(**JIT)
def _string_ids_serial(offsets, data, valid, out):
    for i in range(out.shape[0]):
        out[i] = _string_id(offsets, data, valid, i)


@numba.njit(parallel=True, **JIT)
def _string_ids_parallel(offsets, data, valid, out):
    for i in prange(out.shape[0]):
        out[i] = _string_id(offsets, data, valid, i)


# Below this many values a parallel launch costs more than it saves, and on a busy machine a
# parallel region waits for every worker to be scheduled (milliseconds at batch 1).
PARALLEL_MIN = 16384


def string_ids(offsets: np.ndarray, data: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Ids of ``n`` strings stored Arrow-style.

    Parameters
    ----------
    offsets : int32 or int64 array [n + 1]; string ``i`` is ``data[offsets[i]:offsets[i+1]]``
    data : uint8 array, the UTF-8 bytes
    valid : bool array [n], False where the value is null

    Returns
    -------
    int64 array [n]
    """
    out = np.empty(valid.shape[0], dtype=np.int64)
    kernel = _string_ids_parallel if out.shape[0] >= PARALLEL_MIN else _string_ids_serial
    kernel(offsets, data, valid, out)
    return out


def string_id(value: str | bytes | None) -> int:
    """Id of one string (plain Python; for tests, docs and small look-ups)."""
    if value is None:
        return int(NULL_ID)
    raw = value.encode("utf-8") if isinstance(value, str) else value
    data = np.frombuffer(raw, dtype=np.uint8)
    return int(string_ids(np.array([0, len(raw)], np.int64), data, np.ones(1, np.bool_))[0])


@numba.njit(inline="always", **JIT)
def cross_start(x):
    """The hash state of a cross after the id ``x`` of its first column."""
    return fmix64(np.uint64(x))


@numba.njit(inline="always", **JIT)
def cross_step(h, x):
    """The state ``h`` of a cross after the id ``x`` of its next column (the id: ``int64(h)``)."""
    return fmix64(h ^ np.uint64(x))


@numba.njit(inline="always", **JIT)
def _cross_id(cols, i):
    h = cross_start(cols[0, i])
    for c in range(1, cols.shape[0]):
        h = cross_step(h, cols[c, i])
    return np.int64(h)


@numba.njit(**JIT)
def _cross_ids_serial(cols, out):
    for i in range(cols.shape[1]):
        out[i] = _cross_id(cols, i)


@numba.njit(parallel=True, **JIT)
def _cross_ids_parallel(cols, out):
    for i in prange(cols.shape[1]):
        out[i] = _cross_id(cols, i)


def cross_ids(cols: np.ndarray) -> np.ndarray:
    """Ids of a cross of ``c >= 2`` columns, given their ids as an int64 array [c, n]."""
    cols = np.ascontiguousarray(cols, dtype=np.int64)
    if cols.ndim != 2 or cols.shape[0] < 2:
        raise ValueError(f"a cross needs ids of shape [c >= 2, n], got {cols.shape}")
    out = np.empty(cols.shape[1], dtype=np.int64)
    kernel = _cross_ids_parallel if out.shape[0] >= PARALLEL_MIN else _cross_ids_serial
    kernel(cols, out)
    return out
