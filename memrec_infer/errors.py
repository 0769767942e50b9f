"""The library's exceptions. Only the CLI turns them into ``click.ClickException``."""

from __future__ import annotations

from pathlib import Path


class MemrecError(Exception):
    """Base class of every error memrec-infer raises on purpose (bad input, bad files)."""


class InvalidModelError(MemrecError):
    """A model directory is missing, corrupted or of an unsupported format."""


def model_file_error(path: Path, check: str) -> InvalidModelError:
    """The error for a model directory's file ``path`` that failed ``check``, naming both."""
    return InvalidModelError(f"model directory {path.parent}: {path.name}: {check}")


class CheckpointError(MemrecError):
    """A checkpoint cannot be read, is unsafe, or does not match its family."""


class SchemaMismatchError(MemrecError):
    """Input columns do not match what the model expects (missing, wrong type)."""


class InputDataError(MemrecError):
    """Input data cannot be read or holds values the model cannot take."""


class BadValueError(InputDataError):
    """A value the model cannot take, at ``row`` of the batch being prepared (0-based); a
    caller that knows where the batch came from names the file and row instead."""

    def __init__(self, row: int, detail: str) -> None:
        super().__init__(f"row {row:,} of the batch: {detail}")
        self.row = row
        self.detail = detail


class OutputPathError(MemrecError):
    """An output path cannot be used: it exists (without ``--force``) or its directory does not."""
