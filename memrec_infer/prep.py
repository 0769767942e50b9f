"""Feature prep: raw columns -> the model's inputs (dense matrix, jagged ids).

Shared by the engine and by the torch models in ``memrec_infer.models``, so both see the same
ids bit for bit. Vocabulary (torchrec's): B rows, F sparse features; ``values`` holds every id
of the batch feature-major, ``offsets[f, b]:offsets[f, b + 1]`` is the bag of row ``b`` of
feature ``f``. Example, F=2, B=2, feature 0 one-hot, feature 1 multi-hot with bags
``[7, 8]`` and ``[]``::

    values  = [id_a, id_b, 7, 8]
    offsets = [[0, 1, 2],
               [2, 4, 4]]

Nulls: a null (or NaN) dense value becomes the feature's ``fill`` before its transform; a null
categorical value becomes ``NULL_ID``; a null list is an empty bag; a null inside a list is
``NULL_ID``.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import BadValueError, SchemaMismatchError
from .fused_prep import MAX_ROWS as _FUSED_MAX_ROWS
from .fused_prep import NUMPY_CODES, FusedPrep
from .kernels.ids import NULL_ID, cross_ids, string_ids
from .spec import float32_finite

DENSE_TRANSFORMS = ("identity", "log1p", "standard")
SPARSE_DTYPES = ("int", "string", "cross")

Batch = pa.Table | pa.RecordBatch | Mapping[str, Any]


@dataclass(frozen=True)
class _CheckedSchema:
    """An Arrow schema checked against the model: its columns' positions, and the one-call
    program for it (``fused_prep``), if it has one."""

    schema: pa.Schema
    index: list[int]
    fused: FusedPrep | None


@dataclass
class PreparedBatch:
    """The model's inputs for one batch of ``num_rows`` rows."""

    num_rows: int
    dense: np.ndarray  # float32 [B, n_dense]
    values: np.ndarray  # int64 [N]
    offsets: np.ndarray  # int64 [F, B + 1]


# Arrow's plain string and binary types by type id, with their offsets' width. Strings are the
# second most common id column: one dict look-up finds them, instead of five type tests
# (~1.3 us of ~7.5 us per column at B = 1).
_STRING_OFFSETS = {
    pa.string().id: np.int32,
    pa.binary().id: np.int32,
    pa.large_string().id: np.int64,
    pa.large_binary().id: np.int64,
}


def _is_string(t: pa.DataType) -> bool:
    # A type whose values are strings or bytes: the plain ones above, and views.
    return t.id in _STRING_OFFSETS or pa.types.is_string_view(t) or pa.types.is_binary_view(t)


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t)


def _value_type(t: pa.DataType) -> pa.DataType:
    return t.value_type if pa.types.is_dictionary(t) else t


def _type_problem(dtype: str, multi_hot: bool, t: pa.DataType) -> str | None:
    """Why a column of Arrow type ``t`` cannot feed a sparse feature, or None if it can."""
    if multi_hot:
        if not _is_list(t):
            return f"a list column (multi-hot bags), found {t}"
        t = t.value_type
    elif _is_list(t):
        return f"one value per row, found the list type {t}; the model was trained one-hot"
    t = _value_type(t)
    if pa.types.is_null(t):
        return None
    if dtype == "string" and not _is_string(t):
        return f"strings, found {t}"
    if dtype == "int" and not pa.types.is_integer(t):
        return f"integers, found {t}"
    if dtype == "cross" and not (pa.types.is_integer(t) or _is_string(t)):
        return f"integers or strings, found {t}"
    return None


def _dense_problem(t: pa.DataType) -> str | None:
    t = _value_type(t)
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_null(t):
        return None
    if pa.types.is_boolean(t) or pa.types.is_decimal(t):
        return None
    return f"numbers, found {t}"


def _combine(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        return col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    return col


def _plain_ids(arr: pa.Array | np.ndarray) -> np.ndarray:
    """Ids (spec sec. 1) of a non-list array of integers or strings."""
    if isinstance(arr, np.ndarray):  # integers, from a dict batch
        return arr.astype(np.int64, copy=False)
    t = arr.type
    if pa.types.is_integer(t):  # the common case first (a dictionary type is not an integer)
        if arr.null_count:
            arr = pc.fill_null(pc.cast(arr, pa.int64(), safe=False), int(NULL_ID))
        # A zero-copy view, widened by NumPy: uint64 values >= 2**63 wrap to negative ids, as
        # the spec says.
        return arr.to_numpy().astype(np.int64, copy=False)
    offset_type = _STRING_OFFSETS.get(t.id)
    if offset_type is not None:
        return _string_array_ids(arr, offset_type)
    if pa.types.is_dictionary(t):
        dict_ids = _plain_ids(arr.dictionary)
        idx = pc.fill_null(arr.indices, 0).to_numpy(zero_copy_only=False)
        out = dict_ids[idx] if len(dict_ids) else np.full(len(arr), NULL_ID, np.int64)
        if arr.null_count:
            out[~arr.is_valid().to_numpy(zero_copy_only=False)] = NULL_ID
        return out
    if pa.types.is_null(t):
        return np.full(len(arr), NULL_ID, dtype=np.int64)
    # String and binary views: their bytes as one large binary array.
    return _string_array_ids(pc.cast(arr, pa.large_binary()), np.int64)


def _string_array_ids(arr: pa.Array, offset_type: type) -> np.ndarray:
    # Ids of a string or binary array, read from its buffers (offsets of ``offset_type``).
    _, off_buf, data_buf = arr.buffers()
    n = len(arr)
    offsets = np.frombuffer(off_buf, dtype=offset_type)[arr.offset : arr.offset + n + 1]
    data = np.zeros(0, np.uint8) if data_buf is None else np.frombuffer(data_buf, dtype=np.uint8)
    valid = arr.is_valid().to_numpy(zero_copy_only=False) if arr.null_count else _all_valid(n)
    return string_ids(offsets, data, valid)


_ALL_VALID = np.ones(1 << 16, dtype=np.bool_)
_ALL_VALID.flags.writeable = False


def _all_valid(n: int) -> np.ndarray:
    """A read-only all-True mask of length n (shared, so small batches allocate nothing)."""
    return _ALL_VALID[:n] if n <= _ALL_VALID.shape[0] else np.ones(n, dtype=np.bool_)


class FeaturePrep:
    """Turns raw columns into :class:`PreparedBatch` for one model.

    Parameters
    ----------
    dense : list of dict
        ``{"name", "transform", "fill"[, "mean", "std"]}`` per dense feature, in input order.
    sparse : list of dict
        ``{"name", "columns", "dtype", "multi_hot", ...}`` per sparse feature, in F order.
    """

    def __init__(self, dense: Sequence[Mapping[str, Any]], sparse: Sequence[Mapping[str, Any]]):
        self.dense = [dict(d) for d in dense]
        self.sparse = [dict(s) for s in sparse]
        for d in self.dense:
            if d["transform"] not in DENSE_TRANSFORMS:
                raise ValueError(
                    f"dense feature {d['name']!r}: transform {d['transform']!r} is not one of "
                    f"{', '.join(DENSE_TRANSFORMS)}"
                )
        for s in self.sparse:
            if s["dtype"] not in SPARSE_DTYPES:
                raise ValueError(
                    f"sparse feature {s['name']!r}: dtype {s['dtype']!r} is not one of "
                    f"{', '.join(SPARSE_DTYPES)}"
                )
        self._fill = np.array([d.get("fill", 0.0) for d in self.dense], dtype=np.float32)
        kinds = [d["transform"] for d in self.dense]
        self._log1p = np.array([i for i, k in enumerate(kinds) if k == "log1p"], np.intp)
        self._standard = np.array([i for i, k in enumerate(kinds) if k == "standard"], np.intp)
        # The standard transform as (x - shift) / scale on every column, 0 and 1 for the other
        # columns (exact: x - 0 and x / 1 are x): two in-place ufuncs instead of a gather and a
        # scatter of the standard columns (~8 us of a ~30 us prep at batch 1).
        self._shift = np.zeros(len(self.dense), np.float32)
        self._scale = np.ones(len(self.dense), np.float32)
        self._shift[self._standard] = [self.dense[i]["mean"] for i in self._standard]
        self._scale[self._standard] = [self.dense[i]["std"] for i in self._standard]
        self._columns = self._all_columns()
        self._feature_starts = np.arange(len(self.sparse), dtype=np.int64)
        # The Arrow schema last checked, with what was derived from it. One object, replaced
        # whole: threads sharing this prep must never pair one schema with another's positions
        # or program (the one-call kernel would read one column type as another).
        self._checked: _CheckedSchema | None = None
        self._checked_signature: tuple | None = None
        # A dict of NumPy columns: their dtypes, checked, and the one-call program for them.
        self._checked_numpy: tuple[tuple, FusedPrep | None] | None = None

    @property
    def columns(self) -> list[str]:
        """Every input column the model reads, each once, dense first."""
        return list(self._columns)

    def _all_columns(self) -> list[str]:
        seen: dict[str, None] = {d["name"]: None for d in self.dense}
        for s in self.sparse:
            seen.update((c, None) for c in s["columns"])
        return list(seen)

    def check_schema(self, schema: pa.Schema, source: str = "input") -> None:
        """Raise :class:`SchemaMismatchError` listing every missing or mistyped column."""
        problems = []
        missing = [c for c in self.columns if schema.get_field_index(c) < 0]
        if missing:
            problems.append(f"missing column(s): {', '.join(map(repr, missing))}")
        for d in self.dense:
            if d["name"] in missing:
                continue
            why = _dense_problem(schema.field(d["name"]).type)
            if why:
                problems.append(f"column {d['name']!r} (dense): expected {why}")
        for s in self.sparse:
            for c in s["columns"]:
                if c in missing:
                    continue
                why = _type_problem(s["dtype"], bool(s["multi_hot"]), schema.field(c).type)
                if why:
                    problems.append(f"column {c!r} (sparse feature {s['name']!r}): expected {why}")
        if problems:
            raise SchemaMismatchError(f"{source}: " + "; ".join(problems))

    def __call__(self, batch: Batch) -> PreparedBatch:
        """Prepare one batch of raw columns (pyarrow Table/RecordBatch or dict of arrays)."""
        if isinstance(batch, pa.Table | pa.RecordBatch):
            schema = batch.schema
            # Batches of one stream share a schema: check it once, not on every call, and find
            # its columns by position (by name, Arrow searches the schema every time).
            checked = self._checked
            if checked is None or not (schema is checked.schema or schema.equals(checked.schema)):
                self.check_schema(schema)
                index = [schema.get_field_index(c) for c in self._columns]
                fused = FusedPrep.for_schema(self.dense, self.sparse, schema, self._columns, index)
                checked = self._checked = _CheckedSchema(schema, index, fused)
            n = batch.num_rows
            if checked.fused is not None and 0 < n < _FUSED_MAX_ROWS:
                prepared = self._prepare_fused(checked.fused, batch, n)
                if prepared is not None:
                    return prepared
            columns = _arrow_columns(batch, self._columns, checked.index)
        else:
            prepared = self._prepare_numpy(batch)
            if prepared is not None:
                return prepared
            batch = _DictColumns(batch, self._columns)
            if batch.signature != self._checked_signature:
                self.check_schema(batch.schema())
                self._checked_signature = batch.signature
            n = batch.num_rows
            columns = batch.columns
        dense = self._dense_matrix(columns, n)
        # A column feeding several features (alone and in crosses) is hashed once per batch.
        column_ids: dict[str, np.ndarray] = {}
        bags = [self._sparse_feature(columns, s, column_ids) for s in self.sparse]
        if bags and all(lengths is None for _, lengths in bags):
            # Every feature one-hot: feature f's bags start at f * n. Two NumPy calls instead
            # of two per feature: at B = 1 with 13 dense and 26 one-hot columns, prep took 138
            # instead of 205 us from NumPy columns, 451 instead of 494 us from Arrow (measured).
            values = np.concatenate([ids for ids, _ in bags])
            return PreparedBatch(n, dense, values, self._one_hot_offsets(n))
        steps = np.arange(n + 1, dtype=np.int64)
        total = sum(len(v) for v, _ in bags)
        values = np.empty(total, dtype=np.int64)
        offsets = np.empty((len(self.sparse), n + 1), dtype=np.int64)
        base = 0
        for f, (ids, lengths) in enumerate(bags):
            values[base : base + len(ids)] = ids
            offsets[f, 0] = base
            if lengths is None:
                np.add(steps, base, out=offsets[f])
            else:
                np.cumsum(lengths, out=offsets[f, 1:])
                offsets[f, 1:] += base
            base += len(ids)
        return PreparedBatch(num_rows=n, dense=dense, values=values, offsets=offsets)

    def _prepare_fused(
        self, fused: FusedPrep, batch: pa.Table | pa.RecordBatch, n: int
    ) -> PreparedBatch | None:
        # The whole batch in one kernel call (``fused_prep``); None sends it down the
        # per-column path: a table of several chunks, an unexpected layout, or a value that
        # is not finite (which that path names).
        if isinstance(batch, pa.Table):
            parts = batch.to_batches()
            if len(parts) != 1:
                return None
            batch = parts[0]
        return self._finish_fused(fused(batch), n)

    def _prepare_numpy(self, batch: Any) -> PreparedBatch | None:
        # A dict whose every column the model reads is a 1-D C-contiguous NumPy array of a type
        # the kernel reads, of fewer than MAX_ROWS rows: the whole batch in one kernel call as
        # well (``bench/prep_paths.py``). None: column by column.
        if not isinstance(batch, Mapping):
            return None
        arrays = []
        for c in self._columns:
            a = batch.get(c)
            if type(a) is not np.ndarray or a.ndim != 1 or not a.flags.c_contiguous:
                return None
            arrays.append(a)
        lengths = set(map(len, arrays))
        n = lengths.pop() if len(lengths) == 1 else 0
        if not 0 < n < _FUSED_MAX_ROWS:
            return None
        dtypes = tuple(map(_DTYPE, arrays))
        checked = self._checked_numpy
        if checked is None or checked[0] != dtypes:
            if not all(t in NUMPY_CODES for t in dtypes):
                return None
            schema = pa.schema(
                [(c, pa.from_numpy_dtype(t)) for c, t in zip(self._columns, dtypes, strict=True)]
            )
            self.check_schema(schema)
            positions = list(range(len(arrays)))
            fused = FusedPrep.for_schema(self.dense, self.sparse, schema, self._columns, positions)
            checked = self._checked_numpy = (dtypes, fused)
        if checked[1] is None:
            return None
        return self._finish_fused(checked[1].numpy_columns(arrays, n), n)

    def _finish_fused(
        self, got: tuple[np.ndarray, np.ndarray] | None, n: int
    ) -> PreparedBatch | None:
        # The one-call path's raw dense matrix and ids, transformed and laid out; None (go
        # column by column) if the kernel refused the layout or a value is not finite.
        if got is None:
            return None
        dense, values = got
        self._transform(dense)
        if not np.isfinite(dense).all():
            return None
        return PreparedBatch(n, dense, values, self._one_hot_offsets(n))

    def _one_hot_offsets(self, n: int) -> np.ndarray:
        # Offsets of a batch of n rows whose every bag holds one id: feature f's start at f * n.
        return np.add.outer(self._feature_starts * n, np.arange(n + 1, dtype=np.int64))

    def _transform(self, dense: np.ndarray) -> None:
        """The dense transforms, in place, on columns already float32 with nulls filled."""
        with np.errstate(over="ignore"):
            if self._log1p.size:
                dense[:, self._log1p] = np.log1p(np.maximum(dense[:, self._log1p], np.float32(0)))
            if self._standard.size:
                np.subtract(dense, self._shift, out=dense)
                np.divide(dense, self._scale, out=dense)

    def _dense_matrix(self, columns: _Columns, n: int) -> np.ndarray:
        """float32 [B, n_dense]: columns as float32, nulls/NaN -> fill, then the transforms."""
        dense = np.empty((n, len(self.dense)), dtype=np.float32)
        # A float64 beyond float32's range becomes inf here, and is reported below.
        with np.errstate(over="ignore"):
            for j, d in enumerate(self.dense):
                arr = columns[d["name"]]
                if isinstance(arr, np.ndarray):
                    dense[:, j] = arr  # numbers or bools; NaN is null
                    continue
                t = arr.type
                if pa.types.is_floating(t) or (arr.null_count == 0 and pa.types.is_integer(t)):
                    # A view (nulls of a float column come back as NaN); the assignment converts
                    # to float32 as a C cast would.
                    dense[:, j] = arr.to_numpy(zero_copy_only=False)
                else:
                    if pa.types.is_dictionary(t):
                        arr = arr.dictionary_decode()
                    # safe=False: int64 beyond 2**24 rounds to the nearest float32, as torch
                    # would.
                    x = pc.cast(arr, pa.float32(), safe=False)
                    dense[:, j] = x.to_numpy(zero_copy_only=False)
            nan = np.isnan(dense)
            if nan.any():
                np.copyto(dense, np.broadcast_to(self._fill, dense.shape), where=nan)
        self._transform(dense)
        if not np.isfinite(dense).all():
            self._raise_not_finite(dense, columns)
        return dense

    def _raise_not_finite(self, dense: np.ndarray, columns: _Columns) -> None:
        # An infinite input (or one beyond float32's range) would make the row's score NaN.
        row, j = (int(i) for i in np.argwhere(~np.isfinite(dense))[0])
        d = self.dense[j]
        raw = columns[d["name"]][row]
        raw = raw.as_py() if isinstance(raw, pa.Scalar) else raw
        if raw is None or math.isnan(float(raw)):
            # The fill the model gives a null (or NaN), which its transform makes infinite.
            raise BadValueError(
                row,
                f"column {d['name']!r} (dense) is {'null' if raw is None else 'NaN'}, and the "
                "model's fill for it, "
                f"{d.get('fill', 0.0):g}, its {d['transform']} transform makes {dense[row, j]}; "
                "expected a number here (or a model whose fill is finite after its transform)",
            )
        value = float(raw)
        if not math.isfinite(value):
            what = f"{value}"
        elif not float32_finite(value):
            what = f"{value:g}, beyond float32's range"
        else:
            what = f"{value:g}, which its {d['transform']} transform makes {dense[row, j]}"
        raise BadValueError(
            row,
            f"column {d['name']!r} (dense) holds {what}; expected a finite number within "
            "float32's range (about +-3.4e38), or null",
        )

    def _sparse_feature(
        self,
        columns: _Columns,
        s: Mapping[str, Any],
        column_ids: dict[str, np.ndarray],
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Ids of one feature and its bag lengths (None for one-hot)."""
        if not s["multi_hot"]:
            ids = []
            for c in s["columns"]:
                if c not in column_ids:
                    column_ids[c] = _plain_ids(columns[c])
                ids.append(column_ids[c])
            if s["dtype"] != "cross":
                return ids[0], None
            # [c, B] by one concatenation: np.stack took 8.6 us for two columns of one row.
            return cross_ids(np.concatenate(ids).reshape(len(ids), -1)), None
        arr = columns[s["columns"][0]]
        if pa.types.is_list_view(arr.type):
            arr = pc.cast(arr, pa.large_list(arr.type.value_type))
        lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False)
        return _plain_ids(arr.flatten()), lengths.astype(np.int64, copy=False)


class _DictColumns:
    """A dict batch: NumPy arrays of numbers stay NumPy (no Arrow round trip per column), every
    other column (strings, lists, Python lists, Arrow arrays) becomes an Arrow array."""

    def __init__(self, batch: Mapping[str, Any], columns: list[str]) -> None:
        if not isinstance(batch, Mapping):
            raise TypeError(
                "expected a pyarrow Table, RecordBatch or a dict of arrays, "
                f"got {type(batch).__name__}"
            )
        missing = [c for c in columns if c not in batch]
        if missing:
            raise SchemaMismatchError(f"input: missing column(s): {', '.join(map(repr, missing))}")
        self.columns: dict[str, pa.Array | np.ndarray] = {
            c: _dict_column(c, batch[c]) for c in columns
        }
        lengths = {len(a) for a in self.columns.values()}
        if len(lengths) > 1:
            sizes = ", ".join(f"{c}={len(a)}" for c, a in self.columns.items())
            raise SchemaMismatchError(f"input: columns have different lengths ({sizes})")
        self.num_rows = lengths.pop() if lengths else 0
        self.signature = tuple(
            a.dtype if isinstance(a, np.ndarray) else a.type for a in self.columns.values()
        )

    def schema(self) -> pa.Schema:
        """The Arrow schema these columns would have."""
        return pa.schema(
            [
                (c, pa.from_numpy_dtype(a.dtype) if isinstance(a, np.ndarray) else a.type)
                for c, a in self.columns.items()
            ]
        )


def _dict_column(name: str, v: Any) -> pa.Array | np.ndarray:
    if isinstance(v, pa.ChunkedArray | pa.Array):
        return _combine(v)
    if isinstance(v, np.ndarray):
        if v.ndim != 1:
            raise SchemaMismatchError(
                f"input: column {name!r} has shape {v.shape}; expected a 1-D array"
            )
        if v.dtype.kind in "iufb":
            return v
    return pa.array(v)


_DTYPE = operator.attrgetter("dtype")

# A batch's columns by name: Arrow arrays, or NumPy arrays of numbers from a dict batch.
_Columns = dict[str, pa.Array | np.ndarray]


def _arrow_columns(
    batch: pa.Table | pa.RecordBatch, names: list[str], index: list[int]
) -> _Columns:
    """The model's columns of an Arrow batch, each one contiguous array, fetched by position."""
    if isinstance(batch, pa.RecordBatch):
        return {c: batch.column(i) for c, i in zip(names, index, strict=True)}
    return {c: _combine(batch.column(i)) for c, i in zip(names, index, strict=True)}
