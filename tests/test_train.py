"""The trainer through the CLI: a tiny run writes a checkpoint that loads and predicts."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from memrec_infer.cli import main
from memrec_infer.models import load_checkpoint
from memrec_infer.models.train import auc, train

FLIGHTS = "data/flights.parquet"
DENSE = "distance,hour,seats"
SPARSE = "carrier,tailnum,origin,carrier*flight"


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> str:
    """3,000 flights rows plus a multi-hot column, as a Parquet file."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    table = pq.read_table(root / FLIGHTS).slice(0, 3000)
    rng = np.random.default_rng(0)
    tags = [list(rng.integers(0, 50, size=rng.integers(0, 4))) for _ in range(table.num_rows)]
    table = table.append_column("tags", pa.array(tags, pa.list_(pa.int64())))
    path = tmp_path_factory.mktemp("data") / "small.parquet"
    pq.write_table(table, path)
    return str(path)


def _run(*args: str):
    return CliRunner().invoke(main, ["train", *args])


@pytest.mark.parametrize("embedding", ["memrec", "full"])
def test_cli_trains_a_loadable_checkpoint(small: str, tmp_path, embedding: str) -> None:
    out = tmp_path / "model.pt"
    result = _run(small, "--label", "delayed", "--dense", DENSE, "--sparse", SPARSE,
                  "--sparse", "tags", "--split", "hour>=18", "--embedding", embedding,
                  "--transform", "distance=log1p", "--pooling", "mean", "-o", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "valid AUC" in result.output and "wrote" in result.output
    model = load_checkpoint(out)
    cfg = model.config
    assert [s["name"] for s in cfg["sparse"]] == [*SPARSE.split(","), "tags"]
    assert cfg["sparse"][3]["dtype"] == "cross" and cfg["sparse"][4]["multi_hot"] is True
    assert [d["transform"] for d in cfg["dense"]] == ["log1p", "standard", "standard"]
    assert {t["kind"] for t in cfg["tables"]} == {embedding}
    assert 0.0 <= cfg["train"]["valid_auc"] <= 1.0 and cfg["train"]["epochs"] == 1
    p = model.predict(pq.read_table(small).slice(0, 100))
    assert p.shape == (100,) and p.dtype == np.float32
    assert np.all((p > 0) & (p < 1)) and p.std() > 0


def test_training_is_deterministic_and_share_uses_one_table(small: str) -> None:
    table = pq.read_table(small)
    args = dict(label="delayed", dense=["hour"], sparse=["carrier", "tailnum"], split="0.2",
                share=True, log=None)  # fmt: skip
    a = train(table, **args)
    b = train(table, **args)
    assert [t["name"] for t in a.config["tables"]] == ["shared"]
    assert a.config["tables"][0]["features"] == ["carrier", "tailnum"]
    for (name, x), (_, y) in zip(
        a.model.state_dict().items(), b.model.state_dict().items(), strict=True
    ):
        assert torch.equal(x, y), name
    assert a.config["train"]["valid_auc"] == b.config["train"]["valid_auc"]


def test_missing_label_and_columns_are_named(small: str, tmp_path) -> None:
    out = str(tmp_path / "m.pt")
    result = _run(small, "--label", "late", "--dense", "hour,wind", "--sparse", "carrier*gate",
                  "-o", out)  # fmt: skip
    assert result.exit_code == 1
    assert "label column 'late' not found" in result.output
    assert "'wind', 'gate'" in result.output and "Columns are: month" in result.output
    result = _run(small, "--label", "delayed", "--sparse", "carrier", "--split", "month=>3",
                  "-o", out)  # fmt: skip
    assert result.exit_code == 1 and "neither a fraction" in result.output
    result = _run(str(tmp_path / "nope.parquet"), "--label", "delayed", "--sparse", "carrier",
                  "-o", out)  # fmt: skip
    assert result.exit_code == 1 and "does not exist" in result.output
    result = _run(small, "--label", "carrier", "--sparse", "origin", "-o", out)
    assert result.exit_code == 1 and "must be 0/1 numbers" in result.output


def test_cli_without_torch_says_how_to_install(small: str, monkeypatch) -> None:
    import sys

    # Forget the loaded models package and make `import torch` fail, as without the extra.
    for name in [m for m in sys.modules if m.startswith("memrec_infer.models")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torch", None)
    result = _run(small, "--label", "delayed", "--sparse", "carrier", "-o", "x.pt")
    assert result.exit_code == 1 and "pip install 'memrec-infer[train]'" in result.output


def test_auc_matches_pairwise_definition() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.random(300), 1)  # many ties
    pos, neg = s[y == 1], s[y == 0]
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert auc(y, s) == pytest.approx(pairs, abs=1e-12)
    assert auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert np.isnan(auc(np.ones(3), np.arange(3.0)))


def _train_args(data: str, out) -> list[str]:
    return [data, "--label", "delayed", "--dense", DENSE, "--sparse", "carrier", "-o", str(out)]


def test_the_checkpoint_is_checked_before_training_and_replaced_only_with_force(small, tmp_path):
    out = tmp_path / "model.pt"
    out.write_bytes(b"an older checkpoint")
    result = _run(*_train_args(small, out))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr == f"Error: {out} exists; pass --force to replace it\n"
    assert out.read_bytes() == b"an older checkpoint"
    result = _run(*_train_args(small, out), "--force", "-q")
    assert result.exit_code == 0, result.output
    load_checkpoint(out)
    # Never over the training data, nor into a directory that does not exist (before any
    # training: neither run prints an epoch).
    for bad, said in ((small, "the output would replace the input"),
                      (tmp_path / "no" / "m.pt", "does not exist; create it first")):  # fmt: skip
        result = _run(*_train_args(small, bad), "--force")
        assert result.exit_code == 1 and said in result.stderr and "logloss" not in result.output
    assert pq.read_table(small).num_rows == 3000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_a_failed_save_leaves_neither_a_partial_file_nor_a_traceback(small, tmp_path,
                                                                     monkeypatch):  # fmt: skip
    def disk_full(obj, f):
        with open(f, "wb") as fh:
            fh.write(b"half")
        raise RuntimeError("unexpected pos 23424 vs 23340")  # what torch says on a full disk

    monkeypatch.setattr(torch, "save", disk_full)
    result = _run(*_train_args(small, tmp_path / "m.pt"), "-q")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"{tmp_path / 'm.pt'}: cannot write the checkpoint" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--epochs", "0"], "--epochs must be >= 1, got 0"),
        (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
        (["--lr", "nan"], "--lr must be a finite number > 0, got nan"),
        (["--compression", "nan"], "--compression must be a finite number >= 1, got nan"),
        (["--dim", "-4"], "--dim must be >= 1, got -4"),
        (["--threads", "0"], "--threads must be >= 1, got 0"),
        (["--dense", "day,delayed"], "the label column 'delayed' is also given as a feature"),
        (["--sparse", "carrier,delayed*origin"], "the label column 'delayed' is also given"),
        (["--dense", "day,day"], "--dense names 'day' more than once"),
        (["--sparse", "carrier"], "--sparse names 'carrier' more than once"),
        (["--sparse", "origin*origin"], "--sparse 'origin*origin' crosses a column with itself"),
    ],
)
def test_settings_a_run_cannot_train_with_are_named(small, tmp_path, args, said):
    result = _run(*_train_args(small, tmp_path / "m.pt"), *args)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert said in result.stderr and "train logloss" not in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--transform", "distance=log1p", "--transform", "distance=identity"],
         "'distance' is given two transforms, log1p and identity"),
        (["--transform", "log1p", "--transform", "identity"], "two transforms for every column"),
        (["--split", "hour>=18", "--valid", FLIGHTS], "--split chooses validation rows from DATA"),
    ],
)  # fmt: skip
def test_options_that_contradict_each_other_are_usage_errors(small, tmp_path, args, said):
    # Before, the last transform won and --split was ignored beside --valid, silently.
    result = _run(*_train_args(small, tmp_path / "m.pt"), *args)
    assert result.exit_code == 2 and said in result.stderr, result.output
    assert list(tmp_path.iterdir()) == []


def test_no_rows_to_train_or_validate_on_is_named(small, tmp_path):
    empty = tmp_path / "empty.parquet"
    pq.write_table(pq.read_table(small).slice(0, 0), empty)
    out = tmp_path / "m.pt"
    result = _run(*_train_args(str(empty), out), "--split", "none")
    assert result.exit_code == 1 and f"{empty}: has no rows to train on" in result.stderr
    result = _run(*_train_args(small, out), "--valid", str(empty))
    assert result.exit_code == 1 and f"{empty}: has no rows to validate on" in result.stderr
    assert not out.exists()


def test_a_validation_set_of_one_class_says_so_instead_of_nan(small, tmp_path):
    one_class = tmp_path / "ones.parquet"
    t = pq.read_table(small)
    pq.write_table(t.filter(pc.equal(t.column("delayed"), 1)), one_class)
    result = _run(*_train_args(small, tmp_path / "m.pt"), "--valid", str(one_class))
    assert result.exit_code == 0 and "valid AUC n/a (labels of one class)" in result.stderr
