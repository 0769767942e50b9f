"""The conversion pipeline: checkpoint in, verified model directory out.

The steps are fixed; a family adapter only maps tensors to a spec:

1. check the output path: an existing non-empty directory needs ``force``, which replaces only
   a model directory (manifest.json and model files, nothing else); the output must not hold
   the checkpoint or the current directory, and its parent must be creatable and writable;
2. read the checkpoint with the allow-listed reader (no torch, no code from the file);
3. validate it with its family's adapter (every problem reported at once);
4. build the spec, check its tables fit the token dtype (float16: ``|x| <= 65504``), build the
   dense ONNX graph;
5. write into a temporary directory next to the output (tables rounded to float16 on request);
6. re-open it with ``verify=True`` and run the graph once on a zero batch with ONNX Runtime;
7. rename it into place (the old directory is removed only after the new one is complete).

Any failure removes the temporary directory and any parent directory convert created.
"""

from __future__ import annotations

import hashlib
import os
import secrets
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
from .model_dir import (
    DENSE_ONNX,
    MANIFEST,
    TOKENS,
    VOCAB,
    WEIGHTS,
    read_model_dir,
    write_model_dir,
    writer_versions,
)
from .onnx_graph import OPSET, build_dense_graph
from .token_dtype import DEFAULT_TOKEN_DTYPE, check_token_dtype, check_token_range

__all__ = ["convert", "default_output_dir"]

Log = Callable[[str], None]

# What write_model_dir writes: --force replaces a directory holding these and nothing else.
_MODEL_FILES = frozenset({MANIFEST, TOKENS, WEIGHTS, VOCAB, DENSE_ONNX})


def default_output_dir(checkpoint: str | Path) -> Path:
    """Where ``convert`` writes when no output is given: next to the checkpoint.

    ``runs/model.pt`` -> ``runs/model/``; a checkpoint without a suffix, ``runs/model``,
    -> ``runs/model.memrec/``.
    """
    checkpoint = Path(checkpoint)
    if checkpoint.suffix:
        return checkpoint.with_suffix("")
    return checkpoint.with_name(checkpoint.name + ".memrec")


def _check_output(out: str | Path, checkpoint: Path, force: bool) -> Path:
    """Refuse an output convert must not write or replace, before any work; return it resolved.

    Resolved, so that ``.``, ``..`` and symlinks name the directory they stand for.
    """
    try:
        path = Path(out).resolve()
        source = checkpoint.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        raise OutputPathError(f"output {out}: cannot resolve the path: {exc}") from exc
    try:
        cwd = Path.cwd()
    except OSError:
        cwd = None  # the current directory was deleted: nothing of it to protect
    if cwd is not None and (path == cwd or path in cwd.parents):
        where = "is the current directory" if path == cwd else "holds the current directory"
        raise OutputPathError(
            f"output directory {path} {where}; convert replaces the output directory as a "
            "whole, so choose another -o or run it from another directory"
        )
    if path in source.parents:
        raise OutputPathError(
            f"output directory {path} holds the checkpoint {source}, which replacing the "
            "directory would delete; choose another -o or move the checkpoint out of it"
        )
    if os.path.lexists(path) and not os.path.isdir(path):
        raise OutputPathError(f"output {path} exists and is not a directory; choose another -o")
    if os.path.isdir(path):
        try:
            entries = list(path.iterdir())
        except OSError as exc:
            raise OutputPathError(
                f"output directory {path}: cannot list it: {exc.strerror}; choose another -o"
            ) from exc
        if entries and not force:
            raise OutputPathError(
                f"output directory {path} exists and is not empty; pass --force to replace it"
            )
        if entries and (why := _not_a_model_dir(entries)):
            raise OutputPathError(
                f"output directory {path} is not a model directory written by convert: {why}; "
                "--force only replaces a model directory (or an empty one), so choose another "
                "-o or empty it first"
            )
    _check_parent(path)
    return path


def _not_a_model_dir(entries: list[Path]) -> str | None:
    """Why a directory holding ``entries`` is no model directory --force may replace, or None."""
    other = sorted(
        p.name + "/" if p.is_dir() and not p.is_symlink() else p.name
        for p in entries
        if p.name not in _MODEL_FILES or (p.is_dir() and not p.is_symlink())
    )
    if other:
        shown = ", ".join(other[:5]) + (f" and {len(other) - 5} more" if len(other) > 5 else "")
        return f"it holds {shown}, which convert does not write"
    if MANIFEST not in {p.name for p in entries}:
        return f"it has no {MANIFEST}"
    return None


def _check_parent(path: Path) -> None:
    """Refuse early a parent that cannot be made: the nearest existing one is no writable dir.

    Cheap checks only; creating the directories later (:func:`_make_temp`) is the real test.
    """
    missing = _missing_parents(path)
    parent = missing[-1].parent if missing else path.parent
    if not os.path.isdir(parent):
        raise OutputPathError(
            f"output directory {path}: {parent} is not a directory; choose another -o"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(
            f"output directory {path}: cannot create it in {parent}, which is not writable; "
            "choose another -o"
        )


def _missing_parents(path: Path) -> list[Path]:
    """``path``'s parents that do not exist yet, innermost first."""
    missing = []
    parent = path.parent
    while not os.path.lexists(parent):
        missing.append(parent)
        parent = parent.parent
    return missing


def _make_temp(out: Path) -> tuple[Path, list[Path]]:
    """Create ``out``'s missing parents and a temporary directory beside it.

    Returns the temporary directory and the parents created (outermost first), for
    :func:`_remove_dirs` on failure. Nothing is left behind when this raises.
    """
    missing = _missing_parents(out)
    created: list[Path] = []
    try:
        for directory in reversed(missing):
            directory.mkdir()
            created.append(directory)
        return _new_dir(out.parent, f".{out.name}.tmp-"), created
    except OSError as exc:
        _remove_dirs(created)
        failed = Path(exc.filename) if exc.filename else None
        what = f"create {failed}" if failed in missing else f"create a directory in {out.parent}"
        raise OutputPathError(
            f"output directory {out}: cannot {what}: {exc.strerror or exc}; choose another -o"
        ) from exc


def _new_dir(parent: Path, prefix: str) -> Path:
    """A new, uniquely named directory in ``parent``, with the permissions of any directory the
    user makes (``0o777`` less the umask): ``tempfile.mkdtemp``'s are ``0o700``, and the model
    directory it becomes would be unreadable to everyone else, a server's user included."""
    while True:
        path = parent / f"{prefix}{secrets.token_hex(4)}"
        try:
            path.mkdir(0o777)
            return path
        except FileExistsError:
            continue


def _remove_dirs(created: list[Path]) -> None:
    """Remove the parents :func:`_make_temp` created, innermost first, if still empty."""
    for directory in reversed(created):
        try:
            directory.rmdir()
        except OSError:
            return  # something else was put there meanwhile: keep it and its parents


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
        Replace ``out`` if it exists and is not empty; only a model directory (manifest.json
        and model files, nothing else) is replaced, anything else is refused.
    log : callable, optional
        Receives one progress line per step.
    token_dtype : {"float32", "float16"}
        How ``tokens.npy`` stores the table rows. float16 halves their bytes; each value is
        rounded to nearest even (11 significant bits), so scores differ from the checkpoint's
        by that rounding (docs/model-format.md).

    Returns
    -------
    dict
        The written manifest, with ``"path"`` added (the output directory, resolved, as a
        string).

    Raises
    ------
    ValueError
        ``token_dtype`` is not a supported name.
    CheckpointError
        The checkpoint is unreadable, unsafe, of an unknown family, fails validation (every
        problem listed), or holds a table value that ``token_dtype`` cannot store.
    OutputPathError
        The output path is taken (and ``force`` is False), is not a directory, is a directory
        ``force`` must not replace (not a model directory; holding the checkpoint or the
        current directory), or cannot be created or moved into place (the OS's reason given).
    InvalidModelError
        The written directory failed its re-check.
    """
    say = log or (lambda _msg: None)
    check_token_dtype(token_dtype)
    checkpoint = Path(checkpoint)
    out = _check_output(
        out if out is not None else default_output_dir(checkpoint), checkpoint, force
    )

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

    tmp, created = _make_temp(out)
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
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_dirs(created)
        if isinstance(exc, OSError):  # disk full, a quota, permissions changed meanwhile
            raise OutputPathError(
                f"output directory {out}: cannot write the model: {exc.strerror or exc}; "
                "nothing was written"
            ) from exc
        raise
    say(f"wrote {out}")
    return {**manifest, "path": str(out)}


def _replace(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` to ``out``; an old ``out`` is removed only afterwards.

    On failure (an OS error, an interrupt) the old ``out`` is put back and the directory it was
    moved aside into is removed, so ``out`` is as it was.
    """
    old = None
    try:
        if os.path.lexists(out):
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            out.rename(old / out.name)
        tmp.rename(out)
    except BaseException as exc:
        if old is not None:
            _restore(old, out)
        if isinstance(exc, OSError):
            raise OutputPathError(
                f"output directory {out}: cannot move the new model directory into place: "
                f"{exc.strerror or exc}; {out} is unchanged"
            ) from exc
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _restore(old: Path, out: Path) -> None:
    """Put the ``out`` that :func:`_replace` moved into ``old`` back, and remove ``old``."""
    try:
        if os.path.lexists(old / out.name):
            (old / out.name).rename(out)
        old.rmdir()
    except OSError as exc:
        raise OutputPathError(
            f"output directory {out}: could not put it back after a failed replace: "
            f"{exc.strerror or exc}; the old directory is at {old / out.name}"
        ) from exc


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
