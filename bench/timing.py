"""Interleaved timing of several contenders, so their ratios share the machine's noise.

Each contender runs in blocks of calls; blocks of all contenders alternate over several rounds
(the order rotates every round), and every call is timed on its own. A load spike from another
process then hits all contenders alike instead of one of them.

A contender may be a :class:`Rotation`: before each of its calls, untimed, it is fed that call's
input (the next batch of a rotation, written into fresh arrays as a serving engine's feature
prep writes them), so that no call finds the previous call's table rows in cache while its own
input is as warm as it would be in serving.

A contender may have a ``before`` hook, run (untimed) before each of its blocks: e.g. setting the
thread count that it, and not the others, runs on, so one rotation can hold the same library on
1 and on 2 threads.

Between blocks the caller sleeps for ``settle`` seconds: OpenMP thread pools (torch's, and
Numba's own) spin for a few milliseconds after a parallel call before they sleep, and on a
2-core machine those spinning threads would take the cores from the first calls of the next
contender's block.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

# A block never exceeds this many calls, so even a sub-microsecond call leaves rounds to rotate.
_MAX_BLOCK = 20_000
# Long enough for GNU OpenMP's default spin-wait (GOMP_SPINCOUNT) to end and its threads to sleep.
SETTLE_S = 0.02


@dataclass(frozen=True)
class Rotation:
    """A contender whose calls take turns over inputs: ``feeds[i]()``, run untimed, prepares
    the i-th input and returns the call to time on it; the turns carry on from block to block.
    """

    feeds: Sequence[Callable[[], Callable[[], object]]]

    def __post_init__(self) -> None:
        if not self.feeds:
            raise ValueError("a Rotation needs at least one feed")


def measure(
    contenders: dict[str, Callable[[], object] | Rotation],
    seconds: float,
    rounds: int = 5,
    warmup: int = 2,
    settle: float = SETTLE_S,
    before: dict[str, Callable[[], object]] | None = None,
) -> dict[str, np.ndarray]:
    """Seconds per call of every contender, interleaved.

    Parameters
    ----------
    contenders : name -> a callable doing one complete call (e.g. one batch lookup), or a
        :class:`Rotation` of them
    seconds : timing budget per contender (spread over ``rounds``); at least one call per
        round is always made
    rounds : number of rotations over the contenders
    warmup : untimed calls per contender before timing (first-touch of outputs, lazy init)
    settle : seconds slept before each block (see the module docstring)
    before : name -> a callable run before that contender's warm-up and each of its blocks,
        untimed, ahead of the settling sleep

    Returns
    -------
    dict name -> float64 array of per-call seconds
    """
    hooks = before or {}
    feeds = {
        n: list(c.feeds) if isinstance(c, Rotation) else [lambda c=c: c]
        for n, c in contenders.items()
    }
    position = dict.fromkeys(feeds, 0)
    est: dict[str, float] = {}
    for name, fs in feeds.items():
        if name in hooks:
            hooks[name]()
        for i in range(warmup):
            fs[i % len(fs)]()()
        fn = fs[warmup % len(fs)]()
        t0 = time.perf_counter_ns()
        fn()
        est[name] = max(time.perf_counter_ns() - t0, 1) / 1e9
        position[name] = (warmup + 1) % len(fs)
    names = list(feeds)
    times: dict[str, list[int]] = {n: [] for n in names}
    clock = time.perf_counter_ns
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            fs = feeds[name]
            count = len(fs)
            i = position[name]
            n = int(min(_MAX_BLOCK, max(1, seconds / rounds / est[name])))
            out = times[name]
            if name in hooks:
                hooks[name]()
            time.sleep(settle)
            for _ in range(n):
                fn = fs[i]()
                i = i + 1 if i + 1 < count else 0
                t0 = clock()
                fn()
                out.append(clock() - t0)
            position[name] = i
    return {n: np.asarray(v, dtype=np.float64) / 1e9 for n, v in times.items()}


def summary(seconds: np.ndarray, rows: int) -> dict[str, float]:
    """p50, p99 and mean latency in microseconds, and rows per second at the p50."""
    p50 = float(np.percentile(seconds, 50))
    return {
        "p50_us": p50 * 1e6,
        "p99_us": float(np.percentile(seconds, 99)) * 1e6,
        "mean_us": float(seconds.mean()) * 1e6,
        "calls": int(seconds.shape[0]),
        "rows_per_s": rows / p50 if p50 > 0 else float("inf"),
    }
