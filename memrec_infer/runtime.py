"""The serving runtime: a model directory in, ``predict(batch)`` out.

Three stages per batch, each callable on its own (benchmarks time them separately):

1. :meth:`Model.prepare` - feature prep (``memrec_infer.prep``): raw columns -> dense matrix and
   jagged ids;
2. :meth:`Model.embed` - one Numba kernel call pools every sparse feature -> ``[B, F, D]``;
3. :meth:`Model.dense_forward` - one ONNX Runtime run of the dense graph -> probabilities.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numba
import numpy as np

from . import fused_prep
from .dense_session import open_dense_session
from .errors import InvalidModelError
from .kernels.bags import BagPlan, FeatureTable, make_plan
from .kernels.hashing import seeds_from_hex
from .model_dir import ModelDir, read_model_dir
from .prep import Batch, FeaturePrep, PreparedBatch

# What a caller of :meth:`Model.load_kernels` tells its user when loading is slow: a first run.
COMPILING_NOTICE = (
    "compiling the feature prep and lookup kernels for this machine (once, a minute or two; "
    "later runs load them from Numba's cache)..."
)


def feature_tables(manifest: dict[str, Any]) -> list[FeatureTable]:
    """The kernel's description of every sparse feature, in the manifest's F order."""
    tables = {t["name"]: t for t in manifest["tables"]}
    out = []
    for s in manifest["sparse"]:
        t = tables[s["table"]]
        common = {
            "kind": t["kind"],
            "token_offset": int(t["token_offset"]),
            "rows": int(t["rows"]),
            "slot": int(s.get("slot", t["features"].index(s["name"]))),
            "pooling": s["pooling"],
        }
        if t["kind"] == "memrec":
            out.append(
                FeatureTable(
                    **common,
                    token_seeds=seeds_from_hex(t["token_seeds"]),
                    weight_offset=int(t["weight_offset"]),
                    weight_rows=int(t["weight_rows"]),
                    weight_cols=int(t["weight_cols"]),
                    weight_seeds=seeds_from_hex(t["weight_seeds"]),
                )
            )
        else:
            out.append(FeatureTable(**common, vocab_offset=int(t["vocab_offset"])))
    return out


class Model:
    """A loaded model directory. Use :func:`load`.

    Not meant for concurrent ``predict`` calls from several threads on one instance: each thread
    gets its own output buffer, but Numba's and ONNX Runtime's thread pools are shared.
    """

    def __init__(self, model_dir: ModelDir, threads: int | None = None) -> None:
        self.path = Path(model_dir.path)
        self.manifest: dict[str, Any] = model_dir.manifest
        # At most Numba's pool (the cores, unless NUMBA_NUM_THREADS says otherwise), for ONNX
        # Runtime too: more threads than cores only take turns on them.
        pool = numba.config.NUMBA_NUM_THREADS
        self.threads = min(threads or pool, pool)
        numba.set_num_threads(self.threads)
        self.prep = FeaturePrep(self.manifest["dense"], self.manifest["sparse"])
        try:
            self.plan: BagPlan = make_plan(
                feature_tables(self.manifest),
                model_dir.tokens,
                model_dir.weights,
                model_dir.vocab,
                huge_pages=True,  # MEM-REC tables (small) leave the memory map for huge pages
            )
        except ValueError as exc:
            raise InvalidModelError(
                f"{self.path}: tables do not match the manifest: {exc}"
            ) from exc
        graph = self.manifest["dense_graph"]
        self.session = open_dense_session(model_dir.onnx_path, self.manifest, self.threads)
        self._inputs = list(graph["inputs"])
        self._output = graph["output"]
        self._local = threading.local()

    @property
    def feature_names(self) -> list[str]:
        """Sparse feature names in F order."""
        return [s["name"] for s in self.manifest["sparse"]]

    @property
    def dense_names(self) -> list[str]:
        """Dense feature names in input order."""
        return [d["name"] for d in self.manifest["dense"]]

    def prepare(self, batch: Batch) -> PreparedBatch:
        """Stage 1: raw columns -> dense matrix and jagged ids."""
        return self.prep(batch)

    def embed(self, pb: PreparedBatch, out: np.ndarray | None = None) -> np.ndarray:
        """Stage 2: pooled embeddings float32 ``[B, F, D]`` of a prepared batch."""
        if out is None:
            out = self._buffer(pb.num_rows)
        return self.plan.lookup(pb.values, pb.offsets, out=out)

    def dense_forward(self, dense: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
        """Stage 3: the dense graph -> probabilities float32 ``[B]``."""
        if dense.shape[0] == 0:
            return np.zeros(0, dtype=np.float32)
        feeds = {self._inputs[0]: dense, self._inputs[1]: embeddings}
        return self.session.run([self._output], feeds)[0]

    def predict(self, batch: Batch) -> np.ndarray:
        """Probabilities float32 ``[B]`` for a batch of raw columns.

        Parameters
        ----------
        batch : pyarrow.Table, pyarrow.RecordBatch or dict of column name -> array
            The raw input columns named in the manifest (``self.prep.columns``); extra columns
            are ignored.
        """
        pb = self.prepare(batch)
        return self.dense_forward(pb.dense, self.embed(pb))

    def load_kernels(
        self,
        batch_sizes: Iterable[int],
        on_slow: Callable[[], None] | None = None,
        after_s: float = 1.0,
    ) -> None:
        """Load the kernels that batches of these sizes use, before the first batch: feature
        prep's (``fused_prep``) and the lookup's.

        The first run of a model's embedding width on a machine compiles them (about a minute
        each; Numba caches them on disk). ``on_slow`` is called once, from another thread, if
        loading is still going after ``after_s`` seconds, so a caller can say why it waits.
        """
        timer = threading.Timer(after_s, on_slow) if on_slow is not None else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            sizes = [int(b) for b in batch_sizes]
            if any(b < fused_prep.MAX_ROWS for b in sizes):
                fused_prep.load_kernel()
            self.plan.load_kernels(sizes)
        finally:
            if timer is not None:
                timer.cancel()

    def _buffer(self, rows: int) -> np.ndarray:
        """A reusable ``[rows, F, D]`` output (fresh large outputs page-fault on every call)."""
        buf = getattr(self._local, "buf", None)
        if buf is None or buf.shape[0] < rows:
            buf = self.plan.empty_output(max(rows, 1))  # aligned: large batches stream
            self._local.buf = buf
        return buf[:rows]


def load(
    path: str | os.PathLike[str], *, threads: int | None = None, verify: bool = False
) -> Model:
    """Open a model directory written by ``memrec-infer convert``.

    Parameters
    ----------
    path : the model directory
    threads : threads for both Numba and ONNX Runtime (default and most: all cores, or
        ``NUMBA_NUM_THREADS``); one number so the two pools do not fight over cores
    verify : also check every file's sha256 (reads every byte; sizes are always checked)

    Raises
    ------
    InvalidModelError
        The directory is missing, corrupted, or of an unsupported format version.
    """
    return Model(read_model_dir(Path(path), verify=verify), threads=threads)
