"""Feature prep's one-call path (``fused_prep``): the same bits as the per-column path, for
every input it takes, and the inputs it leaves to that path. (``test_prep.py`` runs every
prep test both ways.)"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_prep import DENSE, one_hot

from memrec_infer import fused_prep
from memrec_infer.errors import BadValueError
from memrec_infer.prep import FeaturePrep


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
def test_one_call_prep_matches_per_column_for_every_type(t, monkeypatch):
    # Dense (numbers) and sparse (integers, strings) from every type the kernel reads, nulls,
    # extremes; a cross over the column and an int64 one; sliced batches; one row and many.
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


def test_one_call_prep_of_numpy_columns_matches_per_column(monkeypatch):
    # A dict of NumPy arrays of every dtype the kernel reads (NaN for null in floats) takes
    # the one-call path too; anything else in a dict (a list, a strided or 2-D array, a bool
    # or big-endian column) goes column by column, with the same result.
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


def test_one_call_prep_of_parquet_ipc_and_unknown_null_counts(monkeypatch, tmp_path):
    # Batches as a Parquet reader and an IPC stream hand them over, and arrays whose null
    # count Arrow has not counted yet (-1: the kernel reads the bitmap).
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


def test_one_call_prep_batches_of_a_stream_and_columns_in_any_order(monkeypatch):
    # Record batches of one file, their columns in another order than the model's, one
    # column feeding a dense feature and a sparse one.
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
def test_other_types_and_multi_hot_go_column_by_column(column, feature):
    dense = [] if feature else [{**DENSE[0], "name": "x"}]
    prep = FeaturePrep(dense, [feature] if feature else [])
    prep(pa.table({"x": column}))
    assert prep._checked.fused is None


def test_large_batches_and_chunked_tables_go_column_by_column(monkeypatch):
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


def test_one_call_prep_leaves_a_value_it_cannot_take_to_the_per_column_path():
    # Which names the row, as before.
    prep = FeaturePrep(DENSE[:1], [])
    with pytest.raises(BadValueError, match="beyond float32's range") as info:
        prep(pa.table({"a": pa.array([1.0, 1e300])}))
    assert prep._checked.fused is not None and info.value.row == 1
