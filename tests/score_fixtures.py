"""Small real model directories for the scoring tests, built through the public pipeline.

A DLRM config is built with ``memrec_infer.models`` (random weights, seeded: scoring is checked
against ``Model.predict``, so the model need not be trained), saved as a checkpoint and
converted with ``memrec_infer.convert``. Import the fixtures into a test module to use them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from memrec_infer.convert import convert
from memrec_infer.kernels.hashing import draw_seeds
from memrec_infer.kernels.ids import string_id
from memrec_infer.models.checkpoint import save_checkpoint
from memrec_infer.models.dlrm import build_dlrm

REPO = Path(__file__).resolve().parent.parent
FLIGHTS = REPO / "data" / "flights.parquet"
FLIGHTS_ROWS = 4000  # enough for several batches and files, fast to score


def _seeds(rng: np.random.Generator, k: int) -> list[list[int]]:
    return [[int(v) for v in row] for row in draw_seeds(rng, k)]


def _memrec(rng: np.random.Generator, name: str, rows: int, features: list[str]) -> dict:
    return {
        "name": name, "kind": "memrec", "features": features, "rows": rows, "k": 2,
        "token_seeds": _seeds(rng, 2), "weight_rows": 16, "weight_cols": 2, "k_w": 2,
        "weight_seeds": _seeds(rng, 2),
    }  # fmt: skip


def _sparse(name: str, dtype: str, columns: list[str] | None = None, **kw: Any) -> dict:
    return {"name": name, "columns": columns or [name], "dtype": dtype, "multi_hot": False,
            "table": name.replace("*", "_x_"), "pooling": "sum", **kw}  # fmt: skip


def flights_config() -> dict:
    """Dense columns with nulls, string / int / cross features, a full table and a shared one."""
    rng = np.random.default_rng(7)
    origins = sorted(string_id(o) for o in ("EWR", "JFK", "LGA"))
    return {
        "embedding_dim": 16,  # a width the kernel tests compile anyway (test_kernels.tables)
        "dense": [
            {"name": "distance", "transform": "log1p", "fill": 0.0},
            {"name": "plane_year", "transform": "standard", "fill": 2000.0, "mean": 2000.0,
             "std": 7.0},
            {"name": "seats", "transform": "identity", "fill": 100.0},
            {"name": "hour", "transform": "identity", "fill": 0.0},
        ],
        "sparse": [
            _sparse("carrier", "string"),
            _sparse("flight", "int"),
            _sparse("origin", "string"),
            _sparse("manufacturer", "string"),
            _sparse("carrier*flight", "cross", ["carrier", "flight"]),
        ],
        "tables": [
            _memrec(rng, "carrier", 8, ["carrier"]),
            _memrec(rng, "flight", 64, ["flight"]),
            {"name": "origin", "kind": "full", "features": ["origin"], "rows": 4,
             "vocab": origins},
            _memrec(rng, "manufacturer", 16, ["manufacturer"]),
            _memrec(rng, "carrier_x_flight", 128, ["carrier*flight"]),
        ],
        "dense_arch": [16, 16],
        "over_arch": [16, 1],
        "interaction": "dot",
        "self_interaction": False,
        "label": "delayed",
        "train": {"note": "random weights, for scoring tests"},
    }  # fmt: skip


def bags_config() -> dict:
    """A multi-hot integer feature (mean pooling), a multi-hot string feature, an int one-hot."""
    rng = np.random.default_rng(11)
    return {
        "embedding_dim": 3,  # likewise
        "dense": [{"name": "x", "transform": "identity", "fill": -1.0}],
        "sparse": [
            _sparse("tags", "int", multi_hot=True, pooling="mean"),
            _sparse("words", "string", multi_hot=True),
            _sparse("user", "int"),
        ],
        "tables": [
            _memrec(rng, "tags", 32, ["tags"]),
            _memrec(rng, "words", 32, ["words"]),
            _memrec(rng, "user", 32, ["user"]),
        ],
        "dense_arch": [8, 4],
        "over_arch": [8, 1],
        "interaction": "cat",
        "label": "y",
        "train": {},
    }  # fmt: skip


def build_model_dir(config: dict, directory: Path, seed: int = 0) -> Path:
    """Checkpoint (random weights) -> converted model directory ``directory / "model"``."""
    vocabs = {t["name"]: t.pop("vocab") for t in config["tables"] if "vocab" in t}
    torch.manual_seed(seed)
    model = build_dlrm(config)
    with torch.no_grad():
        for name, vocab in vocabs.items():
            model.embeddings[name].vocab.copy_(torch.tensor(vocab, dtype=torch.int64))
    directory.mkdir(parents=True, exist_ok=True)
    ckpt = directory / "model.pt"
    save_checkpoint(model, config, ckpt)
    out = directory / "model"
    convert(ckpt, out)
    return out


@pytest.fixture(scope="session")
def flights_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A converted model over the flights columns."""
    return build_model_dir(flights_config(), tmp_path_factory.mktemp("flights_model"))


@pytest.fixture(scope="session")
def bags_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A converted model with multi-hot (list) features."""
    return build_model_dir(bags_config(), tmp_path_factory.mktemp("bags_model"))


@pytest.fixture(scope="session")
def flights_table():
    """The first ``FLIGHTS_ROWS`` rows of the bundled flights data."""
    return pq.read_table(FLIGHTS).slice(0, FLIGHTS_ROWS)
