"""Compiled kernels come from Numba's on-disk cache in a new process, not a fresh compile.

A kernel whose cache key changes per process (e.g. a closure capturing a dispatcher) compiles
again in every process: seconds to tens of seconds before the first batch is scored.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np

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
