"""Saving and loading ``memrec_dlrm`` checkpoints (``docs/checkpoint.md``).

The pickle holds plain data only (dict, list, str, int, float, bool, None) besides the
state_dict's tensors, so the converter can read it without torch through an allow-listed
unpickler; :func:`save_checkpoint` refuses anything else rather than write a file the
converter would refuse later.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from memrec_infer.errors import CheckpointError, OutputPathError
from memrec_infer.prep import Batch, FeaturePrep, PreparedBatch

from .dlrm import DLRM, build_dlrm

FORMAT = "memrec-infer-checkpoint"
FAMILY = "memrec_dlrm"
FAMILY_REVISION = 1

_PLAIN_SCALARS = (str, int, float, bool, type(None))


def _check_plain(obj: Any, where: str) -> None:
    """Raise CheckpointError naming the first value in ``obj`` that is not plain data."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, str):
                raise CheckpointError(
                    f"config key {key!r} at {where} is a {type(key).__name__}; "
                    "config keys must be str"
                )
            _check_plain(value, f"{where}.{key}")
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            _check_plain(value, f"{where}[{i}]")
    elif not isinstance(obj, _PLAIN_SCALARS) or type(obj).__module__ != "builtins":
        raise CheckpointError(
            f"config value at {where} is a {type(obj).__module__}.{type(obj).__name__}; "
            "the config may hold only dict, list, str, int, float, bool and None "
            "(convert NumPy scalars with int()/float() and tuples to lists)"
        )


def save_checkpoint(model: DLRM, config: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write ``model`` and its ``config`` as a ``memrec_dlrm`` checkpoint.

    Parameters
    ----------
    model : DLRM
        The trained model; its state_dict names follow ``docs/checkpoint.md``.
    config : dict
        The checkpoint config (``docs/checkpoint.md``), plain Python types only.
    path : str or PathLike
        The ``.pt`` file to write (replaced if it exists, only once the new one is complete).

    Raises
    ------
    memrec_infer.errors.OutputPathError
        The file cannot be written (a missing directory, a full disk).
    """
    config = dict(config)
    _check_plain(config, "config")
    # A plain dict of contiguous, detached tensors: an OrderedDict (and its _metadata) would
    # need more allow-listed globals, and a view would save its whole underlying storage.
    state = {name: t.detach().contiguous().clone() for name, t in model.state_dict().items()}
    checkpoint = {
        "format": FORMAT,
        "family": FAMILY,
        "family_revision": FAMILY_REVISION,
        "config": config,
        "state_dict": state,
    }
    # Under a temporary name in the same directory, renamed into place once complete: a full
    # disk or a Ctrl-C leaves no half-written checkpoint (nor a damaged old one).
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    temp = os.path.join(folder, f".{name}.tmp-{os.getpid()}")
    try:
        torch.save(checkpoint, temp)
        os.replace(temp, path)
    except BaseException as exc:
        if os.path.lexists(temp):
            os.remove(temp)
        if isinstance(exc, (OSError, RuntimeError)):  # torch reports a short write as RuntimeError
            raise OutputPathError(f"{path}: cannot write the checkpoint: {exc}") from exc
        raise


class TorchModel:
    """A loaded checkpoint: the PyTorch model, its config and its feature prep.

    Scores raw columns exactly as the engine does (same :class:`FeaturePrep`), so the two
    can be compared row by row.
    """

    def __init__(self, model: DLRM, config: Mapping[str, Any]) -> None:
        self.model = model.eval()
        self.config = dict(config)
        self.prep = FeaturePrep(dense=self.config["dense"], sparse=self.config["sparse"])

    def predict_prepared(self, pb: PreparedBatch) -> np.ndarray:
        """Probabilities float32 [B] of an already prepared batch."""
        with torch.no_grad():
            out = self.model(
                torch.from_numpy(pb.dense),
                torch.from_numpy(pb.values),
                torch.from_numpy(pb.offsets),
            )
        return out.numpy().astype(np.float32, copy=False)

    def predict(self, batch: Batch) -> np.ndarray:
        """Probabilities of raw rows.

        Parameters
        ----------
        batch : pyarrow Table or RecordBatch, or dict of column name -> numpy array
            The model's input columns (``self.prep.columns``); others are ignored.

        Returns
        -------
        float32 array [B]
        """
        return self.predict_prepared(self.prep(batch))


def load_checkpoint(path: str | os.PathLike) -> TorchModel:
    """Read a ``memrec_dlrm`` checkpoint written by :func:`save_checkpoint`.

    Raises
    ------
    CheckpointError
        If the file is not such a checkpoint or its tensors do not match its config.
    """
    try:
        ckpt = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint file") from None
    except Exception as exc:
        raise CheckpointError(
            f"{path}: not a readable torch checkpoint of plain data and tensors ({exc})"
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: expected a dict with format {FORMAT!r} (written by memrec-infer train), "
            f"found {type(ckpt).__name__} with format "
            f"{ckpt.get('format') if isinstance(ckpt, dict) else None!r}"
        )
    if ckpt.get("family") != FAMILY or ckpt.get("family_revision") != FAMILY_REVISION:
        raise CheckpointError(
            f"{path}: expected family {FAMILY!r} revision {FAMILY_REVISION}, found "
            f"{ckpt.get('family')!r} revision {ckpt.get('family_revision')!r}"
        )
    config = ckpt["config"]
    try:
        model = build_dlrm(config)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid config: {exc!r}") from exc
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: state_dict does not match its config: {exc}") from exc
    return TorchModel(model, config)
