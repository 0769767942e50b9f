"""Golden vectors pinning memrec-hash-v1 (docs/hashing.md sections 1-2) in kernels/.

Expected values come from two independent sources: a plain-Python, mod-2**64 re-implementation
of the spec written here, and literal numbers (published FNV-1a values, and outputs of this
reference frozen when the spec was fixed). A change to either side of the spec fails here.
"""

from __future__ import annotations

import numpy as np
import pytest

from memrec_infer.kernels.hashing import buckets, draw_seeds, seeds_from_hex, seeds_to_hex
from memrec_infer.kernels.ids import NULL_ID, cross_ids, string_id, string_ids

M64 = 2**64
I64_MIN, I64_MAX = -(2**63), 2**63 - 1


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for c in data:
        h = ((h ^ c) * 0x100000001B3) % M64
    return h


def fmix64(h: int) -> int:
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) % M64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) % M64
    return h ^ (h >> 33)


def signed(u: int) -> int:
    return u - M64 if u >= 2**63 else u


def ref_string_id(s: str) -> int:
    return signed(fmix64(fnv1a64(s.encode("utf-8"))))


def ref_cross(ids: list[int]) -> int:
    h = fmix64(ids[0] % M64)
    for x in ids[1:]:
        h = fmix64(h ^ (x % M64))
    return signed(h)


def ref_bucket(x: int, slot: int, seed, m: int) -> int:
    a0, a1, a2, b = (int(v) for v in seed)
    u = x % M64
    v = (a0 * (u & 0xFFFFFFFF) + a1 * (u >> 32) + a2 * slot + b) % M64
    return ((v >> 32) * m) >> 32


STRINGS = ["", "a", "AA", "héllo", "日本", "a\x00b", "x" * 300]
SEED = [0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB, 0x2545F4914F6CDD1D]
IDS = [0, 1, -1, 12345, -987654321, I64_MIN, I64_MAX, 2**53 + 1, -(2**53) - 3, 2**32, 2**32 - 1]


def test_reference_matches_published_fnv1a_and_fmix_values():
    # Checks the test's own reference against numbers published outside this project.
    assert fnv1a64(b"") == 0xCBF29CE484222325
    assert fnv1a64(b"a") == 0xAF63DC4C8601EC8C
    assert fnv1a64(b"foobar") == 0x85944171F73967E8
    assert fmix64(0) == 0


def test_string_ids_literal():
    assert string_id("") == -1166397803181037274
    assert string_id("a") == -9033471704281723301
    assert string_id("AA") == -2228300171792514609
    assert string_id("héllo") == -4502120615525734835
    assert string_id("日本") == 1310764441268014659
    assert string_id(None) == int(NULL_ID) == I64_MIN


@pytest.mark.parametrize("s", STRINGS)
def test_string_id_matches_reference(s):
    assert string_id(s) == ref_string_id(s)
    assert string_id(s.encode("utf-8")) == ref_string_id(s)


def test_string_ids_from_arrow_style_buffers_with_nulls():
    raw = [s.encode("utf-8") for s in STRINGS]
    for offset_dtype in (np.int32, np.int64):
        offsets = np.concatenate([[0], np.cumsum([len(r) for r in raw])]).astype(offset_dtype)
        data = np.frombuffer(b"".join(raw), dtype=np.uint8)
        valid = np.array([i % 3 != 1 for i in range(len(raw))])
        got = string_ids(offsets, data, valid)
        want = [ref_string_id(s) if v else I64_MIN for s, v in zip(STRINGS, valid, strict=True)]
        assert got.dtype == np.int64
        assert got.tolist() == want


def test_cross_ids_literal_and_reference():
    a = string_id("a")
    cols = np.array([[a, 0, I64_MIN, -1], [12345, 0, I64_MAX, 7], [3, 3, 3, 3]], dtype=np.int64)
    got = cross_ids(cols[:2])
    assert got[0] == -7815583460191628657
    assert got.tolist() == [ref_cross(list(map(int, cols[:2, i]))) for i in range(4)]
    got3 = cross_ids(cols)
    assert got3.tolist() == [ref_cross(list(map(int, cols[:, i]))) for i in range(4)]
    assert cross_ids(cols[::-1][1:])[0] != got[0]  # order matters


def test_buckets_literal():
    seeds = np.array([SEED], dtype=np.uint64)
    got = buckets(np.array([0, 1, -1, I64_MIN, I64_MAX, 2**53 + 1], np.int64), seeds, 1000)
    assert got[:, 0].tolist() == [145, 763, 390, 702, 833, 691]
    assert buckets(np.array([42], np.int64), seeds, 1000, slot=1)[0, 0] == 684


@pytest.mark.parametrize("m", [1, 2, 1000, 2**20 + 7, 2**31 - 1])
@pytest.mark.parametrize("slot", [0, 1, 5])
def test_buckets_match_reference(m, slot):
    seeds = draw_seeds(np.random.default_rng(m + slot), 3)
    seeds[0] = [2**64 - 1, 2**64 - 1, 2**64 - 1, 2**64 - 1]  # largest seeds: every product wraps
    got = buckets(np.array(IDS, dtype=np.int64), seeds, m, slot=slot)
    want = [[ref_bucket(x, slot, s, m) for s in seeds] for x in IDS]
    assert got.tolist() == want
    assert got.min() >= 0 and got.max() < m


def test_slot_changes_buckets():
    seeds = np.array([SEED], dtype=np.uint64)
    ids = np.arange(-50, 50, dtype=np.int64)
    assert not np.array_equal(buckets(ids, seeds, 2**20), buckets(ids, seeds, 2**20, slot=1))


def test_seeds_hex_round_trip_is_exact_above_2_53():
    seeds = np.array([SEED, [0, 1, 2**53 + 1, 2**64 - 1]], dtype=np.uint64)
    hexed = seeds_to_hex(seeds)
    assert hexed[1] == ["0x0000000000000000", "0x0000000000000001", "0x0020000000000001",
                        "0xffffffffffffffff"]  # fmt: skip
    back = seeds_from_hex(hexed)
    assert back.dtype == np.uint64 and np.array_equal(back, seeds)
    assert np.array_equal(seeds_from_hex([[int(v) for v in row] for row in seeds]), seeds)
    assert seeds_from_hex([]).shape == (0, 4)


def test_buckets_rejects_bad_arguments():
    seeds = np.array([SEED], dtype=np.uint64)
    with pytest.raises(ValueError, match=r"seeds must have shape \[k, 4\]"):
        buckets(np.zeros(2, np.int64), seeds[:, :3], 10)
    with pytest.raises(ValueError, match=r"m must be in \[1, 2\*\*31\)"):
        buckets(np.zeros(2, np.int64), seeds, 2**31)
    with pytest.raises(ValueError, match="slot must be in"):
        buckets(np.zeros(2, np.int64), seeds, 10, slot=-1)
