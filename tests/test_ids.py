"""Value -> id kernels: the serial and parallel variants the wrappers pick by size agree."""

from __future__ import annotations

import numpy as np

from memrec_infer.kernels import ids


def _random_strings(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lengths = rng.integers(0, 12, size=n)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    data = rng.integers(0, 256, size=int(offsets[-1]), dtype=np.uint8)
    valid = rng.random(n) > 0.1
    return offsets, data, valid


def test_string_ids_serial_and_parallel_agree_with_scalar_reference():
    rng = np.random.default_rng(5)
    n = ids.PARALLEL_MIN + 17
    offsets, data, valid = _random_strings(rng, n)
    serial = np.empty(n, np.int64)
    parallel = np.empty(n, np.int64)
    ids._string_ids_serial(offsets, data, valid, serial)
    ids._string_ids_parallel(offsets, data, valid, parallel)
    np.testing.assert_array_equal(serial, parallel)
    np.testing.assert_array_equal(ids.string_ids(offsets, data, valid), serial)
    for i in rng.integers(0, n, size=50):
        raw = bytes(data[offsets[i] : offsets[i + 1]])
        assert serial[i] == (ids.string_id(raw) if valid[i] else ids.NULL_ID)


def test_cross_ids_serial_and_parallel_agree():
    rng = np.random.default_rng(6)
    cols = rng.integers(-(2**63), 2**63 - 1, size=(3, ids.PARALLEL_MIN + 5), dtype=np.int64)
    serial = np.empty(cols.shape[1], np.int64)
    parallel = np.empty(cols.shape[1], np.int64)
    ids._cross_ids_serial(cols, serial)
    ids._cross_ids_parallel(cols, parallel)
    np.testing.assert_array_equal(serial, parallel)
    np.testing.assert_array_equal(ids.cross_ids(cols[:, :3]), serial[:3])
