"""Writing and strictly reading the model directory (docs/model-format.md)."""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest
from test_onnx_graph import as_numpy, make_checkpoint

from memrec_infer import load
from memrec_infer.errors import CheckpointError, InvalidModelError
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


def _spec():
    return get_family("memrec_dlrm").to_spec(as_numpy(make_checkpoint()))


def _write(directory, token_dtype="float32", spec=None):
    spec = spec if spec is not None else _spec()
    directory.mkdir()
    source = {"checkpoint": "model.pt", "sha256": "0" * 64, "train": {}}
    graph = build_dense_graph(spec)
    write_model_dir(spec, directory, graph, OPSET, source, writer_versions(), token_dtype)
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
    assert m["token_dtype"] == "float32" and model.tokens.dtype == np.float32
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
    (d / "vocab.npy").mkdir()
    with pytest.raises(InvalidModelError, match=r"vocab\.npy: is a directory, not a file"):
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
    with pytest.raises(InvalidModelError, match=r"tokens\.npy: expected <f4 \(float32, as"):
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
    # float16 halves the token rows only; the equivalent full table stays float32.
    assert table_footprint(memrec, 8, "float16") == (10 * 8 * 2 + 4 * 2 * 4, 1000 * 8 * 4)
    assert table_footprint(full, 8, "float16") == (5 * 8 * 2 + 4 * 8, 5 * 8 * 4 + 4 * 8)


# ---------------------------------------------------------------------------------- float16
def test_float16_round_trip(tmp_path):
    spec = _spec()
    rows = spec.tensors[table_rows("shared")]
    # Ties between two float16 neighbours go to the even one (a truncating cast would give
    # 1 + 2**-10 for the second); the float16 extremes are stored exactly.
    rows[0] = [1 + 2**-11, 1 + 3 * 2**-11, 65504.0, -65504.0]
    d = tmp_path / "model"
    _write(d, "float16", spec)
    model = read_model_dir(d, verify=True)
    m = model.manifest
    assert json.loads((d / "manifest.json").read_text())["token_dtype"] == "float16"

    assert model.tokens.dtype == np.float16 and model.weights.dtype == np.float32
    assert _npy_header(d / "tokens.npy")[0] == "<f2"
    shared, tail = model.tables["shared"], model.tables["tailnum"]
    assert shared.token[0].tolist() == [1.0, 1 + 2**-9, 65504.0, -65504.0]
    for table, got in (("shared", shared), ("tailnum", tail)):
        want = spec.tensors[table_rows(table)].astype(np.float16)
        np.testing.assert_array_equal(got.token, want)
        assert got.token.dtype == np.float16
    assert not np.array_equal(shared.token.astype(np.float32), rows)  # really rounded
    np.testing.assert_array_equal(shared.weight, spec.tensors[table_weight("shared")])
    np.testing.assert_array_equal(tail.vocab, spec.tensors[table_vocab("tailnum")])

    data = (d / "tokens.npy").read_bytes()
    offset = _npy_header(d / "tokens.npy")[1]
    entry = m["files"]["tokens.npy"]
    assert offset % 64 == 0
    n_values = sum(t.rows for t in spec.tables) * spec.embedding_dim
    assert entry["bytes"] == len(data) == offset + n_values * 2
    assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    # Half the token bytes of the same model stored as float32; the other files are unchanged.
    _write(tmp_path / "f32", "float32", _spec())
    m32 = json.loads((tmp_path / "f32" / "manifest.json").read_text())
    assert m32["files"]["tokens.npy"]["bytes"] - offset == 2 * (entry["bytes"] - offset)
    for name in ("weights.npy", "vocab.npy"):
        assert m["files"][name] == m32["files"][name], name


def _npy_header(path):
    """(descr, data offset) of a .npy file."""
    with open(path, "rb") as f:
        np.lib.format.read_magic(f)
        dtype = np.lib.format.read_array_header_1_0(f)[2]
        return dtype.str, f.tell()


def test_manifest_without_token_dtype_loads_as_float32(tmp_path):
    d = tmp_path / "model"
    spec = _write(d)
    _edit_manifest(d, lambda m: m.pop("token_dtype"))  # as written before the key existed
    model = read_model_dir(d, verify=False)
    assert "token_dtype" not in model.manifest and model.tokens.dtype == np.float32
    np.testing.assert_array_equal(model.tables["shared"].token, spec.tensors[table_rows("shared")])


@pytest.mark.parametrize("value", ["bfloat16", "<f2", None, 16, ["float16"]])
def test_unknown_token_dtype_refused(tmp_path, value):
    d = tmp_path / "model"
    _write(d)
    _edit_manifest(d, lambda m: m.update(token_dtype=value))
    with pytest.raises(
        InvalidModelError,
        match=rf"manifest\.json: 'token_dtype' must be one of 'float32', 'float16' .*found "
        rf"{re.escape(repr(value))}$",
    ):
        read_model_dir(d)


@pytest.mark.parametrize("written,claimed", [("float32", "float16"), ("float16", "float32")])
def test_token_dtype_that_disagrees_with_the_file_refused(tmp_path, written, claimed):
    d = tmp_path / "model"
    _write(d, written)
    _edit_manifest(d, lambda m: m.update(token_dtype=claimed))
    want, found = np.dtype(claimed).str, np.dtype(written).str
    with pytest.raises(
        InvalidModelError,
        match=rf"tokens\.npy: expected {want} \({claimed}, as manifest\.json's token_dtype "
        rf"says\) C-order 2-d array, found {found} \({written}\)",
    ):
        read_model_dir(d)


def test_float16_overflow_refused_before_writing(tmp_path):
    spec = _spec()
    spec.tensors[table_rows("tailnum")][5, 3] = -70000.0
    spec.tensors[table_rows("shared")][2, 1] = 65505.0  # rounds to 65504, but is beyond it
    spec.tensors[table_rows("shared")][9, 0] = 1e30
    d = tmp_path / "model"
    with pytest.raises(CheckpointError) as err:
        _write(d, "float16", spec)
    msg = str(err.value)
    assert msg.startswith("model.pt: cannot store the token tables as float16")
    assert "table 'shared' row 2 column 1 holds 65505.0 (2 values of this table" in msg
    assert "table 'tailnum' row 5 column 3 holds -70000.0;" in msg
    assert "convert with --token-dtype float32" in msg
    assert list(d.iterdir()) == []  # nothing written
    with pytest.raises(ValueError, match=r"token_dtype must be one of 'float32', 'float16'"):
        _write(tmp_path / "other", "half", _spec())
    assert list((tmp_path / "other").iterdir()) == []


# ------------------------------------------------------------------- manifest fields checked
def _set(section, i, **fields):
    return lambda m: m[section][i].update(fields)


def _drop(section, i, key):
    return lambda m: m[section][i].pop(key)


# The fixture's dense: distance (log1p), year (standard), hour (identity); sparse: carrier
# (string), tailnum (int, multi-hot), carrier*flight (cross); tables: shared, tailnum.
CARRIER = r"sparse\[0\] \('carrier'\): "
TAILNUM = r"sparse\[1\] \('tailnum'\): "
CROSS = r"sparse\[2\] \('carrier\*flight'\): "
DISTANCE, YEAR, HOUR = (
    r"dense\[0\] \('distance'\): ",
    r"dense\[1\] \('year'\): ",
    r"dense\[2\] \('hour'\): ",
)
FINITE = r"must be a number, finite as float32"
POSITIVE = r"must be a number > 0, finite as float32"


@pytest.mark.parametrize(
    "edit,message",
    [
        (_drop("sparse", 0, "columns"), CARRIER + "'columns' must be a non-empty list of "
         "column names, it is missing$"),
        (_set("sparse", 0, columns=[]), CARRIER + r"'columns' must be .*, found \[\]$"),
        (_set("sparse", 0, columns=["carrier", "flight"]), CARRIER + "dtype 'string' reads "
         "exactly one column"),
        (_set("sparse", 2, columns=["carrier"]), CROSS + "a 'cross' feature needs two or more"),
        (_set("sparse", 0, dtype="float"), CARRIER + "'dtype' must be one of 'int', 'string', "
         "'cross', found 'float'$"),
        (_set("sparse", 1, multi_hot="yes"), TAILNUM + "'multi_hot' must be true or false"),
        (_set("sparse", 2, multi_hot=True), CROSS + "a 'cross' feature cannot be multi_hot"),
        (_set("sparse", 0, pooling="max"), CARRIER + "'pooling' must be one of 'sum', 'mean'"),
        (_set("sparse", 0, table=["shared"]), CARRIER + "'table' must name a table in 'tables'"),
        (_drop("dense", 1, "mean"), YEAR + f"'mean' {FINITE} .*, it is missing$"),
        (_drop("dense", 1, "std"), YEAR + f"'std' {POSITIVE} .*, it is missing$"),
        (_set("dense", 0, transform="bogus"), DISTANCE + "'transform' must be one of "
         "'identity', 'log1p', 'standard', found 'bogus'$"),
        (_set("dense", 0, fill="x"), DISTANCE + rf"'fill' {FINITE} \(what a null becomes\), "
         "found 'x'$"),
        (_set("dense", 2, fill=True), HOUR + f"'fill' {FINITE} .*found True$"),
        (_set("dense", 2, fill=float("inf")), HOUR + f"'fill' {FINITE} .*found inf$"),
        (_set("dense", 1, std=0), YEAR + rf"'std' {POSITIVE} \(transform 'standard' divides "
         r"by it\), found 0$"),
        (_set("dense", 1, std=-7.3), YEAR + rf"'std' {POSITIVE} .*found -7\.3$"),
        (_set("dense", 1, std=float("nan")), YEAR + f"'std' {POSITIVE} .*found nan$"),
        (_set("dense", 1, std=1e-46), YEAR + f"'std' {POSITIVE} .*found 1e-46$"),  # 0 as float32
        (_set("dense", 1, mean=1e39), YEAR + rf"'mean' {FINITE} .*found 1e\+39$"),
        (_set("dense", 1, name="distance"), r"dense\[1\]: name 'distance' is used twice"),
        (_set("tables", 0, cardinality="many"), "table 'shared': 'cardinality' must be an int "
         r">= 0 or null \(unknown\), found 'many'$"),
        (lambda m: m.update(format_version=True), r"'format_version' must be an integer "
         r"\(supported: \[1\]\), found True$"),
        (lambda m: m.update(format_version=1.0), r"'format_version' must be an integer .*1\.0$"),
        (lambda m: m.update(format_version=[1]), r"'format_version' must be an int.*\[1\]$"),
        (lambda m: m.pop("family"), "'family' must be a non-empty string, found None$"),
        (lambda m: m.update(interaction="sum"), "'interaction' must be one of 'dot', 'cat'"),
        (lambda m: m.update(label=3), "'label' must be a string or null, found 3$"),
    ],
)  # fmt: skip
def test_bad_manifest_field_refused(tmp_path, edit, message):
    d = tmp_path / "model"
    _write(d)
    _edit_manifest(d, edit)
    prefix = rf"^model directory {re.escape(str(d))}: manifest\.json: "
    with pytest.raises(InvalidModelError, match=prefix + message):
        read_model_dir(d)


def test_bad_seeds_name_the_model_directory(tmp_path):
    d = tmp_path / "model"
    _write(d)
    _edit_manifest(d, _set("tables", 0, token_seeds=[["0x1"]]))
    with pytest.raises(
        InvalidModelError,
        match=rf"^model directory {re.escape(str(d))}: manifest\.json: table 'shared': "
        r"token_seeds: expected rows of four '0x' hex strings",
    ):
        read_model_dir(d)


def test_numbers_written_by_hand_as_ints_load(tmp_path):
    d = tmp_path / "model"
    _write(d)
    _edit_manifest(d, _set("dense", 1, mean=2001, std=7, fill=0))
    assert read_model_dir(d).manifest["dense"][1]["std"] == 7


def test_bad_manifest_field_is_a_cli_error_not_a_traceback(tmp_path):
    from click.testing import CliRunner

    from memrec_infer.cli import main

    d = tmp_path / "model"
    _write(d)
    _edit_manifest(d, _drop("sparse", 0, "columns"))
    result = CliRunner().invoke(main, ["info", str(d)])
    assert result.exit_code == 1 and not isinstance(result.exception, KeyError)
    assert "sparse[0] ('carrier'): 'columns' must be a non-empty list" in result.output
    # What score and bench open: the same error, before any kernel or graph is loaded.
    _edit_manifest(d, _set("sparse", 0, columns=["carrier"]))
    _edit_manifest(d, _set("dense", 1, std=0))  # every score would be NaN
    with pytest.raises(InvalidModelError, match=r"dense\[1\] \('year'\): 'std' must be"):
        load(d)
