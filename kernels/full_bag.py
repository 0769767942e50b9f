"""Bag lookup of one full table by row indices (no vocabulary): ``torch.nn.EmbeddingBag``'s job.

The engine's full-table features go through :class:`memrec_infer.kernels.bags.BagPlan`, which
first maps ids to rows with the vocabulary. This function is for callers that already hold row
indices, chiefly benchmarks comparing against ``torch.nn.EmbeddingBag`` on the same indices.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from ._alloc import empty_output, streams
from ._checks import require_array, scan_offsets
from ._config import JIT
from ._intrinsics import (
    LINE,
    bag_rows,
    bag_rows_stream,
    prefetch,
    rows1_write,
    rows_view,
    store_fence,
)

# Below this many bags the thread-pool launch costs more than it saves.
_SERIAL_MAX_BAGS = 64
_TILE = 256
# Rows are DRAM-resident and gathered at random: request the rows of the index this many
# positions ahead (every cache line of them), so that enough misses are in flight while the
# current bags are summed; prefetching runs on across tile boundaries. Multi-hot bags, measured
# side by side on the Criteo Kaggle tables (Zen 3, B=1024 and 16384, 1 and 2 threads): at D=16
# (one line a row) 32-64 ids ahead were 3-17% faster than the old 512 that stopped at each
# tile's end; at D=128 (eight lines, which the hardware prefetcher follows once the first is
# requested) 8 ids stayed best there. On Zen 5, 16 ahead at D=16 was 0.78-0.95x as fast as 48
# on 1 thread, and at D=128 24 ahead was 0.98-1.28x as fast as 8 (B=1024 and 4096, 1 and 2
# threads; 16 ahead 0.95-1.20x). One-hot tiles (a leaner loop, ``_one_row_bags``) request 16
# ahead at any D: on Zen 5 the old loop was 0.90-0.92x as fast 48 ahead as 8-16 ahead at D=16,
# and ``_one_row_bags`` 0.88-1.02x as fast 8 ahead as 16 ahead at D=128.
_AHEAD_IDS_ONE_LINE = 48
_AHEAD_MIN = 24
_AHEAD_ONE_HOT = 16


# Status codes the kernels return (they never raise; the wrapper turns these into errors).
_OK = 0
_BAD_INDEX = 1
_BAD_OFFSETS = 2


@numba.njit(inline="always", **JIT)
def _one_row_bags(indices, table, p0, b0, b1, last, out, dim, stream):
    """Bags ``b0..b1`` of one index each, ``indices[p0], indices[p0 + 1], ...``, each row copied
    straight to its output row; returns a status code.

    The tile's indices are checked in a pass of their own (it vectorises) before any row is
    read. The row ``_AHEAD_ONE_HOT`` indices on is requested with each one, up to the batch's
    ``last`` index: into the next tiles' indices, unchecked, since a prefetch never faults.
    """
    # With ``rows_view``, against the previous kernel (the general loop of ``_rows_bags`` for
    # every tile, run-time row strides), side by side (Zen 5, Criteo tables, B=256..16384, 1 and
    # 2 threads, the same bits): D=16 1.03-2.1x as fast, D=128 1.0-1.15x.
    idx = indices[p0 : p0 + b1 - b0]
    outside = False
    for i in range(idx.shape[0]):
        outside |= np.uint64(idx[i]) >= np.uint64(table.shape[0])
    if outside:
        return _BAD_INDEX
    one = np.float32(1.0)
    for i in range(b1 - b0):
        r = indices[min(p0 + i + _AHEAD_ONE_HOT, last)]
        for d in range(0, dim, LINE):
            prefetch(table, r, d)
        rows1_write(dim, out, b0 + i, table, idx[i], one, stream)
    return _OK


@numba.njit(inline="always", **JIT)
def _rows_bags(indices, offsets, table, mean, b0, b1, out, dim, ahead, stream):
    """Pool bags ``b0..b1`` into ``out[b0:b1]``; returns a status code.

    Validation is fused into the tile (a separate scan of the whole batch cost as much as the
    gathers of a small batch): the tile's offsets are checked before any of them is used, and
    each index before its row is read (here when its row is prefetched, which always happens
    first), so nothing is ever read out of bounds. On an error ``out`` is left partly written.
    With ``stream``, bags are written with streaming stores (see ``_alloc``), except mean bags
    of several rows (divided in place after their sum is written).
    """
    valid, one_hot = scan_offsets(offsets[b0 : b1 + 1], indices.shape[0])
    if not valid:
        return _BAD_OFFSETS
    # The batch's last index (its offsets past this tile are not checked here, hence the clamp).
    end = min(indices.shape[0], offsets[offsets.shape[0] - 1])
    if one_hot:
        return _one_row_bags(indices, table, offsets[b0], b0, b1, max(0, end - 1), out, dim, stream)
    # Bags of any length: their indices are checked where they are prefetched (a pass of
    # their own, as one-hot tiles have, made multi-hot ones 2-6% slower at B >= 1024).
    rows = np.uint64(table.shape[0])
    row = offsets[b0 : b1 + 1]
    pf = row[0]  # indices [.., pf) have been checked and their rows prefetched
    one = np.float32(1.0)
    stream_sums = stream and not mean  # mean bags are divided in place
    for b in range(b1 - b0):
        p0 = row[b]
        p1 = row[b + 1]
        # On into the next tiles' indices (checked all the same): stopping at the tile's end
        # would start every tile with a DRAM latency's stall. Never short of this bag's own.
        stop = max(p1, min(end, p1 + ahead))
        while pf < stop:
            r = indices[pf]
            if np.uint64(r) >= rows:
                return _BAD_INDEX
            for d in range(0, dim, LINE):
                prefetch(table, r, d)
            pf += 1
        o = b0 + b
        if p1 - p0 == 1:
            rows1_write(dim, out, o, table, indices[p0], one, stream)
        else:
            # Summed in registers; an empty bag: zeros. (The intrinsics called here, not through
            # a helper: see ``_bag_kernels._pool_bags_k2``.)
            if stream_sums:
                bag_rows_stream(dim, out, o, table, indices, p0, p1)
            else:
                bag_rows(dim, out, o, table, indices, p0, p1)
            if mean and p1 > p0:
                nf = np.float32(p1 - p0)
                for d in range(dim):
                    out[o, d] /= nf
    return _OK


def _make_rows_kernels(dim: int, ahead: int):
    # Closures over constants ``dim`` and ``ahead`` (see ``_bag_kernels.lookup_kernels``); the
    # tables are viewed again with ``dim`` a constant (``rows_view``: row addresses by shifts).

    @numba.njit(**JIT)
    def rows_serial(indices, offsets, table, mean, tile, out):
        table, out = rows_view(table, dim), rows_view(out, dim)
        return _rows_bags(indices, offsets, table, mean, 0, out.shape[0], out, dim, ahead, False)

    @numba.njit(parallel=True, **JIT)
    def rows_parallel(indices, offsets, table, mean, tile, stream, out):
        table, out = rows_view(table, dim), rows_view(out, dim)
        nb = out.shape[0]
        worst = _OK
        for t in prange((nb + tile - 1) // tile):
            b0 = t * tile
            b1 = min(nb, b0 + tile)
            status = _rows_bags(indices, offsets, table, mean, b0, b1, out, dim, ahead, stream)
            if stream:
                store_fence()
            worst = max(worst, status)
        return worst

    return rows_serial, rows_parallel


_KERNELS: dict[int, tuple] = {}


def _rows_kernels(dim: int) -> tuple:
    if dim not in _KERNELS:
        lines = -(-dim // LINE)
        _KERNELS[dim] = _make_rows_kernels(dim, max(_AHEAD_MIN, _AHEAD_IDS_ONE_LINE // lines))
    return _KERNELS[dim]


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
    out : float32 array [B, D], C-contiguous, overwritten; allocated if None; outputs of 6 MiB
        or more are written with streaming stores if 64-byte aligned (``empty_aligned``)
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
        out = empty_output((nb, table.shape[1]))
    else:
        require_array(out, np.float32, 2, "out")
        if out.shape != (nb, table.shape[1]) or not out.flags.writeable:
            raise ValueError(
                f"out must be a writable float32 array of shape {(nb, table.shape[1])}, "
                f"got shape {out.shape} (writeable={out.flags.writeable}); pass out=None "
                "to allocate one"
            )
    if nb == 0 and not 0 <= offsets[0] <= indices.shape[0]:
        status = _BAD_OFFSETS
    else:
        if parallel is None:
            parallel = nb > _SERIAL_MAX_BAGS
        serial_kernel, parallel_kernel = _rows_kernels(int(table.shape[1]))
        if parallel:
            # At least 16 tiles (numba.get_num_threads() would cost ~1 us per call here).
            tile = max(16, min(_TILE, nb // 16))
            stream = streams(out, table.shape[1] * 4)
            status = parallel_kernel(indices, offsets, table, bool(mean), tile, stream, out)
        else:
            status = serial_kernel(indices, offsets, table, bool(mean), 0, out)
    if status == _BAD_OFFSETS:
        raise ValueError(
            f"offsets must be non-decreasing within [0, {indices.shape[0]}] (len(indices)); "
            "check that they are cumulative lengths starting at 0"
        )
    if status == _BAD_INDEX:
        raise ValueError(
            f"indices must lie in [0, {table.shape[0]}) (rows of table); found "
            f"min {int(indices.min())}, max {int(indices.max())}"
        )
    return out
