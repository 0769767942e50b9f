"""One process at a time writes to Numba's on-disk cache.

Numba's cache is not safe for concurrent writers (numba/numba#4807, #10128). The kernels of every
embedding width share one index file per function, and a save reads the index, picks the first
free data-file name, and writes both: two processes compiling different widths at the same moment
(say two ``memrec-infer score`` runs on a fresh machine, or the test suite's parallel warm-up) can
pick the same name for different kernels, and a later process then loads one width's machine code
for the other, silently wrong. :func:`install` wraps that save in an exclusive lock on one file
per machine and user, so saves happen one after another; loading and compiling are untouched.

The wrapped method is Numba's own (``numba.core.caching.IndexDataCacheFile.save``), not public
API: without it, or without ``fcntl`` (not POSIX), nothing is installed and Numba behaves as it
always has. If the lock file cannot be opened, the save goes ahead unlocked rather than fail the
compile.
"""

from __future__ import annotations

import os
import tempfile

from numba.core import caching

try:
    import fcntl
except ImportError:  # not POSIX: no lock, Numba's own behaviour
    fcntl = None

_USER = os.getuid() if hasattr(os, "getuid") else "user"
LOCK_PATH = os.path.join(tempfile.gettempdir(), f"memrec-infer-numba-cache-{_USER}.lock")


def install() -> bool:
    """Serialise this process's saves to Numba's cache with every other process's (idempotent).

    Returns True if saves are (now) locked, False if this Numba lacks the method it wraps or
    this system lacks ``fcntl``.
    """
    cls = getattr(caching, "IndexDataCacheFile", None)
    save = getattr(cls, "save", None)
    if fcntl is None or not callable(save):
        return False
    if getattr(save, "_memrec_locked", False):
        return True

    def locked_save(self, key, data):
        try:
            fd = os.open(LOCK_PATH, os.O_RDONLY | os.O_CREAT, 0o600)
        except OSError:
            return save(self, key, data)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return save(self, key, data)
        finally:
            os.close(fd)  # releases the lock

    locked_save._memrec_locked = True  # type: ignore[attr-defined]
    cls.save = locked_save
    return True
