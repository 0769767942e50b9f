"""Compile the suite's lookup kernels into Numba's on-disk cache, on every core, before the tests.

On a fresh machine most of the suite's time is Numba compiling one kernel pair per embedding
width and token type (~1-2 min each, single-threaded). ``conftest.py`` runs :func:`warm` first,
which compiles them in parallel processes, one pair per process at a time; the tests then load
them from the cache. With a warm cache every job only loads, in a second or two.

Numba's cache is not safe for concurrent writers: the widths of one kernel share an index file,
and two processes that both add an entry can each pick the same data file for different
kernels, so one would later load the other's code (numba/numba#4807, #10128). The workers here
therefore hold an exclusive file lock around every cache save (``_locked_saves``), and the
tests start only once they are done. Without the hook this relies on, or on one core, the
kernels compile one after another in this process.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

# The embedding widths the suite runs lookups at (test_kernels, the model fixtures, the trained
# models), and those it also runs with float16 token rows. Each is a kernel pair to compile, so
# the suite keeps to these; any other width compiles inside its test, which is slower but fine.
WIDTHS = (3, 16, 20, 128)
HALF_WIDTHS = (16,)

_LOCK = os.path.join(tempfile.gettempdir(), "memrec-infer-numba-cache.lock")


def _locked_saves() -> None:
    # Every save to Numba's cache from this process under one exclusive lock (see the module
    # docstring). Run once per worker process, as its initializer: wrapping twice would make
    # a save wait for its own lock.
    from numba.core import caching

    save = caching.IndexDataCacheFile.save

    def locked_save(self, key, data):
        with open(_LOCK, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file is closed
            return save(self, key, data)

    caching.IndexDataCacheFile.save = locked_save


def _can_lock() -> bool:
    # The hook ``_locked_saves`` wraps is Numba's, not public API: check that it is there.
    from numba.core import caching

    return callable(getattr(getattr(caching, "IndexDataCacheFile", None), "save", None))


def _compile(job: tuple[int, bool]) -> None:
    # One width's serial and parallel lookup kernels (they share their tile functions).
    from memrec_infer.kernels._bag_kernels import compiled_lookup_kernel

    dim, half = job
    for parallel in (False, True):
        compiled_lookup_kernel(dim, parallel, half)


def warm(workers: int | None = None) -> str:
    """Compile (or load) every kernel pair of :data:`WIDTHS` and :data:`HALF_WIDTHS`.

    ``workers``: processes to use, default one per core. Returns a one-line summary.
    """
    # Longest first (wider rows unroll into more code), so the last job to start is short.
    jobs = [(d, False) for d in sorted(WIDTHS, reverse=True)] + [(d, True) for d in HALF_WIDTHS]
    workers = min(len(jobs), workers or os.cpu_count() or 1)
    t0 = time.perf_counter()
    if workers < 2 or not _can_lock():
        for job in jobs:
            _compile(job)
        how = "in this process"
    else:
        # Fresh interpreters (spawn): this process may already hold Numba's state and threads.
        ctx = get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_locked_saves) as pool:
            list(pool.map(_compile, jobs))
        how = f"in {workers} processes"
    return (
        f"lookup kernels for D={', '.join(map(str, WIDTHS))} (float16 rows: "
        f"{', '.join(map(str, HALF_WIDTHS))}) ready in {time.perf_counter() - t0:.1f} s, {how}"
    )
