"""Build the dense part of a model as one ONNX graph (bottom MLP, interaction, top MLP, sigmoid).

Inputs ``dense`` float32 [B, n_dense] and ``embeddings`` float32 [B, F, D] (B symbolic); output
``score`` float32 [B]. The graph reproduces the forward pass of docs/checkpoint.md:

- dot: ``T = concat(x[:, None], E)`` [B, F+1, D]; ``Z = T @ T^T``; ``Z`` is flattened to
  [B, (F+1)^2] and the kept lower-triangle pairs are gathered with constant flat indices
  ``i * (F+1) + j`` in facebookresearch/dlrm's order; ``R = concat(x, pairs)``.
- cat: ``R = concat(x, E.reshape(B, F*D))``.

Weights are initializers inside the file (the MLPs are small), built from NumPy without torch.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .spec import LayerSpec, ModelSpec, interaction_pairs

__all__ = ["DENSE_INPUT", "EMBEDDINGS_INPUT", "OPSET", "SCORE_OUTPUT", "build_dense_graph"]

# Opset 17: Gemm, MatMul, Gather, Squeeze(axes input) and Reshape(allowzero) are all stable
# there and ONNX Runtime 1.17+ runs it with its optimised CPU kernels.
OPSET = 17
IR_VERSION = 8  # ONNX 1.10+: readable by every onnxruntime the project supports
DENSE_INPUT = "dense"
EMBEDDINGS_INPUT = "embeddings"
SCORE_OUTPUT = "score"


class _Builder:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs: object) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def mlp(self, x: str, layers: tuple[LayerSpec, ...], tensors: dict[str, np.ndarray]) -> str:
        for layer in layers:
            w = self.const(layer.weight, tensors[layer.weight].astype(np.float32))
            b = self.const(layer.bias, tensors[layer.bias].astype(np.float32))
            # Gemm with transB keeps torch's [out, in] weight layout as stored.
            x = self.node("Gemm", [x, w, b], f"{layer.arch}.{layer.index}.out", transB=1)
            if layer.relu:
                x = self.node("Relu", [x], f"{layer.arch}.{layer.index}.relu")
        return x


def build_dense_graph(spec: ModelSpec) -> onnx.ModelProto:
    """The ONNX model of ``spec``'s dense part, checked with ``onnx.checker``.

    Parameters
    ----------
    spec : ModelSpec
        A validated spec (tensor shapes agree with its layers).

    Returns
    -------
    onnx.ModelProto
        Opset :data:`OPSET`; inputs ``dense`` [B, n_dense], ``embeddings`` [B, F, D];
        output ``score`` [B].
    """
    n_f, dim = spec.n_sparse, spec.embedding_dim
    g = _Builder()
    x = g.mlp(DENSE_INPUT, spec.dense_arch, spec.tensors)
    if spec.interaction == "dot":
        x3 = g.node("Unsqueeze", [x, g.const("axes_1", np.array([1], np.int64))], "dot.x3")
        t = g.node("Concat", [x3, EMBEDDINGS_INPUT], "dot.T", axis=1)
        tt = g.node("Transpose", [t], "dot.Tt", perm=[0, 2, 1])
        z = g.node("MatMul", [t, tt], "dot.Z")
        # Shape [0, (F+1)^2]: 0 copies B (allowzero=0), so an empty batch reshapes too.
        flat_shape = g.const("dot.flat_shape", np.array([0, (n_f + 1) ** 2], np.int64))
        zf = g.node("Reshape", [z, flat_shape], "dot.Zflat")
        pairs = interaction_pairs(n_f, spec.self_interaction)
        idx = np.array([i * (n_f + 1) + j for i, j in pairs], np.int64)
        zp = g.node("Gather", [zf, g.const("dot.pair_index", idx)], "dot.pairs", axis=1)
        r = g.node("Concat", [x, zp], "interaction", axis=1)
    else:
        flat_shape = g.const("cat.flat_shape", np.array([0, n_f * dim], np.int64))
        ef = g.node("Reshape", [EMBEDDINGS_INPUT, flat_shape], "cat.Eflat")
        r = g.node("Concat", [x, ef], "interaction", axis=1)
    y = g.mlp(r, spec.over_arch, spec.tensors)
    p = g.node("Sigmoid", [y], "probability")
    g.node("Squeeze", [p, g.const("axes_1b", np.array([1], np.int64))], SCORE_OUTPUT)

    graph = helper.make_graph(
        g.nodes,
        "memrec_dense",
        inputs=[
            helper.make_tensor_value_info(DENSE_INPUT, TensorProto.FLOAT, ["B", spec.n_dense]),
            helper.make_tensor_value_info(EMBEDDINGS_INPUT, TensorProto.FLOAT, ["B", n_f, dim]),
        ],
        outputs=[helper.make_tensor_value_info(SCORE_OUTPUT, TensorProto.FLOAT, ["B"])],
        initializer=g.inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="memrec-infer",
    )
    onnx.checker.check_model(model, full_check=True)
    return model
