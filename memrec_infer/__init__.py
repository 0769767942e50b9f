"""memrec-infer: a CPU inference engine for MEM-REC compressed recommendation models.

``import memrec_infer`` never imports torch.
"""

from __future__ import annotations

from .errors import (
    CheckpointError,
    InputDataError,
    InvalidModelError,
    MemrecError,
    SchemaMismatchError,
)

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "InputDataError",
    "InvalidModelError",
    "MemrecError",
    "SchemaMismatchError",
    "__version__",
    "load",
]


def load(path):  # noqa: ANN001, ANN201 - re-exported below once the runtime module exists
    """Open a model directory; see :func:`memrec_infer.runtime.load`."""
    from .runtime import load as _load

    return _load(path)
