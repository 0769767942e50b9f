"""Bag lookup of one full table by row indices (no vocabulary): ``torch.nn.EmbeddingBag``'s job.

The engine's full-table features go through :class:`memrec_infer.kernels.bags.BagPlan`, which
first maps ids to rows with the vocabulary. This function is for callers that already hold row
indices, chiefly benchmarks comparing against ``torch.nn.EmbeddingBag`` on the same indices.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from ._checks import require_array
from ._config import JIT

# Below this many bags the thread-pool launch costs more than it saves.
_SERIAL_MAX_BAGS = 64
_TILE = 256


@numba.njit(inline="always", **JIT)
def _rows_bags(indices, offsets, table, mean, b0, b1, out):
    dim = table.shape[1]
    for b in range(b0, b1):
        p0 = offsets[b]
        p1 = offsets[b + 1]
        if p1 <= p0:
            for d in range(dim):
                out[b, d] = 0.0
            continue
        # Assign the first row rather than zero-and-add: zeroing compiles to a memset call.
        r = indices[p0]
        for d in range(dim):
            out[b, d] = table[r, d]
        for p in range(p0 + 1, p1):
            r = indices[p]
            for d in range(dim):
                out[b, d] += table[r, d]
        if mean:
            n = np.float32(p1 - p0)
            for d in range(dim):
                out[b, d] /= n


@numba.njit(**JIT)
def _rows_serial(indices, offsets, table, mean, out):
    _rows_bags(indices, offsets, table, mean, 0, out.shape[0], out)


@numba.njit(parallel=True, **JIT)
def _rows_parallel(indices, offsets, table, mean, tile, out):
    nb = out.shape[0]
    for t in prange((nb + tile - 1) // tile):
        b0 = t * tile
        _rows_bags(indices, offsets, table, mean, b0, min(nb, b0 + tile), out)


@numba.njit(**JIT)
def _first_bad(indices, offsets, rows):
    """-1 if offsets are monotone within ``[0, len(indices)]`` and indices within ``[0, rows)``;
    else 0 for bad offsets, 1 for a bad index."""
    n = indices.shape[0]
    if offsets[0] < 0 or offsets[-1] > n:
        return 0
    for b in range(1, offsets.shape[0]):
        if offsets[b] < offsets[b - 1]:
            return 0
    for p in range(offsets[0], offsets[-1]):
        if indices[p] < 0 or indices[p] >= rows:
            return 1
    return -1


def full_bag_rows(
    indices: np.ndarray,
    offsets: np.ndarray,
    table: np.ndarray,
    out: np.ndarray | None = None,
    mean: bool = False,
    parallel: bool | None = None,
) -> np.ndarray:
    """Pooled rows of one table for ``B`` bags of row indices (``EmbeddingBag`` semantics).

    Bag ``b`` is ``indices[offsets[b]:offsets[b+1]]``; its output is the sum (or, with
    ``mean=True``, the mean) of ``table[i]`` over its indices, zeros for an empty bag. Sums are
    float32 in index order. Example: ``indices=[3, 0, 3]``, ``offsets=[0, 2, 2, 3]`` gives
    ``out[0] = table[3] + table[0]``, ``out[1] = 0``, ``out[2] = table[3]``.

    Parameters
    ----------
    indices : int64 array [N], row indices in ``[0, rows)`` (checked)
    offsets : int64 array [B + 1], non-decreasing, within ``[0, N]`` (checked)
    table : float32 array [rows, D], C-contiguous; read-only memory maps are fine
    out : float32 array [B, D], C-contiguous, overwritten; allocated if None
    mean : mean pooling instead of sum
    parallel : force the multi-threaded (True) or serial (False) kernel; None picks by B

    Returns
    -------
    float32 array [B, D], ``out`` if given.

    Raises
    ------
    ValueError
        On a wrong dtype, shape or layout, bad offsets, or an index outside the table.
    """
    require_array(indices, np.int64, 1, "indices")
    require_array(offsets, np.int64, 1, "offsets")
    require_array(table, np.float32, 2, "table")
    if offsets.shape[0] < 1:
        raise ValueError("offsets must have B + 1 >= 1 entries, got an empty array")
    nb = offsets.shape[0] - 1
    if out is None:
        out = np.empty((nb, table.shape[1]), dtype=np.float32)
    else:
        require_array(out, np.float32, 2, "out")
        if out.shape != (nb, table.shape[1]) or not out.flags.writeable:
            raise ValueError(
                f"out must be a writable float32 array of shape {(nb, table.shape[1])}, "
                f"got shape {out.shape} (writeable={out.flags.writeable}); pass out=None "
                "to allocate one"
            )
    bad = _first_bad(indices, offsets, table.shape[0])
    if bad == 0:
        raise ValueError(
            f"offsets must be non-decreasing within [0, {indices.shape[0]}] (len(indices)); "
            "check that they are cumulative lengths starting at 0"
        )
    if bad == 1:
        raise ValueError(
            f"indices must lie in [0, {table.shape[0]}) (rows of table); found "
            f"min {int(indices.min())}, max {int(indices.max())}"
        )
    if parallel is None:
        parallel = nb > _SERIAL_MAX_BAGS
    if parallel:
        tile = max(16, min(_TILE, -(-nb // (2 * numba.get_num_threads()))))
        _rows_parallel(indices, offsets, table, bool(mean), tile, out)
    else:
        _rows_serial(indices, offsets, table, bool(mean), out)
    return out
