"""Numba flags shared by every kernel: one place, so variants compile alike.

``fastmath`` is set without ``nnan``/``ninf`` so NaN/inf propagate as in NumPy; ``cache=True``
keeps the compiled code on disk so only the first run on a machine pays the compile time, and
processes write that cache one at a time (``_cache_lock``).
"""

from __future__ import annotations

import numba

from . import _cache_lock

_cache_lock.install()

# SLP vectorisation is off by default in Numba; it vectorises the D-wide row updates.
numba.config.SLP_VECTORIZE = 1  # type: ignore[attr-defined]

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
JIT = {"nogil": True, "cache": True, "fastmath": FASTMATH, "error_model": "numpy"}
