"""Argument checks shared by the kernels: their public wrappers' (cheap, O(1) per array) and the
scan of bag offsets that every tile of a lookup runs."""

from __future__ import annotations

import numba
import numpy as np

from ._config import JIT


@numba.njit(inline="always", **JIT)
def scan_offsets(row, n):
    """``(valid, one_hot)`` of one row of bag offsets, ``row[0..nb]`` (``nb`` bags).

    ``valid``: non-decreasing within ``[0, n]``; ``one_hot``: every bag holds exactly one id.
    Branch-free, so the loop vectorises; pass a slice (``offsets[f, b0 : b1 + 1]``), indexed
    from 0, or Numba's negative-index fix-ups turn its loads into gathers (~1 ns an id at D=16).
    """
    nb = row.shape[0] - 1
    bad = (row[0] < 0) | (row[nb] > n)
    many = 0
    for i in range(nb):
        step = row[i + 1] - row[i]
        bad |= step < 0
        many |= step - 1
    return not bad, many == 0


def require_array(arr: object, dtype: type, ndim: int, name: str) -> np.ndarray:
    """Return ``arr`` if it is a C-contiguous ``dtype`` array with ``ndim`` dimensions.

    Raises
    ------
    ValueError
        Naming what was expected, what was found and how to convert it.
    """
    # Fast path first: this runs on every lookup, and a batch of one takes ~1 us in all.
    if (
        isinstance(arr, np.ndarray)
        and arr.dtype == dtype
        and arr.ndim == ndim
        and arr.flags.c_contiguous
    ):
        return arr
    want = np.dtype(dtype)
    if not isinstance(arr, np.ndarray) or arr.dtype != want or arr.ndim != ndim:
        found = (
            f"a {arr.dtype} array of shape {arr.shape}"
            if isinstance(arr, np.ndarray)
            else f"a {type(arr).__name__}"
        )
        raise ValueError(
            f"{name} must be a {want} array with {ndim} dimension(s), found {found}; "
            f"convert with np.ascontiguousarray({name}, dtype=np.{want})"
        )
    if not arr.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous; pass np.ascontiguousarray({name})")
    return arr
