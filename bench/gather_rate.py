"""The machine's random row-gather rate: the ceiling for any bag-lookup kernel.

A bag of ``k`` rows at precomputed random indices is summed into one output row, exactly the
memory traffic of a MEM-REC lookup minus the hashing and weights. Measured on tables sized to
stay in L1, L2, L3 or DRAM, with the same Numba flags as the engine's kernels.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from memrec_infer.kernels._config import JIT  # the engine's flags (SLP vectorisation on)

_TILE = 256


@numba.njit(parallel=True, **JIT)
def _gather_bags(table, idx, k, out):
    nb = out.shape[0]
    dim = table.shape[1]
    for t in prange((nb + _TILE - 1) // _TILE):
        for b in range(t * _TILE, min(nb, t * _TILE + _TILE)):
            for d in range(dim):
                out[b, d] = 0.0
            for j in range(k):
                r = idx[b * k + j]
                for d in range(dim):
                    out[b, d] += table[r, d]


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
    idx = rng.integers(0, table.shape[0], size=bags * k, dtype=np.int64)
    out = np.empty((bags, table.shape[1]), dtype=np.float32)

    def call() -> None:
        _gather_bags(table, idx, k, out)

    return call, bags * k


def resident_table(nbytes: int, dim: int, seed: int = 0) -> np.ndarray:
    """A float32 ``[nbytes / (4 * dim), dim]`` table of random values."""
    rows = max(1, nbytes // (4 * dim))
    return np.random.default_rng(seed).random((rows, dim), dtype=np.float32)
