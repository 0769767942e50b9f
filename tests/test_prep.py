"""Feature prep: raw columns -> dense matrix and jagged ids, for every input type we accept."""

from __future__ import annotations

import re
import sys
import threading

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from memrec_infer import fused_prep
from memrec_infer.errors import BadValueError, SchemaMismatchError
from memrec_infer.kernels.ids import NULL_ID, cross_ids, string_id
from memrec_infer.prep import FeaturePrep


@pytest.fixture(autouse=True, params=["fused", "per_column"])
def prep_path(request, monkeypatch):
    # Every test runs twice: as prep runs (small Arrow batches in one kernel call where the
    # schema allows, ``fused_prep``), and with that path off, every batch column by column.
    if request.param == "per_column":
        monkeypatch.setattr(fused_prep.FusedPrep, "for_schema", classmethod(lambda *a: None))
    return request.param


DENSE = [
    {"name": "a", "transform": "identity", "fill": -1.0},
    {"name": "b", "transform": "log1p", "fill": 0.0},
    {"name": "c", "transform": "standard", "fill": 2.0, "mean": 1.0, "std": 2.0},
]


def one_hot(name, dtype="int", columns=None):
    return {"name": name, "columns": columns or [name], "dtype": dtype, "multi_hot": False}


def test_dense_transforms_and_nulls():
    prep = FeaturePrep(DENSE, [])
    t = pa.table(
        {"a": [1, None, 3], "b": [-5.0, None, np.e - 1], "c": pa.array([3, None, 1], pa.int8())}
    )
    pb = prep(t)
    assert pb.dense.dtype == np.float32 and pb.dense.shape == (3, 3)
    np.testing.assert_allclose(pb.dense[:, 0], [1, -1, 3])
    np.testing.assert_allclose(pb.dense[:, 1], [0, 0, 1], atol=1e-6)  # negatives clipped, null -> 0
    np.testing.assert_allclose(pb.dense[:, 2], [1, 0.5, 0])  # null -> fill 2 -> (2-1)/2
    assert pb.values.shape == (0,) and pb.offsets.shape == (0, 4)


@pytest.mark.parametrize(
    ("column", "said"),
    [
        (pa.array([1.0, 2.0, float("inf")]), "holds inf;"),
        (pa.array([1.0, float("-inf"), None]), "holds -inf;"),
        (pa.array([1.0, 2.0, 1e300], pa.float64()), "holds 1e+300, beyond float32's range;"),
        (np.array([0.0, 0.0, np.inf]), "holds inf;"),
    ],
)
def test_infinite_dense_values_are_refused_with_their_row(column, said):
    # Else the row's score would be NaN. (A null or NaN takes the feature's fill instead.)
    prep = FeaturePrep(DENSE[:1], [])
    batch = {"a": column} if isinstance(column, np.ndarray) else pa.table({"a": column})
    with pytest.raises(BadValueError, match=re.escape(f"column 'a' (dense) {said}")) as info:
        prep(batch)
    assert info.value.row == (1 if "-inf" in said else 2)


def test_a_transform_overflowing_float32_is_refused():
    prep = FeaturePrep([{**DENSE[2], "std": 1e-30}], [])
    with pytest.raises(BadValueError, match="3e.38, which its standard transform makes inf"):
        prep(pa.table({"c": [3e38]}))


def test_nan_in_numpy_dense_is_null():
    prep = FeaturePrep(DENSE[:1], [])
    pb = prep({"a": np.array([np.nan, 4.0])})
    np.testing.assert_array_equal(pb.dense[:, 0], [-1, 4])


def test_ids_for_every_column_kind():
    sparse = [
        one_hot("i"),
        one_hot("s", "string"),
        one_hot("d", "string"),
        one_hot("x", "cross", ["i", "s"]),
        {"name": "l", "columns": ["l"], "dtype": "string", "multi_hot": True},
    ]
    t = pa.table(
        {
            "i": pa.array([5, None, -(2**40)], pa.int64()),
            "s": pa.array(["UA", None, ""], pa.large_string()),
            "d": pa.array(["x", "y", None]).dictionary_encode(),
            "l": pa.array([["p", "q"], None, [None]]),
        }
    )
    pb = FeaturePrep([], sparse)(t)
    i_ids = [5, NULL_ID, -(2**40)]
    s_ids = [string_id("UA"), NULL_ID, string_id("")]
    expected = (
        i_ids
        + s_ids
        + [string_id("x"), string_id("y"), NULL_ID]
        + list(cross_ids(np.array([i_ids, s_ids])))
        + [string_id("p"), string_id("q"), NULL_ID]
    )
    np.testing.assert_array_equal(pb.values, np.array(expected, dtype=np.int64))
    np.testing.assert_array_equal(
        pb.offsets,
        [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9], [9, 10, 11, 12], [12, 14, 14, 15]],
    )


@pytest.mark.parametrize(
    "arrow_type",
    [pa.string(), pa.large_string(), pa.binary(), pa.large_binary(), pa.string_view(),
     pa.binary_view()],
    ids=str,
)  # fmt: skip
def test_every_string_type_and_a_sliced_array_give_the_same_ids(arrow_type):
    # Each type is read from its own buffers (offsets of 32 or 64 bits; views cast first),
    # from the array's offset on: a slice of a longer array names its own rows only.
    words = ["skip", "UA", None, "", "\u00e9t\u00e9", "tail"]
    col = pa.array([w if w is None else w.encode() for w in words], pa.binary()).cast(arrow_type)
    pb = FeaturePrep([], [one_hot("s", "string")])(pa.table({"s": col.slice(1, 4)}))
    expected = [string_id(w) for w in words[1:5]]
    np.testing.assert_array_equal(pb.values, np.array(expected, dtype=np.int64))


def test_one_hot_features_lay_bags_out_feature_major():
    # Every feature one-hot (prep's two-call layout); an empty batch gives zero-width bags.
    sparse = [one_hot("i"), one_hot("s", "string"), one_hot("x", "cross", ["i", "s"])]
    prep = FeaturePrep([], sparse)
    i_ids = np.array([5, NULL_ID, 9], np.int64)
    s_ids = np.array([string_id("a"), string_id("b"), NULL_ID], np.int64)
    pb = prep({"i": i_ids.copy(), "s": ["a", "b", None]})
    expected = np.concatenate([i_ids, s_ids, cross_ids(np.stack([i_ids, s_ids]))])
    np.testing.assert_array_equal(pb.values, expected)
    np.testing.assert_array_equal(pb.offsets, [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]])
    assert pb.values.dtype == np.int64 and pb.offsets.dtype == np.int64
    assert pb.offsets.flags.c_contiguous and pb.offsets.flags.writeable
    empty = prep({"i": np.zeros(0, np.int64), "s": pa.array([], pa.string())})
    assert empty.values.shape == (0,)
    np.testing.assert_array_equal(empty.offsets, [[0], [0], [0]])


def test_unsigned_and_narrow_ints_and_slices():
    prep = FeaturePrep([], [one_hot("u")])
    arr = pa.array([1, 2**64 - 1, 7], pa.uint64())
    pb = prep(pa.table({"u": arr}))
    np.testing.assert_array_equal(pb.values, [1, -1, 7])
    sliced = pa.table({"u": pa.array(["a", "bb", "ccc"])}).slice(1, 2)
    pb = FeaturePrep([], [one_hot("u", "string")])(sliced)
    np.testing.assert_array_equal(pb.values, [string_id("bb"), string_id("ccc")])


def test_chunked_columns_match_single_chunk():
    prep = FeaturePrep(DENSE[:1], [one_hot("s", "string")])
    whole = pa.table({"a": [1, 2, 3], "s": ["a", "b", "c"]})
    chunked = pa.concat_tables([whole.slice(0, 1), whole.slice(1, 2)])
    a, b = prep(whole), prep(chunked)
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.dense, b.dense)


def test_batches_whose_columns_move_between_calls_are_read_by_name():
    # One FeaturePrep finds columns by position in the schema it last checked: a batch whose
    # columns come in another order, or with extra ones, must still be read by name.
    prep = FeaturePrep(DENSE[:2], [one_hot("x"), one_hot("y", "string")])
    cols = {"a": [1.0, 2.0], "b": [0.5, None], "x": [7, 8], "y": ["p", "q"]}
    want = prep(pa.table(cols))
    for t in (
        pa.table({k: cols[k] for k in ("y", "x", "b", "a")}),
        pa.table({"extra": [0, 0], **cols}).select(["x", "extra", "a", "y", "b"]),
        pa.table(cols).to_batches()[0],
        pa.table(cols),
    ):
        got = prep(t)
        np.testing.assert_array_equal(got.dense, want.dense)
        np.testing.assert_array_equal(got.values, want.values)
        np.testing.assert_array_equal(got.offsets, want.offsets)


def test_schema_errors_name_every_column():
    prep = FeaturePrep(DENSE[:1], [one_hot("i"), one_hot("s", "string"), one_hot("m")])
    t = pa.table({"a": ["text"], "i": ["not an int"], "s": [1]})
    with pytest.raises(SchemaMismatchError) as err:
        prep(t)
    msg = str(err.value)
    assert "missing column(s): 'm'" in msg
    assert "'a' (dense): expected numbers, found string" in msg
    assert "'i' (sparse feature 'i'): expected integers, found string" in msg
    assert "'s' (sparse feature 's'): expected strings, found int64" in msg


def test_list_column_for_one_hot_feature_is_refused():
    prep = FeaturePrep([], [one_hot("i")])
    with pytest.raises(SchemaMismatchError, match="trained one-hot"):
        prep(pa.table({"i": [[1, 2]]}))


def test_dict_input_with_ragged_lengths_is_refused():
    prep = FeaturePrep(DENSE[:1], [one_hot("i")])
    with pytest.raises(SchemaMismatchError, match="different lengths"):
        prep({"a": np.zeros(2), "i": np.zeros(3, np.int64)})


def test_dict_of_numpy_matches_arrow_table():
    sparse = [
        one_hot("i"),
        one_hot("u"),
        one_hot("s", "string"),
        one_hot("x", "cross", ["i", "s"]),
        {"name": "l", "columns": ["l"], "dtype": "int", "multi_hot": True},
    ]
    prep = FeaturePrep(DENSE, sparse)
    cols = {
        "a": np.array([1, 2**40, -3], np.int64),
        "b": np.array([np.nan, 0.5, 7.0], np.float32),
        "c": np.array([True, False, True]),
        "i": np.array([5, -1, 2**62], np.int64),
        "u": np.array([1, 2**64 - 1, 3], np.uint64),
        "s": np.array(["UA", "", "日本"], dtype=object),
        "l": [[1, 2], [], None],
    }
    from_dict = prep(cols)
    from_arrow = prep(pa.table({k: pa.array(v, from_pandas=True) for k, v in cols.items()}))
    np.testing.assert_array_equal(from_dict.dense, from_arrow.dense)
    np.testing.assert_array_equal(from_dict.values, from_arrow.values)
    np.testing.assert_array_equal(from_dict.offsets, from_arrow.offsets)
    assert from_dict.values[3:6].tolist() == [1, -1, 3]  # uint64 wraps, as the spec says


def test_dict_input_errors_name_the_column():
    prep = FeaturePrep(DENSE[:1], [one_hot("i")])
    with pytest.raises(SchemaMismatchError, match="'i' .*expected integers, found double"):
        prep({"a": np.zeros(2), "i": np.zeros(2)})
    with pytest.raises(SchemaMismatchError, match=r"'a' has shape \(2, 2\); expected a 1-D"):
        prep({"a": np.zeros((2, 2)), "i": np.zeros(2, np.int64)})
    # The schema is re-checked when a later batch's types change.
    prep({"a": np.zeros(2), "i": np.zeros(2, np.int64)})
    with pytest.raises(SchemaMismatchError, match="expected integers, found string"):
        prep({"a": np.zeros(2), "i": np.array(["x", "y"])})


# ---------------------------------------------------------------- the one-call path


def one_call_only(prep_path):
    if prep_path == "per_column":
        pytest.skip("about the one-call path (or compares the two paths itself)")


def both_paths(prep, batch, monkeypatch):
    # (prepared by the one-call path, prepared column by column), after checking that the
    # first really took the one-call path.
    took = []
    real = FeaturePrep._finish_fused
    with monkeypatch.context() as m:
        m.setattr(FeaturePrep, "_finish_fused", lambda *a: took.append(real(*a)) or took[-1])
        fused = prep(batch)
    assert took and took[0] is fused
    with monkeypatch.context() as m:
        m.setattr(fused_prep.FusedPrep, "for_schema", classmethod(lambda *a: None))
        plain = FeaturePrep(prep.dense, prep.sparse)(batch)
    return fused, plain


def assert_same_bits(a, b):
    for name in ("dense", "values", "offsets"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        np.testing.assert_array_equal(x.view(np.uint8), y.view(np.uint8), err_msg=name)


INT_TYPES = [pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(),
             pa.uint32(), pa.uint64()]  # fmt: skip
STRING_TYPES = [pa.string(), pa.large_string(), pa.binary(), pa.large_binary()]


def random_column(rng, t, n):
    # Values of type ``t`` across its whole range (extremes included), a fifth of them null.
    nulls = rng.random(n) < 0.2
    if pa.types.is_integer(t):
        info = np.iinfo(t.to_pandas_dtype())
        vals = rng.integers(info.min, info.max, n, dtype=t.to_pandas_dtype(), endpoint=True)
        vals[:2] = [info.min, info.max]
        return pa.array(vals, t, mask=nulls)
    if pa.types.is_floating(t):
        vals = rng.normal(0, 1e3, n).astype(t.to_pandas_dtype())
        vals[rng.random(n) < 0.1] = np.nan
        vals[:2] = [16777217, -3e38]  # rounds to float32; within float32's range
        return pa.array(vals, t, mask=nulls)
    letters = list("abcxyz\u00e9\u4e2d")
    words = ["".join(rng.choice(letters, int(rng.integers(0, 9)))) for _ in range(n)]
    words[0] = ""
    return pa.array(words, pa.string(), mask=nulls).cast(t)


@pytest.mark.parametrize("t", INT_TYPES + [pa.float32(), pa.float64()] + STRING_TYPES, ids=str)
def test_one_call_prep_matches_per_column_for_every_type(t, monkeypatch, prep_path):
    # Dense (numbers) and sparse (integers, strings) from every type the kernel reads, nulls,
    # extremes; a cross over the column and an int64 one; sliced batches; one row and many.
    one_call_only(prep_path)
    rng = np.random.default_rng(t.id)
    number = pa.types.is_integer(t) or pa.types.is_floating(t)
    dense = [{**DENSE[0], "name": "c"}, {**DENSE[2], "name": "i"}]
    if number:
        dense.append({**DENSE[1], "name": "x"})
    sparse = [one_hot("i")]
    if not pa.types.is_floating(t):
        kind = "int" if number else "string"
        sparse += [one_hot("x", kind), one_hot("x*i", "cross", ["x", "i"])]
    n = 300
    table = pa.table(
        {
            "c": random_column(rng, pa.float64(), n),
            "i": random_column(rng, pa.int64(), n),
            "x": random_column(rng, t, n),
        }
    )
    prep = FeaturePrep(dense, sparse)
    for batch in (table, table.slice(1, 1), table.slice(37, 200), table.to_batches()[0].slice(5)):
        assert_same_bits(*both_paths(prep, batch, monkeypatch))


def test_one_call_prep_of_numpy_columns_matches_per_column(monkeypatch, prep_path):
    # A dict of NumPy arrays of every dtype the kernel reads (NaN for null in floats) takes
    # the one-call path too; anything else in a dict (a list, a strided or 2-D array, a bool
    # or big-endian column) goes column by column, with the same result.
    one_call_only(prep_path)
    rng = np.random.default_rng(13)
    n = 50
    for t in INT_TYPES + [pa.float32(), pa.float64()]:
        x = random_column(rng, t, n).fill_null(0).to_numpy()
        cols = {"c": np.where(rng.random(n) < 0.2, np.nan, rng.normal(0, 9, n)), "x": x,
                "i": rng.integers(-(2**62), 2**62, n)}  # fmt: skip
        dense = [{**DENSE[2], "name": "c"}, {**DENSE[1], "name": "x"}]
        sparse = [one_hot("i")]
        if not pa.types.is_floating(t):
            sparse += [one_hot("x"), one_hot("xi", "cross", ["x", "i"])]
        assert_same_bits(*both_paths(FeaturePrep(dense, sparse), cols, monkeypatch))
    prep = FeaturePrep([{**DENSE[0], "name": "a"}], [one_hot("i")])
    want = prep({"a": np.array([1.0, 2.0]), "i": np.array([3, 4])})
    monkeypatch.setattr(fused_prep.FusedPrep, "numpy_columns", None)  # not called again
    for other in ([1.0, 2.0], np.array([[1.0, 9], [2.0, 9]])[:, 0], np.array([1.0, 2.0], ">f8")):
        assert_same_bits(prep({"a": other, "i": np.array([3, 4])}), want)


def test_one_call_prep_of_parquet_ipc_and_unknown_null_counts(monkeypatch, prep_path, tmp_path):
    # Batches as a Parquet reader and an IPC stream hand them over, and arrays whose null
    # count Arrow has not counted yet (-1: the kernel reads the bitmap).
    one_call_only(prep_path)
    rng = np.random.default_rng(11)
    table = pa.table(
        {
            "s": random_column(rng, pa.string(), 700),
            "i": random_column(rng, pa.int64(), 700),
            "f": random_column(rng, pa.float32(), 700),
        }
    )
    prep = FeaturePrep([{**DENSE[2], "name": "f"}], [one_hot("s", "string"), one_hot("i")])
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=300)
    for batch in pq.ParquetFile(tmp_path / "t.parquet").iter_batches(batch_size=256):
        assert_same_bits(*both_paths(prep, batch, monkeypatch))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=200)
    for batch in pa.ipc.open_stream(sink.getvalue()):
        assert_same_bits(*both_paths(prep, batch, monkeypatch))
    uncounted = {
        name: pa.Array.from_buffers(col.type, len(col), col.chunk(0).buffers(), null_count=-1)
        for name, col in zip(table.column_names, table.columns, strict=True)
    }
    assert_same_bits(*both_paths(prep, pa.record_batch(uncounted), monkeypatch))


def test_a_column_read_as_two_dense_features_goes_column_by_column(prep_path):
    dense = [{**DENSE[0], "name": "a"}, {**DENSE[1], "name": "a"}]
    pb = FeaturePrep(dense, [])(pa.table({"a": [1.0, 2.0, None]}))
    np.testing.assert_array_equal(pb.dense, np.array([[1, np.log1p(1)], [2, np.log1p(2)],
                                                      [-1, 0]], np.float32))  # fmt: skip


def test_threads_sharing_a_prep_over_two_schemas_get_their_own_columns(prep_path):
    # A prep shared by threads whose batches alternate between two schemas (int8 and int64
    # columns swapped): no thread may run one schema's program, or positions, on the other.
    dense = [{**DENSE[0], "name": "a"}, {**DENSE[0], "name": "c"}]
    prep = FeaturePrep(dense, [one_hot("a"), one_hot("c")])
    rng = np.random.default_rng(12)
    small, big = rng.integers(-100, 100, 64), rng.integers(-(2**40), 2**40, 64)
    batches = [
        pa.record_batch({"a": pa.array(small, pa.int8()), "c": pa.array(big, pa.int64())}),
        pa.record_batch({"a": pa.array(big, pa.int64()), "c": pa.array(small, pa.int8())}),
    ]
    want = [FeaturePrep(dense, [one_hot("a"), one_hot("c")])(b) for b in batches]
    wrong = []

    def work(k):
        for _ in range(1500):
            got = prep(batches[k])
            if not np.array_equal(got.values, want[k].values):
                wrong.append(k)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        threads = [threading.Thread(target=work, args=(k,)) for k in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert wrong == []


def test_a_null_whose_fill_its_transform_makes_infinite_is_named(prep_path):
    prep = FeaturePrep([{**DENSE[2], "fill": 3e38, "std": 1e-3}], [])
    with pytest.raises(BadValueError, match=r"column 'c' \(dense\) is null, and the model's fill "
                       r"for it, 3e\+38, its standard transform makes inf") as info:  # fmt: skip
        prep(pa.table({"c": pa.array([1.0, None])}))
    assert info.value.row == 1


def test_one_call_prep_batches_of_a_stream_and_columns_in_any_order(monkeypatch, prep_path):
    # Record batches of one file, their columns in another order than the model's, one
    # column feeding a dense feature and a sparse one.
    one_call_only(prep_path)
    rng = np.random.default_rng(5)
    cols = {
        "s": random_column(rng, pa.string(), 1000),
        "extra": random_column(rng, pa.float32(), 1000),
        "i": random_column(rng, pa.int32(), 1000),
    }
    prep = FeaturePrep([{**DENSE[1], "name": "i"}], [one_hot("s", "string"), one_hot("i")])
    for batch in pa.table(cols).to_batches(max_chunksize=128):
        assert_same_bits(*both_paths(prep, batch, monkeypatch))


@pytest.mark.parametrize(
    ("column", "feature"),
    [
        (pa.array(["a", "b"]).dictionary_encode(), one_hot("x", "string")),
        (pa.array([True, False]), None),
        (pa.array([1.5, 2.5], pa.float16()), None),
        (pa.array(["a", "b"], pa.string_view()), one_hot("x", "string")),
        (pa.array([["a"], []]), {**one_hot("x", "string"), "multi_hot": True}),
    ],
    ids=["dictionary", "bool", "float16", "string_view", "multi_hot"],
)
def test_other_types_and_multi_hot_go_column_by_column(column, feature, prep_path):
    one_call_only(prep_path)
    dense = [] if feature else [{**DENSE[0], "name": "x"}]
    prep = FeaturePrep(dense, [feature] if feature else [])
    prep(pa.table({"x": column}))
    assert prep._checked.fused is None


def test_large_batches_and_chunked_tables_go_column_by_column(monkeypatch, prep_path):
    one_call_only(prep_path)
    calls = []
    real = fused_prep.FusedPrep.__call__
    monkeypatch.setattr(fused_prep.FusedPrep, "__call__", lambda *a: calls.append(1) or real(*a))
    prep = FeaturePrep([], [one_hot("i")])
    ids = np.arange(fused_prep.MAX_ROWS)
    prep(pa.table({"i": ids}))  # parallel hashing from here on
    chunked = pa.concat_tables([pa.table({"i": ids[:2]}), pa.table({"i": ids[2:4]})])
    np.testing.assert_array_equal(prep(chunked).values, ids[:4])
    assert calls == []
    prep(pa.table({"i": ids[:-1]}))
    assert calls == [1]


def test_one_call_prep_leaves_a_value_it_cannot_take_to_the_per_column_path(prep_path):
    one_call_only(prep_path)
    # Which names the row, as before.
    prep = FeaturePrep(DENSE[:1], [])
    with pytest.raises(BadValueError, match="beyond float32's range") as info:
        prep(pa.table({"a": pa.array([1.0, 1e300])}))
    assert prep._checked.fused is not None and info.value.row == 1
