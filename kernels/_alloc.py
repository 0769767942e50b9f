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

import numba
import numpy as np

from ._config import JIT

LINE_BYTES = 64

# An output this large is streamed (written with non-temporal stores, which bypass the caches);
# smaller outputs are written through the cache, where they stay for the next call and the dense
# part that reads them. By the output's size, whatever the threads: a cached output pushes the
# token tables (8 MiB of the shared 32 MiB L3) out of the cache, and with new ids on every call
# the next lookup pays for it. Side by side, one-hot MEM-REC lookups of the Criteo tables in
# 8 MiB, fresh batches on every call, Zen 4 VM (L2 1 MiB a core), 2 threads: D=16 6.5 MiB
# outputs 1.6-1.75x as fast streamed (1.6 MiB: the same either way), D=128 13 MiB 1.75-1.9x
# (3.2 MiB: 1.5x as fast cached), 26 and 52 MiB 1.8-2.0x. (On 1 thread nothing changed.)
# Earlier, timing one batch over and over (its token rows stayed in cache), a Zen 5 VM had
# streamed best by the output's share per thread (6.5 MiB outputs on 2 threads 1.1-1.5x as fast
# cached at D=16, 13 MiB at D=128 1.35-2.3x), and a Zen 3 VM by size, as here.
# Every bag is streamed, summed ones too (their rows are added in registers, then stored once),
# but for mean bags of several ids (divided in place). Multi-hot (1..10 ids), side by side with
# summed bags written through the cache, Zen 4 VM: MEM-REC k = 2 D=16 1.07-1.27x as fast
# (B = 4096, 16384; 1 and 2 threads), D=128 1.27-1.5x (B = 1024, 4096); k = 3 D=16 0.96-1.04x,
# D=128 1.29x; the full-table kernel D=128 1.08-1.15x, D=16 0.96-1.04x (its DRAM reads dominate).
STREAM_MIN_BYTES = 6 << 20  # rows of one cache line (the smallest threshold)
STREAM_MIN_BYTES_LONG_ROWS = 8 << 20  # rows of several lines


def stream_min_bytes(row_bytes: int) -> int:
    """Bytes of output from which rows of ``row_bytes`` are streamed."""
    return STREAM_MIN_BYTES if row_bytes <= LINE_BYTES else STREAM_MIN_BYTES_LONG_ROWS


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


@numba.njit(inline="always", **JIT)
def stream_rule(nbytes, row_bytes, address, min_bytes):
    """Whether ``nbytes`` of output rows of ``row_bytes``, starting at ``address``, are streamed:
    at least ``min_bytes`` (``stream_min_bytes``) of rows that all start on a cache line.

    The one statement of the rule: the lookup kernels call it compiled, :func:`streams` in
    Python (``py_func``).
    """
    return nbytes >= min_bytes and row_bytes % LINE_BYTES == 0 and address % LINE_BYTES == 0


def streams(out: np.ndarray, row_bytes: int) -> bool:
    """Whether a kernel writing rows of ``row_bytes`` into ``out`` should stream its stores
    (:func:`stream_rule`)."""
    address = out.__array_interface__["data"][0]
    return stream_rule.py_func(out.nbytes, row_bytes, address, stream_min_bytes(row_bytes))


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
