"""Argument checks shared by the kernels' public wrappers (cheap, O(1) per array)."""

from __future__ import annotations

import numpy as np


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
