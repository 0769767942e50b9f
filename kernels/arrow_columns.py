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
from ._intrinsics import address_as_pointer
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


@numba.njit(inline="always", **JIT)
def _words(addr, n):
    return numba.carray(address_as_pointer(addr, np.int64), n)


@numba.njit(inline="always", **JIT)
def _valid(bits, j):
    # Bit j of a validity bitmap (``bits`` a uint8 view), or True without one.
    return bits.shape[0] == 0 or (bits[j >> 3] >> (j & 7)) & 1 != 0


@numba.njit(inline="always", **JIT)
def _int_ids(addr, dtype, bits, off, n, out):
    # Integers as ids: widened to int64 (uint64 values >= 2**63 wrap, as the spec says).
    vals = numba.carray(address_as_pointer(addr, dtype), off + n)
    for i in range(n):
        out[i] = np.int64(vals[off + i]) if _valid(bits, off + i) else NULL_ID


@numba.njit(inline="always", **JIT)
def _string_ids(addr, otype, data_addr, bits, off, n, out):
    offsets = numba.carray(address_as_pointer(addr, otype), off + n + 1)
    size = max(np.int64(offsets[off + n]), np.int64(0)) if data_addr != 0 else 0
    data = numba.carray(address_as_pointer(data_addr, np.uint8), size)
    for i in range(n):
        j = off + i
        out[i] = bytes_id(data, offsets[j], offsets[j + 1]) if _valid(bits, j) else NULL_ID


@numba.njit(inline="always", **JIT)
def _dense(addr, dtype, bits, off, n, fill, out, col):
    # One dense column as float32 (a C cast: nearest, beyond float32's range -> inf); null and
    # NaN -> ``fill``.
    vals = numba.carray(address_as_pointer(addr, dtype), off + n)
    for i in range(n):
        v = np.float32(vals[off + i]) if _valid(bits, off + i) else fill
        out[i, col] = fill if v != v else v


@numba.njit(inline="always", **JIT)
def _column_ids(code, data, chars, bits, off, n, out):
    if code == I8:
        _int_ids(data, np.int8, bits, off, n, out)
    elif code == I16:
        _int_ids(data, np.int16, bits, off, n, out)
    elif code == I32:
        _int_ids(data, np.int32, bits, off, n, out)
    elif code == I64:
        _int_ids(data, np.int64, bits, off, n, out)
    elif code == U8:
        _int_ids(data, np.uint8, bits, off, n, out)
    elif code == U16:
        _int_ids(data, np.uint16, bits, off, n, out)
    elif code == U32:
        _int_ids(data, np.uint32, bits, off, n, out)
    elif code == U64:
        _int_ids(data, np.uint64, bits, off, n, out)
    elif code == STR32:
        _string_ids(data, np.int32, chars, bits, off, n, out)
    else:
        _string_ids(data, np.int64, chars, bits, off, n, out)


@numba.njit(inline="always", **JIT)
def _dense_column(code, data, bits, off, n, fill, out, col):
    if code == I8:
        _dense(data, np.int8, bits, off, n, fill, out, col)
    elif code == I16:
        _dense(data, np.int16, bits, off, n, fill, out, col)
    elif code == I32:
        _dense(data, np.int32, bits, off, n, fill, out, col)
    elif code == I64:
        _dense(data, np.int64, bits, off, n, fill, out, col)
    elif code == U8:
        _dense(data, np.uint8, bits, off, n, fill, out, col)
    elif code == U16:
        _dense(data, np.uint16, bits, off, n, fill, out, col)
    elif code == U32:
        _dense(data, np.uint32, bits, off, n, fill, out, col)
    elif code == U64:
        _dense(data, np.uint64, bits, off, n, fill, out, col)
    elif code == F32:
        _dense(data, np.float32, bits, off, n, fill, out, col)
    else:
        _dense(data, np.float64, bits, off, n, fill, out, col)


@numba.njit(**JIT)
def prep_one_hot(batch, cols, dense_cols, fill, features, feature_cols, dense, values):
    """Dense matrix and ids of an exported record batch whose sparse features are all one-hot.

    Parameters
    ----------
    batch : int64, the address of the batch's ``struct ArrowArray`` (alive for the call)
    cols : int64 [C, 3], per column read: (child index in the batch, type code, 1 if its ids
        are needed)
    dense_cols : int64 [n_dense], the column (row of ``cols``) of each dense feature
    fill : float32 [n_dense], the value of a null or NaN
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
        child, code = cols[c, 0], cols[c, 1]
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
        if cols[c, 2]:
            _column_ids(code, buffers[1], buffers[2] if nbuf == 3 else 0, bits, off, n, ids[c])
        for j in range(dense_cols.shape[0]):
            if dense_cols[j] == c:
                _dense_column(code, buffers[1], bits, off, n, fill[j], dense, j)
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
