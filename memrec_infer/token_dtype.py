"""How ``tokens.npy`` stores the token rows: float32 (the default) or float16 (opt-in).

The choice covers every table's rows in ``tokens.npy`` (MEM-REC token rows and full-table
rows); ``weights.npy`` stays float32 and ``vocab.npy`` int64. float16 halves the token bytes.
Conversion rounds each float32 value with NumPy's round-to-nearest-even cast
(``astype(np.float16)``: 11 significant bits); the lookup kernels widen each float16 row back
to float32 before weighting it, so a lookup computes exactly ``alpha * float32(float16(M))``.
A value beyond float16's range is refused, never clamped to it or stored as infinity.

The manifest records the choice as ``token_dtype``; a manifest without it (written before the
key existed) means float32.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import CheckpointError
from .spec import ModelSpec, table_rows

__all__ = [
    "DEFAULT_TOKEN_DTYPE",
    "FLOAT16_MAX",
    "TOKEN_DTYPES",
    "check_token_dtype",
    "check_token_range",
    "is_token_dtype",
    "manifest_token_dtype",
]

# token_dtype name -> the .npy descr of tokens.npy.
TOKEN_DTYPES = {"float32": "<f4", "float16": "<f2"}
DEFAULT_TOKEN_DTYPE = "float32"
FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65504.0
_CHUNK = 1 << 24


def is_token_dtype(name: Any) -> bool:
    """Whether ``name`` is a supported token dtype (a string key of :data:`TOKEN_DTYPES`)."""
    return isinstance(name, str) and name in TOKEN_DTYPES


def check_token_dtype(name: Any) -> str:
    """``name`` if it is a supported token dtype, else ValueError listing the supported ones."""
    if not is_token_dtype(name):
        raise ValueError(
            f"token_dtype must be one of {', '.join(map(repr, TOKEN_DTYPES))}, found {name!r}"
        )
    return name


def manifest_token_dtype(manifest: dict[str, Any]) -> str:
    """The manifest's ``token_dtype``, float32 when absent (not checked: the reader does that)."""
    return manifest.get("token_dtype", DEFAULT_TOKEN_DTYPE)


def check_token_range(spec: ModelSpec, token_dtype: str, source: str) -> None:
    """Refuse a spec whose table rows do not fit ``token_dtype``; changes nothing.

    For float16, every value must satisfy ``|x| <= 65504`` (float16's largest finite value;
    NaN fails too). Each table is scanned in chunks, so the check needs little memory.

    Parameters
    ----------
    spec : ModelSpec
        A validated spec; its table rows are float32 [rows, D].
    token_dtype : str
        One of :data:`TOKEN_DTYPES`; float32 holds every float32 value, so it always passes.
    source : str
        What the spec came from (the checkpoint), named first in the message.

    Raises
    ------
    CheckpointError
        A value overflows float16: for every such table, the count and the first one's row,
        column and value; the message says to convert with float32.
    """
    if token_dtype != "float16":
        return
    problems = []
    for t in spec.tables:
        rows = np.asarray(spec.tensors[table_rows(t.name)])
        flat = rows.reshape(-1)
        first, count = -1, 0
        for start in range(0, flat.size, _CHUNK):
            bad = ~(np.abs(flat[start : start + _CHUNK]) <= FLOAT16_MAX)
            n = int(np.count_nonzero(bad))
            if n and first < 0:
                first = start + int(np.argmax(bad))
            count += n
        if count:
            row, col = divmod(first, spec.embedding_dim)
            problems.append(
                f"table {t.name!r} row {row} column {col} holds {float(flat[first])!r}"
                + (f" ({count} values of this table are out of range)" if count > 1 else "")
            )
    if problems:
        raise CheckpointError(
            f"{source}: cannot store the token tables as float16, whose largest value is "
            f"{FLOAT16_MAX:g}: {'; '.join(problems)}; convert with --token-dtype float32 "
            "(token_dtype='float32')"
        )
