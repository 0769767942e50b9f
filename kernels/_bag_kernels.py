"""The ``@njit`` kernels behind :class:`memrec_infer.kernels.bags.BagPlan`.

Every feature of a plan is described by one row of an int64 ``meta`` array (columns below) and
its hash functions by rows of one shared ``uint64 [S, 3]`` array of keys, so a single kernel
call serves all features of a batch. The tables were checked once by ``make_plan``; what
changes per batch (the shapes of ``offsets`` and ``out``, the offsets' values) is checked here,
in the pass that reads it anyway, and reported as a status code: nothing here raises or
indexes out of bounds.
"""

from __future__ import annotations

import threading

import numba
import numpy as np
from numba import prange

from ._alloc import stream_rule
from ._checks import scan_offsets
from ._config import JIT
from ._intrinsics import (
    LINE,
    address_as_pointer,
    bag_rows2_stream,
    bag_rows2_weighted,
    bag_rows_weighted,
    bag_rows_weighted_stream,
    borrowed,
    data_address,
    line_items,
    prefetch,
    rows1_add,
    rows1_set,
    rows1_write,
    rows2_set,
    rows2_write,
    rows3_set,
    rows3_write,
    rows4_set,
    rows4_write,
    rows_view,
    store_fence,
)
from .hashing import MASK32, bucket_keyed

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

# The NumPy type of half token rows as the kernels see them: binary16 bit patterns (NumPy
# float16 arrays viewed as uint16; see ``_intrinsics.HALF_BITS``).
HALF = np.uint16

# Slots of a plan *handle*: one writable int64 array standing for the plan's five tables
# (addresses and lengths) and a few per-plan settings. A lookup then passes four arrays, which
# Numba's dispatcher types in C, instead of eleven arguments, five of them read-only arrays it
# types in Python, behind Python-side checks: ~0.8 us less per call (2.2 -> 1.4 us at B = 1).
# The plan that builds a handle keeps its arrays alive (see ``BagPlan``).
H_TOKENS = 0  # address of tokens, float32 [H_TOKEN_ROWS, D]
H_TOKEN_ROWS = 1
H_WEIGHTS = 2  # address of weights, float32 [H_WEIGHT_LEN]
H_WEIGHT_LEN = 3
H_VOCAB = 4  # address of vocab, int64 [H_VOCAB_LEN]
H_VOCAB_LEN = 5
H_KEYS = 6  # address of keys, uint64 [H_KEY_ROWS, 3]
H_KEY_ROWS = 7
H_META = 8  # address of meta, int64 [H_FEATURES, META_COLS]
H_FEATURES = 9
H_MAX_K = 10  # largest k of the plan, >= 1 (rows of the per-tile weights scratch)
H_STREAM_MIN = 11  # outputs of this many bytes may be streamed (``_alloc``)
H_POOL = 12  # threads in Numba's pool (``NUMBA_NUM_THREADS``), for tile sizes
H_MAX_HASHES = 13  # largest k + k_w of the plan, >= 4 (rows of the per-tile hash scratch)
HANDLE_LEN = 14

# Status codes of the lookup kernels.
OK = 0
BAD_OFFSETS = 1  # some offsets[f] is not non-decreasing within [0, N]
BAD_SHAPE = 2  # offsets is not [F, B + 1] or out is not [B, F, D]

# Samples per tile. A tile is hashed, then pooled, feature by feature; its scratch (ids' rows and
# weights) stays in L2. Measured on Zen 4, 2 threads, D=16 and 128, B=256..16384: 512 was within
# 2% of the best of 64..1024 everywhere; 64 (the old cache-sized tiles) was 5-28% slower. On Zen 5
# (side by side, Criteo tables in 8 MiB, 1 and 2 threads): 1024 against 512 1.03-1.09x as fast
# at D=16 (one-hot B=2048..16384, multi-hot B=1024 and 4096), 0.98-1.08x at D=128; 2048 no
# better than 1024; 256 0.87-0.98x. (A batch of fewer than 2 * TILE samples is split over the
# threads all the same, see ``lookup_parallel``.)
TILE = 1024


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
def _weight(weights, i):
    # ``weights[i]`` for an index known to be >= 0 (a hashed row). Indexed as unsigned, so Numba
    # adds no negative-index fix-up (four instructions per load): the one-hot k = 2 pooling loop
    # alone took 6.8 instead of 7.4 ns a bag (D = 16, L2-resident tables, measured).
    return weights[np.uint64(i)]


# Ids ahead of the one being pooled whose rows are prefetched (``prefetch_ahead``).
PREFETCH_AHEAD = 16


@numba.njit(inline="always", **JIT)
def prefetch_ahead(dim, items=LINE):
    """Ids ahead of the one being pooled whose rows are prefetched, for rows of ``dim`` values.

    ``items``: values per cache line (``line_items`` of the table; 16 float32).

    Enough to cover an L3 (token rows) or DRAM (full rows) latency with a few bags' worth of
    work, few enough to stay in L1. Rows of one cache line are pooled fastest and need the most
    ids in flight. At D = 16, 16 ids ahead against 8: one-hot 1.04-1.32x as fast for B >= 4096
    (0.96-1.0x at B = 1024), multi-hot 0.94-1.27x (mostly 1.1-1.2x); 32 was no faster (Criteo
    tables in 8 MiB, B = 256..16384, 1 and 2 threads, side by side). Longer rows keep 8.
    ``dim`` and ``items`` are compile-time constants in every caller, so this folds.
    """
    return PREFETCH_AHEAD if dim <= items else PREFETCH_AHEAD // 2


# Multi-hot bags pool each bag's rows into one sum, a chain of dependent multiply-adds, so a late
# row stalls its whole bag: ``_pool_bags_k2`` requests one-line rows twice as far ahead as the
# one-hot loops do. At D = 16, k = 2, bags of 1..10 ids (side by side): 32 ids ahead against
# 16 1.27x as fast at B = 1024 on 1 thread, 1.07x on 2, 1.00x at B = 4096; 64 ahead 1.14x,
# 1.22x and 0.98x. Longer rows keep ``prefetch_ahead`` (8 ids of 8 lines each, two rows per
# id): 16 ids ahead at D = 128 were 0.98x (1 thread) and 0.93x (2) as fast.
# The per-tile scratch is padded this far past a feature's ids (the prefetches' targets).
SCRATCH_PAD = 2 * PREFETCH_AHEAD


@numba.njit(inline="always", **JIT)
def multi_hot_ahead(dim, items=LINE):
    """Ids ahead whose rows ``_pool_bags_k2`` prefetches, for rows of ``dim`` values (a
    constant in every caller, so this folds)."""
    return SCRATCH_PAD if dim <= items else prefetch_ahead(dim, items)


# Tiles of at most this many samples skip the two phases (see ``_direct``).
DIRECT_MAX = 8
# The direct path and the one-hot row writes are unrolled up to this k.
UNROLLED_K = 4


@numba.njit(inline="always", **JIT)
def _hash_ids(values, weights, vocab, keys, meta, f, p0, n, hb, ab):
    """Phase 1 of a tile: rows ``hb[j, i]`` and weights ``ab[j, i]`` of ids ``values[p0:p0+n]``.

    Each loop runs over ids with one hash function's keys fixed, so it vectorises (64-bit
    multiplies over a whole tile) instead of interleaving scalar hashing with the gathers.
    A full feature is one row per id (``k = 1``) with weight 1.
    """
    toff = meta[f, TOKEN_OFFSET]
    # A slice indexed from 0: Numba's negative-index fix-up on ``p0 + i`` would otherwise turn
    # every contiguous load of ids into a gather.
    vals = values[p0 : p0 + n]
    if meta[f, KIND] == KIND_FULL:
        nv = meta[f, ROWS] - 1
        voff = meta[f, VOCAB_OFFSET]
        for i in range(n):
            hb[0, i] = toff + vocab_row(vocab, voff, nv, vals[i])
            ab[0, i] = np.float32(1.0)
        return
    if meta[f, K] == 2 and meta[f, KW] == 2:
        _hash_ids_k2(vals, weights, keys, meta, f, n, hb, ab)
        return
    _hash_rows(vals, keys, meta, f, n, hb)
    _alphas(weights, meta, f, n, hb, ab)


@numba.njit(inline="always", **JIT)
def _hash_rows(vals, keys, meta, f, n, hb):
    # Any k and k_w: token rows in ``hb[0:k]``, the weight rows' first elements in
    # ``hb[k:k+k_w]``, one loop per hash function. The loops store integers only, so each
    # vectorises (see ``_hash_rows_k2``); the weights are gathered afterwards (``_alphas``).
    k = meta[f, K]
    toff = meta[f, TOKEN_OFFSET]
    m = np.uint64(meta[f, ROWS]) & MASK32  # m < 2**31 (see ``_hash_rows_k2``)
    ts = meta[f, TOKEN_SEED]
    for j in range(k):
        a0, a1, c = keys[ts + j, 0], keys[ts + j, 1], keys[ts + j, 2]
        row = hb[j]
        for i in range(n):
            row[i] = toff + bucket_keyed(vals[i], a0, a1, c, m)
    woff = meta[f, WEIGHT_OFFSET]
    mw = np.uint64(meta[f, WEIGHT_ROWS]) & MASK32
    cols = meta[f, WEIGHT_COLS]
    ws = meta[f, WEIGHT_SEED]
    for g in range(meta[f, KW]):
        a0, a1, c = keys[ws + g, 0], keys[ws + g, 1], keys[ws + g, 2]
        row = hb[k + g]
        for i in range(n):
            row[i] = woff + bucket_keyed(vals[i], a0, a1, c, mw) * cols


@numba.njit(inline="always", **JIT)
def _alphas(weights, meta, f, n, hb, ab):
    # ``ab[j, i] = alpha_j`` of id i from the weight rows that ``_hash_rows`` left in
    # ``hb[k:k+k_w]``: W[g_1] + W[g_2] + ... in hash order (spec section 3), one column of the
    # weight rows at a time (a scalar weight has one column, alpha_0).
    k = meta[f, K]
    kw = meta[f, KW]
    for j in range(meta[f, WEIGHT_COLS]):
        a = ab[j]
        first = hb[k]
        for i in range(n):
            a[i] = _weight(weights, first[i] + j)
        for g in range(1, kw):
            rows = hb[k + g]
            for i in range(n):
                a[i] += _weight(weights, rows[i] + j)


@numba.njit(inline="always", **JIT)
def _hash_rows_k2(vals, keys, meta, f, n, hb):
    # k = k_w = 2 (the paper's and the benchmarks' setting; ``_hash_rows`` serves any other).
    # All four hashes of an id in one loop that writes integers only, so it vectorises (64-bit
    # multiplies): token rows in ``hb[0:2]``, the weight rows' first elements in ``hb[2:4]``.
    # A loop that also gathered from ``weights`` and stored floats could not be vectorised
    # without knowing the two never overlap.
    toff = meta[f, TOKEN_OFFSET]
    # m < 2**31: masking tells LLVM the last multiply is 32 x 32 bits (vpmuludq, not vpmullq).
    m = np.uint64(meta[f, ROWS]) & MASK32
    ts = meta[f, TOKEN_SEED]
    t0a, t0b, t0c = keys[ts, 0], keys[ts, 1], keys[ts, 2]
    t1a, t1b, t1c = keys[ts + 1, 0], keys[ts + 1, 1], keys[ts + 1, 2]
    woff = meta[f, WEIGHT_OFFSET]
    mw = np.uint64(meta[f, WEIGHT_ROWS]) & MASK32
    cols = meta[f, WEIGHT_COLS]
    ws = meta[f, WEIGHT_SEED]
    w0a, w0b, w0c = keys[ws, 0], keys[ws, 1], keys[ws, 2]
    w1a, w1b, w1c = keys[ws + 1, 0], keys[ws + 1, 1], keys[ws + 1, 2]
    for i in range(n):
        x = vals[i]
        hb[0, i] = toff + bucket_keyed(x, t0a, t0b, t0c, m)
        hb[1, i] = toff + bucket_keyed(x, t1a, t1b, t1c, m)
        hb[2, i] = woff + bucket_keyed(x, w0a, w0b, w0c, mw) * cols
        hb[3, i] = woff + bucket_keyed(x, w1a, w1b, w1c, mw) * cols


@numba.njit(inline="always", **JIT)
def _hash_ids_k2(vals, weights, keys, meta, f, n, hb, ab):
    # k = k_w = 2 for bags pooled from the scratch: the hashes, then the weights gathered in a
    # loop of their own (see ``_hash_rows_k2``). One-hot tiles skip the scratch weights and
    # gather them where they are used (``_pool_one_hot_k2``). Both alphas in one pass: the
    # generic ``_alphas`` (a pass per column and weight row) was 5-9% slower, multi-hot, D=16,
    # B = 16..4096, 1 and 2 threads (measured side by side).
    _hash_rows_k2(vals, keys, meta, f, n, hb)
    second = 1 if meta[f, WEIGHT_COLS] == 2 else 0  # column of alpha_2 (scalar weight: 0)
    for i in range(n):
        g0 = hb[2, i]
        g1 = hb[3, i]
        ab[0, i] = _weight(weights, g0) + _weight(weights, g1)
        ab[1, i] = _weight(weights, g0 + second) + _weight(weights, g1 + second)


@numba.njit(inline="always", **JIT)
def _pool_one_hot_k2(tokens, weights, meta, f, b0, n, hb, out, dim, stream):
    # ``_pool_one_hot`` for a k = k_w = 2 feature hashed by ``_hash_rows_k2``: alpha from the
    # weight rows, then z(x) straight into the output row.
    nf = meta.shape[0]
    second = 1 if meta[f, WEIGHT_COLS] == 2 else 0  # column of alpha_2 (scalar weight: 0)
    ahead = prefetch_ahead(dim, line_items(tokens))
    for i in range(n):
        for d in range(0, dim, line_items(tokens)):
            prefetch(tokens, hb[0, i + ahead], d)
            prefetch(tokens, hb[1, i + ahead], d)
        g0 = hb[2, i]
        g1 = hb[3, i]
        w0 = _weight(weights, g0) + _weight(weights, g1)
        w1 = _weight(weights, g0 + second) + _weight(weights, g1 + second)
        rows2_write(dim, out, (b0 + i) * nf + f, tokens, hb[0, i], w0, hb[1, i], w1, stream)


@numba.njit(inline="always", **JIT)
def _one_hot(offsets, f, b0, b1):
    # True if every bag (f, b0..b1) holds exactly one id (branch-free scan, vectorises).
    bad = 0
    row = offsets[f, b0 : b1 + 1]  # indexed from 0, see ``scan_offsets``
    for i in range(b1 - b0):
        bad |= row[i + 1] - row[i] - 1
    return bad == 0


@numba.njit(inline="always", **JIT)
def _pool_one_hot(tokens, meta, f, b0, n, hb, ab, out, dim, stream):
    # Bags of one id each: z(x) straight into its output row, rows of the id ``prefetch_ahead``
    # positions on requested now (the scratch is padded with valid rows past ``n``).
    # ``stream``: write the rows with streaming stores (see ``lookup_kernels``).
    nf = meta.shape[0]
    ahead = prefetch_ahead(dim, line_items(tokens))
    if meta[f, KIND] == KIND_FULL:
        k = 1
        sel = 0
    else:
        k = meta[f, K]
        sel = 1 if meta[f, WEIGHT_COLS] != 1 else 0
    if k == 2:
        for i in range(n):
            for d in range(0, dim, line_items(tokens)):
                prefetch(tokens, hb[0, i + ahead], d)
                prefetch(tokens, hb[1, i + ahead], d)
            o = (b0 + i) * nf + f
            rows2_write(dim, out, o, tokens, hb[0, i], ab[0, i], hb[1, i], ab[sel, i], stream)
    elif k == 1:
        for i in range(n):
            for d in range(0, dim, line_items(tokens)):
                prefetch(tokens, hb[0, i + ahead], d)
            rows1_write(dim, out, (b0 + i) * nf + f, tokens, hb[0, i], ab[0, i], stream)
    elif k == 3:
        for i in range(n):
            for d in range(0, dim, line_items(tokens)):
                prefetch(tokens, hb[0, i + ahead], d)
                prefetch(tokens, hb[1, i + ahead], d)
                prefetch(tokens, hb[2, i + ahead], d)
            rows3_write(
                dim, out, (b0 + i) * nf + f, tokens,
                hb[0, i], ab[0, i], hb[1, i], ab[sel, i], hb[2, i], ab[2 * sel, i], stream,
            )  # fmt: skip
    elif k == 4:
        for i in range(n):
            for d in range(0, dim, line_items(tokens)):
                for j in range(4):
                    prefetch(tokens, hb[j, i + ahead], d)
            rows4_write(
                dim, out, (b0 + i) * nf + f, tokens,
                hb[0, i], ab[0, i], hb[1, i], ab[sel, i],
                hb[2, i], ab[2 * sel, i], hb[3, i], ab[3 * sel, i], stream,
            )  # fmt: skip
    else:
        for i in range(n):
            for j in range(k):
                for d in range(0, dim, line_items(tokens)):
                    prefetch(tokens, hb[j, i + ahead], d)
            _pool_general(tokens, k, sel, i, i + 1, hb, ab, out, (b0 + i) * nf + f, dim, stream)


@numba.njit(inline="always", **JIT)
def _pool_bags(offsets, tokens, meta, f, b0, b1, p0, hb, ab, out, dim, stream):
    """Phase 2 of a tile: pool bags ``(f, b0..b1)`` from the rows and weights of phase 1.

    ``out`` is the ``[B * F, D]`` view of the output; bag ``(f, b)`` is its row ``b * F + f``.
    ``dim`` is a compile-time constant in every caller (see :func:`lookup_kernels`). With
    ``stream``, every bag is written with streaming stores, except mean bags of several ids
    (divided in place after their sum is written).
    """
    if meta[f, KIND] == KIND_FULL:
        k = 1
        sel = 0
    else:
        k = meta[f, K]
        sel = 1 if meta[f, WEIGHT_COLS] != 1 else 0  # scalar weight: alpha_j = alpha_0
    mean = meta[f, MEAN] != 0
    stream_sums = stream and not mean
    nf = meta.shape[0]
    n = offsets[f, b1] - p0
    ahead = 0  # ids [0, ahead) have had their rows prefetched
    for b in range(b0, b1):
        q0 = offsets[f, b] - p0
        q1 = offsets[f, b + 1] - p0
        stop = min(n, q1 + prefetch_ahead(dim, line_items(tokens)))
        while ahead < stop:
            for j in range(k):
                for d in range(0, dim, line_items(tokens)):
                    prefetch(tokens, hb[j, ahead], d)
            ahead += 1
        o = b * nf + f
        if q1 - q0 == 1:
            # One-hot bag: z(x) in one pass, each row read once and the output written once.
            if k == 2:
                q = q0
                rows2_write(dim, out, o, tokens, hb[0, q], ab[0, q], hb[1, q], ab[sel, q], stream)
            elif k == 1:
                rows1_write(dim, out, o, tokens, hb[0, q0], ab[0, q0], stream)
            elif k == 3:
                rows3_write(
                    dim, out, o, tokens,
                    hb[0, q0], ab[0, q0], hb[1, q0], ab[sel, q0], hb[2, q0], ab[2 * sel, q0],
                    stream,
                )  # fmt: skip
            elif k == 4:
                rows4_write(
                    dim, out, o, tokens,
                    hb[0, q0], ab[0, q0], hb[1, q0], ab[sel, q0],
                    hb[2, q0], ab[2 * sel, q0], hb[3, q0], ab[3 * sel, q0], stream,
                )  # fmt: skip
            else:
                _pool_general(tokens, k, sel, q0, q1, hb, ab, out, o, dim, stream)
        else:
            _pool_general(tokens, k, sel, q0, q1, hb, ab, out, o, dim, stream_sums)  # empty: 0s
            if mean and q1 > q0:
                _divide(out, o, np.float32(q1 - q0), dim)


@numba.njit(inline="always", **JIT)
def _pool_bags_k2(offsets, tokens, meta, f, b0, b1, p0, hb, ab, out, dim, stream):
    # ``_pool_bags`` for a k = k_w = 2 feature (``_hash_ids_k2`` left both alphas in ``ab``): a
    # plain loop per bag over its ids' prefetches, then its rows summed in registers, unrolled
    # over the two hashes (``bag_rows2_weighted``, the general path's fold, so the same bits).
    # Against ``_pool_bags`` (its per-id loops over k, its prefetch bookkeeping, 16 ids ahead),
    # side by side, bags of 1..10 ids, B = 1024: D = 16 1.24x as fast on 1 thread, 1.32x on 2;
    # D = 128 1.03x and 1.07x. ``stream``: sum bags are streamed too (``_pool_bags``).
    nf = meta.shape[0]
    mean = meta[f, MEAN] != 0
    stream_sums = stream and not mean
    ahead = multi_hot_ahead(dim, line_items(tokens))
    row = offsets[f, b0 : b1 + 1]  # indexed from 0, see ``scan_offsets``
    q1 = row[0] - p0
    for b in range(b1 - b0):
        q0 = q1
        q1 = row[b + 1] - p0
        for q in range(q0, q1):
            for d in range(0, dim, line_items(tokens)):
                prefetch(tokens, hb[0, q + ahead], d)
                prefetch(tokens, hb[1, q + ahead], d)
        o = (b0 + b) * nf + f
        # The intrinsics called here, not through a helper that picks one: an inlined helper
        # taking arrays counts references to them on every bag (see ``borrowed``), which made
        # these bags half as fast.
        if stream_sums:
            bag_rows2_stream(dim, out, o, tokens, hb, ab, q0, q1)  # an empty bag: zeros
            continue
        bag_rows2_weighted(dim, out, o, tokens, hb, ab, q0, q1)
        if mean and q1 > q0:
            _divide(out, o, np.float32(q1 - q0), dim)


@numba.njit(inline="always", **JIT)
def _pool_general(tokens, k, sel, q0, q1, hb, ab, out, o, dim, stream):
    # Any bag and any k: row by row, in id then hash order, summed in registers.
    if stream:
        bag_rows_weighted_stream(dim, out, o, tokens, hb, ab, q0, q1, k, sel)
    else:
        bag_rows_weighted(dim, out, o, tokens, hb, ab, q0, q1, k, sel)


@numba.njit(inline="always", **JIT)
def _zero_row(out, o, dim):
    # An empty bag pools to zeros.
    for d in range(dim):
        out[o, d] = 0.0


@numba.njit(inline="always", **JIT)
def _divide(out, o, n, dim):
    # Mean pooling divides (not multiplies by 1/n), exactly as the spec and torch do.
    for d in range(dim):
        out[o, d] /= n


@numba.njit(inline="always", **JIT)
def _key_bucket(x, keys, s, m):
    # Bucket of id ``x`` under the hash function of key row ``s``.
    return bucket_keyed(x, keys[s, 0], keys[s, 1], keys[s, 2], m)


@numba.njit(inline="always", **JIT)
def _k2_params(meta, f):
    # What hashing an id of a k = k_w = 2 feature needs, read once per feature: token offset,
    # m, token key row, weight offset, m_w, weight columns, weight key row, alpha_2's column.
    cols = meta[f, WEIGHT_COLS]
    return (
        meta[f, TOKEN_OFFSET],
        np.uint64(meta[f, ROWS]) & MASK32,
        meta[f, TOKEN_SEED],
        meta[f, WEIGHT_OFFSET],
        np.uint64(meta[f, WEIGHT_ROWS]) & MASK32,
        cols,
        meta[f, WEIGHT_SEED],
        1 if cols == 2 else 0,  # a scalar weight: alpha_2 = alpha_1
    )


@numba.njit(inline="always", **JIT)
def _k2_terms(x, weights, keys, params):
    # Token rows and alphas ``(h_1, alpha_1, h_2, alpha_2)`` of id ``x`` (``_k2_params``).
    toff, m, ts, woff, mw, cols, ws, second = params
    g0 = woff + _key_bucket(x, keys, ws, mw) * cols
    g1 = woff + _key_bucket(x, keys, ws + 1, mw) * cols
    w0 = _weight(weights, g0) + _weight(weights, g1)
    w1 = _weight(weights, g0 + second) + _weight(weights, g1 + second)
    h0 = toff + _key_bucket(x, keys, ts, m)
    h1 = toff + _key_bucket(x, keys, ts + 1, m)
    return h0, w0, h1, w1


@numba.njit(inline="always", **JIT)
def _is_k2(meta, f):
    # A MEM-REC feature with k = k_w = 2 (the paper's and the benchmarks' setting).
    return meta[f, KIND] == KIND_MEMREC and meta[f, K] == 2 and meta[f, KW] == 2


@numba.njit(inline="always", **JIT)
def _direct_k2(values, offsets, tokens, weights, keys, meta, f, b0, b1, out, dim):
    # A few bags of a k = k_w = 2 feature (small batches): hash and pool id by id. The two
    # phases' loop set-up and alias checks cost more than they save on so few ids.
    nf = meta.shape[0]
    params = _k2_params(meta, f)
    mean = meta[f, MEAN] != 0
    for b in range(b0, b1):
        p0 = offsets[f, b]
        p1 = offsets[f, b + 1]
        o = b * nf + f
        if p1 <= p0:
            _zero_row(out, o, dim)
            continue
        for p in range(p0, p1):
            h0, w0, h1, w1 = _k2_terms(values[p], weights, keys, params)
            if p == p0:
                rows2_set(dim, out, o, tokens, h0, w0, h1, w1)
            else:
                rows1_add(dim, out, o, tokens, h0, w0)
                rows1_add(dim, out, o, tokens, h1, w1)
        if mean and p1 - p0 > 1:
            _divide(out, o, np.float32(p1 - p0), dim)


# Features ahead whose token rows ``_direct_one_hot`` requests for a one-sample batch of long rows.
WIDE_AHEAD = 4


@numba.njit(inline="always", **JIT)
def _prefetch_k2_rows(tokens, keys, params, x, stop):
    # Lines [0, stop) of the two token rows of id ``x`` of a k = k_w = 2 feature (``_k2_params``).
    toff, m, ts = params[0], params[1], params[2]
    h0 = toff + _key_bucket(x, keys, ts, m)
    h1 = toff + _key_bucket(x, keys, ts + 1, m)
    for d in range(0, stop, line_items(tokens)):
        prefetch(tokens, h0, d)
        prefetch(tokens, h1, d)


@numba.njit(inline="always", **JIT)
def _prefetch_sample(values, offsets, tokens, keys, meta, g, dim):
    # Every line of the two token rows of bag (g, 0), if feature g is k = k_w = 2.
    if _is_k2(meta, g):
        _prefetch_k2_rows(tokens, keys, _k2_params(meta, g), values[offsets[g, 0]], dim)


@numba.njit(inline="always", **JIT)
def _direct_one_hot(values, offsets, tokens, weights, vocab, keys, meta, nb, out, dim):
    # ``_direct`` for a batch whose every bag holds one id (B = 1 serving): a k = 2 feature's
    # id is hashed and its row written in one straight pass. Half the time of ``_direct_k2``'s
    # bag loops at B = 1, F = 26 (D = 16: 0.35 against 0.72 us; D = 128: 0.70 against 1.21;
    # measured in one process, kernel bodies only). Same multiply-adds, same bits.
    nf = meta.shape[0]
    # One sample of rows longer than a cache line (D = 128: 8 lines a row): the rows of the id
    # WIDE_AHEAD features on are requested before each feature is pooled. Fresh ids each call,
    # Criteo tables in 8 MiB, side by side: B = 1 1.33x as fast (3.75 -> 2.8 us) 4 features on,
    # 1.13x 1 on, 6 no faster than 4; at B = 8 it cost 5% (too many lines in flight), so more
    # samples leave the rows to the hardware prefetcher. (Rows of one line: ``_prefetch_direct``.)
    wide = dim > line_items(tokens) and nb == 1
    if wide:
        for g in range(min(nf, WIDE_AHEAD)):
            _prefetch_sample(values, offsets, tokens, keys, meta, g, dim)
    for f in range(nf):
        if wide and f + WIDE_AHEAD < nf:
            _prefetch_sample(values, offsets, tokens, keys, meta, f + WIDE_AHEAD, dim)
        if not _is_k2(meta, f):
            _direct(values, offsets, tokens, weights, vocab, keys, meta, f, 0, nb, out, dim)
            continue
        params = _k2_params(meta, f)
        for b in range(nb):
            h0, w0, h1, w1 = _k2_terms(values[offsets[f, b]], weights, keys, params)
            rows2_set(dim, out, b * nf + f, tokens, h0, w0, h1, w1)


@numba.njit(inline="always", **JIT)
def _prefetch_direct(values, offsets, tokens, keys, meta, nb):
    # Before the direct path pools a few samples: the token rows of every id of a k = k_w = 2
    # feature requested up front (its two token hashes computed twice, here and where pooled),
    # so that the batch's row misses overlap instead of stalling feature after feature. Served
    # with new ids on every call, rows of one cache line (D = 16, Criteo tables in 8 MiB, side
    # by side): B = 1 one-hot 1.75x as fast (2.5 -> 1.4 us), multi-hot 1.5x (6.5 -> 4.3 us),
    # B = 8 multi-hot 1.2x. Not for longer rows: at D = 128 (8 lines a row) prefetching every
    # line, or the first two, was 10% slower than leaving them to the hardware prefetcher.
    for f in range(meta.shape[0]):
        if _is_k2(meta, f):
            params = _k2_params(meta, f)
            for p in range(offsets[f, 0], offsets[f, nb]):
                _prefetch_k2_rows(tokens, keys, params, values[p], 1)  # the first line


@numba.njit(inline="always", **JIT)
def _direct_ok(meta, f):
    # Features the direct path serves: full ones and memrec ones with k <= UNROLLED_K.
    return (meta[f, KIND] == KIND_FULL) | (meta[f, K] <= UNROLLED_K)


@numba.njit(inline="always", **JIT)
def _direct(values, offsets, tokens, weights, vocab, keys, meta, f, b0, b1, out, dim):
    # ``_direct_k2`` for any feature that ``_direct_ok`` accepts: alpha_1..alpha_k held in
    # registers (k <= 4), the token rows hashed where they are used. k = k_w = 2 keeps its own
    # loop: this one's branches on k, k_w and the weight columns cost it 4-5% at B = 1..8.
    if _is_k2(meta, f):
        _direct_k2(values, offsets, tokens, weights, keys, meta, f, b0, b1, out, dim)
        return
    nf = meta.shape[0]
    full = meta[f, KIND] == KIND_FULL
    k = 1 if full else meta[f, K]
    toff = meta[f, TOKEN_OFFSET]
    m = np.uint64(meta[f, ROWS]) & MASK32
    ts = meta[f, TOKEN_SEED]
    woff = meta[f, WEIGHT_OFFSET]
    mw = np.uint64(meta[f, WEIGHT_ROWS]) & MASK32
    cols = meta[f, WEIGHT_COLS]
    ws = meta[f, WEIGHT_SEED]
    kw = meta[f, KW]
    nv = meta[f, ROWS] - 1
    voff = meta[f, VOCAB_OFFSET]
    mean = meta[f, MEAN] != 0
    one = np.float32(1.0)
    for b in range(b0, b1):
        p0 = offsets[f, b]
        p1 = offsets[f, b + 1]
        o = b * nf + f
        if p1 <= p0:
            _zero_row(out, o, dim)
            continue
        for p in range(p0, p1):
            x = values[p]
            if full:
                r = toff + vocab_row(vocab, voff, nv, x)
                if p == p0:
                    rows1_set(dim, out, o, tokens, r, one)
                else:
                    rows1_add(dim, out, o, tokens, r, one)
                continue
            # alpha = W[g_1] + W[g_2] + ... in hash order (spec section 3), column by column.
            a0 = a1 = a2 = a3 = np.float32(0.0)
            for g in range(kw):
                r = woff + _key_bucket(x, keys, ws + g, mw) * cols
                a0 = _weight(weights, r) if g == 0 else a0 + _weight(weights, r)
                if cols > 1:
                    a1 = _weight(weights, r + 1) if g == 0 else a1 + _weight(weights, r + 1)
                if cols > 2:
                    a2 = _weight(weights, r + 2) if g == 0 else a2 + _weight(weights, r + 2)
                if cols > 3:
                    a3 = _weight(weights, r + 3) if g == 0 else a3 + _weight(weights, r + 3)
            if cols == 1:  # a scalar weight: alpha_j = alpha_0
                a1 = a2 = a3 = a0
            h0 = toff + _key_bucket(x, keys, ts, m)
            h1 = toff + _key_bucket(x, keys, ts + 1, m) if k > 1 else h0
            h2 = toff + _key_bucket(x, keys, ts + 2, m) if k > 2 else h0
            h3 = toff + _key_bucket(x, keys, ts + 3, m) if k > 3 else h0
            if p == p0:
                # The first id sets the row: z(x) = alpha_1 M[h_1] + ... in one pass.
                if k == 1:
                    rows1_set(dim, out, o, tokens, h0, a0)
                elif k == 2:
                    rows2_set(dim, out, o, tokens, h0, a0, h1, a1)
                elif k == 3:
                    rows3_set(dim, out, o, tokens, h0, a0, h1, a1, h2, a2)
                else:
                    rows4_set(dim, out, o, tokens, h0, a0, h1, a1, h2, a2, h3, a3)
            else:
                rows1_add(dim, out, o, tokens, h0, a0)
                if k > 1:
                    rows1_add(dim, out, o, tokens, h1, a1)
                if k > 2:
                    rows1_add(dim, out, o, tokens, h2, a2)
                if k > 3:
                    rows1_add(dim, out, o, tokens, h3, a3)
        if mean and p1 - p0 > 1:
            _divide(out, o, np.float32(p1 - p0), dim)


@numba.njit(inline="always", **JIT)
def _tile_offsets(offsets, b0, b1, n):
    # Every feature's offsets[f, b0..b1] scanned (``scan_offsets``): (all non-decreasing within
    # [0, n], every bag of exactly one id).
    if b1 - b0 == 1:
        # One sample (B = 1 serving): straight-line code; the vectorised scan's set-up per
        # feature cost ~50 ns of a ~0.9 us lookup (F = 26, measured side by side).
        bad = False
        many = 0
        for f in range(offsets.shape[0]):
            lo = offsets[f, b0]
            hi = offsets[f, b1]
            bad |= (lo < 0) | (hi < lo) | (hi > n)
            many |= hi - lo - 1
        return not bad, many == 0
    ok = True
    one_hot = True
    for f in range(offsets.shape[0]):
        valid, one = scan_offsets(offsets[f, b0 : b1 + 1], n)
        ok &= valid
        one_hot &= one
    return ok, one_hot


@numba.njit(inline="always", **JIT)
def _tile_ids(offsets, b0, b1):
    # Scratch length for a tile: its largest number of ids in one feature (at least 1).
    cap = 1
    for f in range(offsets.shape[0]):
        cap = max(cap, offsets[f, b1] - offsets[f, b0])
    return cap


@numba.njit(inline="always", **JIT)
def _all_direct(meta):
    # True if the direct path serves every feature, so a small batch needs no scratch.
    ok = True
    for f in range(meta.shape[0]):
        ok &= _direct_ok(meta, f)
    return ok


@numba.njit(inline="always", **JIT)
def _shapes_ok(offsets, meta, out, dim):
    # offsets [F, B + 1] and out [B, F, dim] (the wrapper only checked dtypes and layouts).
    nb = out.shape[0]
    nf = meta.shape[0]
    return (
        offsets.shape[0] == nf
        and offsets.shape[1] == nb + 1
        and out.shape[1] == nf
        and (out.shape[2] == dim)
    )


# Its own function, not inlined: inside the large kernel body LLVM schedules this hot loop worse
# (~20% at D = 16, measured). ``literally`` compiles it per D with ``dim`` a constant; it is a
# module-level function, not a closure, because a closure that captured it would capture a
# dispatcher, whose on-disk cache key changes in every process (a recompile per process).
# Both tile functions hold their loops themselves rather than inlining a body function:
# Numba inlines by deep-copying the callee's IR block by block, each copy taking the whole
# scope with it, so inlining these large bodies (a few hundred blocks) was a third of the
# compile time. Written in place, the machine code is the same instruction for instruction
# (D = 16 and 128); compiling the D = 16 kernel pair took 131 s instead of 198 s (Zen 3 VM).
@numba.njit(**JIT)
def tile_one_hot(
    values, offsets, tokens, weights, vocab, keys, meta, b0, b1, out, hb, ab, dim, stream
):
    # A tile whose every bag holds one id (the common case of one-hot models): the lean loop
    # of ``tile_general`` without its per-feature branches, which cost ~15% at D = 16.
    numba.literally(dim)
    numba.literally(stream)
    tokens, out = rows_view(tokens, dim), rows_view(out, dim)
    n = b1 - b0
    for f in range(meta.shape[0]):
        p0 = offsets[f, b0]
        k2 = _is_k2(meta, f)
        if k2:
            _hash_rows_k2(values[p0 : p0 + n], keys, meta, f, n, hb)
        else:
            _hash_ids(values, weights, vocab, keys, meta, f, p0, n, hb, ab)
        for j in range(hb.shape[0]):
            for i in range(n, n + SCRATCH_PAD):
                hb[j, i] = meta[f, TOKEN_OFFSET]
        if k2:
            _pool_one_hot_k2(tokens, weights, meta, f, b0, n, hb, out, dim, stream)
        else:
            _pool_one_hot(tokens, meta, f, b0, n, hb, ab, out, dim, stream)


# Any tile, in a function of its own, compiled once per D and shared by both lookup kernels
# (a tile spends far longer in its loops than in the call). Inlined into both, it made
# compiling a D take 131 s instead of 105 s. Multi-hot, side by side with the inlined version
# (2 threads unless noted): D=16 1.0-1.18x as fast; D=128 0.98-1.01x, 0.86x on 1 thread.
@numba.njit(**JIT)
def tile_general(
    values, offsets, tokens, weights, vocab, keys, meta, b0, b1, out, hb, ab, dim, stream
):
    # Feature-major inside a tile: hash all of a feature's ids, then pool its bags.
    numba.literally(dim)
    tokens, out = rows_view(tokens, dim), rows_view(out, dim)
    for f in range(meta.shape[0]):
        if b1 - b0 <= DIRECT_MAX and _direct_ok(meta, f):
            _direct(values, offsets, tokens, weights, vocab, keys, meta, f, b0, b1, out, dim)
            continue
        p0 = offsets[f, b0]
        n = offsets[f, b1] - p0
        _hash_ids(values, weights, vocab, keys, meta, f, p0, n, hb, ab)
        # Prefetches run up to SCRATCH_PAD ids past the end: point them at a real row.
        for j in range(hb.shape[0]):
            for i in range(n, n + SCRATCH_PAD):
                hb[j, i] = meta[f, TOKEN_OFFSET]
        if _one_hot(offsets, f, b0, b1):
            _pool_one_hot(tokens, meta, f, b0, n, hb, ab, out, dim, stream)
        elif _is_k2(meta, f):
            _pool_bags_k2(offsets, tokens, meta, f, b0, b1, p0, hb, ab, out, dim, stream)
        else:
            _pool_bags(offsets, tokens, meta, f, b0, b1, p0, hb, ab, out, dim, stream)


@numba.njit(inline="always", **JIT)
def _pool_tile(
    values, offsets, tokens, weights, vocab, keys, meta, b0, b1, out, hb, ab, dim, stream, one_hot
):
    # One tile of either lookup kernel: the lean loop when every bag holds one id.
    if b1 - b0 > DIRECT_MAX and one_hot:
        # ``stream`` as a constant: one compiled loop per store policy, no branch per row.
        if stream:
            tile_one_hot(
                values, offsets, tokens, weights, vocab, keys, meta, b0, b1, out, hb, ab, dim, True
            )
        else:
            tile_one_hot(
                values, offsets, tokens, weights, vocab, keys, meta, b0, b1, out, hb, ab, dim, False
            )
    else:
        # ``stream`` as a plain bool (the serial kernel passes a constant): one compiled
        # ``tile_general`` per D for both kernels, where ``Literal[bool](False)`` compiled a
        # second one for the serial kernel.
        tile_general(
            values, offsets, tokens, weights, vocab, keys, meta, b0, b1, out, hb, ab, dim,
            np.bool_(stream),
        )  # fmt: skip
    if stream:
        store_fence()


@numba.njit(inline="always", **JIT)
def _plan_tables(plan, dim, token_type):
    # The plan's tables, viewed from the addresses in its handle (see H_TOKENS); ``token_type``
    # is np.float32 or HALF (half rows' bits).
    tokens = numba.carray(address_as_pointer(plan[H_TOKENS], token_type), (plan[H_TOKEN_ROWS], dim))
    weights = numba.carray(address_as_pointer(plan[H_WEIGHTS], np.float32), plan[H_WEIGHT_LEN])
    vocab = numba.carray(address_as_pointer(plan[H_VOCAB], np.int64), plan[H_VOCAB_LEN])
    keys = numba.carray(address_as_pointer(plan[H_KEYS], np.uint64), (plan[H_KEY_ROWS], 3))
    meta = numba.carray(address_as_pointer(plan[H_META], np.int64), (plan[H_FEATURES], META_COLS))
    return tokens, weights, vocab, keys, meta


@numba.njit(inline="always", **JIT)
def _streams(plan, out, dim):
    # Streaming stores for outputs too large to stay in cache, only where every row starts on a
    # cache line (else the stores fault): ``_alloc.stream_rule``.
    return stream_rule(out.size * 4, dim * 4, data_address(out), plan[H_STREAM_MIN])


def _make_lookup_kernels(dim: int, half: bool):
    # Closures over a constant ``dim``: Numba folds it, so LLVM sees fixed-length row loops.
    # ``cache=True`` keys the on-disk cache on the closure's contents, one entry per D and token
    # type; they capture only ``dim`` and a NumPy scalar type (a captured dispatcher would
    # defeat the cache, see above). ``half``: the token rows are binary16 (``HALF``).
    token_type = HALF if half else np.float32
    # Both return a status (OK, BAD_SHAPE, BAD_OFFSETS): checking shapes and offsets here,
    # where they are read anyway, saves Python work on every batch.

    @numba.njit(**JIT)
    def lookup_serial(values, offsets, plan, out):
        tokens, weights, vocab, keys, meta = _plan_tables(plan, dim, token_type)
        if not _shapes_ok(offsets, meta, out, dim):
            return BAD_SHAPE
        nb = out.shape[0]
        ok, one_hot = _tile_offsets(offsets, 0, nb, values.shape[0])
        if not ok:
            return BAD_OFFSETS
        if nb == 0:
            return OK
        out = out.reshape(nb * meta.shape[0], dim)
        if nb <= DIRECT_MAX and _all_direct(meta):
            # Batches of a few samples: no scratch, no tiles; the general path's set-up costs
            # as much as the whole lookup here (~0.6 us at B = 1, F = 26).
            # Views without reference counts (``borrowed``). Side by side, fresh ids: B = 1
            # D = 16 1.0-1.05x as fast, D = 128 1.04-1.16x (two runs). In the tiles (B = 16,
            # 256) the same views made no difference, so they keep their arrays.
            vals, offs, dst = borrowed(values), borrowed(offsets), borrowed(out)
            if dim <= line_items(tokens):  # a constant: folds
                _prefetch_direct(vals, offs, tokens, keys, meta, nb)
            if one_hot:
                _direct_one_hot(vals, offs, tokens, weights, vocab, keys, meta, nb, dst, dim)
            else:
                for f in range(meta.shape[0]):
                    _direct(vals, offs, tokens, weights, vocab, keys, meta, f, 0, nb, dst, dim)
            return OK
        max_k = plan[H_MAX_K]
        cap = 1
        for b0 in range(0, nb, TILE):
            cap = max(cap, _tile_ids(offsets, b0, min(nb, b0 + TILE)))
        hb = np.empty((plan[H_MAX_HASHES], cap + SCRATCH_PAD), np.int64)
        ab = np.empty((max_k, cap), np.float32)
        for b0 in range(0, nb, TILE):
            b1 = min(nb, b0 + TILE)
            # The batch's scan above found it valid; a one-hot batch has one-hot tiles only.
            tile_is_one_hot = one_hot or _tile_offsets(offsets, b0, b1, values.shape[0])[1]
            _pool_tile(
                values, offsets, tokens, weights, vocab, keys, meta, b0, b1, out, hb, ab, dim,
                False, tile_is_one_hot,
            )  # fmt: skip
        return OK

    @numba.njit(parallel=True, **JIT)
    def lookup_parallel(values, offsets, plan, out):
        tokens, weights, vocab, keys, meta = _plan_tables(plan, dim, token_type)
        if not _shapes_ok(offsets, meta, out, dim):
            return BAD_SHAPE
        nb = out.shape[0]
        stream = _streams(plan, out, dim)
        out = out.reshape(nb * meta.shape[0], dim)
        max_k = plan[H_MAX_K]
        # Every thread gets work even when the batch is only a few tiles long. The pool's size
        # stands in for the threads in use: ``numba.get_num_threads()`` here would make the
        # kernel uncacheable, and in Python it costs ~1 us a call.
        pool = plan[H_POOL]
        tile = min(TILE, max(1, (nb + pool - 1) // pool))
        ntiles = (nb + tile - 1) // tile
        # Offsets are checked tile by tile, in the scan that finds one-hot tiles anyway (a
        # serial scan of the whole batch first cost 8-15% at D = 16, B = 1024..4096); tiles
        # share their boundary offsets, so together they check every row end to end. A bad
        # tile writes nothing, but the others do: on BAD_OFFSETS ``out`` is partly written.
        bad = np.zeros(ntiles, np.bool_)
        for t in prange(ntiles):
            b0 = t * tile
            b1 = min(nb, b0 + tile)
            ok, one_hot = _tile_offsets(offsets, b0, b1, values.shape[0])
            if ok:
                cap = _tile_ids(offsets, b0, b1)
                hb = np.empty((plan[H_MAX_HASHES], cap + SCRATCH_PAD), np.int64)
                ab = np.empty((max_k, cap), np.float32)
                _pool_tile(
                    values, offsets, tokens, weights, vocab, keys, meta, b0, b1, out, hb, ab,
                    dim, stream, one_hot,
                )  # fmt: skip
            else:
                bad[t] = True
        return BAD_OFFSETS if bad.any() else OK

    return lookup_serial, lookup_parallel


_KERNELS: dict[tuple[int, bool], tuple] = {}


def lookup_kernels(dim: int, half: bool = False) -> tuple:
    """The ``(serial, parallel)`` lookup kernels for embedding width ``dim`` and token type.

    Both take ``(values, offsets, plan, out)``:

    values : int64 [N]
    offsets : int64 [F, B + 1]
    plan : int64 [HANDLE_LEN], the handle of a plan's tables (see ``H_TOKENS``):
        tokens float32 [R, dim] (with ``half``, binary16 bits: uint16 [R, dim]); weights
        float32 [RW]; vocab int64 [V]; keys uint64 [S, 3], hash keys ``(a0, a1, a2*slot + b)``
        of every hash function; meta int64 [F, META_COLS]
    out : float32 [B, F, dim], overwritten

    The parallel one spreads tiles of up to ``TILE`` samples over the threads and writes its
    rows with streaming stores when ``out`` is large and 64-byte aligned (but for mean bags of
    several ids, divided in place).

    They return ``OK``; or, touching nothing, ``BAD_SHAPE`` if ``offsets`` is not ``[F, B + 1]``
    or ``out`` not ``[B, F, dim]`` (``F = meta.shape[0]``); or ``BAD_OFFSETS`` if some
    ``offsets[f]`` is not non-decreasing within ``[0, N]`` (see :func:`check_offsets`), having
    written nothing (serial) or only the tiles whose offsets were valid (parallel). No id or
    row outside its array is ever read.
    """
    key = (int(dim), bool(half))
    if key not in _KERNELS:
        _KERNELS[key] = _make_lookup_kernels(*key)
    return _KERNELS[key]


# The one signature the lookup kernels are compiled for: read-only ids and offsets (writable ones
# convert to it), a plan's handle, a writable output. Aligned C-contiguous arrays throughout.
SIGNATURE = (
    numba.types.Array(numba.int64, 1, "C", readonly=True),
    numba.types.Array(numba.int64, 2, "C", readonly=True),
    numba.types.Array(numba.int64, 1, "C"),
    numba.types.Array(numba.float32, 3, "C"),
)


_COMPILE_LOCK = threading.Lock()


def compiled_lookup_kernel(dim: int, parallel: bool, half: bool = False):
    """The serial or parallel lookup kernel for ``dim`` (and half token rows if ``half``),
    compiled for :data:`SIGNATURE` only.

    Compiles (or loads from Numba's cache) on first use, then disables compilation: arguments of
    any other type raise ``TypeError`` instead of compiling a specialisation that would read,
    say, float ids as integers.
    """
    kernel = lookup_kernels(dim, half)[1 if parallel else 0]
    with _COMPILE_LOCK:  # two threads' first calls must not re-disable the other's compile
        if SIGNATURE not in kernel.overloads:
            kernel.disable_compile(False)
            kernel.compile(SIGNATURE)
            kernel.disable_compile()
    return kernel


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
