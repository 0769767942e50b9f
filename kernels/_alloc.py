"""Where the kernels' arrays live: line-aligned outputs, token tables in huge pages.

NumPy aligns data only to 16 bytes, and a streaming (non-temporal) store of a 64-byte vector to
an address that is not a multiple of 64 faults, so the kernels stream only into buffers for
which :func:`line_aligned` holds; :func:`empty_aligned` makes such buffers.

Random row gathers from a table of a few MB touch a different 4 KiB page almost every time, and
the first-level TLB holds well under a hundred pages; :func:`in_huge_pages` copies a small table
into 2 MiB pages, a handful of TLB entries in all.
"""

from __future__ import annotations

import mmap

import numpy as np

LINE_BYTES = 64
# Outputs at least this large are written with streaming stores: a larger output no longer stays
# in the 32 MiB L3 next to the tables, and its stores would evict the token rows being gathered.
# Measured side by side (same process, the threshold the only change). Zen 4 VM, 2 threads:
# streaming took 0.68x the time at D=16 B=16384 (27 MB) and 0.73x at D=128 B=4096 (54 MB), but
# 1.3x at D=16 B=4096 (7 MB) and 1.4x at D=128 B=1024 (14 MB); 8-16 MB went either way. Zen 3
# VM (L3 shared with other tenants), MEM-REC lookups: 13 MiB outputs (D=128 B=1024, D=16
# B=8192) 1.13-2.1x faster streamed on 1 and 2 threads, 6.5 MiB ones 0.56-1.67x; the full-table
# kernel at 13 MiB 1.19-1.62x, except D=128 on 2 threads (0.82x). Later, on the same Zen 3 VM
# (one-hot MEM-REC lookups, Criteo tables in 8 MiB, two runs each, side by side): 6.5 MiB
# outputs streamed were 2.06-2.11x as fast at D=16 B=4096 on 1 thread, 1.30-1.98x on 2, and
# 2.91-3.79x at D=128 B=512 on 1 thread, 0.78-1.04x on 2; 3.2 MiB ones went either way
# (1.11-1.17x on 1 thread, 0.92-0.94x on 2). The full-table kernel at 6.5 MiB: D=16 B=4096
# 1.00-1.14x, D=128 B=512 1.87-2.63x on 1 thread and 0.86-0.94x on 2. End to end (Kaggle DLRM,
# B=4096, 1 and 2 threads) the dense part dominates: within noise (0.97-1.01x). So 6 MiB, for
# the large 1-thread wins, at the cost of D=128 B~512 on 2 threads.
STREAM_MIN_BYTES = 6 << 20


def empty_aligned(shape: tuple[int, ...], dtype: np.dtype | type = np.float32) -> np.ndarray:
    """An uninitialised C-contiguous array whose data (if any) starts on a 64-byte boundary."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + LINE_BYTES, dtype=np.uint8)
    start = -raw.ctypes.data % LINE_BYTES
    return raw[start : start + nbytes].view(dtype).reshape(shape)


def empty_output(shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialised float32 output, line-aligned if it is large enough to be streamed into
    (aligning costs ~1 us, a large share of a small batch's lookup)."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * 4
    return empty_aligned(shape) if nbytes >= STREAM_MIN_BYTES else np.empty(shape, np.float32)


def line_aligned(arr: np.ndarray) -> bool:
    """True if ``arr``'s data starts on a 64-byte boundary."""
    return arr.__array_interface__["data"][0] % LINE_BYTES == 0


def streams(out: np.ndarray, row_bytes: int) -> bool:
    """Whether a kernel writing rows of ``row_bytes`` into ``out`` should stream its stores.

    Only for outputs of at least :data:`STREAM_MIN_BYTES` whose rows all start on a cache line
    (``out`` aligned, rows a whole number of lines).
    """
    return out.nbytes >= STREAM_MIN_BYTES and row_bytes % LINE_BYTES == 0 and line_aligned(out)


# Token tables up to this size are copied into huge pages by ``make_plan(huge_pages=True)``:
# MEM-REC tables are a few MB, and their random row gathers then rarely miss the TLB (side by
# side on Zen 4, 2 threads, 8 MiB of tables: D=16 lookups 13% faster, D=128 24-28%). Larger
# (full) tables stay memory-mapped: copying gigabytes at load costs more than it saves.
HUGE_COPY_MAX = 256 << 20
_HUGE_PAGE = 2 << 20
_THP_MODE = "/sys/kernel/mm/transparent_hugepage/enabled"


def huge_pages_available() -> bool:
    """True if this kernel hands out transparent huge pages on request (Linux, THP not 'never')."""
    if not hasattr(mmap, "MADV_HUGEPAGE"):
        return False
    try:
        with open(_THP_MODE) as fh:
            return "[never]" not in fh.read()
    except OSError:
        return False


def in_huge_pages(arr: np.ndarray) -> np.ndarray:
    """A read-only copy of ``arr`` in anonymous memory advised for transparent huge pages.

    The copy starts on a 2 MiB boundary so that its pages can be huge; the kernel may still
    fall back to small pages (the advice is a request). Returns ``arr`` itself when huge pages
    are not available or ``arr`` is empty.
    """
    if arr.nbytes == 0 or not huge_pages_available():
        return arr
    region = mmap.mmap(-1, arr.nbytes + _HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    region.madvise(mmap.MADV_HUGEPAGE)
    raw = np.frombuffer(region, dtype=np.uint8)  # keeps ``region`` alive as long as the copy
    start = -raw.ctypes.data % _HUGE_PAGE
    copy = raw[start : start + arr.nbytes].view(arr.dtype).reshape(arr.shape)
    copy[...] = arr
    copy.flags.writeable = False
    return copy
