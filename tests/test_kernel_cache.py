"""Compiled kernels come from Numba's on-disk cache in a new process, not a fresh compile.

A kernel whose cache key changes per process (e.g. a closure capturing a dispatcher) compiles
again in every process: seconds to tens of seconds before the first batch is scored.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from memrec_infer.kernels import _cache_lock
from memrec_infer.kernels.bags import FeatureTable, make_plan
from memrec_infer.kernels.hashing import draw_seeds

CHILD = """
import numpy as np
from memrec_infer.kernels import _bag_kernels as k
from memrec_infer.kernels.bags import FeatureTable, make_plan
from memrec_infer.kernels.hashing import draw_seeds
{build}
plan.lookup(values, offsets[:, :2].copy())       # batch of 1: serial kernel
plan.lookup(values, offsets)                     # large batch: parallel kernel
dispatchers = [*k.lookup_kernels(16), getattr(k, "tile_one_hot", k.lookup_kernels(16)[0])]
misses = {{d.py_func.__qualname__: sum(d.stats.cache_misses.values()) for d in dispatchers}}
hits = sum(sum(d.stats.cache_hits.values()) for d in dispatchers)
assert not any(misses.values()) and hits, (misses, hits)
"""

BUILD = """
rng = np.random.default_rng(0)
seeds = lambda: draw_seeds(rng, 2)
feats = [FeatureTable("memrec", 0, 32, token_seeds=seeds(), weight_rows=4, weight_cols=2,
                      weight_seeds=seeds())]
plan = make_plan(feats, rng.random((32, 16), dtype=np.float32), rng.random(8, dtype=np.float32),
                 np.zeros(0, np.int64))
values = rng.integers(0, 2**40, size=1000)
offsets = np.arange(1001, dtype=np.int64)[None, :]
"""


def test_a_new_process_loads_the_lookup_kernels_from_the_cache():
    # This process compiles (or loads) every kernel the child needs, filling the cache ...
    namespace = {"np": np, "FeatureTable": FeatureTable, "make_plan": make_plan,
                 "draw_seeds": draw_seeds}  # fmt: skip
    exec(BUILD, namespace)
    plan, values, offsets = namespace["plan"], namespace["values"], namespace["offsets"]
    plan.lookup(values, offsets[:, :2].copy())
    plan.lookup(values, offsets)
    # ... so a new process must find all of them there.
    subprocess.run([sys.executable, "-c", CHILD.format(build=BUILD)], check=True)


TINY = """
import numba

@numba.njit(cache=True)
def plus_one(x):
    return x + 1
"""

SAVER = """
import sys
sys.path.insert(0, sys.argv[1])
import memrec_infer.kernels._config  # installs the lock on cache saves
import tiny
assert tiny.plus_one(1) == 2
"""


def _waits_for_flock(pid: int) -> bool:
    # /proc/locks lists a process blocked on a lock as "N: -> FLOCK ... <pid> ...".
    with open("/proc/locks") as fh:
        return any("->" in line and f" {pid} " in line for line in fh)


@pytest.mark.skipif(not os.path.exists("/proc/locks"), reason="needs Linux's /proc/locks")
def test_a_cache_save_waits_while_another_process_holds_the_lock(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    # Two processes saving to Numba's cache at once can map one kernel's key to another's code;
    # with the lock installed, a save waits for whoever holds it, and then completes.
    (tmp_path / "tiny.py").write_text(TINY)
    fd = os.open(_cache_lock.LOCK_PATH, os.O_RDONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        child = subprocess.Popen([sys.executable, "-c", SAVER, str(tmp_path)])
        deadline = time.monotonic() + 120
        while not _waits_for_flock(child.pid):
            assert child.poll() is None, "the child finished its save without the lock"
            assert time.monotonic() < deadline, "the child never reached the lock"
            time.sleep(0.05)
        assert not list(tmp_path.glob("__pycache__/*.nbi"))  # nothing saved while it waits
    finally:
        os.close(fd)  # release
    assert child.wait(timeout=120) == 0
    assert list(tmp_path.glob("__pycache__/tiny.plus_one-*.nbi"))
