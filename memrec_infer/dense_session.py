"""The dense graph in ONNX Runtime: one configured session, its inputs and output checked.

The graph's interface is read from the session, not with the ``onnx`` package, so serving a
model never imports ``onnx`` (0.1 s with ml_dtypes 0.6, ~1 s with 0.7): ``memrec-infer bench``
must start scoring within 1.5 s, and reading the graph twice would gain nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnxruntime as ort

from .errors import model_file_error

__all__ = ["open_dense_session"]

FLOAT = "tensor(float)"


def open_dense_session(path: Path, manifest: dict[str, Any], threads: int) -> ort.InferenceSession:
    """An ONNX Runtime session of the model directory's ``dense.onnx`` at ``path``.

    Parameters
    ----------
    path : the graph file
    manifest : the directory's manifest, which fixes the graph's interface: inputs ``dense``
        float32 ``[B, n_dense]`` and ``embeddings`` float32 ``[B, F, D]``, output ``score``
        float32 ``[B]``
    threads : ONNX Runtime's intra-op threads

    Raises
    ------
    memrec_infer.errors.InvalidModelError
        ONNX Runtime cannot load the file, or its inputs or output differ from the manifest's.
    """
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning ORT workers would compete with the Numba threads that run between ORT calls.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own untyped errors for unreadable graphs
        problem = f"ONNX Runtime cannot load it ({type(exc).__name__}: {exc})"
        raise model_file_error(path, problem) from None
    n_dense, n_f, dim = len(manifest["dense"]), len(manifest["sparse"]), manifest["embedding_dim"]
    want_in = {"dense": (FLOAT, [None, n_dense]), "embeddings": (FLOAT, [None, n_f, dim])}
    want_out = {"score": (FLOAT, [None])}
    got_in = {a.name: (a.type, _dims(a.shape)) for a in session.get_inputs()}
    got_out = {a.name: (a.type, _dims(a.shape)) for a in session.get_outputs()}
    if got_in != want_in or got_out != want_out:
        raise model_file_error(
            path,
            f"graph check failed: expected inputs {want_in} and outputs {want_out}, found "
            f"inputs {got_in} and outputs {got_out} (None = the batch axis)",
        )
    return session


def _dims(shape: list[Any]) -> list[int | None]:
    # ORT gives a fixed axis as an int, a named one ("B") as a str, an unnamed one as None.
    return [d if isinstance(d, int) else None for d in shape]
