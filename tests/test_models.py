"""MEM-REC / full embedding bags against naive references; DLRM order; checkpoint round trip."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from memrec_infer.errors import CheckpointError
from memrec_infer.kernels.hashing import buckets as numba_buckets
from memrec_infer.kernels.hashing import draw_seeds
from memrec_infer.kernels.ids import string_id
from memrec_infer.models import load_checkpoint, save_checkpoint
from memrec_infer.models.dlrm import build_dlrm, interaction_pairs
from memrec_infer.models.embedding import (
    EmbeddingCollection,
    FeatureRoute,
    FullEmbeddingBag,
    MemRecEmbeddingBag,
)

torch.set_num_threads(1)


def _seeds(rng: np.random.Generator, k: int) -> list[list[int]]:
    return [[int(v) for v in row] for row in draw_seeds(rng, k)]


def naive_memrec(table: MemRecEmbeddingBag, tseeds, wseeds, ids, bag_offsets, slot, pooling):
    """Spec section 3, one value at a time, hashing with the Numba kernels."""
    m_tok = table.token.detach().numpy().astype(np.float64)
    w = table.weight.detach().numpy().astype(np.float64)
    h = numba_buckets(ids, np.array(tseeds, np.uint64), table.rows, slot)
    g = numba_buckets(ids, np.array(wseeds, np.uint64), table.weight_rows, slot)
    out = np.zeros((len(bag_offsets) - 1, m_tok.shape[1]))
    for b in range(len(bag_offsets) - 1):
        for p in range(bag_offsets[b], bag_offsets[b + 1]):
            alpha = w[g[p]].sum(axis=0)
            for j in range(len(tseeds)):
                a = alpha[0] if w.shape[1] == 1 else alpha[j]
                out[b] += a * m_tok[h[p, j]]
        if pooling == "mean" and bag_offsets[b + 1] > bag_offsets[b]:
            out[b] /= bag_offsets[b + 1] - bag_offsets[b]
    return out


@pytest.mark.parametrize("scalar", [False, True])
@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_memrec_bag_matches_naive_reference(scalar: bool, pooling: str) -> None:
    rng = np.random.default_rng(7)
    tseeds, wseeds = _seeds(rng, 3), _seeds(rng, 2)
    table = MemRecEmbeddingBag(37, 5, tseeds, 11, wseeds, scalar_weight=scalar)
    with torch.no_grad():  # random weights, so per-hash weights really differ
        table.weight.normal_()
    assert tuple(table.weight.shape) == (11, 1 if scalar else 3)
    ids = np.array([5, -1, 2**62 + 3, 5, 5, -(2**63), 123, 9, 2**40], dtype=np.int64)
    # bags: [5], [] (empty), [-1, 2**62+3, 5], [5] (repeat), [], [NULL, 123, 9, 2**40]
    offs = np.array([0, 1, 1, 4, 5, 5, 9], dtype=np.int64)
    for slot in (0, 2):
        got = table(torch.from_numpy(ids), torch.from_numpy(offs), slot, pooling)
        ref = naive_memrec(table, tseeds, wseeds, ids, offs, slot, pooling)
        np.testing.assert_allclose(got.detach().numpy(), ref, rtol=1e-5, atol=1e-6)
        assert np.all(got.detach().numpy()[[1, 4]] == 0)  # empty bags give zeros


def test_memrec_initial_alpha_is_one_and_grads_reach_both_tables() -> None:
    rng = np.random.default_rng(1)
    table = MemRecEmbeddingBag(50, 4, _seeds(rng, 2), 8, _seeds(rng, 3))
    ids = torch.tensor([1, 2, 3], dtype=torch.int64)
    offs = torch.tensor([0, 1, 3], dtype=torch.int64)
    h = numba_buckets(ids.numpy(), np.array(table.token_seeds.numpy(), np.uint64), 50, 0)
    expected = table.token.detach().numpy()[h].sum(axis=1)  # alpha == 1 at init
    got = table(ids, offs)
    np.testing.assert_allclose(got[0].detach().numpy(), expected[0], rtol=1e-6)
    got.sum().backward()
    assert table.token.grad.abs().sum() > 0 and table.weight.grad.abs().sum() > 0


def test_shared_table_slots_route_features_apart() -> None:
    rng = np.random.default_rng(3)
    tseeds, wseeds = _seeds(rng, 2), _seeds(rng, 2)
    shared = MemRecEmbeddingBag(1000, 4, tseeds, 50, wseeds)
    coll = EmbeddingCollection(
        {"shared": shared},
        [FeatureRoute("a", "shared", 0, "sum"), FeatureRoute("b", "shared", 1, "mean")],
    )
    # Same ids in both features: a different slot must give (almost surely) different rows.
    values = torch.tensor([10, 20, 10, 20, 20], dtype=torch.int64)
    offsets = torch.tensor([[0, 1, 2], [2, 3, 5]], dtype=torch.int64)
    out = coll(values, offsets).detach().numpy()
    assert out.shape == (2, 2, 4)
    ref_a = naive_memrec(shared, tseeds, wseeds, values.numpy()[:2], [0, 1, 2], 0, "sum")
    ref_b = naive_memrec(shared, tseeds, wseeds, values.numpy()[2:], [0, 1, 3], 1, "mean")
    np.testing.assert_allclose(out[:, 0], ref_a, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out[:, 1], ref_b, rtol=1e-5, atol=1e-7)
    assert not np.allclose(out[0, 0], out[0, 1])
    assert set(dict(coll.named_parameters())) == {"shared.token", "shared.weight"}


def test_full_bag_maps_vocab_and_oov_to_row_zero() -> None:
    vocab = torch.tensor([-(2**63), -5, 3, 2**62], dtype=torch.int64)
    table = FullEmbeddingBag(vocab, 3)
    ids = torch.tensor([3, 4, -(2**63), 2**62, 2**63 - 1, -6], dtype=torch.int64)
    assert table.row_of(ids).tolist() == [3, 0, 1, 4, 0, 0]
    offs = torch.tensor([0, 2, 2, 6], dtype=torch.int64)
    t = table.table.detach()
    got = table(ids, offs, pooling="mean").detach()
    torch.testing.assert_close(got[0], (t[3] + t[0]) / 2)
    torch.testing.assert_close(got[1], torch.zeros(3))
    torch.testing.assert_close(got[2], (t[1] + t[4] + t[0] + t[0]) / 4)
    assert FullEmbeddingBag(torch.zeros(0, dtype=torch.int64), 3).row_of(ids).tolist() == [0] * 6
    with pytest.raises(ValueError, match="strictly increasing"):
        FullEmbeddingBag(torch.tensor([3, 3]), 2)


def test_interaction_pairs_follow_dlrm_order() -> None:
    assert interaction_pairs(3, False) == ([1, 2, 2, 3, 3, 3], [0, 0, 1, 0, 1, 2])
    assert interaction_pairs(2, True) == ([0, 1, 1, 2, 2, 2], [0, 0, 1, 0, 1, 2])


def _config(kind: str, interaction: str = "dot", self_interaction: bool = False) -> dict:
    rng = np.random.default_rng(0)
    sparse = [
        {"name": "carrier", "columns": ["carrier"], "dtype": "string", "multi_hot": False,
         "table": "t0", "pooling": "sum"},
        {"name": "tags", "columns": ["tags"], "dtype": "int", "multi_hot": True,
         "table": "t0" if kind == "memrec" else "t1", "pooling": "mean"},
        {"name": "carrier*flight", "columns": ["carrier", "flight"], "dtype": "cross",
         "multi_hot": False, "table": "t2", "pooling": "sum"},
    ]  # fmt: skip
    if kind == "memrec":
        tables = [
            {"name": "t0", "kind": "memrec", "features": ["carrier", "tags"], "rows": 20, "k": 2,
             "token_seeds": _seeds(rng, 2), "weight_rows": 5, "weight_cols": 2, "k_w": 2,
             "weight_seeds": _seeds(rng, 2)},
            {"name": "t2", "kind": "memrec", "features": ["carrier*flight"], "rows": 30, "k": 3,
             "token_seeds": _seeds(rng, 3), "weight_rows": 7, "weight_cols": 1, "k_w": 1,
             "weight_seeds": _seeds(rng, 1)},
        ]  # fmt: skip
    else:
        tables = [
            {"name": "t0", "kind": "full", "features": ["carrier"], "rows": 3},
            {"name": "t1", "kind": "full", "features": ["tags"], "rows": 5},
            {"name": "t2", "kind": "full", "features": ["carrier*flight"], "rows": 2},
        ]
    return {
        "embedding_dim": 4,
        "dense": [
            {"name": "distance", "transform": "log1p", "fill": 0.0},
            {"name": "seats", "transform": "standard", "fill": 100.0, "mean": 120.0, "std": 30.0},
        ],
        "sparse": sparse,
        "tables": tables,
        "dense_arch": [8, 4],
        "over_arch": [6, 1],
        "interaction": interaction,
        "self_interaction": self_interaction,
        "label": "delayed",
        "train": {"seed": 0},
    }


def _batch() -> pa.Table:
    return pa.table(
        {
            "distance": pa.array([100, 2000, 0], pa.int32()),
            "seats": pa.array([150.0, None, 90.0], pa.float32()),
            "carrier": ["AA", "UA", None],
            "flight": pa.array([1, 2, 3], pa.int32()),
            "tags": pa.array([[1, 2], [], [7]], pa.list_(pa.int64())),
        }
    )


def _manual_forward(model, dense, e, interaction, self_interaction) -> torch.Tensor:
    """The forward pass of docs/checkpoint.md, written out independently of DLRM.logits."""
    x = dense
    for layer in model.dense_arch:
        x = torch.relu(layer(x))
    f = e.shape[1]
    if interaction == "dot":
        t = torch.cat([x[:, None, :], e], dim=1)
        feats = [x]
        for i in range(f + 1):
            for j in range(i + 1 if self_interaction else i):
                feats.append((t[:, i] * t[:, j]).sum(dim=1, keepdim=True))
        y = torch.cat(feats, dim=1)
    else:
        y = torch.cat([x, e.reshape(e.shape[0], -1)], dim=1)
    for layer in model.over_arch[:-1]:
        y = torch.relu(layer(y))
    return torch.sigmoid(model.over_arch[-1](y))[:, 0]


@pytest.mark.parametrize(
    ("interaction", "self_interaction"), [("dot", False), ("dot", True), ("cat", False)]
)
def test_dlrm_forward_matches_the_documented_pass(interaction: str, self_interaction: bool) -> None:
    torch.manual_seed(0)
    model = build_dlrm(_config("memrec", interaction, self_interaction)).eval()
    with torch.no_grad():
        for p in model.embeddings.parameters():
            p.normal_()  # large embeddings so the interaction terms dominate
    dense = torch.randn(3, 2)
    values = torch.tensor([1, 2, 3, 4, 5, 6, 7], dtype=torch.int64)
    offsets = torch.tensor([[0, 1, 2, 3], [3, 4, 4, 5], [5, 6, 7, 7]], dtype=torch.int64)
    with torch.no_grad():
        e = model.embeddings(values, offsets)
        got = model(dense, values, offsets)
        ref = _manual_forward(model, dense, e, interaction, self_interaction)
    torch.testing.assert_close(got, ref)
    expected_in = 4 + (10 if self_interaction else 6) if interaction == "dot" else 4 + 3 * 4
    assert model.over_arch[0].in_features == expected_in


@pytest.mark.parametrize("kind", ["memrec", "full"])
def test_checkpoint_round_trip(tmp_path, kind: str) -> None:
    torch.manual_seed(1)
    config = _config(kind)
    model = build_dlrm(config)
    if kind == "full":
        vocab = {
            "t0": [string_id("AA"), string_id("UA")],
            "t1": [1, 2, 7, 9],
            "t2": [42],
        }
        for name, ids in vocab.items():
            model.embeddings[name].vocab.copy_(torch.tensor(sorted(ids), dtype=torch.int64))
    path = tmp_path / "model.pt"
    save_checkpoint(model, config, path)
    loaded = load_checkpoint(path)
    assert loaded.config == config
    names = set(torch.load(path, weights_only=True)["state_dict"])
    if kind == "memrec":
        assert {"embeddings.t0.token", "embeddings.t0.weight", "embeddings.t2.weight"} <= names
    else:
        assert {"embeddings.t1.table", "embeddings.t1.vocab"} <= names
    assert "dense_arch.1.bias" in names and "over_arch.1.weight" in names
    assert not any("seeds" in n or "pair_" in n for n in names)
    got = loaded.predict(_batch())
    pb = loaded.prep(_batch())
    with torch.no_grad():
        ref = model.eval()(
            torch.from_numpy(pb.dense), torch.from_numpy(pb.values), torch.from_numpy(pb.offsets)
        ).numpy()
    assert got.dtype == np.float32 and got.shape == (3,)
    np.testing.assert_array_equal(got, ref)
    as_dict = {c: _batch().column(c).to_pylist() for c in _batch().column_names}
    as_dict["seats"] = np.array([150.0, np.nan, 90.0])
    np.testing.assert_array_equal(loaded.predict(as_dict), got)


def test_save_refuses_non_plain_config(tmp_path) -> None:
    config = _config("memrec")
    config["train"] = {"auc": np.float64(0.7)}
    with pytest.raises(CheckpointError, match=r"config\.train\.auc is a numpy\.float64"):
        save_checkpoint(build_dlrm(_config("memrec")), config, tmp_path / "x.pt")


def test_load_refuses_foreign_and_mismatched_files(tmp_path) -> None:
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="expected a dict with format"):
        load_checkpoint(tmp_path / "other.pt")
    config = _config("memrec")
    save_checkpoint(build_dlrm(config), config, tmp_path / "m.pt")
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
    ckpt["config"]["tables"][0]["rows"] = 21
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="state_dict does not match"):
        load_checkpoint(tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
