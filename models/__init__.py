"""PyTorch side of memrec-infer: MEM-REC embedding bags, the DLRM, training and checkpoints.

Installed as ``memrec_infer.models``; needs the ``train`` extra (torch). The engine never
imports it.
"""

from __future__ import annotations

from .checkpoint import TorchModel, load_checkpoint, save_checkpoint

__all__ = ["TorchModel", "load_checkpoint", "save_checkpoint"]
