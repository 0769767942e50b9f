"""The engine against the PyTorch model it came from, on the flights test split (issue 2).

Each variant is trained briefly on a slice of months 1-10 (parity does not need a good model),
converted, and scored on every row of months 11-12 by both the engine (no torch) and
``memrec_infer.models.load_checkpoint(...).predict``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import memrec_infer
from memrec_infer.convert import convert
from memrec_infer.models import load_checkpoint
from memrec_infer.models.train import auc, train

FLIGHTS = Path(__file__).resolve().parent.parent / "data" / "flights.parquet"
DENSE = ["day", "sched_dep_time", "distance", "plane_year", "engines", "seats"]
SPARSE = ["carrier", "flight", "tailnum", "origin", "dest", "manufacturer", "carrier*flight"]


@pytest.fixture(scope="module")
def flights() -> tuple[pa.Table, pa.Table]:
    t = pq.read_table(FLIGHTS)
    # A multi-hot feature: the airports of the flight, as a bag of two strings.
    airports = pa.array(
        [[o, d] for o, d in zip(t["origin"].to_pylist(), t["dest"].to_pylist(), strict=True)]
    )
    t = t.append_column("airports", airports)
    is_test = pc.greater_equal(t["month"], 11)
    train_rows = t.filter(pc.invert(is_test))
    # A spread-out slice of the training months keeps each variant's training to seconds.
    train_rows = train_rows.take(np.arange(0, train_rows.num_rows, 12))
    return train_rows, t.filter(is_test)


VARIANTS = {
    "memrec-per-hash-sum": {"sparse": SPARSE},
    "memrec-scalar-mean-bag": {
        "sparse": [*SPARSE, "airports"],
        "scalar_weight": True,
        "pooling": "mean",
    },
    "memrec-shared-table": {"sparse": SPARSE, "share": True, "k": 3, "k_w": 1},
    "memrec-cat-interaction": {"sparse": SPARSE, "interaction": "cat", "transform": "log1p"},
    "full-tables": {"sparse": [*SPARSE, "airports"], "embedding": "full"},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_engine_matches_pytorch_on_flights_test_split(variant, flights, tmp_path):
    train_rows, test_rows = flights
    ckpt = tmp_path / "model.pt"
    train(train_rows, "delayed", DENSE, split=None, output=ckpt, seed=3, threads=1,
          log=None, **VARIANTS[variant])  # fmt: skip
    convert(ckpt, tmp_path / "model")

    engine = memrec_infer.load(tmp_path / "model").predict(test_rows)
    reference = load_checkpoint(ckpt).predict(test_rows)

    assert engine.dtype == np.float32 and engine.shape == (test_rows.num_rows,)
    np.testing.assert_allclose(engine, reference, rtol=0, atol=1e-5)
    labels = test_rows["delayed"].to_numpy()
    assert round(auc(labels, engine), 5) == round(auc(labels, reference), 5)
    # The model must have learned something, or parity would be trivially easy.
    assert np.std(engine) > 1e-3


@pytest.mark.parametrize("variant", ["memrec-per-hash-sum", "full-tables"])
def test_float16_tokens_match_pytorch_with_rounded_tables(variant, flights, tmp_path):
    """A float16 model scores as PyTorch does once its tables are rounded through float16."""
    train_rows, test_rows = flights
    ckpt = tmp_path / "model.pt"
    train(train_rows, "delayed", DENSE, split=None, output=ckpt, seed=3, threads=1,
          log=None, **VARIANTS[variant])  # fmt: skip
    convert(ckpt, tmp_path / "model", token_dtype="float16")

    engine = memrec_infer.load(tmp_path / "model").predict(test_rows)
    torch_model = load_checkpoint(ckpt)
    exact = torch_model.predict(test_rows)
    rounded = []
    for name, w in torch_model.model.named_parameters():
        if name.endswith((".token", ".table")):  # MEM-REC token rows, full-table rows
            w.data = w.data.half().float()
            rounded.append(name)
    reference = torch_model.predict(test_rows)

    assert len(rounded) == len(VARIANTS[variant]["sparse"])
    assert engine.dtype == np.float32 and engine.shape == (test_rows.num_rows,)
    np.testing.assert_allclose(engine, reference, rtol=0, atol=1e-5)
    # The tolerance above is wider than float16's effect on these scores (up to ~9e-6), so
    # also check that the engine follows the rounded tables, not the checkpoint's: its error
    # (~1e-7, as with float32 tables) is far below the rounding's.
    rounding = np.abs(exact - reference).max()
    assert rounding > 1e-6
    assert np.abs(engine - reference).max() < 0.1 * rounding
    assert np.std(engine) > 1e-3


def test_batch_size_does_not_change_scores(flights, tmp_path):
    train_rows, test_rows = flights
    ckpt = tmp_path / "model.pt"
    train(train_rows, "delayed", DENSE, sparse=SPARSE, split=None, output=ckpt, log=None,
          threads=1)  # fmt: skip
    model = memrec_infer.load(convert(ckpt, tmp_path / "model")["path"])
    rows = test_rows.slice(0, 300)
    whole = model.predict(rows)
    one_by_one = np.concatenate([model.predict(rows.slice(i, 1)) for i in range(rows.num_rows)])
    np.testing.assert_array_equal(whole, one_by_one)


def test_engine_never_imports_torch_or_onnx(flights, tmp_path):
    # torch is for training; onnx for building graphs (ONNX Runtime reads them on its own, and
    # importing onnx would add 0.1-1 s to every start).
    train_rows, _ = flights
    ckpt = tmp_path / "model.pt"
    train(train_rows.slice(0, 2000), "delayed", DENSE, sparse=SPARSE, split=None,
          output=ckpt, log=None, threads=1)  # fmt: skip
    convert(ckpt, tmp_path / "model")
    code = (
        "import sys, memrec_infer, pyarrow.parquet as pq;"
        f"m = memrec_infer.load({str(tmp_path / 'model')!r});"
        f"m.predict(pq.read_table({str(FLIGHTS)!r}).slice(0, 100));"
        "assert 'torch' not in sys.modules, 'torch was imported';"
        "assert 'onnx' not in sys.modules, 'onnx was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
