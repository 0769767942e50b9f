"""Compile the suite's lookup kernels into Numba's on-disk cache, on every core, before the tests.

On a fresh machine most of the suite's time is Numba compiling one kernel pair per embedding
width and token type (~1-2 min each, single-threaded). ``conftest.py`` runs :func:`warm` first,
which compiles them in parallel processes, one pair per process at a time; the tests then load
them from the cache. With a warm cache every job only loads, in a second or two.

Numba's cache is not safe for concurrent writers; the kernels' modules lock every save
(``memrec_infer.kernels._cache_lock``), which is what makes compiling them in parallel safe, and
the tests start only once every job is done. Where that lock cannot be installed, or on one
core, the kernels compile one after another in this process.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

from memrec_infer.kernels import _cache_lock

# The embedding widths the suite runs lookups at (test_kernels, the model fixtures, the trained
# models), and those it also runs with float16 token rows. Each is a kernel pair to compile, so
# the suite keeps to these; any other width compiles inside its test, which is slower but fine.
WIDTHS = (3, 16, 20, 128)
HALF_WIDTHS = (16,)


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
    if workers < 2 or not _cache_lock.install():
        for job in jobs:
            _compile(job)
        how = "in this process"
    else:
        # Fresh interpreters (spawn): this process may already hold Numba's state and threads.
        ctx = get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            list(pool.map(_compile, jobs))
        how = f"in {workers} processes"
    return (
        f"lookup kernels for D={', '.join(map(str, WIDTHS))} (float16 rows: "
        f"{', '.join(map(str, HALF_WIDTHS))}) ready in {time.perf_counter() - t0:.1f} s, {how}"
    )
