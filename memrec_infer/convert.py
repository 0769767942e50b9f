"""The conversion pipeline: checkpoint in, verified model directory out.

The steps are fixed; a family adapter only maps tensors to a spec:

1. check the output path (an existing non-empty directory needs ``force``);
2. read the checkpoint with the allow-listed reader (no torch, no code from the file);
3. validate it with its family's adapter (every problem reported at once);
4. build the spec, check its tables fit the token dtype (float16: ``|x| <= 65504``), build the
   dense ONNX graph;
5. write into a temporary directory next to the output (tables rounded to float16 on request);
6. re-open it with ``verify=True`` and run the graph once on a zero batch with ONNX Runtime;
7. rename it into place (the old directory is removed only after the new one is complete).
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint_reader import read_checkpoint
from .dense_session import open_dense_session
from .errors import CheckpointError, InvalidModelError, OutputPathError
from .families import get_family
from .model_dir import read_model_dir, write_model_dir, writer_versions
from .onnx_graph import OPSET, build_dense_graph
from .token_dtype import DEFAULT_TOKEN_DTYPE, check_token_dtype, check_token_range

__all__ = ["convert", "default_output_dir"]

Log = Callable[[str], None]


def default_output_dir(checkpoint: str | Path) -> Path:
    """Where ``convert`` writes when no output is given: next to the checkpoint.

    ``runs/model.pt`` -> ``runs/model/``; a checkpoint without a suffix, ``runs/model``,
    -> ``runs/model.memrec/``.
    """
    checkpoint = Path(checkpoint)
    if checkpoint.suffix:
        return checkpoint.with_suffix("")
    return checkpoint.with_name(checkpoint.name + ".memrec")


def _check_output(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise OutputPathError(f"output {out} exists and is not a directory; choose another -o")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise OutputPathError(
            f"output directory {out} exists and is not empty; pass --force to replace it"
        )


def _sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            sha.update(block)
    return sha.hexdigest()


def _smoke_test(directory: Path) -> None:
    """Re-open the written directory with every check and run the graph on a zero batch."""
    model = read_model_dir(directory, verify=True)
    m = model.manifest
    batch = 2
    feeds = {
        "dense": np.zeros((batch, len(m["dense"])), np.float32),
        "embeddings": np.zeros((batch, len(m["sparse"]), m["embedding_dim"]), np.float32),
    }
    session = open_dense_session(model.onnx_path, m, threads=1)
    (score,) = session.run(["score"], feeds)
    if score.shape != (batch,) or score.dtype != np.float32 or not np.isfinite(score).all():
        raise InvalidModelError(
            f"the converted dense graph returned {score.dtype} {score.shape} on a zero batch, "
            f"expected finite float32 ({batch},); this is a bug in memrec-infer convert"
        )


def convert(
    checkpoint: str | Path,
    out: str | Path | None = None,
    force: bool = False,
    log: Log | None = None,
    token_dtype: str = DEFAULT_TOKEN_DTYPE,
) -> dict[str, Any]:
    """Convert a checkpoint into a model directory.

    Parameters
    ----------
    checkpoint : str or Path
        A ``torch.save`` checkpoint of a supported family (docs/checkpoint.md).
    out : str or Path, optional
        The model directory to create; default :func:`default_output_dir`.
    force : bool
        Replace ``out`` if it exists and is not empty.
    log : callable, optional
        Receives one progress line per step.
    token_dtype : {"float32", "float16"}
        How ``tokens.npy`` stores the table rows. float16 halves their bytes; each value is
        rounded to nearest even (11 significant bits), so scores differ from the checkpoint's
        by that rounding (docs/model-format.md).

    Returns
    -------
    dict
        The written manifest, with ``"path"`` added (the output directory as a string).

    Raises
    ------
    ValueError
        ``token_dtype`` is not a supported name.
    CheckpointError
        The checkpoint is unreadable, unsafe, of an unknown family, fails validation (every
        problem listed), or holds a table value that ``token_dtype`` cannot store.
    OutputPathError
        The output path is taken (and ``force`` is False) or is not a directory.
    InvalidModelError
        The written directory failed its re-check.
    """
    say = log or (lambda _msg: None)
    check_token_dtype(token_dtype)
    checkpoint = Path(checkpoint)
    out = Path(out) if out is not None else default_output_dir(checkpoint)
    _check_output(out, force)

    say(f"reading {checkpoint}")
    obj = read_checkpoint(checkpoint)
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"{checkpoint} holds a {type(obj).__name__}, expected the dict of docs/checkpoint.md "
            "with 'family', 'config' and 'state_dict'"
        )
    family = get_family(obj.get("family"))
    say(f"validating as family {family.name}")
    problems = family.validate(obj)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise CheckpointError(
            f"{checkpoint} does not match family {family.name} ({len(problems)} problem(s)):\n"
            f"{lines}"
        )
    spec = family.to_spec(obj)
    # write_model_dir checks this too; checking here refuses before any directory is made.
    check_token_range(spec, token_dtype, str(checkpoint))
    say("building the dense graph")
    graph = build_dense_graph(spec)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        say(f"writing {len(spec.tables)} table(s), {token_dtype} token rows")
        source = {
            "checkpoint": checkpoint.name,
            "sha256": _sha256(checkpoint),
            "train": _jsonable(spec.train),
        }
        manifest = write_model_dir(
            spec, tmp, graph, OPSET, source, writer_versions(), token_dtype=token_dtype
        )
        say("verifying the written directory")
        _smoke_test(tmp)
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    say(f"wrote {out}")
    return {**manifest, "path": str(out)}


def _replace(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` to ``out``; an old ``out`` is removed only afterwards."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        out.rename(old / out.name)
    try:
        tmp.rename(out)
    except OSError:
        if old is not None:
            (old / out.name).rename(out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _jsonable(value: Any) -> Any:
    """The free-form ``train`` record as strict JSON (NaN/inf -> None, arrays -> lists)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist()) if value.size <= 1024 else f"<array {value.shape}>"
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)
