"""Feature prep of an Arrow batch in one kernel call (``kernels.arrow_columns``).

For batches of fewer than ``MAX_ROWS`` rows whose columns all have a type the kernel reads and
whose sparse features are all one-hot, :class:`FeaturePrep` hands the whole batch to the kernel
through the Arrow C data interface instead of converting it column by column: at batch 1 that
is one export (~6 us for 16 columns) instead of ~10 us of Arrow and NumPy calls per column
(flights, batch 1: 198 -> 31 us a batch). A dict of NumPy columns takes the same kernel
(``numpy_columns``). The result is the same, bit for bit
(``tests/test_prep.py`` compares the two paths on every type, with nulls, slices, Parquet and
IPC batches); anything else takes the per-column path.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numba
import numpy as np
import pyarrow as pa

from .kernels import arrow_columns as k
from .kernels.ids import PARALLEL_MIN

# Batches of this many rows or more take the per-column path, whose hashing runs on every
# thread from here on. Serial, this kernel took as long as that path at 16384 and 262144 rows
# (flights, 2 threads; 2.2x faster at 1024 rows).
MAX_ROWS = PARALLEL_MIN

# The number types the kernel reads, with their type codes; as Arrow types and as NumPy dtypes.
_NUMBERS = {
    pa.int8(): k.I8,
    pa.int16(): k.I16,
    pa.int32(): k.I32,
    pa.int64(): k.I64,
    pa.uint8(): k.U8,
    pa.uint16(): k.U16,
    pa.uint32(): k.U32,
    pa.uint64(): k.U64,
    pa.float32(): k.F32,
    pa.float64(): k.F64,
}
_STRINGS = {pa.string(): k.STR32, pa.binary(): k.STR32, pa.large_string(): k.STR64,
            pa.large_binary(): k.STR64}  # fmt: skip
_CODES = {t.id: code for t, code in (_NUMBERS | _STRINGS).items()}
# For a dict of NumPy columns (native byte order only: ``>f8`` is another dtype).
NUMPY_CODES = {np.dtype(t.to_pandas_dtype()): code for t, code in _NUMBERS.items()}


class _ArrowArray(ctypes.Structure):
    # ``struct ArrowArray`` of the Arrow C data interface (``arrow_columns`` reads its words).
    _fields_ = [
        ("length", ctypes.c_int64),
        ("null_count", ctypes.c_int64),
        ("offset", ctypes.c_int64),
        ("n_buffers", ctypes.c_int64),
        ("n_children", ctypes.c_int64),
        ("buffers", ctypes.c_void_p),
        ("children", ctypes.c_void_p),
        ("dictionary", ctypes.c_void_p),
        ("release", ctypes.c_void_p),
        ("private_data", ctypes.c_void_p),
    ]


assert ctypes.sizeof(_ArrowArray) == 8 * k.ARRAY_WORDS

_RELEASE = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_release_fns: dict[int, Any] = {}  # the producer's release callback, by address


def _release(arr: _ArrowArray) -> None:
    # The export's own callback frees what it holds (it is one function for every export).
    if arr.release:
        fn = _release_fns.get(arr.release)
        if fn is None:
            fn = _release_fns.setdefault(arr.release, _RELEASE(arr.release))
        fn(ctypes.addressof(arr))


# The one signature ``arrow_columns.prep_one_hot`` is called with (see ``FusedPrep.__call__``).
_SIGNATURE = (
    numba.int64,
    numba.types.Array(numba.int64, 2, "C"),
    numba.types.Array(numba.float32, 1, "C"),
    numba.types.Array(numba.int64, 2, "C"),
    numba.types.Array(numba.int64, 1, "C"),
    numba.types.Array(numba.float32, 2, "C"),
    numba.types.Array(numba.int64, 1, "C"),
)


def load_kernel() -> None:
    """Load the kernel now (else the first small batch does): the first time on a machine
    this compiles it, ~15 s; later processes load it from Numba's cache in ~0.1 s."""
    k.prep_one_hot.compile(_SIGNATURE)


class FusedPrep:
    """The kernel's program for one schema: which child is which column, how each is read."""

    def __init__(
        self,
        cols: np.ndarray,
        fill: np.ndarray,
        features: np.ndarray,
        feature_cols: np.ndarray,
    ) -> None:
        self._cols = cols
        self._fill = fill
        self._features = features
        self._feature_cols = feature_cols

    @classmethod
    def for_schema(
        cls,
        dense: Sequence[Mapping[str, Any]],
        sparse: Sequence[Mapping[str, Any]],
        schema: pa.Schema,
        columns: Sequence[str],
        positions: Sequence[int],
    ) -> FusedPrep | None:
        """The program for batches of ``schema`` (already checked against the model), or None
        if some column's type or some feature is one the kernel does not read.

        ``columns`` are the model's columns, at ``positions`` in the schema.
        """
        # Exporting the array alone: the public ``__arrow_c_array__`` exports the schema with
        # it on every call, twice the cost at batch 1 (13 against 6 us for 16 columns).
        if not hasattr(pa.RecordBatch, "_export_to_c"):
            return None
        if any(s["multi_hot"] for s in sparse):
            return None
        dense_of = {d["name"]: j for j, d in enumerate(dense)}
        if len(dense_of) < len(dense):  # a column read as two dense features
            return None
        index = {c: i for i, c in enumerate(columns)}
        needs_ids = set()
        features, feature_cols = [], []
        for s in sparse:
            used = list(s["columns"]) if s["dtype"] == "cross" else list(s["columns"][:1])
            if s["dtype"] == "cross" and len(used) < 2:
                return None
            features.append((len(feature_cols), len(used)))
            feature_cols += [index[c] for c in used]
            needs_ids.update(used)
        cols = []
        for c, pos in zip(columns, positions, strict=True):
            code = _CODES.get(schema.field(pos).type.id)
            if code is None:
                return None
            cols.append((pos, code, c in needs_ids, dense_of.get(c, -1)))
        return cls(
            np.array(cols, np.int64).reshape(-1, 4),
            np.array([d.get("fill", 0.0) for d in dense], np.float32),
            np.array(features, np.int64).reshape(-1, 2),
            np.array(feature_cols, np.int64),
        )

    def numpy_columns(self, arrays: Sequence[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`__call__`, for NumPy columns: ``arrays`` are the model's columns in order
        (the program built with positions ``0..C-1``), each 1-D, C-contiguous, of a dtype in
        ``NUMPY_CODES``, ``n`` rows long; they have no nulls (a float NaN is one).

        The arrays are described to the kernel as the children of a ``struct ArrowArray`` laid
        out here, in one int64 array: one kernel for both kinds of batch.
        """
        layout = self._numpy_layout(len(arrays))
        words = layout.words.copy()
        base = k.address(words)
        words[layout.pointers] += base
        words[layout.lengths] = n
        words[layout.data] = [k.address(a) for a in arrays]
        return self._run(base, n)

    def __call__(self, batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray] | None:
        """The raw dense matrix (nulls and NaN filled, not yet transformed) and the one-hot
        ids ``[F * B]`` of ``batch``; None if its layout is not the expected one."""
        arr = _ArrowArray()
        batch._export_to_c(ctypes.addressof(arr))
        try:
            got = self._run(ctypes.addressof(arr), batch.num_rows)
        finally:
            _release(arr)
        return got

    def _run(self, address: int, n: int) -> tuple[np.ndarray, np.ndarray] | None:
        # The kernel on the struct ArrowArray at ``address``, a batch of ``n`` rows.
        dense = np.empty((n, self._fill.shape[0]), np.float32)
        values = np.empty(self._features.shape[0] * n, np.int64)
        status = k.prep_one_hot(
            address, self._cols, self._fill, self._features, self._feature_cols, dense, values
        )
        return (dense, values) if status == k.OK else None

    @staticmethod
    @functools.cache
    def _numpy_layout(columns: int) -> _Layout:
        # ``struct ArrowArray`` words for a batch of ``columns`` NumPy columns, addresses
        # relative to the first word: the batch (10 words), each column (10), each column's two
        # buffer pointers (no validity bitmap, its data), the pointers to the columns.
        kids, bufs, ptrs = 10, 10 + 10 * columns, 10 + 12 * columns
        words = np.zeros(10 + 13 * columns, np.int64)
        words[[4, 6]] = columns, 8 * ptrs  # n_children, children
        pointers, lengths, data = [6], [0], []
        for c in range(columns):
            child = kids + 10 * c
            words[[child + 3, child + 5]] = 2, 8 * (bufs + 2 * c)  # n_buffers, buffers
            words[ptrs + c] = 8 * child
            pointers += [child + 5, ptrs + c]
            lengths.append(child)
            data.append(bufs + 2 * c + 1)
        words.flags.writeable = False
        return _Layout(words, np.array(pointers), np.array(lengths), np.array(data))


@dataclasses.dataclass(frozen=True)
class _Layout:
    words: np.ndarray  # the template; pointers relative to its first word
    pointers: np.ndarray  # words holding a pointer
    lengths: np.ndarray  # words holding the batch's row count
    data: np.ndarray  # words holding a column's data address
