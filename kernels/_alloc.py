"""Output buffers the kernels can write with streaming stores: 64-byte (cache-line) aligned.

NumPy aligns data only to 16 bytes, and a streaming (non-temporal) store of a 64-byte vector to
an address that is not a multiple of 64 faults, so the kernels stream only into buffers for
which :func:`line_aligned` holds; :func:`empty_aligned` makes such buffers.
"""

from __future__ import annotations

import numpy as np

LINE_BYTES = 64
# Outputs at least this large are written with streaming stores: a larger output no longer stays
# in the 32 MiB L3 next to the tables, and its stores would evict the token rows being gathered.
# Measured on Zen 4, 2 threads, side by side: streaming took 0.68x the time at D=16 B=16384
# (27 MB) and 0.73x at D=128 B=4096 (54 MB), but 1.3x at D=16 B=4096 (7 MB) and 1.4x at D=128
# B=1024 (14 MB), where the output still fits; between 8 and 16 MB it went either way.
STREAM_MIN_BYTES = 16 << 20


def empty_aligned(shape: tuple[int, ...], dtype: np.dtype | type = np.float32) -> np.ndarray:
    """An uninitialised C-contiguous array whose data (if any) starts on a 64-byte boundary."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + LINE_BYTES, dtype=np.uint8)
    start = -raw.ctypes.data % LINE_BYTES
    return raw[start : start + nbytes].view(dtype).reshape(shape)


def line_aligned(arr: np.ndarray) -> bool:
    """True if ``arr``'s data starts on a 64-byte boundary."""
    return arr.__array_interface__["data"][0] % LINE_BYTES == 0


def streams(out: np.ndarray, row_bytes: int) -> bool:
    """Whether a kernel writing rows of ``row_bytes`` into ``out`` should stream its stores.

    Only for outputs of at least :data:`STREAM_MIN_BYTES` whose rows all start on a cache line
    (``out`` aligned, rows a whole number of lines).
    """
    return out.nbytes >= STREAM_MIN_BYTES and row_bytes % LINE_BYTES == 0 and line_aligned(out)
