"""Writing and strictly reading the model directory (docs/model-format.md)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_onnx_graph import as_numpy, make_checkpoint

from memrec_infer import load
from memrec_infer.errors import InvalidModelError
from memrec_infer.families import get_family
from memrec_infer.model_dir import (
    parse_seeds,
    read_model_dir,
    table_footprint,
    write_model_dir,
    writer_versions,
)
from memrec_infer.onnx_graph import OPSET, build_dense_graph
from memrec_infer.spec import table_rows, table_vocab, table_weight


def _write(directory):
    spec = get_family("memrec_dlrm").to_spec(as_numpy(make_checkpoint()))
    directory.mkdir()
    source = {"checkpoint": "model.pt", "sha256": "0" * 64, "train": {}}
    write_model_dir(spec, directory, build_dense_graph(spec), OPSET, source, writer_versions())
    return spec


def _edit_manifest(directory, edit):
    path = directory / "manifest.json"
    m = json.loads(path.read_text())
    edit(m)
    path.write_text(json.dumps(m, sort_keys=True))


def test_round_trip(tmp_path):
    d = tmp_path / "model"
    spec = _write(d)
    model = read_model_dir(d, verify=True)

    text = (d / "manifest.json").read_text()
    m = json.loads(text)
    assert text.strip() == json.dumps(m, sort_keys=True, indent=1)
    assert m["format_version"] == 1 and m["hashing"] == "memrec-hash-v1"
    assert m["dense_graph"]["opset"] == OPSET
    assert sorted(m["files"]) == ["dense.onnx", "tokens.npy", "vocab.npy", "weights.npy"]
    assert [(f["name"], f["slot"]) for f in m["sparse"]] == [
        ("carrier", 0),
        ("tailnum", 0),
        ("carrier*flight", 1),
    ]
    assert m["tables"][0]["cardinality"] == 5000 and m["tables"][1]["cardinality"] == 10

    for arr in (model.tokens, model.weights, model.vocab):
        assert isinstance(arr, np.memmap) and not arr.flags.writeable
    for name in ("tokens.npy", "weights.npy", "vocab.npy"):
        data_offset = (d / name).stat().st_size - np.load(d / name, mmap_mode="r").nbytes
        assert data_offset % 64 == 0, name

    shared, tail = model.tables["shared"], model.tables["tailnum"]
    np.testing.assert_array_equal(shared.token, spec.tensors[table_rows("shared")])
    np.testing.assert_array_equal(shared.weight, spec.tensors[table_weight("shared")])
    np.testing.assert_array_equal(shared.token_seeds, spec.tables[0].token_seeds)
    np.testing.assert_array_equal(shared.weight_seeds, spec.tables[0].weight_seeds)
    assert shared.token_seeds.dtype == np.uint64 and shared.weight_seeds.shape == (3, 4)
    np.testing.assert_array_equal(tail.token, spec.tensors[table_rows("tailnum")])
    np.testing.assert_array_equal(tail.vocab, spec.tensors[table_vocab("tailnum")])
    assert tail.weight is None and tail.token_seeds is None


def test_wrong_size_refused(tmp_path):
    d = tmp_path / "model"
    _write(d)
    with open(d / "tokens.npy", "ab") as f:
        f.write(b"\0")
    with pytest.raises(InvalidModelError, match=r"tokens\.npy: size check failed"):
        read_model_dir(d)


def test_wrong_sha256_refused_on_verify(tmp_path):
    d = tmp_path / "model"
    _write(d)
    data = bytearray((d / "weights.npy").read_bytes())
    data[-1] ^= 0x01
    (d / "weights.npy").write_bytes(bytes(data))
    read_model_dir(d)  # same size: only verify reads every byte
    with pytest.raises(InvalidModelError, match=r"weights\.npy: sha256 check failed"):
        read_model_dir(d, verify=True)


def test_unknown_format_version_refused(tmp_path):
    d = tmp_path / "model"
    _write(d)
    _edit_manifest(d, lambda m: m.update(format_version=2))
    with pytest.raises(InvalidModelError, match=r"manifest\.json: format_version 2 is not supp"):
        read_model_dir(d)


def test_missing_file_refused(tmp_path):
    d = tmp_path / "model"
    _write(d)
    (d / "vocab.npy").unlink()
    with pytest.raises(InvalidModelError, match=r"vocab\.npy: file is missing"):
        read_model_dir(d)


def test_missing_manifest_and_directory_refused(tmp_path):
    with pytest.raises(InvalidModelError, match="does not exist"):
        read_model_dir(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidModelError, match=r"manifest\.json: file is missing"):
        read_model_dir(tmp_path / "empty")


@pytest.mark.parametrize(
    "table,key,file",
    [
        (1, "token_offset", "tokens.npy"),
        (0, "weight_offset", "weights.npy"),
        (1, "vocab_offset", "vocab.npy"),
    ],
)
def test_table_range_outside_array_refused(tmp_path, table, key, file):
    d = tmp_path / "model"
    _write(d)
    _edit_manifest(d, lambda m: m["tables"][table].update({key: m["tables"][table][key] + 1}))
    with pytest.raises(InvalidModelError, match=rf"{file}: range check failed"):
        read_model_dir(d)


def test_wrong_dtype_in_npy_refused(tmp_path):
    d = tmp_path / "model"
    _write(d)
    tokens = np.load(d / "tokens.npy")
    np.save(d / "tokens.npy", tokens.astype(np.float64))
    size = (d / "tokens.npy").stat().st_size
    _edit_manifest(d, lambda m: m["files"]["tokens.npy"].update(bytes=size))
    with pytest.raises(InvalidModelError, match=r"tokens\.npy: expected <f4"):
        read_model_dir(d)


def test_damaged_onnx_refused_on_load(tmp_path):
    d = tmp_path / "model"
    _write(d)
    (d / "dense.onnx").write_bytes(b"not an onnx model")
    _edit_manifest(d, lambda m: m["files"]["dense.onnx"].update(bytes=17))
    read_model_dir(d)  # sizes hold; the graph is read by ONNX Runtime, when a model is loaded
    with pytest.raises(InvalidModelError, match=r"dense\.onnx: ONNX Runtime cannot load it"):
        load(d)


def test_graph_that_does_not_match_the_manifest_refused(tmp_path):
    d = tmp_path / "model"
    spec = _write(d)
    _edit_manifest(d, lambda m: m["dense"].pop())  # the graph still takes every dense column
    n = len(spec.dense)
    want = rf"'dense': \('tensor\(float\)', \[None, {n - 1}\]\)"
    found = rf"found inputs \{{'dense': \('tensor\(float\)', \[None, {n}\]\)"
    with pytest.raises(
        InvalidModelError, match=rf"dense\.onnx: graph check failed: .*{want}.*{found}"
    ):
        load(d)


def test_dense_graph_entry_checked(tmp_path):
    d = tmp_path / "model"
    _write(d)
    _edit_manifest(d, lambda m: m["dense_graph"].update(output="prob"))
    with pytest.raises(InvalidModelError, match=r"manifest\.json: 'dense_graph' must hold"):
        read_model_dir(d)


def test_slot_mismatch_refused(tmp_path):
    d = tmp_path / "model"
    _write(d)
    _edit_manifest(d, lambda m: m["sparse"][2].update(slot=0))
    with pytest.raises(InvalidModelError, match=r"manifest\.json: sparse\[2\].*slot 0"):
        read_model_dir(d)


def test_parse_seeds():
    seeds = parse_seeds([["0x0000000000000001", "0xffffffffffffffff", "0x0", "0x10"]])
    assert seeds.dtype == np.uint64 and seeds.tolist() == [[1, 2**64 - 1, 0, 16]]
    assert parse_seeds([]).shape == (0, 4)
    for bad in ([["0x1", "0x2", "0x3"]], [["1", "0x2", "0x3", "0x4"]], [["0x1" + "0" * 16] * 4]):
        with pytest.raises(InvalidModelError, match="hex"):
            parse_seeds(bad, "token_seeds")


def test_table_footprint():
    memrec = {"kind": "memrec", "rows": 10, "weight_rows": 4, "weight_cols": 2, "cardinality": 1000}
    assert table_footprint(memrec, 8) == (10 * 8 * 4 + 4 * 2 * 4, 1000 * 8 * 4)
    assert table_footprint({**memrec, "cardinality": None}, 8)[1] is None
    full = {"kind": "full", "rows": 5}
    assert table_footprint(full, 8) == (5 * 8 * 4 + 4 * 8,) * 2
