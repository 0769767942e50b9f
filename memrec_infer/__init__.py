"""memrec-infer: a CPU inference engine for MEM-REC compressed recommendation models.

``import memrec_infer`` never imports torch.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .errors import (
    CheckpointError,
    InputDataError,
    InvalidModelError,
    MemrecError,
    OutputPathError,
    SchemaMismatchError,
)

if TYPE_CHECKING:
    from .runtime import Model

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "InputDataError",
    "InvalidModelError",
    "MemrecError",
    "OutputPathError",
    "SchemaMismatchError",
    "__version__",
    "load",
]


def load(
    path: str | os.PathLike[str], *, threads: int | None = None, verify: bool = False
) -> Model:
    """Open a model directory written by ``memrec-infer convert``.

    See :func:`memrec_infer.runtime.load`. Imported lazily so that ``import memrec_infer`` stays
    light (no Numba or ONNX Runtime until a model is loaded).
    """
    from .runtime import load as _load

    return _load(path, threads=threads, verify=verify)
