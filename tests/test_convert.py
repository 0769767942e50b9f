"""``memrec-infer convert`` and ``info``: the pipeline end to end, its refusals, the CLI."""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from test_onnx_graph import D, make_checkpoint, numpy_forward

from memrec_infer.cli import main
from memrec_infer.convert import convert, default_output_dir
from memrec_infer.errors import CheckpointError, InvalidModelError, OutputPathError
from memrec_infer.model_dir import read_model_dir


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(make_checkpoint("dot", False), path)
    return path


def test_end_to_end(checkpoint, tmp_path):
    lines: list[str] = []
    manifest = convert(checkpoint, tmp_path / "out", log=lines.append)
    assert manifest["path"] == str(tmp_path / "out")
    assert any("validating" in line for line in lines)

    model = read_model_dir(tmp_path / "out", verify=True)
    ckpt = make_checkpoint("dot", False)
    sd = {k: v.numpy() for k, v in ckpt["state_dict"].items()}
    np.testing.assert_array_equal(model.tables["shared"].token, sd["embeddings.shared.token"])
    np.testing.assert_array_equal(model.tables["tailnum"].vocab, sd["embeddings.tailnum.vocab"])
    assert model.manifest["source"]["checkpoint"] == "model.pt"
    assert model.manifest["source"]["train"] == {"seed": 1, "auc": 0.71, "loss": None}
    # No temporary directories are left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "out"]

    rng = np.random.default_rng(3)
    dense = rng.normal(size=(5, 3)).astype(np.float32)
    emb = rng.normal(size=(5, 3, D)).astype(np.float32)
    sess = ort.InferenceSession(str(model.onnx_path), providers=["CPUExecutionProvider"])
    (score,) = sess.run(["score"], {"dense": dense, "embeddings": emb})
    np.testing.assert_allclose(score, numpy_forward(ckpt["config"], sd, dense, emb), atol=1e-5)


def test_default_output_dir(tmp_path):
    assert default_output_dir(tmp_path / "runs" / "model.pt") == tmp_path / "runs" / "model"
    assert default_output_dir(tmp_path / "model") == tmp_path / "model.memrec"


def test_existing_output_needs_force(checkpoint, tmp_path):
    out = tmp_path / "model"  # the default output
    convert(checkpoint)
    before = (out / "manifest.json").read_text()
    with pytest.raises(OutputPathError, match="not empty; pass --force"):
        convert(checkpoint)
    assert (out / "manifest.json").read_text() == before
    # A model directory is replaced whole: a stray model file of the old one goes too.
    (out / "dense.onnx").unlink()
    convert(checkpoint, force=True)
    read_model_dir(out, verify=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "model.pt"]


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize(
    "files,why",
    [
        (["m.pt", "notes.txt"], "it holds m.pt, notes.txt, which convert does not write"),
        (["manifest.json", "tokens.npy", "runs/a.txt"], "it holds runs/, which convert"),
        (["tokens.npy", "weights.npy"], "it has no manifest.json"),
    ],
)
def test_force_replaces_only_a_model_directory(checkpoint, tmp_path, files, why):
    out = tmp_path / "precious"
    for name in files:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("keep me")
    before = _tree(tmp_path)
    msg = (
        rf"output directory {re.escape(str(out))} is not a model directory written by convert: "
        rf"{re.escape(why)}.*--force only replaces a model directory \(or an empty one\)"
    )
    with pytest.raises(OutputPathError, match=msg):
        convert(checkpoint, out, force=True)
    result = CliRunner().invoke(main, ["convert", str(checkpoint), "-o", str(out), "--force"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert re.search(f"^Error: {msg}", result.stderr, re.MULTILINE)
    assert _tree(tmp_path) == before
    assert all((out / name).read_text() == "keep me" for name in files)


def test_force_never_deletes_the_checkpoint(tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    checkpoint = out / "m.pt"
    torch.save(make_checkpoint("dot", False), checkpoint)
    (out / "notes.txt").write_text("keep me")
    before = _tree(tmp_path)
    msg = (
        rf"output directory {re.escape(str(out))} holds the checkpoint "
        rf"{re.escape(str(checkpoint))}, which replacing the directory would delete"
    )
    for force in (True, False):
        with pytest.raises(OutputPathError, match=msg):
            convert(checkpoint, out, force=force)
    # Even where nothing but model files sit beside it, and with the output given relatively.
    (out / "notes.txt").rename(out / "manifest.json")
    result = CliRunner().invoke(
        main, ["convert", str(checkpoint), "-o", str(out / "sub" / ".."), "--force"]
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert re.search(f"^Error: {msg}", result.stderr, re.MULTILINE)
    assert _tree(tmp_path) == [p.replace("notes.txt", "manifest.json") for p in before]


@pytest.mark.parametrize("where", [".", ".."])
def test_output_holding_the_current_directory_refused(checkpoint, tmp_path, monkeypatch, where):
    out = tmp_path / "model"
    convert(checkpoint, out)
    before = _tree(tmp_path)
    monkeypatch.chdir(out)
    target = out if where == "." else tmp_path
    state = "is" if where == "." else "holds"
    msg = rf"output directory {re.escape(str(target))} {state} the current directory"
    with pytest.raises(OutputPathError, match=msg):
        convert(checkpoint, where, force=True)
    result = CliRunner().invoke(main, ["convert", str(checkpoint), "-o", where, "--force"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert re.search(f"^Error: {msg}", result.stderr, re.MULTILINE)
    assert _tree(tmp_path) == before  # no ..old-* directory left behind


def test_an_empty_output_is_refused_as_such(checkpoint, tmp_path, monkeypatch):
    # Not as the current directory, which is what Path("") stands for.
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["convert", str(checkpoint), "-o", ""])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr == (
        "Error: the output path is empty; name a directory, or leave -o out to write next to "
        "the checkpoint\n"
    )


def _unmakeable_outputs(tmp_path):
    """Outputs whose directory cannot be made, with the reason the error must give."""
    (tmp_path / "file.txt").write_text("x")
    cases = [
        (tmp_path / "file.txt" / "out", rf"{re.escape(str(tmp_path / 'file.txt'))} is not a dir"),
        (tmp_path / "file.txt" / "a" / "out", "file.txt is not a directory"),
    ]
    if sys.platform.startswith("linux") and os.path.isdir("/proc/self"):
        # procfs refuses new entries whoever asks, even root: "unwritable" without chmod.
        cases += [
            (Path("/proc/memrec-out"), "cannot create a directory in /proc: No such file"),
            (Path("/proc/memrec-x/out"), "cannot create /proc/memrec-x: No such file"),
        ]
    return cases


def test_output_that_cannot_be_made_is_a_clear_error(checkpoint, tmp_path):
    runner = CliRunner()
    for out, reason in _unmakeable_outputs(tmp_path):
        before, parent_existed = _tree(tmp_path), os.path.lexists(out.parent)
        msg = rf"output directory {re.escape(str(out))}: .*{reason}.*; choose another -o"
        with pytest.raises(OutputPathError, match=msg):
            convert(checkpoint, out)
        result = runner.invoke(main, ["convert", str(checkpoint), "-o", str(out)])
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert re.search(f"^Error: {msg}", result.stderr, re.MULTILINE), result.stderr
        assert _tree(tmp_path) == before
        assert not os.path.lexists(out) and os.path.lexists(out.parent) == parent_existed


def test_failure_removes_the_parents_it_made(checkpoint, tmp_path, monkeypatch):
    def broken(directory):
        raise InvalidModelError(f"{directory}: broken on purpose")

    monkeypatch.setattr("memrec_infer.convert._smoke_test", broken)
    (tmp_path / "runs").mkdir()
    with pytest.raises(InvalidModelError, match="broken on purpose"):
        convert(checkpoint, tmp_path / "runs" / "new" / "deeper" / "out")
    assert _tree(tmp_path) == ["model.pt", "runs"]


def test_failed_rename_keeps_the_old_model(checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "model"
    convert(checkpoint, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    rename = Path.rename

    def busy(self, target):
        if self.name.startswith(".model.tmp-"):
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(self))
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", busy)
    msg = (
        rf"output directory {re.escape(str(out))}: cannot move the new model directory into "
        rf"place: {os.strerror(errno.EBUSY)}; {re.escape(str(out))} is unchanged"
    )
    with pytest.raises(OutputPathError, match=msg):
        convert(checkpoint, out, force=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "model.pt"]


def test_model_directory_is_readable_by_others_as_the_umask_allows(checkpoint, tmp_path):
    # A server often runs as another user than the one who converted the model.
    old = os.umask(0o022)
    try:
        convert(checkpoint, tmp_path / "model")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o755


def test_a_failing_write_is_an_output_error_and_leaves_nothing(checkpoint, tmp_path, monkeypatch):
    import memrec_infer.convert as convert_module

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(convert_module, "write_model_dir", disk_full)
    with pytest.raises(OutputPathError, match="cannot write the model: No space left on device"):
        convert(checkpoint, tmp_path / "new" / "model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_empty_existing_output_is_fine(checkpoint, tmp_path):
    (tmp_path / "out").mkdir()
    convert(checkpoint, tmp_path / "out")
    read_model_dir(tmp_path / "out")


def test_unknown_family_lists_supported(tmp_path):
    ckpt = make_checkpoint()
    ckpt["family"] = "torchrec_dlrm_v9"
    path = tmp_path / "m.pt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=r"unknown checkpoint family.*memrec_dlrm"):
        convert(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_all_tensor_problems_reported_together(tmp_path):
    ckpt = make_checkpoint()
    sd = ckpt["state_dict"]
    del sd["embeddings.shared.weight"]
    sd["embeddings.extra.token"] = torch.zeros(2, D)
    sd["over_arch.0.weight"] = torch.zeros(6, 99)
    sd["embeddings.tailnum.vocab"] = sd["embeddings.tailnum.vocab"].int()
    ckpt["config"]["over_arch"] = [6, 2]
    path = tmp_path / "m.pt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError) as err:
        convert(path, tmp_path / "out")
    msg = str(err.value)
    assert "missing 1 tensor(s): embeddings.shared.weight" in msg
    assert "unexpected tensor(s): embeddings.extra.token" in msg
    assert "over_arch.0.weight: expected float32 [6, 10], found float32 [6, 99]" in msg
    assert "embeddings.tailnum.vocab: expected int64 [10], found int32 [10]" in msg
    assert "over_arch's last width must be 1" in msg
    assert not (tmp_path / "out").exists()


def test_config_problems_reported(tmp_path):
    ckpt = make_checkpoint()
    cfg = ckpt["config"]
    cfg["dense_arch"] = [8, 5]  # dot needs last == D
    cfg["sparse"][0]["pooling"] = "max"
    cfg["tables"][0]["weight_cols"] = 3
    cfg["dense"][1]["std"] = 0.0
    cfg["dense"][1]["mean"] = float("nan")
    cfg["dense"][0]["fill"] = 1e39  # inf in float32
    cfg["sparse"][1]["table"] = "nope"
    path = tmp_path / "m.pt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError) as err:
        convert(path, tmp_path / "out")
    msg = str(err.value)
    for part in (
        "dense_arch's last width must equal embedding_dim=4",
        "pooling must be one of",
        "weight_cols must be 1 or k=2",
        "std must be a number > 0 and finite in float32 for 'standard', found 0.0",
        "mean must be a number finite in float32 for 'standard', found nan",
        "fill must be a number finite in float32, found 1e+39",
        "table 'nope' is not in config.tables",
    ):
        assert part in msg, part


def test_vocab_not_increasing_and_nan_reported(tmp_path):
    ckpt = make_checkpoint()
    ckpt["state_dict"]["embeddings.tailnum.vocab"][3] = -100
    ckpt["state_dict"]["dense_arch.0.bias"][0] = float("nan")
    path = tmp_path / "m.pt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError) as err:
        convert(path, tmp_path / "out")
    assert "strictly increasing" in str(err.value) and "NaN" in str(err.value)


def test_cli_convert_and_info(checkpoint, tmp_path):
    runner = CliRunner()
    out = tmp_path / "out"
    result = runner.invoke(main, ["convert", str(checkpoint), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "validating as family memrec_dlrm" in result.stderr
    assert "bytes of tables (float32 tokens)" in result.stderr
    assert "smaller than full tables" in result.stderr

    result = runner.invoke(main, ["convert", str(checkpoint), "-o", str(out)])
    assert result.exit_code == 1
    assert "Error: output directory" in result.stderr and "--force" in result.stderr
    assert "Traceback" not in result.output

    result = runner.invoke(main, ["convert", str(checkpoint), "-o", str(out), "--force", "-q"])
    assert result.exit_code == 0 and result.stderr == ""

    result = runner.invoke(main, ["info", str(out)])
    assert result.exit_code == 0, result.output
    assert "carrier*flight" in result.stdout and "memrec" in result.stdout
    assert ", float32 token rows," in result.stdout
    info = json.loads(runner.invoke(main, ["info", str(out), "--json"]).stdout)
    assert info["token_dtype"] == "float32"
    shared = info["tables"][0]
    assert shared["bytes"] == 32 * D * 4 + 8 * 2 * 4
    assert shared["full_bytes"] == 5000 * D * 4
    assert info["compression"] == pytest.approx(
        (5000 * D * 4 + 11 * D * 4 + 10 * 8) / (shared["bytes"] + 11 * D * 4 + 10 * 8)
    )


def test_cli_convert_float16_and_info(checkpoint, tmp_path):
    runner = CliRunner()
    out = tmp_path / "out"
    args = ["convert", str(checkpoint), "-o", str(out), "--token-dtype", "float16"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "writing 2 table(s), float16 token rows" in result.stderr
    assert np.load(out / "tokens.npy", mmap_mode="r").dtype == np.float16
    assert np.load(out / "weights.npy", mmap_mode="r").dtype == np.float32
    model = read_model_dir(out, verify=True)
    assert model.manifest["token_dtype"] == "float16"
    sd = make_checkpoint("dot", False)["state_dict"]
    for table, key in (("shared", "token"), ("tailnum", "table")):
        want = sd[f"embeddings.{table}.{key}"].numpy().astype(np.float16)
        np.testing.assert_array_equal(model.tables[table].token, want)

    # Token rows count 2 bytes a value; the full tables compared with stay float32.
    shared, tail = 32 * D * 2 + 8 * 2 * 4, 11 * D * 2 + 10 * 8
    full = 5000 * D * 4 + 11 * D * 4 + 10 * 8
    total = shared + tail
    assert (
        f"3 sparse + 3 dense features, 2 table(s), {total:,} bytes of tables (float16 tokens), "
        f"{full / total:.1f}x smaller than full tables"
    ) in result.stderr

    result = runner.invoke(main, ["info", str(out)])
    assert result.exit_code == 0 and ", float16 token rows," in result.stdout
    assert f"total: {total:,} bytes of tables" in result.stdout
    info = json.loads(runner.invoke(main, ["info", str(out), "--json"]).stdout)
    assert info["token_dtype"] == "float16" and info["table_bytes"] == total
    assert info["tables"][0]["bytes"] == shared and info["tables"][0]["full_bytes"] == 5000 * D * 4
    assert info["tables"][1]["full_bytes"] == 11 * D * 4 + 10 * 8
    assert info["files"]["tokens.npy"] == model.manifest["files"]["tokens.npy"]["bytes"]

    result = runner.invoke(main, [*args[:-1], "bfloat16", "--force"])
    assert (
        result.exit_code == 2 and "'bfloat16' is not one of 'float32', 'float16'" in result.stderr
    )


def test_float16_overflow_refused_with_nothing_left_behind(tmp_path):
    ckpt = make_checkpoint()
    ckpt["state_dict"]["embeddings.shared.token"][3, 1] = 7e4
    path = tmp_path / "m.pt"
    torch.save(ckpt, path)
    out = tmp_path / "new" / "out"  # its parent does not exist yet either
    msg = (
        rf"{re.escape(str(path))}: cannot store the token tables as float16, whose largest "
        r"value is 65504: table 'shared' row 3 column 1 holds 70000\.0; convert with "
        r"--token-dtype float32"
    )
    with pytest.raises(CheckpointError, match=msg):
        convert(path, out, token_dtype="float16")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]

    runner = CliRunner()
    result = runner.invoke(main, ["convert", str(path), "-o", str(out), "--token-dtype", "float16"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert re.search(f"^Error: {msg}", result.stderr, re.MULTILINE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]

    with pytest.raises(ValueError, match=r"token_dtype must be one of 'float32', 'float16'"):
        convert(path, out, token_dtype="half")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]
    # What the message advises works: float32 holds the value exactly.
    convert(path, out)
    assert read_model_dir(out).tables["shared"].token[3, 1] == 7e4


def test_cli_info_unknown_cardinality(tmp_path):
    ckpt = make_checkpoint()
    del ckpt["config"]["tables"][0]["cardinality"]
    path = tmp_path / "m.pt"
    torch.save(ckpt, path)
    runner = CliRunner()
    assert runner.invoke(main, ["convert", str(path), "-q"]).exit_code == 0
    result = runner.invoke(main, ["info", str(tmp_path / "m")])
    assert "compression unknown" in result.stdout
    assert (
        json.loads(runner.invoke(main, ["info", str(tmp_path / "m"), "--json"]).stdout)[
            "compression"
        ]
        is None
    )


def test_cli_user_errors_have_no_traceback(tmp_path):
    runner = CliRunner()
    evil = tmp_path / "evil.pt"
    evil.write_bytes(b"\x80\x02}q\x00.")  # a bare pickle: the legacy format
    result = runner.invoke(main, ["convert", str(evil)])
    assert result.exit_code == 1
    assert "legacy pickle" in result.stderr and "Traceback" not in result.output

    result = runner.invoke(main, ["info", str(tmp_path / "missing")])
    assert result.exit_code == 1 and "does not exist" in result.stderr


@pytest.mark.parametrize("interaction,self_interaction", [("dot", True), ("cat", False)])
def test_trainer_checkpoint_converts(tmp_path, interaction, self_interaction):
    """The contract with models/: what save_checkpoint writes, convert accepts unchanged."""
    from memrec_infer.models.checkpoint import save_checkpoint
    from memrec_infer.models.dlrm import build_dlrm

    config = make_checkpoint(interaction, self_interaction)["config"]
    config["train"] = {"seed": 1}
    model = build_dlrm(config)
    save_checkpoint(model, config, tmp_path / "m.pt")
    convert(tmp_path / "m.pt", tmp_path / "out")
    got = read_model_dir(tmp_path / "out", verify=True)
    for name, tensor in model.state_dict().items():
        if name.endswith(".token") or name.endswith(".table"):
            table = got.tables[name.split(".")[1]]
            np.testing.assert_array_equal(table.token, tensor.numpy(), err_msg=name)
