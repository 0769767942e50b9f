"""The trainer through the CLI: a tiny run writes a checkpoint that loads and predicts."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
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
