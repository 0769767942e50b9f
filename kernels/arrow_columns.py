"""Feature prep of a whole Arrow record batch in one kernel call, read through the C data interface.

The batch is exported as one C ``struct ArrowArray`` (the Arrow C data interface: a struct array
whose children are the batch's columns), and this kernel reads the columns' buffers from it:
numbers cast to float32 for the dense matrix, integers and strings turned into ids (spec
section 1, ``ids.py``), crosses combined, every sparse feature one-hot. It replaces a few Arrow
and NumPy calls per column (at batch 1, ~2.7 us just to fetch a column object from a
RecordBatch) by one export and one call.

Only the column types below are read here; ``memrec_infer.fused_prep`` sends anything else
(and multi-hot features) down the per-column path, which gives the same values bit for bit.
"""

from __future__ import annotations

import numba
import numpy as np

from ._config import JIT
from ._intrinsics import address_as_pointer, data_address
from .ids import NULL_ID, bytes_id, cross_start, cross_step

# Column type codes (``cols[c, 1]``): the Arrow types this kernel reads.
I8, I16, I32, I64, U8, U16, U32, U64, F32, F64 = range(1, 11)
STR32 = 11  # string or binary: int32 offsets, then bytes
STR64 = 12  # large_string or large_binary: int64 offsets

# ``struct ArrowArray``, as int64 words: length, null_count, offset, n_buffers, n_children,
# buffers (const void **), children (struct ArrowArray **), dictionary, release, private_data.
_LENGTH, _NULLS, _OFFSET, _NBUF, _NCHILD, _BUFFERS, _CHILDREN = range(7)
ARRAY_WORDS = 10

OK = 0
BAD_LAYOUT = 1  # the batch is not laid out as the program expects (fall back)


@numba.njit(**JIT)
def address(a):
    """The address of a NumPy array's data: ~0.4 us a call from Python, where ``a.ctypes.data``
    takes 1.4-1.9 us. (One call for a whole tuple of columns took 4.8 us for 39, but compiled
    for every new tuple type, ~2 s each: for every model, and for every test.)"""
    return data_address(a)


@numba.njit(inline="always", **JIT)
def _words(addr, n):
    return numba.carray(address_as_pointer(addr, np.int64), n)


@numba.njit(inline="always", **JIT)
def _valid(bits, j):
    # Bit j of a validity bitmap (``bits`` a uint8 view), or True without one.
    return bits.shape[0] == 0 or (bits[j >> 3] >> (j & 7)) & 1 != 0


@numba.njit(inline="always", **JIT)
def _numbers(addr, dtype, bits, off, n, want_ids, ids, dense, col, fill):
    # A column of numbers: as ids if ``want_ids`` (integers widened to int64, uint64 values
    # >= 2**63 wrapping, as the spec says; null -> NULL_ID), and as dense feature ``col`` if it
    # is one (a C cast to float32: nearest, beyond float32's range -> inf; null, NaN -> fill).
    vals = numba.carray(address_as_pointer(addr, dtype), off + n)
    for i in range(n):
        valid = _valid(bits, off + i)
        if want_ids:
            ids[i] = np.int64(vals[off + i]) if valid else NULL_ID
        if col >= 0:
            v = np.float32(vals[off + i]) if valid else fill
            dense[i, col] = fill if v != v else v


@numba.njit(inline="always", **JIT)
def _string_ids(addr, otype, data_addr, bits, off, n, ids):
    offsets = numba.carray(address_as_pointer(addr, otype), off + n + 1)
    size = max(np.int64(offsets[off + n]), np.int64(0)) if data_addr != 0 else 0
    data = numba.carray(address_as_pointer(data_addr, np.uint8), size)
    for i in range(n):
        j = off + i
        ids[i] = bytes_id(data, offsets[j], offsets[j + 1]) if _valid(bits, j) else NULL_ID


@numba.njit(inline="always", **JIT)
def _read(code, buffers, bits, off, n, want_ids, ids, dense, col, fill):
    # One column, by its type code: its ids into ``ids`` if ``want_ids``, and dense feature
    # ``col`` of ``dense`` if ``col >= 0`` (``_numbers``; a string column is never dense).
    if code == STR32:
        _string_ids(buffers[1], np.int32, buffers[2], bits, off, n, ids)
    elif code == STR64:
        _string_ids(buffers[1], np.int64, buffers[2], bits, off, n, ids)
    elif code == I8:
        _numbers(buffers[1], np.int8, bits, off, n, want_ids, ids, dense, col, fill)
    elif code == I16:
        _numbers(buffers[1], np.int16, bits, off, n, want_ids, ids, dense, col, fill)
    elif code == I32:
        _numbers(buffers[1], np.int32, bits, off, n, want_ids, ids, dense, col, fill)
    elif code == I64:
        _numbers(buffers[1], np.int64, bits, off, n, want_ids, ids, dense, col, fill)
    elif code == U8:
        _numbers(buffers[1], np.uint8, bits, off, n, want_ids, ids, dense, col, fill)
    elif code == U16:
        _numbers(buffers[1], np.uint16, bits, off, n, want_ids, ids, dense, col, fill)
    elif code == U32:
        _numbers(buffers[1], np.uint32, bits, off, n, want_ids, ids, dense, col, fill)
    elif code == U64:
        _numbers(buffers[1], np.uint64, bits, off, n, want_ids, ids, dense, col, fill)
    elif code == F32:
        _numbers(buffers[1], np.float32, bits, off, n, want_ids, ids, dense, col, fill)
    else:
        _numbers(buffers[1], np.float64, bits, off, n, want_ids, ids, dense, col, fill)


@numba.njit(**JIT)
def prep_one_hot(batch, cols, fill, features, feature_cols, dense, values):
    """Dense matrix and ids of an exported record batch whose sparse features are all one-hot.

    Parameters
    ----------
    batch : int64, the address of the batch's ``struct ArrowArray`` (alive for the call)
    cols : int64 [C, 4], per column read: (child index in the batch, type code, 1 if its ids
        are needed, the dense feature it is or -1; a column is at most one dense feature)
    fill : float32 [n_dense], each dense feature's value for a null or NaN
    features : int64 [F, 2], per sparse feature: (first entry in ``feature_cols``, columns);
        one column: its ids; more: their cross
    feature_cols : int64, columns (rows of ``cols``) of the features, in cross order
    dense : float32 [B, n_dense], overwritten (before the transforms)
    values : int64 [F * B], overwritten: feature f's ids at ``[f * B, (f + 1) * B)``

    Returns
    -------
    OK, or BAD_LAYOUT (nothing to trust in the outputs) if the batch has not ``B`` rows, lacks
    a child, or a child has not the buffers of its type.
    """
    n = dense.shape[0]
    top = _words(batch, ARRAY_WORDS)
    if top[_LENGTH] != n:
        return BAD_LAYOUT
    children = _words(top[_CHILDREN], top[_NCHILD])
    ids = np.empty((cols.shape[0], n), np.int64)
    for c in range(cols.shape[0]):
        child, code, col = cols[c, 0], cols[c, 1], cols[c, 3]
        if child >= children.shape[0]:
            return BAD_LAYOUT
        arr = _words(children[child], ARRAY_WORDS)
        nbuf = 3 if code >= STR32 else 2
        off = top[_OFFSET] + arr[_OFFSET]  # a struct's offset applies to its children too
        if arr[_NBUF] != nbuf or arr[_LENGTH] < top[_OFFSET] + n:
            return BAD_LAYOUT
        buffers = _words(arr[_BUFFERS], nbuf)
        # No validity bitmap (or no nulls): every value valid.
        nbits = (off + n + 7) >> 3 if arr[_NULLS] != 0 and buffers[0] != 0 else 0
        bits = numba.carray(address_as_pointer(buffers[0], np.uint8), nbits)
        value_fill = fill[col] if col >= 0 else np.float32(0)
        _read(code, buffers, bits, off, n, cols[c, 2] != 0, ids[c], dense, col, value_fill)
    for f in range(features.shape[0]):
        first, count = features[f, 0], features[f, 1]
        dst = values[f * n : (f + 1) * n]
        if count == 1:
            dst[:] = ids[feature_cols[first]]
            continue
        for i in range(n):
            h = cross_start(ids[feature_cols[first], i])
            for c in range(1, count):
                h = cross_step(h, ids[feature_cols[first + c], i])
            dst[i] = np.int64(h)
    return OK
