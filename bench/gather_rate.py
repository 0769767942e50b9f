"""The machine's random row-gather rate: the ceiling for any bag-lookup kernel.

A bag of ``k`` rows at precomputed random indices is summed into one output row, exactly the
memory traffic of a MEM-REC lookup minus the hashing and weights. Measured on tables sized to
stay in L1, L2, L3 or DRAM, with the engine's Numba flags, vector row updates, prefetch distance
and store policy: an output large enough for the engine to stream it
(``memrec_infer.kernels._alloc.streams``) is streamed here too, so the reference is never
handicapped by a cost the kernel avoids.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from memrec_infer.kernels._alloc import empty_aligned, streams
from memrec_infer.kernels._bag_kernels import PREFETCH_AHEAD, prefetch_ahead
from memrec_infer.kernels._config import JIT  # the engine's flags (SLP vectorisation on)
from memrec_infer.kernels._intrinsics import (
    LINE,
    prefetch,
    rows1_add,
    rows1_set,
    rows1_write,
    rows2_write,
    rows_view,
    store_fence,
)

_TILE = 256


def _make_gather(dim: int):
    # A closure over a constant ``dim``, as the lookup kernels are (see ``lookup_kernels``), with
    # constant-width views of its arrays as their tiles have (``rows_view``); the rows are
    # prefetched as many bags ahead as there (``idx`` is padded past the last bag so the
    # prefetches stay in bounds).
    ahead = prefetch_ahead.py_func(dim)

    @numba.njit(parallel=True, **JIT)
    def gather_bags(table, idx, k, stream, out):
        table, out = rows_view(table, dim), rows_view(out, dim)
        nb = out.shape[0]
        one = np.float32(1.0)
        for t in prange((nb + _TILE - 1) // _TILE):
            for b in range(t * _TILE, min(nb, t * _TILE + _TILE)):
                for j in range(k):
                    for d in range(0, dim, LINE):
                        prefetch(table, idx[(b + ahead) * k + j], d)
                if k == 2:
                    rows2_write(dim, out, b, table, idx[b * k], one, idx[b * k + 1], one, stream)
                else:
                    rows1_set(dim, out, b, table, idx[b * k], one)
                    for j in range(1, k):
                        rows1_add(dim, out, b, table, idx[b * k + j], one)
            if stream:
                store_fence()

    return gather_bags


_GATHER: dict[int, object] = {}


def gather_call(table: np.ndarray, bags: int, k: int, seed: int = 0):
    """A zero-argument callable gathering ``bags * k`` random rows of ``table``, and its rows.

    Parameters
    ----------
    table : float32 [rows, D], C-contiguous
    bags : number of output rows
    k : rows summed per bag

    Returns
    -------
    (callable, rows gathered per call)
    """
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, table.shape[0], size=(bags + PREFETCH_AHEAD) * k, dtype=np.int64)
    out = empty_aligned((bags, table.shape[1]))
    dim = int(table.shape[1])
    kernel = _GATHER.get(dim) or _GATHER.setdefault(dim, _make_gather(dim))

    def call() -> None:  # the store policy depends on the threads of the call
        kernel(table, idx, k, streams(out, dim * 4), out)

    return call, bags * k


def _make_write(dim: int):
    # Every row of ``out`` written from one L1-resident row: the cost of the stores alone.

    @numba.njit(parallel=True, **JIT)
    def write_rows(src, stream, out):
        out = rows_view(out, dim)
        nb = out.shape[0]
        one = np.float32(1.0)
        for t in prange((nb + _TILE - 1) // _TILE):
            for b in range(t * _TILE, min(nb, t * _TILE + _TILE)):
                rows1_write(dim, out, b, src, 0, one, stream)
            if stream:
                store_fence()

    return write_rows


_WRITE: dict[int, object] = {}


def write_call(out: np.ndarray):
    """A zero-argument callable writing every row of ``out`` ([rows, D] float32, line-aligned)
    with the engine's store policy: the floor under any lookup producing that output."""
    dim = int(out.shape[1])
    kernel = _WRITE.get(dim) or _WRITE.setdefault(dim, _make_write(dim))
    src = np.ones((1, dim), dtype=np.float32)

    def call() -> None:  # the store policy depends on the threads of the call
        kernel(src, streams(out, dim * 4), out)

    return call


def resident_table(nbytes: int, dim: int, seed: int = 0) -> np.ndarray:
    """A float32 ``[nbytes / (4 * dim), dim]`` table of random values."""
    rows = max(1, nbytes // (4 * dim))
    return np.random.default_rng(seed).random((rows, dim), dtype=np.float32)
