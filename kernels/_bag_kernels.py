"""The ``@njit`` kernels behind :class:`memrec_infer.kernels.bags.BagPlan` (no validation here).

Every feature of a plan is described by one row of an int64 ``meta`` array (columns below) and
its hash functions by rows of one shared ``uint64 [S, 3]`` array of keys, so a single kernel
call serves all features of a batch. The kernels trust their inputs completely: the Python
layer in ``bags.py`` has checked every range once, so nothing here can index out of bounds or
raise.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from ._config import JIT
from .hashing import bucket_keyed

# Columns of the ``meta`` array, one row per feature.
KIND = 0  # KIND_MEMREC or KIND_FULL
TOKEN_OFFSET = 1  # first row of the feature's table in ``tokens``
ROWS = 2  # memrec: m token rows; full: vocabulary size + 1
SLOT = 3  # slot in a shared table (hash key mixing)
MEAN = 4  # 1 for mean pooling, 0 for sum
TOKEN_SEED = 5  # first row of the token hash keys in ``keys``
K = 6  # number of token hashes
WEIGHT_OFFSET = 7  # first element of the weight table in ``weights``
WEIGHT_ROWS = 8  # m_w
WEIGHT_COLS = 9  # k (per-hash weights) or 1 (scalar weight)
WEIGHT_SEED = 10  # first row of the weight hash keys in ``keys``
KW = 11  # number of weight hashes
VOCAB_OFFSET = 12  # first id of the feature's sorted vocabulary in ``vocab``
META_COLS = 13

KIND_MEMREC = 0
KIND_FULL = 1


@numba.njit(inline="always", **JIT)
def vocab_row(vocab, lo, n, x):
    """Row of id ``x`` in a full table: ``1 + position`` in ``vocab[lo:lo+n]``, else 0 (OOV)."""
    # Lower bound by halving: the answer stays in [base, base + size]; the loop has no
    # data-dependent exit, so it compiles to conditional moves, not mispredicted branches.
    if n <= 0:
        return 0
    base = lo
    size = n
    while size > 1:
        half = size >> 1
        if vocab[base + half] < x:
            base += half
        size -= half
    if vocab[base] < x:
        base += 1
    if base < lo + n and vocab[base] == x:
        return base - lo + 1
    return 0


@numba.njit(inline="always", **JIT)
def _axpy(out, b, f, alpha, tokens, r, first):
    # The first row of a bag is assigned, not added: zeroing a row first compiles to a memset
    # call per bag, and the re-read of that fresh store stalls store forwarding.
    if first:
        for d in range(tokens.shape[1]):
            out[b, f, d] = alpha * tokens[r, d]
    else:
        for d in range(tokens.shape[1]):
            out[b, f, d] += alpha * tokens[r, d]


@numba.njit(inline="always", **JIT)
def _finish(out, b, f, n, mean):
    # An empty bag pools to zeros; mean pooling divides by the bag length.
    if n == 0:
        for d in range(out.shape[2]):
            out[b, f, d] = 0.0
    elif mean:
        nf = np.float32(n)
        for d in range(out.shape[2]):
            out[b, f, d] /= nf


@numba.njit(inline="always", **JIT)
def _memrec_bags(values, offsets, tokens, weights, keys, meta, f, b0, b1, out, g):
    """MEM-REC bags ``(f, b0..b1)`` into ``out[b0:b1, f]``; ``g`` is scratch of >= k_w int64.

    ``keys`` rows are ``(a0, a1, a2*slot + b)`` (see ``hashing.bucket_keyed``).
    """
    toff = meta[f, TOKEN_OFFSET]
    m = np.uint64(meta[f, ROWS])
    ts = meta[f, TOKEN_SEED]
    k = meta[f, K]
    woff = meta[f, WEIGHT_OFFSET]
    mw = np.uint64(meta[f, WEIGHT_ROWS])
    c = meta[f, WEIGHT_COLS]
    ws = meta[f, WEIGHT_SEED]
    kw = meta[f, KW]
    mean = meta[f, MEAN] != 0
    for b in range(b0, b1):
        p0 = offsets[f, b]
        p1 = offsets[f, b + 1]
        for p in range(p0, p1):
            x = values[p]
            for i in range(kw):
                r = bucket_keyed(x, keys[ws + i, 0], keys[ws + i, 1], keys[ws + i, 2], mw)
                g[i] = woff + r * c
            alpha = np.float32(0.0)
            if c == 1:
                for i in range(kw):
                    alpha += weights[g[i]]
            for j in range(k):
                if c != 1:
                    alpha = np.float32(0.0)
                    for i in range(kw):
                        alpha += weights[g[i] + j]
                h = bucket_keyed(x, keys[ts + j, 0], keys[ts + j, 1], keys[ts + j, 2], m)
                _axpy(out, b, f, alpha, tokens, toff + h, p == p0 and j == 0)
        _finish(out, b, f, p1 - p0, mean)


@numba.njit(inline="always", **JIT)
def _memrec_bags_k2(values, offsets, tokens, weights, keys, meta, f, b0, b1, out):
    """:func:`_memrec_bags` for k = k_w = 2 (the default configuration), fully unrolled.

    Same arithmetic in the same order; the keys live in registers instead of being re-read
    after every store to ``out``, which measured ~1.5x faster than the generic loops at D=16.
    """
    toff = meta[f, TOKEN_OFFSET]
    m = np.uint64(meta[f, ROWS])
    ts = meta[f, TOKEN_SEED]
    woff = meta[f, WEIGHT_OFFSET]
    mw = np.uint64(meta[f, WEIGHT_ROWS])
    c = meta[f, WEIGHT_COLS]
    ws = meta[f, WEIGHT_SEED]
    mean = meta[f, MEAN] != 0
    t0a, t0b, t0c = keys[ts, 0], keys[ts, 1], keys[ts, 2]
    t1a, t1b, t1c = keys[ts + 1, 0], keys[ts + 1, 1], keys[ts + 1, 2]
    w0a, w0b, w0c = keys[ws, 0], keys[ws, 1], keys[ws, 2]
    w1a, w1b, w1c = keys[ws + 1, 0], keys[ws + 1, 1], keys[ws + 1, 2]
    second = 1 if c == 2 else 0  # column of alpha_2: per-hash weights, or the scalar again
    for b in range(b0, b1):
        p0 = offsets[f, b]
        p1 = offsets[f, b + 1]
        for p in range(p0, p1):
            x = values[p]
            g0 = woff + bucket_keyed(x, w0a, w0b, w0c, mw) * c
            g1 = woff + bucket_keyed(x, w1a, w1b, w1c, mw) * c
            alpha0 = np.float32(0.0) + weights[g0] + weights[g1]
            alpha1 = np.float32(0.0) + weights[g0 + second] + weights[g1 + second]
            h0 = toff + bucket_keyed(x, t0a, t0b, t0c, m)
            h1 = toff + bucket_keyed(x, t1a, t1b, t1c, m)
            _axpy(out, b, f, alpha0, tokens, h0, p == p0)
            _axpy(out, b, f, alpha1, tokens, h1, False)
        _finish(out, b, f, p1 - p0, mean)


@numba.njit(inline="always", **JIT)
def _full_bags(values, offsets, tokens, vocab, meta, f, b0, b1, out):
    """Full-table bags ``(f, b0..b1)`` into ``out[b0:b1, f]``: vocabulary search + gather."""
    toff = meta[f, TOKEN_OFFSET]
    nv = meta[f, ROWS] - 1
    voff = meta[f, VOCAB_OFFSET]
    mean = meta[f, MEAN] != 0
    one = np.float32(1.0)
    for b in range(b0, b1):
        p0 = offsets[f, b]
        p1 = offsets[f, b + 1]
        for p in range(p0, p1):
            r = toff + vocab_row(vocab, voff, nv, values[p])
            _axpy(out, b, f, one, tokens, r, p == p0)
        _finish(out, b, f, p1 - p0, mean)


@numba.njit(**JIT)
def _tile(values, offsets, tokens, weights, vocab, keys, meta, b0, b1, out, g):
    # Feature-major inside a tile: one feature's table stays hot for the whole tile.
    for f in range(meta.shape[0]):
        if meta[f, KIND] == KIND_MEMREC and meta[f, K] == 2 and meta[f, KW] == 2:
            _memrec_bags_k2(values, offsets, tokens, weights, keys, meta, f, b0, b1, out)
        elif meta[f, KIND] == KIND_MEMREC:
            _memrec_bags(values, offsets, tokens, weights, keys, meta, f, b0, b1, out, g)
        else:
            _full_bags(values, offsets, tokens, vocab, meta, f, b0, b1, out)


@numba.njit(**JIT)
def lookup_serial(values, offsets, tokens, weights, vocab, keys, meta, tile, max_kw, out):
    """All bags of a batch on the calling thread, ``tile`` samples at a time.

    Parameters
    ----------
    values : int64 [N]
    offsets : int64 [F, B + 1]
    tokens : float32 [R, D]
    weights : float32 [RW]
    vocab : int64 [V]
    keys : uint64 [S, 3], hash keys ``(a0, a1, a2*slot + b)`` of every hash function
    meta : int64 [F, META_COLS]
    tile : samples per tile, >= 1
    max_kw : largest k_w of the plan (scratch size)
    out : float32 [B, F, D], overwritten
    """
    nb = out.shape[0]
    g = np.empty(max(max_kw, 1), np.int64)
    for b0 in range(0, nb, tile):
        _tile(values, offsets, tokens, weights, vocab, keys, meta, b0, min(nb, b0 + tile), out, g)


@numba.njit(parallel=True, **JIT)
def lookup_parallel(values, offsets, tokens, weights, vocab, keys, meta, tile, max_kw, out):
    """Same as :func:`lookup_serial`, tiles spread over Numba's threads (disjoint outputs)."""
    nb = out.shape[0]
    ntiles = (nb + tile - 1) // tile
    for t in prange(ntiles):
        g = np.empty(max(max_kw, 1), np.int64)  # one small scratch per tile, not per bag
        b0 = t * tile
        _tile(values, offsets, tokens, weights, vocab, keys, meta, b0, min(nb, b0 + tile), out, g)


@numba.njit(**JIT)
def check_offsets(offsets, n):
    """Index of the first feature whose offsets are not ``0 <= o[0] <= ... <= o[-1] <= n``.

    Returns ``-1`` when every row is valid. Never raises; the caller builds the message.
    """
    for f in range(offsets.shape[0]):
        prev = offsets[f, 0]
        if prev < 0:
            return f
        for b in range(1, offsets.shape[1]):
            cur = offsets[f, b]
            if cur < prev:
                return f
            prev = cur
        if prev > n:
            return f
    return -1


@numba.njit(**JIT)
def strictly_increasing(a, lo, hi):
    """True if ``a[lo:hi]`` is strictly increasing."""
    for i in range(lo + 1, hi):
        if a[i] <= a[i - 1]:
            return False
    return True
