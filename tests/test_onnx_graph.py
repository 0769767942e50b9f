"""The dense ONNX graph against NumPy and torch implementations of docs/checkpoint.md's forward.

Also home of the small checkpoint builder the conversion tests share.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from memrec_infer.families import get_family
from memrec_infer.onnx_graph import OPSET, build_dense_graph

D = 4


def make_config(interaction: str = "dot", self_interaction: bool = False) -> dict:
    """A memrec_dlrm config: 3 dense columns, 3 sparse features, a shared memrec table."""
    rng = np.random.default_rng(7)

    def seeds(k: int) -> list[list[int]]:
        return [[int(v) for v in row] for row in rng.integers(0, 2**64, (k, 4), np.uint64)]

    return {
        "embedding_dim": D,
        "dense": [
            {"name": "distance", "transform": "log1p", "fill": 0.0},
            {"name": "year", "transform": "standard", "fill": 0.0, "mean": 2001.2, "std": 7.3},
            {"name": "hour", "transform": "identity", "fill": -1.0},
        ],
        "sparse": [
            {
                "name": "carrier",
                "columns": ["carrier"],
                "dtype": "string",
                "multi_hot": False,
                "table": "shared",
                "pooling": "sum",
            },
            {
                "name": "tailnum",
                "columns": ["tailnum"],
                "dtype": "int",
                "multi_hot": True,
                "table": "tailnum",
                "pooling": "mean",
            },
            {
                "name": "carrier*flight",
                "columns": ["carrier", "flight"],
                "dtype": "cross",
                "multi_hot": False,
                "table": "shared",
                "pooling": "sum",
            },
        ],
        "tables": [
            {
                "name": "shared",
                "kind": "memrec",
                "features": ["carrier", "carrier*flight"],
                "rows": 32,
                "k": 2,
                "token_seeds": seeds(2),
                "weight_rows": 8,
                "weight_cols": 2,
                "k_w": 3,
                "weight_seeds": seeds(3),
                "cardinality": 5000,
            },
            {"name": "tailnum", "kind": "full", "features": ["tailnum"], "rows": 11},
        ],
        "dense_arch": [8, D] if interaction == "dot" else [8, 5],
        "over_arch": [6, 1],
        "interaction": interaction,
        "self_interaction": self_interaction,
        "label": "delayed",
        "train": {"seed": 1, "auc": 0.71, "loss": float("nan")},
    }


def make_state(config: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with the names, shapes and dtypes of docs/checkpoint.md."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for t in config["tables"]:
        name = t["name"]
        if t["kind"] == "memrec":
            state[f"embeddings.{name}.token"] = torch.randn(t["rows"], D, generator=g)
            state[f"embeddings.{name}.weight"] = torch.randn(
                t["weight_rows"], t["weight_cols"], generator=g
            )
        else:
            state[f"embeddings.{name}.table"] = torch.randn(t["rows"], D, generator=g)
            state[f"embeddings.{name}.vocab"] = torch.arange(t["rows"] - 1) * 3 - 5
    n_f = len(config["sparse"])
    n_in = len(config["dense"])
    for i, w in enumerate(config["dense_arch"]):
        state[f"dense_arch.{i}.weight"] = torch.randn(w, n_in, generator=g) * 0.5
        state[f"dense_arch.{i}.bias"] = torch.randn(w, generator=g) * 0.1
        n_in = w
    if config["interaction"] == "dot":
        n_in = n_in + (n_f + 1) * n_f // 2 + (n_f + 1) * config["self_interaction"]
    else:
        n_in = n_in + n_f * D
    for i, w in enumerate(config["over_arch"]):
        state[f"over_arch.{i}.weight"] = torch.randn(w, n_in, generator=g) * 0.5
        state[f"over_arch.{i}.bias"] = torch.randn(w, generator=g) * 0.1
        n_in = w
    return state


def make_checkpoint(interaction: str = "dot", self_interaction: bool = False) -> dict:
    config = make_config(interaction, self_interaction)
    return {
        "format": "memrec-infer-checkpoint",
        "family": "memrec_dlrm",
        "family_revision": 1,
        "config": config,
        "state_dict": make_state(config),
    }


def as_numpy(checkpoint: dict) -> dict:
    return {
        **checkpoint,
        "state_dict": {k: v.numpy() for k, v in checkpoint["state_dict"].items()},
    }


def numpy_forward(config: dict, sd: dict, dense: np.ndarray, emb: np.ndarray) -> np.ndarray:
    """docs/checkpoint.md's forward pass, line by line, in float64 NumPy."""
    x = dense.astype(np.float64)
    for i in range(len(config["dense_arch"])):
        x = np.maximum(x @ sd[f"dense_arch.{i}.weight"].T + sd[f"dense_arch.{i}.bias"], 0)
    b, f = emb.shape[0], emb.shape[1]
    if config["interaction"] == "dot":
        t = np.concatenate([x[:, None, :], emb], axis=1)
        z = t @ t.transpose(0, 2, 1)
        extra = 1 if config["self_interaction"] else 0
        pairs = [(i, j) for i in range(f + 1) for j in range(i + extra)]
        r = np.concatenate([x, np.stack([z[:, i, j] for i, j in pairs], axis=1)], axis=1)
    else:
        r = np.concatenate([x, emb.reshape(b, f * D)], axis=1)
    y = r
    n = len(config["over_arch"])
    for i in range(n):
        y = y @ sd[f"over_arch.{i}.weight"].T + sd[f"over_arch.{i}.bias"]
        if i < n - 1:
            y = np.maximum(y, 0)
    return 1 / (1 + np.exp(-y[:, 0]))


def torch_forward(config: dict, sd: dict, dense: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    """The same text, written the way a DLRM implementation does it in torch."""
    x = dense
    for i in range(len(config["dense_arch"])):
        x = torch.relu(
            torch.nn.functional.linear(x, sd[f"dense_arch.{i}.weight"], sd[f"dense_arch.{i}.bias"])
        )
    b, f, _ = emb.shape
    if config["interaction"] == "dot":
        t = torch.cat([x.unsqueeze(1), emb], dim=1)
        z = torch.bmm(t, t.transpose(1, 2))
        offset = 0 if config["self_interaction"] else -1
        li, lj = torch.tril_indices(f + 1, f + 1, offset=offset)
        r = torch.cat([x, z[:, li, lj]], dim=1)
    else:
        r = torch.cat([x, emb.reshape(b, f * D)], dim=1)
    n = len(config["over_arch"])
    for i in range(n):
        r = torch.nn.functional.linear(r, sd[f"over_arch.{i}.weight"], sd[f"over_arch.{i}.bias"])
        if i < n - 1:
            r = torch.relu(r)
    return torch.sigmoid(r)[:, 0]


def run_graph(model: onnx.ModelProto, dense: np.ndarray, emb: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (score,) = sess.run(["score"], {"dense": dense, "embeddings": emb})
    return score


CASES = [("dot", False), ("dot", True), ("cat", False)]


@pytest.mark.parametrize("interaction,self_interaction", CASES)
@pytest.mark.parametrize("batch", [1, 37])
def test_graph_matches_numpy_and_torch(interaction, self_interaction, batch):
    ckpt = make_checkpoint(interaction, self_interaction)
    family = get_family("memrec_dlrm")
    npck = as_numpy(ckpt)
    assert family.validate(npck) == []
    model = build_dense_graph(family.to_spec(npck))

    rng = np.random.default_rng(batch)
    dense = rng.normal(size=(batch, 3)).astype(np.float32)
    emb = rng.normal(size=(batch, 3, D)).astype(np.float32)
    got = run_graph(model, dense, emb)
    assert got.shape == (batch,) and got.dtype == np.float32

    want = numpy_forward(ckpt["config"], npck["state_dict"], dense, emb)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    with torch.no_grad():
        want_t = torch_forward(
            ckpt["config"], ckpt["state_dict"], torch.from_numpy(dense), torch.from_numpy(emb)
        )
    np.testing.assert_allclose(got, want_t.numpy(), atol=1e-5, rtol=0)
    # The scores must actually vary with the input, or the comparison proves little.
    if batch > 1:
        assert np.ptp(got) > 1e-3


def test_self_interaction_changes_the_graph():
    """With self_interaction the diagonal enters the top MLP: a different score."""
    rng = np.random.default_rng(0)
    dense = rng.normal(size=(5, 3)).astype(np.float32)
    emb = rng.normal(size=(5, 3, D)).astype(np.float32)
    family = get_family("memrec_dlrm")
    scores = []
    for self_interaction in (False, True):
        spec = family.to_spec(as_numpy(make_checkpoint("dot", self_interaction)))
        scores.append(run_graph(build_dense_graph(spec), dense, emb))
    assert not np.allclose(scores[0], scores[1])


def test_graph_signature_and_empty_batch():
    spec = get_family("memrec_dlrm").to_spec(as_numpy(make_checkpoint()))
    model = build_dense_graph(spec)
    assert model.opset_import[0].version == OPSET
    dims = [
        [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
        for i in model.graph.input
    ]
    assert [i.name for i in model.graph.input] == ["dense", "embeddings"]
    assert dims == [["B", 3], ["B", 3, D]]
    out = run_graph(model, np.zeros((0, 3), np.float32), np.zeros((0, 3, D), np.float32))
    assert out.shape == (0,)
