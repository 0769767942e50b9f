"""Feature prep: raw columns -> dense matrix and jagged ids, for every input type we accept."""

from __future__ import annotations

import re
import sys
import threading

import numpy as np
import pyarrow as pa
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


def test_a_column_read_as_two_dense_features_goes_column_by_column():
    dense = [{**DENSE[0], "name": "a"}, {**DENSE[1], "name": "a"}]
    pb = FeaturePrep(dense, [])(pa.table({"a": [1.0, 2.0, None]}))
    np.testing.assert_array_equal(pb.dense, np.array([[1, np.log1p(1)], [2, np.log1p(2)],
                                                      [-1, 0]], np.float32))  # fmt: skip


def test_threads_sharing_a_prep_over_two_schemas_get_their_own_columns():
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


def test_a_null_whose_fill_its_transform_makes_infinite_is_named():
    prep = FeaturePrep([{**DENSE[2], "fill": 3e38, "std": 1e-3}], [])
    with pytest.raises(BadValueError, match=r"column 'c' \(dense\) is null, and the model's fill "
                       r"for it, 3e\+38, its standard transform makes inf") as info:  # fmt: skip
        prep(pa.table({"c": pa.array([1.0, None])}))
    assert info.value.row == 1
