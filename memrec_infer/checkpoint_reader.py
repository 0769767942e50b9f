"""Read ``torch.save`` checkpoints without torch and without running code from them.

A ``torch.save`` file (torch >= 1.6) is a zip archive with one root folder::

    <root>/data.pkl       the pickled object; tensors are persistent references to storages
    <root>/data/<key>     the raw bytes of each storage
    <root>/byteorder      "little" or "big" (absent in old files: little)
    <root>/version        the serialization version

The pickle is read by :class:`_SafeUnpickler`, whose ``find_class`` only knows an explicit
allow-list: ``collections.OrderedDict``, the two tensor rebuild functions and the typed storage
classes. Every other global (``os.system``, ``builtins.eval``, ...) is refused *before* anything
is called, so a malicious checkpoint cannot run code. Tensors come back as NumPy arrays.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CheckpointError

__all__ = ["read_checkpoint"]

# torch storage class -> NumPy dtype (None: known to torch, no exact NumPy equivalent).
_STORAGE_DTYPES: dict[str, str | None] = {
    "DoubleStorage": "f8",
    "FloatStorage": "f4",
    "HalfStorage": "f2",
    "LongStorage": "i8",
    "IntStorage": "i4",
    "ShortStorage": "i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
    "BFloat16Storage": None,
    "ComplexFloatStorage": "c8",
    "ComplexDoubleStorage": "c16",
}


@dataclass(frozen=True)
class _StorageType:
    """Stands in for ``torch.<X>Storage``: only ever passed to ``persistent_load``."""

    name: str
    dtype: str | None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise CheckpointError(
            f"the checkpoint's pickle calls torch.{self.name}(...) directly; torch.save never "
            "does that, so the file was not written by torch.save and is refused"
        )


def _rebuild_tensor_v2(
    storage: np.ndarray,
    storage_offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> np.ndarray:
    """``torch._utils._rebuild_tensor_v2`` on a NumPy storage: a strided view made contiguous."""
    if not isinstance(storage, np.ndarray) or storage.ndim != 1:
        raise CheckpointError("a tensor in the checkpoint does not refer to a storage")
    size = tuple(int(s) for s in size)
    stride = tuple(int(s) for s in stride)
    offset = int(storage_offset)
    if len(size) != len(stride) or any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise CheckpointError(f"a tensor has an invalid size {size} / stride {stride}")
    numel = math.prod(size)  # Python ints: no overflow on hostile sizes
    if numel == 0:
        return np.zeros(size, dtype=storage.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if offset < 0 or last >= storage.shape[0]:
        raise CheckpointError(
            f"a tensor of size {size}, stride {stride}, offset {offset} reaches element {last} "
            f"of a storage of {storage.shape[0]} elements; the checkpoint is corrupted"
        )
    contiguous = tuple(math.prod(size[i + 1 :]) for i in range(len(size)))
    if all(n == 1 or s == c for n, s, c in zip(size, stride, contiguous, strict=True)):
        # Already C-ordered: a view of the storage, no copy.
        return storage[offset : offset + numel].reshape(size)
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=size, strides=tuple(s * item for s in stride), writeable=False
    )
    return np.ascontiguousarray(view)


def _rebuild_parameter(data: np.ndarray, requires_grad: bool, backward_hooks: Any) -> np.ndarray:
    """``torch._utils._rebuild_parameter``: a Parameter is its data."""
    return data


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name, dt) for name, dt in _STORAGE_DTYPES.items()},
}


class _SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves only allow-listed globals and reads storages from the zip."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, root: str, byteorder: str) -> None:
        super().__init__(io.BytesIO(data))
        self._archive = archive
        self._root = root
        self._byteorder = "<" if byteorder == "little" else ">"
        self._storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise CheckpointError(
                f"the checkpoint's pickle refers to {module}.{name}, which is not allowed: only "
                "plain data and tensors are read (no code runs from a checkpoint). Save a dict "
                "of plain Python values and tensors (see docs/checkpoint.md)"
            ) from None

    def persistent_load(self, pid: Any) -> np.ndarray:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError(f"unexpected persistent reference in the pickle: {pid!r:.80}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError(f"storage reference {key!r} has no torch storage type")
        if storage_type.dtype is None:
            raise CheckpointError(
                f"tensor storage {key!r} is torch.{storage_type.name}, which has no NumPy "
                "dtype; convert the tensors to float32 (tensor.float()) before torch.save"
            )
        if not isinstance(key, str) or "/" in key:
            raise CheckpointError(f"invalid storage key {key!r:.40} in the checkpoint")
        if key not in self._storages:
            self._storages[key] = self._load_storage(key, storage_type, int(numel))
        return self._storages[key]

    def _load_storage(self, key: Any, storage_type: _StorageType, numel: int) -> np.ndarray:
        member = f"{self._root}/data/{key}"
        try:
            raw = self._archive.read(member)
        except KeyError:
            raise CheckpointError(f"storage {member} is missing from the checkpoint") from None
        dtype = np.dtype(self._byteorder + storage_type.dtype)
        if len(raw) != numel * dtype.itemsize:
            raise CheckpointError(
                f"storage {member} has {len(raw)} bytes, expected {numel} x {dtype.itemsize}; "
                "the checkpoint is corrupted"
            )
        arr = np.frombuffer(raw, dtype=dtype)
        return arr.astype(arr.dtype.newbyteorder("=")) if not dtype.isnative else arr


def _root_of(archive: zipfile.ZipFile, path: Path) -> str:
    roots = [n[: -len("/data.pkl")] for n in archive.namelist() if n.endswith("/data.pkl")]
    roots = [r for r in roots if "/" not in r]
    if len(roots) != 1:
        raise CheckpointError(
            f"{path} is a zip file but not a torch.save checkpoint: expected exactly one "
            f"<root>/data.pkl, found {len(roots)} (a TorchScript archive from torch.jit.save "
            "is not supported; save model.state_dict() with torch.save)"
        )
    return roots[0]


def read_checkpoint(path: str | Path) -> Any:
    """Read a ``torch.save`` checkpoint as plain Python data with NumPy arrays for tensors.

    Parameters
    ----------
    path : str or Path
        A file written by ``torch.save`` (zip format, torch >= 1.6).

    Returns
    -------
    object
        The saved object: dicts (``OrderedDict`` kept), lists, tuples, str, int, float, bool,
        None, and ``numpy.ndarray`` in place of every tensor (C-contiguous, native byte order;
        contiguous tensors are read-only views of the storage bytes).

    Raises
    ------
    CheckpointError
        The file is missing, not a zip (legacy torch < 1.6 format, truncated), corrupted, or its
        pickle refers to anything outside the allow-list (named in the message).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a file")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            head = f.read(2)
        legacy = head[:1] == b"\x80"
        raise CheckpointError(
            f"{path} is not a torch.save zip archive"
            + (
                " (it looks like a legacy pickle from torch < 1.6; re-save it with "
                "torch.save(obj, path) from torch >= 1.6)"
                if legacy
                else " (not a zip file, or truncated: its zip directory was not found)"
            )
        )
    try:
        with zipfile.ZipFile(path) as archive:
            root = _root_of(archive, path)
            names = set(archive.namelist())
            byteorder = "little"
            if f"{root}/byteorder" in names:
                byteorder = archive.read(f"{root}/byteorder").decode("ascii").strip()
            if byteorder not in ("little", "big"):
                raise CheckpointError(f"{path}: unknown byteorder {byteorder!r}")
            data = archive.read(f"{root}/data.pkl")
            return _SafeUnpickler(data, archive, root, byteorder).load()
    except CheckpointError:
        raise
    # A damaged pickle stream fails in many ways inside the unpickler; all mean "corrupted".
    except (
        zipfile.BadZipFile,
        EOFError,
        OSError,
        pickle.UnpicklingError,
        struct.error,
        ValueError,
        TypeError,
        KeyError,
        IndexError,
    ) as exc:
        raise CheckpointError(
            f"{path} is corrupted or truncated ({type(exc).__name__}: {exc}); re-save or "
            "re-copy the checkpoint"
        ) from exc
