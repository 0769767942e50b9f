"""Torch and Numba bucket hashing agree bit for bit (docs/hashing.md, section 2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from memrec_infer.kernels.hashing import buckets as numba_buckets
from memrec_infer.kernels.hashing import draw_seeds
from memrec_infer.models.hashing import buckets as torch_buckets
from memrec_infer.models.hashing import seed_to_int64, seeds_tensor

U64 = 2**64
GOLDEN_SEEDS = [
    [0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB, 0xD6E8FEB86659FD93],
    [1, 2, 3, 4],
]
GOLDEN_IDS = [0, 1, -1, 2**53 + 1, -(2**63), 2**63 - 1, 123456789]


def spec_bucket(x: int, seed: list[int], m: int, slot: int) -> int:
    """The spec transcribed with Python's unbounded integers (no wrapping tricks)."""
    u = x % U64
    a0, a1, a2, b = seed
    v = (a0 * (u & 0xFFFFFFFF) + a1 * (u >> 32) + a2 * slot + b) % U64
    return ((v >> 32) * m) >> 32


def _torch(ids: np.ndarray, seeds: np.ndarray, m: int, slot: int) -> np.ndarray:
    rows = [[int(v) for v in row] for row in seeds]
    return torch_buckets(torch.from_numpy(ids), seeds_tensor(rows), m, slot).numpy()


@pytest.mark.parametrize(("m", "slot"), [(1000, 0), (2**31 - 1, 3)])
def test_golden_values(m: int, slot: int) -> None:
    expected = {
        (1000, 0): [[839, 0], [457, 0], [84, 0], [385, 0], [395, 0], [527, 0], [583, 0]],
        (2**31 - 1, 3): [
            [1252847091, 0], [432581329, 0], [1778171463, 1], [278559007, 0],
            [300296034, 0], [583238873, 0], [702928374, 0],
        ],
    }[(m, slot)]  # fmt: skip
    by_spec = [[spec_bucket(x, s, m, slot) for s in GOLDEN_SEEDS] for x in GOLDEN_IDS]
    assert by_spec == expected
    ids = np.array(GOLDEN_IDS, dtype=np.int64)
    seeds = np.array(GOLDEN_SEEDS, dtype=np.uint64)
    assert _torch(ids, seeds, m, slot).tolist() == expected
    assert numba_buckets(ids, seeds, m, slot).tolist() == expected


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_torch_matches_numba_on_a_million_ids(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 1_000_000
    ids = rng.integers(-(2**63), 2**63, size=n, dtype=np.int64, endpoint=False)
    # Plant the edge cases: small, negative, around 2**32 and 2**53, the extremes, NULL_ID.
    edge = [0, 1, -1, 2**32 - 1, 2**32, -(2**32), 2**53, 2**53 + 1, -(2**53) - 1,
            2**63 - 1, -(2**63)]  # fmt: skip
    ids[: len(edge)] = edge
    ids[len(edge) : 1000] = rng.integers(-1000, 1000, size=1000 - len(edge))
    seeds = draw_seeds(np.random.default_rng(100 + seed), 3)
    for m, slot in [(1, 0), (97, 0), (4096, 1), (2**31 - 1, 7), (123_457, 2**32 - 1)]:
        expected = numba_buckets(ids, seeds, m, slot)
        np.testing.assert_array_equal(_torch(ids, seeds, m, slot), expected)
    # Spot-check the spec reference on a sample, since both fast paths could share a mistake.
    got = _torch(ids[:200], seeds, 4096, 1)
    ref = [[spec_bucket(int(x), [int(v) for v in s], 4096, 1) for s in seeds] for x in ids[:200]]
    assert got.tolist() == ref


def test_seed_conversion_is_twos_complement() -> None:
    assert seed_to_int64(0) == 0
    assert seed_to_int64(2**63 - 1) == 2**63 - 1
    assert seed_to_int64(2**63) == -(2**63)
    assert seed_to_int64(2**64 - 1) == -1
    with pytest.raises(ValueError, match=r"\[0, 2\*\*64\)"):
        seed_to_int64(2**64)
    with pytest.raises(ValueError, match="rows of 4"):
        seeds_tensor([[1, 2, 3]])


def test_torch_buckets_rejects_bad_arguments() -> None:
    ids = torch.zeros(3, dtype=torch.int64)
    seeds = seeds_tensor(GOLDEN_SEEDS)
    with pytest.raises(ValueError, match="m must be"):
        torch_buckets(ids, seeds, 2**31)
    with pytest.raises(TypeError, match="int64"):
        torch_buckets(ids.int(), seeds, 10)
    with pytest.raises(ValueError, match=r"\[k, 4\]"):
        torch_buckets(ids, seeds[:, :3], 10)
