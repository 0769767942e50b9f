"""Bag lookup kernels against a plain-loop reference of docs/hashing.md sections 2-4."""

from __future__ import annotations

from dataclasses import replace

import numba
import numpy as np
import pytest
from kernel_warmup import HALF_WIDTHS, WIDTHS

from memrec_infer.kernels import _alloc, _bag_kernels
from memrec_infer.kernels._intrinsics import (
    bag_rows2_weighted,
    bag_rows_weighted,
    rows1_add,
    rows2_set,
)
from memrec_infer.kernels.bags import FeatureTable, full_bag_rows, make_plan
from memrec_infer.kernels.hashing import draw_seeds
from memrec_infer.kernels.ids import NULL_ID

M64 = 2**64
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
PARALLEL = [False, True]  # every kernel variant the dispatcher can pick


# ---------------------------------------------------------------- reference (plain Python)


def ref_bucket(x: int, slot: int, seed: np.ndarray, m: int) -> int:
    a0, a1, a2, b = (int(v) for v in seed)
    u = x % M64
    v = (a0 * (u & 0xFFFFFFFF) + a1 * (u >> 32) + a2 * slot + b) % M64
    return ((v >> 32) * m) >> 32


def ref_embedding(ft: FeatureTable, x: int, tokens, weights, vocab) -> np.ndarray:
    if ft.kind == "full":
        vs = [int(v) for v in vocab[ft.vocab_offset : ft.vocab_offset + ft.rows - 1]]
        row = vs.index(x) + 1 if x in vs else 0
        return tokens[ft.token_offset + row].astype(np.float64)
    k = ft.token_seeds.shape[0]
    w = weights[ft.weight_offset : ft.weight_offset + ft.weight_rows * ft.weight_cols]
    w = w.reshape(ft.weight_rows, ft.weight_cols).astype(np.float64)
    alpha = sum(w[ref_bucket(x, ft.slot, s, ft.weight_rows)] for s in ft.weight_seeds)
    z = np.zeros(tokens.shape[1])
    for j in range(k):
        h = ref_bucket(x, ft.slot, ft.token_seeds[j], ft.rows)
        z += alpha[j if ft.weight_cols > 1 else 0] * tokens[ft.token_offset + h]
    return z


def ref_lookup(features, tokens, weights, vocab, values, offsets) -> np.ndarray:
    nb = offsets.shape[1] - 1
    out = np.zeros((nb, len(features), tokens.shape[1]))
    for f, ft in enumerate(features):
        for b in range(nb):
            bag = [int(v) for v in values[offsets[f, b] : offsets[f, b + 1]]]
            for x in bag:
                out[b, f] += ref_embedding(ft, x, tokens, weights, vocab)
            if ft.pooling == "mean" and bag:
                out[b, f] /= len(bag)
    return out


# ---------------------------------------------------------------- fixtures


def memrec(rng, token_offset, rows, weight_offset, *, k=2, kw=2, per_hash=True, **kw_args):
    wr = 7
    return FeatureTable(
        "memrec",
        token_offset,
        rows,
        token_seeds=draw_seeds(rng, k),
        weight_offset=weight_offset,
        weight_rows=wr,
        weight_cols=k if per_hash else 1,
        weight_seeds=draw_seeds(rng, kw),
        **kw_args,
    )


# The suite's embedding widths are D = 3, 16, 20 and 128 only (``kernel_warmup.WIDTHS``; here, in
# the model fixtures and in the trained models): each new D compiles the lookup kernels again
# (~105 s on a 2-core VM), and these four cover a scalar-only row, one vector, a vector plus a
# tail and several vectors.
def tables(rng, n_tokens=64, n_weights=128, dim=16, vocab_ids=(-5, 3, 10, 99)):
    tokens = rng.standard_normal((n_tokens, dim)).astype(np.float32)
    weights = rng.standard_normal(n_weights).astype(np.float32)
    return tokens, weights, np.array(vocab_ids, dtype=np.int64)


def mixed_features(rng):
    """Shared memrec table (slots 0 and 1), scalar and per-hash weights for the unrolled
    k = k_w = 2 kernel and the generic one, sum and mean, and a full table."""
    return [
        memrec(rng, 0, 20, 0, slot=0),
        memrec(rng, 0, 20, 14, slot=1, pooling="mean"),
        memrec(rng, 20, 11, 28, k=3, kw=1, per_hash=False),
        FeatureTable("full", 40, 5, pooling="sum", vocab_offset=0),
        FeatureTable("full", 40, 5, pooling="mean", vocab_offset=0),
        memrec(rng, 31, 9, 40, per_hash=False),
        memrec(rng, 20, 11, 50, k=3, kw=2, pooling="mean"),
    ]


def jagged(rng, nf, nb, max_len, pool):
    lengths = rng.integers(0, max_len + 1, size=(nf, nb))
    starts = np.concatenate([[0], np.cumsum(lengths.sum(axis=1))])
    offsets = np.zeros((nf, nb + 1), dtype=np.int64)
    for f in range(nf):
        offsets[f] = starts[f] + np.concatenate([[0], np.cumsum(lengths[f])])
    values = rng.choice(np.asarray(pool, dtype=np.int64), size=int(starts[-1]))
    return values, offsets


EDGE_IDS = [0, 1, -1, 3, 10, 99, -5, 7, I64_MIN, I64_MAX, 2**53 + 1, -(2**53) - 1, 2**32]


def edge_batch(rng, nf, nb, one_hot, max_len):
    """Edge-case ids, one per bag (``one_hot``) or 0..``max_len`` per bag."""
    if not one_hot:
        return jagged(rng, nf, nb, max_len, EDGE_IDS)
    values = rng.choice(np.asarray(EDGE_IDS, dtype=np.int64), size=nf * nb)
    offsets = np.arange(nf * nb, dtype=np.int64).reshape(nf, nb)
    return values, np.concatenate([offsets, offsets[:, -1:] + 1], axis=1)


def check(features, tokens, weights, vocab, values, offsets, parallel, **kw):
    plan = make_plan(features, tokens, weights, vocab)
    got = plan.lookup(values, offsets, parallel=parallel, **kw)
    want = ref_lookup(features, tokens, weights, vocab, values, offsets)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    return got


# ---------------------------------------------------------------- lookups vs reference


@pytest.mark.parametrize("parallel", PARALLEL)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mixed_random_batches(parallel, seed):
    rng = np.random.default_rng(seed)
    tokens, weights, vocab = tables(rng)
    features = mixed_features(rng)
    values, offsets = jagged(rng, len(features), 37, 4, EDGE_IDS)
    check(features, tokens, weights, vocab, values, offsets, parallel)


def every_k_features(rng):
    """One-hot fast paths for k = 1..4 (scalar and per-hash weights), the generic k = 5, k_w
    from 1 to 3, and a full table (k = 1 with weight 1)."""
    return [
        memrec(rng, 0, 20, 0, k=1, kw=1),
        memrec(rng, 0, 20, 7, k=2, kw=2),
        memrec(rng, 20, 11, 21, k=2, kw=2, per_hash=False, pooling="mean"),
        memrec(rng, 0, 20, 28, k=3, kw=2),
        memrec(rng, 20, 11, 49, k=4, kw=3),
        memrec(rng, 31, 9, 77, k=4, kw=1, per_hash=False),
        memrec(rng, 0, 40, 84, k=5, kw=2),
        FeatureTable("full", 40, 5, vocab_offset=0),
    ]


@pytest.mark.parametrize("parallel", PARALLEL)
@pytest.mark.parametrize("dim", WIDTHS)
@pytest.mark.parametrize("one_hot", [True, False])
@pytest.mark.parametrize("nb", [5, 300])
def test_every_k_and_width(parallel, dim, one_hot, nb):
    # Kernels are specialised per D (16-wide vector chunks, then a scalar tail), take a faster
    # path for tiles whose bags all hold one id, and a direct one for tiny tiles (k = k_w = 2);
    # all must match the reference.
    rng = np.random.default_rng(20 + dim)
    tokens, weights, vocab = tables(rng, dim=dim)
    features = every_k_features(rng)
    values, offsets = edge_batch(rng, len(features), nb, one_hot, 3)
    check(features, tokens, weights, vocab, values, offsets, parallel)


@pytest.mark.parametrize("parallel", PARALLEL)
def test_one_hot_tiles_next_to_a_multi_hot_tile(parallel):
    # Whole tiles of one-id bags take their own loop; a tile with one longer or empty bag must
    # fall back to the general one, in the same batch.
    rng = np.random.default_rng(22)
    tokens, weights, vocab = tables(rng, dim=16)
    features = mixed_features(rng)
    nf, nb = len(features), 600
    lengths = np.ones((nf, nb), dtype=np.int64)
    lengths[3, -2] = 3
    lengths[5, -1] = 0
    starts = np.concatenate([[0], np.cumsum(lengths.sum(axis=1))])
    offsets = np.stack(
        [starts[f] + np.concatenate([[0], np.cumsum(lengths[f])]) for f in range(nf)]
    ).astype(np.int64)
    values = rng.choice(np.asarray(EDGE_IDS, dtype=np.int64), size=int(starts[-1]))
    check(features, tokens, weights, vocab, values, offsets, parallel)


@pytest.mark.parametrize("parallel", PARALLEL)
def test_many_samples_cross_tiles(parallel):
    # More samples than one tile, so the parallel kernel splits work over several tiles.
    rng = np.random.default_rng(3)
    tokens, weights, vocab = tables(rng, dim=16)
    features = mixed_features(rng)
    nb = 2 * _bag_kernels.TILE + 300  # tiles hold at most TILE samples (fewer, in parallel)
    values, offsets = jagged(rng, len(features), nb, 2, EDGE_IDS + list(range(50)))
    check(features, tokens, weights, vocab, values, offsets, parallel)


@pytest.mark.parametrize("parallel", PARALLEL)
def test_edge_bags_empty_single_repeated_and_extreme_ids(parallel):
    rng = np.random.default_rng(4)
    tokens, weights, vocab = tables(rng)
    features = mixed_features(rng)
    bags = [[], [I64_MIN], [I64_MAX, I64_MAX, I64_MAX], [int(NULL_ID), 0, -1], [99, 99, 123]]
    values = np.array([x for _ in features for bag in bags for x in bag], dtype=np.int64)
    lens = [len(bag) for bag in bags]
    offsets = np.array(
        [np.concatenate([[0], np.cumsum(lens)]) + f * sum(lens) for f in range(len(features))],
        dtype=np.int64,
    )
    got = check(features, tokens, weights, vocab, values, offsets, parallel)
    assert not got[0].any()  # empty bags pool to zeros, in every feature
    # Repeated ids: sum pooling triples the single embedding, mean pooling keeps it.
    z0 = ref_embedding(features[0], I64_MAX, tokens, weights, vocab)
    z1 = ref_embedding(features[1], I64_MAX, tokens, weights, vocab)
    np.testing.assert_allclose(got[2, 0], 3 * z0, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[2, 1], z1, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("parallel", PARALLEL)
def test_full_table_oov_rows_and_vocab_positions(parallel):
    rng = np.random.default_rng(5)
    tokens, weights, vocab = tables(rng)
    features = [FeatureTable("full", 40, 5, vocab_offset=0)]
    ids = [-5, 3, 10, 99, 4, I64_MIN, I64_MAX, -6, 100]
    values = np.array(ids, dtype=np.int64)
    offsets = np.arange(len(ids) + 1, dtype=np.int64)[None]
    got = make_plan(features, tokens, weights, vocab).lookup(values, offsets, parallel=parallel)
    rows = [1, 2, 3, 4, 0, 0, 0, 0, 0]  # 1 + position in the vocabulary, 0 = out of vocabulary
    np.testing.assert_array_equal(got[:, 0], tokens[40 + np.array(rows)])


@pytest.mark.parametrize("parallel", PARALLEL)
def test_shared_table_slots_hash_differently(parallel):
    rng = np.random.default_rng(6)
    tokens, weights, vocab = tables(rng, n_tokens=4096)
    seeds = draw_seeds(rng, 2)
    wseeds = draw_seeds(rng, 1)
    same = dict(token_seeds=seeds, weight_rows=1, weight_cols=1, weight_seeds=wseeds)
    features = [FeatureTable("memrec", 0, 4096, slot=s, **same) for s in (0, 1)]
    values = np.array([42, 42], dtype=np.int64)
    offsets = np.array([[0, 1], [1, 2]], dtype=np.int64)
    got = check(features, tokens, weights, vocab, values, offsets, parallel)
    assert not np.allclose(got[0, 0], got[0, 1])


@pytest.mark.parametrize("parallel", PARALLEL)
def test_batch_of_one_and_batch_of_zero(parallel):
    rng = np.random.default_rng(7)
    tokens, weights, vocab = tables(rng)
    features = mixed_features(rng)
    values, offsets = jagged(rng, len(features), 1, 3, EDGE_IDS)
    check(features, tokens, weights, vocab, values, offsets, parallel)
    plan = make_plan(features, tokens, weights, vocab)
    empty = plan.lookup(np.zeros(0, np.int64), np.zeros((7, 1), np.int64), parallel=parallel)
    assert empty.shape == (0, 7, 16)


@pytest.mark.parametrize("parallel", PARALLEL)
def test_readonly_memmapped_tables_and_preallocated_out(tmp_path, parallel):
    rng = np.random.default_rng(8)
    tokens, weights, vocab = tables(rng)
    for name, arr in (("tokens", tokens), ("weights", weights), ("vocab", vocab)):
        np.save(tmp_path / f"{name}.npy", arr)
    mapped = [np.load(tmp_path / f"{n}.npy", mmap_mode="r") for n in ("tokens", "weights", "vocab")]
    assert not mapped[0].flags.writeable
    features = mixed_features(rng)
    plan = make_plan(features, *mapped)
    assert np.shares_memory(plan.tokens, mapped[0])  # used in place, not copied
    values, offsets = jagged(rng, len(features), 90, 3, EDGE_IDS)
    out = np.full((90, len(features), 16), np.nan, dtype=np.float32)  # stale content
    got = plan.lookup(values, offsets, out=out, parallel=parallel)
    assert got is out
    want = ref_lookup(features, tokens, weights, vocab, values, offsets)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    # Read-only ids and offsets (e.g. zero-copy Arrow buffers) are accepted as well.
    values.flags.writeable = False
    offsets.flags.writeable = False
    np.testing.assert_array_equal(plan.lookup(values, offsets, parallel=parallel), out)


def test_huge_pages_copy_small_token_tables_and_leave_large_ones_mapped(tmp_path, monkeypatch):
    rng = np.random.default_rng(12)
    tokens, weights, vocab = tables(rng, dim=16)
    np.save(tmp_path / "tokens.npy", tokens)
    mapped = np.load(tmp_path / "tokens.npy", mmap_mode="r")
    features = mixed_features(rng)
    values, offsets = jagged(rng, len(features), 90, 3, EDGE_IDS)
    want = make_plan(features, mapped, weights, vocab).lookup(values, offsets)

    plan = make_plan(features, mapped, weights, vocab, huge_pages=True)
    if _alloc.huge_pages_available():
        assert not np.shares_memory(plan.tokens, mapped)
        assert plan.tokens.__array_interface__["data"][0] % (2 << 20) == 0
    assert not plan.tokens.flags.writeable
    np.testing.assert_array_equal(plan.tokens, tokens)
    np.testing.assert_array_equal(plan.lookup(values, offsets), want)

    monkeypatch.setattr(_alloc, "HUGE_COPY_MAX", tokens.nbytes - 1)  # "too large": stays mapped
    assert np.shares_memory(
        make_plan(features, mapped, weights, vocab, huge_pages=True).tokens, mapped
    )
    monkeypatch.undo()
    monkeypatch.setattr(_alloc, "huge_pages_available", lambda: False)  # e.g. THP 'never'
    assert np.shares_memory(
        make_plan(features, mapped, weights, vocab, huge_pages=True).tokens, mapped
    )


@pytest.mark.parametrize("parallel", PARALLEL)
@pytest.mark.parametrize("one_hot", [True, False])
@pytest.mark.parametrize("nb", [1, 2, 8, 9])
def test_small_batches_of_k2_features_only(parallel, one_hot, nb):
    # Every feature k = k_w = 2: batches of up to 8 samples skip tiles and scratch entirely
    # (one-hot ones in a single pass of their own).
    rng = np.random.default_rng(20 + nb)
    tokens, weights, vocab = tables(rng)
    features = [
        memrec(rng, 0, 20, 0, slot=0),
        memrec(rng, 0, 20, 14, slot=1, pooling="mean"),
        memrec(rng, 31, 9, 40, per_hash=False, pooling="mean"),
    ]
    values, offsets = edge_batch(rng, len(features), nb, one_hot, 3)
    check(features, tokens, weights, vocab, values, offsets, parallel)


def small_batch_features(rng):
    """Every feature the direct path serves: k = 1..4 with k_w = 1..3, scalar and per-hash
    weights, sum and mean, and full tables."""
    return [
        memrec(rng, 0, 20, 0, k=1, kw=2),
        memrec(rng, 0, 20, 14, k=3, kw=2, pooling="mean"),
        memrec(rng, 20, 11, 35, k=3, kw=1, per_hash=False),
        memrec(rng, 20, 11, 42, k=4, kw=3),
        memrec(rng, 31, 9, 70, k=4, kw=2, per_hash=False, pooling="mean"),
        FeatureTable("full", 40, 5, vocab_offset=0),
        FeatureTable("full", 40, 5, pooling="mean", vocab_offset=0),
    ]


@pytest.mark.parametrize("parallel", PARALLEL)
@pytest.mark.parametrize("one_hot", [True, False])
@pytest.mark.parametrize("nb", [1, 2, 8, 9])
def test_small_batches_of_every_direct_feature(parallel, one_hot, nb):
    # Batches of up to 8 samples whose features all have k <= 4 (or are full) skip tiles and
    # scratch entirely; 9 samples take the tiles.
    rng = np.random.default_rng(40 + nb)
    tokens, weights, vocab = tables(rng)
    features = small_batch_features(rng)
    values, offsets = edge_batch(rng, len(features), nb, one_hot, 3)
    check(features, tokens, weights, vocab, values, offsets, parallel)


@pytest.mark.parametrize("dim", WIDTHS)
@pytest.mark.parametrize("one_hot", [True, False])
def test_a_sample_pools_to_the_same_bits_alone_and_in_a_large_batch(dim, one_hot):
    # The direct path (a batch of one, serial or parallel), the one-hot tiles and the general
    # tiles (a batch of 600) fold a bag's rows in the same order with the same multiply-adds;
    # k = 5 features take the tiles even in a batch of one.
    rng = np.random.default_rng(7)
    tokens, weights, vocab = tables(rng, dim=dim)
    features = small_batch_features(rng) + mixed_features(rng) + every_k_features(rng)
    plan = make_plan(features, tokens, weights, vocab)
    values, offsets = edge_batch(rng, len(features), 600, one_hot, 3)
    batch = plan.lookup(values, offsets, parallel=True)
    np.testing.assert_array_equal(plan.lookup(values, offsets, parallel=False), batch)
    for b in (0, 1, 299, 599):
        for parallel in PARALLEL:
            alone = plan.lookup(values, offsets[:, b : b + 2].copy(), parallel=parallel)
            np.testing.assert_array_equal(alone[0], batch[b])


@pytest.mark.parametrize("parallel", PARALLEL)
def test_unaligned_ids_take_the_checked_path_and_agree(parallel):
    # Ids that are not aligned (e.g. sliced out of a byte buffer) do not match the compiled
    # signature; the checked path (an aligned copy) must give the same result.
    rng = np.random.default_rng(21)
    tokens, weights, vocab = tables(rng)
    features = mixed_features(rng)
    values, offsets = jagged(rng, len(features), 70, 3, EDGE_IDS)
    raw = np.zeros(values.nbytes + 1, np.uint8)
    unaligned = raw[1:].view(np.int64)
    unaligned[:] = values
    assert not unaligned.flags.aligned
    got = check(features, tokens, weights, vocab, unaligned, offsets, parallel)
    plan = make_plan(features, tokens, weights, vocab)
    np.testing.assert_array_equal(got, plan.lookup(values, offsets, parallel=parallel))
    out = np.zeros(got.nbytes + 1, np.uint8)[1:].view(np.float32).reshape(got.shape)
    assert not out.flags.aligned
    assert plan.lookup(values, offsets, out=out, parallel=parallel) is out
    np.testing.assert_array_equal(out, got)


def test_dispatcher_picks_serial_for_small_and_parallel_for_large_batches():
    rng = np.random.default_rng(9)
    tokens, weights, vocab = tables(rng)
    plan = make_plan(mixed_features(rng), tokens, weights, vocab)
    for nb in (1, 64, 65, 1000):
        values, offsets = jagged(rng, 7, nb, 2, EDGE_IDS)
        auto = plan.lookup(values, offsets)
        for parallel in PARALLEL:
            np.testing.assert_array_equal(auto, plan.lookup(values, offsets, parallel=parallel))


def test_lookup_kernels_hold_one_signature_whatever_they_are_called_with():
    # Every call, odd arguments included, runs the one compiled signature or is refused: a
    # kernel that compiled on the fly for float ids would read their bits as integers.
    rng = np.random.default_rng(10)
    tokens, weights, vocab = tables(rng)
    plan = make_plan(mixed_features(rng), tokens, weights, vocab)
    values, offsets = jagged(rng, 7, 100, 2, EDGE_IDS)
    for parallel in PARALLEL:
        want = plan.lookup(values, offsets, parallel=parallel)
        readonly = values.copy()
        readonly.flags.writeable = False
        np.testing.assert_array_equal(plan.lookup(readonly, offsets, parallel=parallel), want)
        with pytest.raises(ValueError, match="values must be a int64"):
            plan.lookup(values.astype(np.uint64), offsets, parallel=parallel)
        with pytest.raises(ValueError, match="offsets must be a int64"):
            plan.lookup(values, offsets.astype(np.int32), parallel=parallel)
    for kernel in _bag_kernels.lookup_kernels(16):
        assert kernel.signatures == [_bag_kernels.SIGNATURE]


# ---------------------------------------------------------------- half (float16) token rows

# Half rows compile their own lookup kernels (~105 s per D, so one D here: 16, one vector a row,
# streamed outputs); the scalar tail of other widths is checked on the row updates themselves
# (``test_half_row_updates_with_a_scalar_tail``), which compile in a second.
HALF_DIMS = list(HALF_WIDTHS)


def half_and_widened(tokens):
    # The same token values stored as float16 and as float32.
    half = tokens.astype(np.float16)
    return half, half.astype(np.float32)


@pytest.mark.parametrize("parallel", PARALLEL)
@pytest.mark.parametrize("dim", HALF_DIMS)
@pytest.mark.parametrize("one_hot", [True, False])
@pytest.mark.parametrize("nb", [1, 5, 300])
def test_half_token_rows_pool_to_the_bits_of_their_float32_values(parallel, dim, one_hot, nb):
    # A float16 table is widened row by row as it is read: every path (direct, one-hot tiles,
    # general tiles; k = 1..5, full tables) gives exactly what the float32 copy of the same
    # values gives, and matches the reference.
    rng = np.random.default_rng(40 + dim)
    tokens, weights, vocab = tables(rng, dim=dim)
    half, widened = half_and_widened(tokens)
    features = every_k_features(rng) + small_batch_features(rng)
    values, offsets = edge_batch(rng, len(features), nb, one_hot, 3)
    plan = make_plan(features, half, weights, vocab)
    assert plan.tokens.dtype == np.float16
    got = plan.lookup(values, offsets, parallel=parallel)
    want = make_plan(features, widened, weights, vocab).lookup(values, offsets, parallel=parallel)
    np.testing.assert_array_equal(got, want)
    ref = ref_lookup(features, widened, weights, vocab, values, offsets)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def _half_row_updates(dim):
    # The row updates every lookup path is built from, on a table of half rows, with a
    # constant width as the kernels have it; row 2 is row 1's bag unrolled for k = 2.
    @numba.njit
    def run(out, src, hb, ab):
        rows2_set(dim, out, 0, src, hb[0, 0], ab[0, 0], hb[1, 0], ab[1, 0])
        rows1_add(dim, out, 0, src, hb[0, 1], ab[0, 1])
        bag_rows_weighted(dim, out, 1, src, hb, ab, 0, 3, 2, 1)
        bag_rows2_weighted(dim, out, 2, src, hb, ab, 0, 3)

    return run


def test_half_row_updates_with_a_scalar_tail():
    # D = 20: one 16-wide vector and four scalars per row, both widened from half.
    rng = np.random.default_rng(46)
    dim = 20
    half = rng.standard_normal((9, dim)).astype(np.float16)
    widened = half.astype(np.float32)
    hb = np.array([[3, 5, 1], [7, 0, 8]], np.int64)
    ab = rng.standard_normal((2, 3)).astype(np.float32)
    got, want = np.zeros((3, dim), np.float32), np.zeros((3, dim), np.float32)
    _half_row_updates(dim)(got, half.view(_bag_kernels.HALF), hb, ab)
    _half_row_updates(dim)(want, widened, hb, ab)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got[2], got[1])  # the unrolled bag: the same fold, same bits
    w = ab.astype(np.float64)
    ref0 = w[0, 0] * widened[3] + w[1, 0] * widened[7] + w[0, 1] * widened[5]
    ref1 = sum(w[j, q] * widened[hb[j, q]] for q in range(3) for j in range(2))
    np.testing.assert_allclose(got, np.stack([ref0, ref1, ref1]), rtol=1e-5, atol=1e-5)


def test_half_token_rows_streamed_and_in_huge_pages(always_stream, tmp_path):
    # Large outputs are streamed from half rows too; a memory-mapped float16 table is copied
    # into huge pages (still float16) and gives the same result.
    rng = np.random.default_rng(44)
    tokens, weights, vocab = tables(rng, dim=16)
    half, widened = half_and_widened(tokens)
    np.save(tmp_path / "tokens.npy", half)
    mapped = np.load(tmp_path / "tokens.npy", mmap_mode="r")
    features = every_k_features(rng)
    for one_hot in (True, False):
        values, offsets = edge_batch(rng, len(features), 1100, one_hot, 2)
        plan = make_plan(features, mapped, weights, vocab, huge_pages=True)
        assert plan.tokens.dtype == np.float16 and not plan.tokens.flags.writeable
        out = plan.empty_output(1100)
        assert _alloc.streams(out, 16 * 4)
        plan.lookup(values, offsets, out=out, parallel=True)
        want = make_plan(features, widened, weights, vocab).lookup(values, offsets, parallel=True)
        np.testing.assert_array_equal(out, want)


# ---------------------------------------------------------------- streaming stores


@pytest.fixture
def always_stream(monkeypatch):
    # Large outputs are written with streaming stores; make every output "large".
    monkeypatch.setattr(_alloc, "STREAM_MIN_BYTES", 0)
    monkeypatch.setattr(_alloc, "STREAM_MIN_BYTES_LONG_ROWS", 0)


def misaligned(shape):
    # A C-contiguous float32 array 16 bytes past a cache line: valid, but never streamed into.
    n = int(np.prod(shape))
    return _alloc.empty_aligned((n + 4,))[4:].reshape(shape)


@pytest.mark.parametrize("dim", [16, 20, 128])
@pytest.mark.parametrize("one_hot", [True, False])
@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("parallel", PARALLEL)
def test_streamed_outputs_match_the_reference(always_stream, dim, one_hot, aligned, parallel):
    # Streaming only when rows start on cache lines (aligned out, D a multiple of 16), and the
    # result is the same either way, to the bit; k = 1..5, full tables, one-id and longer bags,
    # sum and mean pooling; the serial kernel forced onto the same batch as well.
    rng = np.random.default_rng(30 + dim)
    tokens, weights, vocab = tables(rng, dim=dim)
    features = every_k_features(rng)
    nf, nb = len(features), 1100
    values, offsets = edge_batch(rng, nf, nb, one_hot, 2)
    plan = make_plan(features, tokens, weights, vocab)
    out = plan.empty_output(nb) if aligned else misaligned((nb, nf, dim))
    assert _alloc.streams(out, dim * 4) == (aligned and dim % 16 == 0)
    out[:] = np.nan
    got = check(features, tokens, weights, vocab, values, offsets, parallel, out=out)
    cached = misaligned((nb, nf, dim))
    assert not _alloc.streams(cached, dim * 4)
    make_plan(features, tokens, weights, vocab).lookup(values, offsets, out=cached, parallel=True)
    np.testing.assert_array_equal(got, cached)


def test_empty_aligned_starts_on_a_cache_line():
    for shape in [(0, 26, 16), (1,), (3, 5), (7, 26, 16)]:
        arr = _alloc.empty_aligned(shape)
        assert arr.shape == shape and arr.dtype == np.float32 and arr.flags.c_contiguous
        assert arr.size == 0 or _alloc.line_aligned(arr)
    assert not _alloc.line_aligned(misaligned((4, 16)))
    # Outputs the kernels allocate themselves are aligned when large enough to be streamed into.
    big = _alloc.empty_output((_alloc.STREAM_MIN_BYTES // 64, 16))
    assert big.dtype == np.float32 and _alloc.streams(big, 64)


def test_outputs_are_streamed_by_their_size():
    # An output is streamed once it reaches the threshold for its row length, on any threads.
    mib = 2**20
    short, long = _alloc.STREAM_MIN_BYTES, _alloc.STREAM_MIN_BYTES_LONG_ROWS
    assert short < long
    out = _alloc.empty_aligned((short // 4,))
    assert _alloc.streams(out, 64) and not _alloc.streams(out, 512)
    assert not _alloc.streams(_alloc.empty_aligned((short // 4 - 16,)), 64)
    assert _alloc.streams(_alloc.empty_aligned((long // 4,)), 512)
    assert not _alloc.streams(_alloc.empty_aligned((mib // 4,)), 64)
    assert not _alloc.streams(out[1:], 64)  # not on a cache line
    rng = np.random.default_rng(12)
    tokens, weights, vocab = tables(rng, dim=16)
    plan = make_plan(every_k_features(rng), tokens, weights, vocab)
    assert plan._handle[_bag_kernels.H_STREAM_MIN] == _alloc.stream_min_bytes(64) == short


# ---------------------------------------------------------------- full_bag_rows


@pytest.mark.parametrize("parallel", PARALLEL)
@pytest.mark.parametrize("mean", [False, True])
def test_full_bag_rows_matches_numpy(parallel, mean):
    rng = np.random.default_rng(10)
    table = rng.standard_normal((50, 20)).astype(np.float32)
    lengths = rng.integers(0, 4, size=300)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    indices = rng.integers(0, 50, size=int(offsets[-1])).astype(np.int64)
    out = np.full((300, 20), np.nan, dtype=np.float32)
    got = full_bag_rows(indices, offsets, table, out=out, mean=mean, parallel=parallel)
    assert got is out
    for b in range(300):
        rows = table[indices[offsets[b] : offsets[b + 1]]].astype(np.float64)
        want = rows.sum(axis=0) if rows.shape[0] else np.zeros(20)
        if mean and rows.shape[0]:
            want /= rows.shape[0]
        np.testing.assert_allclose(got[b], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("parallel", PARALLEL)
@pytest.mark.parametrize("dim", [16, 20, 128])
def test_full_bag_rows_one_hot_tiles_match_numpy(parallel, dim):
    # Tiles whose every bag holds one index take a loop of their own; a batch mixes them with
    # tiles of longer and empty bags (the first 1000 bags one-hot, then a multi-hot stretch).
    rng = np.random.default_rng(13 + dim)
    table = rng.standard_normal((70, dim)).astype(np.float32)
    lengths = np.ones(1500, np.int64)
    lengths[1000:1100] = rng.integers(0, 4, size=100)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    indices = rng.integers(0, 70, size=int(offsets[-1])).astype(np.int64)
    got = full_bag_rows(indices, offsets, table, parallel=parallel)
    want = np.stack([table[indices[offsets[b] : offsets[b + 1]]].sum(axis=0) for b in range(1500)])
    np.testing.assert_array_equal(got[:1000], table[indices[:1000]])  # a copy: exact
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("mean", [False, True])
def test_full_bag_rows_streamed_matches_numpy(always_stream, aligned, mean):
    # Bags of 0..3 rows, streamed only into an aligned output; the same bits either way.
    rng = np.random.default_rng(11)
    table = rng.standard_normal((50, 16)).astype(np.float32)
    lengths = rng.integers(0, 4, size=1000)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    indices = rng.integers(0, 50, size=int(offsets[-1])).astype(np.int64)
    out = _alloc.empty_aligned((1000, 16)) if aligned else misaligned((1000, 16))
    assert _alloc.streams(out, 16 * 4) == aligned
    got = full_bag_rows(indices, offsets, table, out=out, mean=mean, parallel=True)
    sums = [table[indices[offsets[b] : offsets[b + 1]]].sum(axis=0) for b in range(1000)]
    want = np.stack([s / max(1, n) if mean else s for s, n in zip(sums, lengths, strict=True)])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    cached = full_bag_rows(indices, offsets, table, out=misaligned((1000, 16)), mean=mean)
    np.testing.assert_array_equal(got, cached)


def test_full_bag_rows_rejects_bad_input():
    table = np.zeros((4, 2), np.float32)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 4\)"):
        full_bag_rows(np.array([0, 4], np.int64), np.array([0, 2], np.int64), table)
    with pytest.raises(ValueError, match="non-decreasing"):
        full_bag_rows(np.array([0, 1], np.int64), np.array([0, 2, 1], np.int64), table)
    with pytest.raises(ValueError, match="int64"):
        full_bag_rows(np.array([0, 1], np.int32), np.array([0, 2], np.int64), table)


@pytest.mark.parametrize("parallel", PARALLEL)
@pytest.mark.parametrize("dim", [16, 128])
def test_full_bag_rows_finds_bad_input_in_any_tile(parallel, dim):
    # Validation runs inside the kernels (offsets per tile, each index before it is used):
    # a bad entry far from the start, or a negative index, must still be found.
    table = np.ones((100, dim), np.float32)
    offsets = np.arange(2001, dtype=np.int64)
    for bad in (1999, 700, 0):
        for value in (100, -1, 2**62):
            indices = np.zeros(2000, np.int64)
            indices[bad] = value
            with pytest.raises(ValueError, match=r"indices must lie in \[0, 100\)"):
                full_bag_rows(indices, offsets, table, parallel=parallel)
    bad_offsets = offsets.copy()
    bad_offsets[1500] = 1400
    with pytest.raises(ValueError, match="non-decreasing"):
        full_bag_rows(np.zeros(2000, np.int64), bad_offsets, table, parallel=parallel)
    with pytest.raises(ValueError, match="non-decreasing"):
        full_bag_rows(np.zeros(2000, np.int64), offsets + 1, table, parallel=parallel)
    empty = full_bag_rows(np.zeros(0, np.int64), np.zeros(1, np.int64), table, parallel=parallel)
    assert empty.shape == (0, dim)
    # Indices past the last bag are never read, so they are no error (prefetching runs ahead
    # of the bags, but stops at the batch's last index).
    indices = np.zeros(2100, np.int64)
    indices[2000:] = -1
    got = full_bag_rows(indices, offsets, table, parallel=parallel)
    np.testing.assert_array_equal(got, np.ones((2000, dim), np.float32))


# ---------------------------------------------------------------- validation


def valid_parts(rng):
    tokens, weights, vocab = tables(rng)
    return mixed_features(rng), tokens, weights, vocab


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f, t, w, v: (f, t.astype(np.float64), w, v), "tokens must be a float32 or float16"),
        (lambda f, t, w, v: (f, np.asfortranarray(t), w, v), "tokens must be C-contiguous"),
        (lambda f, t, w, v: (f, t, w[:20], v), r"weight elements \[14, 28\)"),
        (lambda f, t, w, v: (f, t, w, v.astype(np.int32)), "vocab must be a int64"),
        (lambda f, t, w, v: (f, t[:30], w, v), r"token rows \[20, 31\) must lie inside"),
        (lambda f, t, w, v: (f, t, w, v[::-1].copy()), "strictly increasing"),
        (lambda f, t, w, v: (f, t, w, v[:2]), r"vocabulary \[0, 4\)"),
        (lambda f, t, w, v: ([replace(f[0], kind="dense")], t, w, v), "'memrec' or 'full'"),
        (lambda f, t, w, v: ([replace(f[0], pooling="max")], t, w, v), "'sum' or 'mean'"),
        (lambda f, t, w, v: ([replace(f[0], weight_cols=3)], t, w, v), "weight_cols must be k"),
        (lambda f, t, w, v: ([replace(f[0], rows=0)], t, w, v), r"rows must be in \[1, 2\*\*31\)"),
        (lambda f, t, w, v: ([replace(f[0], slot=-1)], t, w, v), "slot must be in"),
        (
            lambda f, t, w, v: ([replace(f[0], token_seeds=f[0].token_seeds[:, :3])], t, w, v),
            r"token_seeds must be a uint64 array of shape \[k >= 1, 4\]",
        ),
        (
            lambda f, t, w, v: ([replace(f[0], weight_seeds=None)], t, w, v),
            "weight_seeds must be a uint64",
        ),
    ],
)
def test_make_plan_rejects_inconsistent_tables(change, message):
    parts = change(*valid_parts(np.random.default_rng(11)))
    with pytest.raises(ValueError, match=message):
        make_plan(*parts)


def test_lookup_rejects_bad_values_offsets_and_out():
    rng = np.random.default_rng(12)
    plan = make_plan(*valid_parts(rng))
    values, offsets = jagged(rng, 7, 3, 2, EDGE_IDS)
    with pytest.raises(ValueError, match=r"shape \[F, B \+ 1\] = \[7, B \+ 1\]"):
        plan.lookup(values, offsets[:4])
    with pytest.raises(ValueError, match="values must be a int64"):
        plan.lookup(values.astype(np.float64), offsets)
    bad = offsets.copy()
    bad[2, 1] = bad[2, 2] + 1
    with pytest.raises(ValueError, match=r"offsets\[2\] must be non-decreasing"):
        plan.lookup(values, bad)
    bad = offsets.copy()
    bad[6, -1] = len(values) + 1
    with pytest.raises(ValueError, match=r"offsets\[6\] must be non-decreasing within"):
        plan.lookup(values, bad)
    bad = offsets.copy()
    bad[0, 0] = -1
    with pytest.raises(ValueError, match=r"offsets\[0\]"):
        plan.lookup(values, bad)
    with pytest.raises(ValueError, match=r"out must be a writable float32 array of shape"):
        plan.lookup(values, offsets, out=np.empty((3, 7, 7), np.float32))
    with pytest.raises(ValueError, match="out must be a float32"):
        plan.lookup(values, offsets, out=np.empty((3, 7, 16), np.float64))
    for not_an_array in (5, [[[0.0] * 16] * 7] * 3):
        with pytest.raises(ValueError, match="out must be a float32 .*found a (int|list)"):
            plan.lookup(values, offsets, out=not_an_array)
    frozen = np.empty((3, 7, 16), np.float32)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="out must be a writable float32"):
        plan.lookup(values, offsets, out=frozen)
    with pytest.raises(ValueError, match="values must be C-contiguous"):
        plan.lookup(np.repeat(values, 2)[::2], offsets)
    with pytest.raises(ValueError, match="offsets must be a int64"):
        plan.lookup(values, offsets.tolist())


@pytest.mark.parametrize("parallel", PARALLEL)
def test_lookup_of_one_sample_checks_its_offsets(parallel):
    # A batch of one sample has a scan of its own: every way its offsets can be wrong is found,
    # and valid ones (one id, several, none) pool as the reference does.
    rng = np.random.default_rng(14)
    plan = make_plan(*valid_parts(rng))
    values, offsets = jagged(rng, 7, 1, 3, EDGE_IDS)
    n = len(values)
    for f, col, value in [(0, 0, -1), (3, 1, offsets[3, 0] - 1), (6, 1, n + 1), (2, 0, n + 2)]:
        bad = offsets.copy()
        bad[f, col] = value
        with pytest.raises(ValueError, match=rf"offsets\[{f}\] must be non-decreasing"):
            plan.lookup(values, bad, parallel=parallel)
    for vals, offs in [(values, offsets), edge_batch(rng, 7, 1, True, 1)]:
        got = plan.lookup(vals, offs, parallel=parallel)
        want = ref_lookup(plan.features, plan.tokens, plan.weights, plan.vocab, vals, offs)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("parallel", PARALLEL)
@pytest.mark.parametrize("one_hot", [True, False])
def test_lookup_finds_bad_offsets_in_any_tile(parallel, one_hot):
    # The parallel kernel checks offsets tile by tile: a bad entry deep in the batch, at a
    # tile's edge, or at either end of a row must still be found, with nothing read out of
    # bounds.
    rng = np.random.default_rng(13)
    plan = make_plan(*valid_parts(rng))
    values, offsets = edge_batch(rng, 7, 2000, one_hot, 3)
    n = len(values)
    edits = [
        ((3, 1500), offsets[3, 1499] - 1),  # decreasing, deep inside
        ((5, 512), offsets[5, 511] - 1),  # at tile boundaries (tiles of 512, 1000, 1024)
        ((4, 1000), offsets[4, 999] - 1),
        ((1, 1024), offsets[1, 1023] - 1),
        ((0, 0), -1),  # negative start
        ((6, 2000), n + 1),  # past the end of values
        ((2, 1000), n + 5),  # past the end mid-row (and then decreasing)
    ]
    for (f, b), value in edits:
        bad = offsets.copy()
        bad[f, b] = value
        with pytest.raises(ValueError, match=rf"offsets\[{f}\] must be non-decreasing"):
            plan.lookup(values, bad, parallel=parallel)
    np.testing.assert_allclose(
        plan.lookup(values, offsets, parallel=parallel),
        ref_lookup(plan.features, plan.tokens, plan.weights, plan.vocab, values, offsets),
        rtol=1e-5,
        atol=1e-5,
    )
