"""Scores output: Parquet written under a temporary name and renamed into place on success.

An interrupted or failed run never leaves a file (or directory) under the output's name: rows go
to ``.<name>.tmp-<pid>`` in the output's directory (same filesystem, so the final
``os.replace`` is atomic), and that temporary is removed on any failure, ``KeyboardInterrupt``
included.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import OutputPathError

_PART = "part-{:05d}.parquet"
_PART_RE = re.compile(r"part-\d{5,}\.parquet")


_DEFERRED = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Ctrl-C and SIGTERM held back until the block is done, then delivered (main thread only:
    elsewhere Python runs no signal handlers anyway)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    handlers = {s: signal.signal(s, lambda n, _: held.append(n)) for s in _DEFERRED}
    try:
        yield
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
        if held:
            signal.raise_signal(held[0])


def _is_our_partitioned_output(path: str) -> bool:
    """True for a directory holding nothing but part files (what ``--partitioned`` writes)."""
    names = os.listdir(path)
    return all(_PART_RE.fullmatch(n) for n in names)


def writable_path(output: str) -> str:
    """``output`` made absolute, once its directory is known to exist and take new files (any
    output of the CLI: checked before the work, not after it).

    Raises
    ------
    OutputPathError
        The directory does not exist, or a file cannot be created in it.
    """
    if not output:
        raise OutputPathError("the output path is empty; name a file (or directory)")
    path = os.path.abspath(output)
    parent = os.path.dirname(path)
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise OutputPathError(f"{output}: {parent} is not a directory")
    if not os.path.isdir(parent):
        raise OutputPathError(
            f"{output}: the output directory {parent} does not exist; create it first"
        )
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.probe-", dir=parent)
    except OSError as exc:
        raise OutputPathError(f"{output}: cannot write in {parent}: {exc.strerror}") from exc
    os.close(fd)
    os.remove(probe)
    return path


def check_output(output: str, *, partitioned: bool, force: bool) -> str:
    """Check the output path can be written before any work starts; return it absolute.

    Raises
    ------
    OutputPathError
        The output's directory does not exist or cannot be written in, or the output exists
        and ``force`` is False, or it exists as something ``force`` must not destroy.
    """
    path = writable_path(output)
    if not partitioned and output.endswith(("/", os.sep)):
        raise OutputPathError(
            f"{output}: names a directory; expected a file path (or use --partitioned)"
        )
    if not os.path.lexists(path):
        return path
    if not force:
        raise OutputPathError(f"{output}: already exists; pass --force to overwrite it")
    mode = os.lstat(path).st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode) or stat.S_ISDIR(mode)):
        # The rename into place would replace the node itself (as root, /dev/null say).
        raise OutputPathError(
            f"{output}: is a device, FIFO or socket, not a file; --force replaces only files "
            "and directories of scores"
        )
    if os.path.isdir(path) and not os.path.islink(path):
        if not partitioned:
            raise OutputPathError(
                f"{output}: is a directory; expected a file path (or use --partitioned)"
            )
        if not _is_our_partitioned_output(path):
            raise OutputPathError(
                f"{output}: is a directory with files other than part-NNNNN.parquet; "
                "--force only replaces a directory of scores written by --partitioned"
            )
    return path


def check_not_input(path: str, inputs: Sequence[str], what: str = "the scores") -> None:
    """Refuse an output that is one of the input files or a directory above one: replacing it
    (``force``) would destroy the rows being scored.

    Raises
    ------
    OutputPathError
        ``path`` is, or holds, one of ``inputs`` (symbolic links resolved).
    """
    target = os.path.realpath(path)
    for item in inputs:
        real = os.path.realpath(item)
        if real == target or real.startswith(target + os.sep):
            raise OutputPathError(
                f"{path}: the output would replace the input {item}; write {what} elsewhere"
            )


class ScoresWriter:
    """Writes scores (and kept columns) to a temporary, then renames it into place.

    Use as a context manager: leaving the block with an exception removes the temporary;
    :meth:`commit` (called by the caller on success) closes and renames it.

    Parameters
    ----------
    path : the final output path, already checked by :func:`check_output`
    schema : the output's columns
    partitioned : write a directory of part files of at most ``part_rows`` rows each
    part_rows : rows per part file when ``partitioned``
    """

    def __init__(
        self, path: str, schema: pa.Schema, *, partitioned: bool = False, part_rows: int = 1 << 20
    ) -> None:
        if part_rows < 1:
            raise ValueError(f"part_rows must be >= 1, got {part_rows}")
        self.path = path
        self.schema = schema
        self.partitioned = partitioned
        self.part_rows = part_rows
        self.temp = os.path.join(
            os.path.dirname(path), f".{os.path.basename(path)}.tmp-{os.getpid()}"
        )
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._part = -1
        self._part_rows = 0
        self._committed = False

    def __enter__(self) -> ScoresWriter:
        try:
            if self.partitioned:
                os.mkdir(self.temp)
            else:
                self._writer = self._open(self.temp)
        except BaseException as exc:
            # ``with`` calls __exit__ only once this returns: a failure, or a signal (SIGTERM,
            # Ctrl-C) just after the temporary was created, must remove it here.
            self._discard()
            if isinstance(exc, OSError):
                raise self._error(exc) from exc
            raise
        return self

    def _error(self, exc: OSError) -> OutputPathError:
        # Disk full, permissions changed under a running job, and the like.
        reason = exc.strerror or str(exc)
        return OutputPathError(f"{self.path}: cannot write the scores ({self.temp}): {reason}")

    def _open(self, path: str) -> pq.ParquetWriter:
        return pq.ParquetWriter(path, self.schema, write_page_checksum=True)

    def _next_part(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._part += 1
        self._part_rows = 0
        self._writer = self._open(os.path.join(self.temp, _PART.format(self._part)))

    def write(self, table: pa.Table) -> None:
        """Append ``table`` (columns of ``schema``) to the output."""
        try:
            self._write(table)
        except OSError as exc:
            raise self._error(exc) from exc

    def _write(self, table: pa.Table) -> None:
        if not self.partitioned:
            self._writer.write_table(table)
            self.rows += table.num_rows
            return
        done = 0
        while done < table.num_rows:
            if self._writer is None or self._part_rows >= self.part_rows:
                self._next_part()
            take = min(table.num_rows - done, self.part_rows - self._part_rows)
            self._writer.write_table(table.slice(done, take))
            self._part_rows += take
            done += take
        self.rows += table.num_rows

    def commit(self) -> None:
        """Close the output and move it to its final name, replacing what ``force`` allowed."""
        try:
            self._commit()
        except OSError as exc:
            raise self._error(exc) from exc

    def _commit(self) -> None:
        if self.partitioned and self._writer is None:
            # No rows at all: one empty part still carries the schema for readers.
            self._next_part()
        self._writer.close()
        self._writer = None
        if self.partitioned and os.path.lexists(self.path):
            # A directory cannot be replaced atomically while it exists: move it aside first,
            # so the new scores are in place before the old ones are deleted. Ctrl-C or SIGTERM
            # between the two renames would leave neither under the output's name.
            old = self.temp + ".old"
            with _signals_deferred():
                os.replace(self.path, old)
                try:
                    os.replace(self.temp, self.path)
                except OSError:
                    os.replace(old, self.path)  # the old output back where it was
                    raise
                self._committed = True
                if os.path.isdir(old):
                    shutil.rmtree(old)
                else:
                    os.remove(old)
        else:
            os.replace(self.temp, self.path)
        self._committed = True

    def _discard(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except (OSError, pa.ArrowException):
                pass  # the temporary is removed below whatever state it is in
            self._writer = None
        if os.path.isdir(self.temp):
            shutil.rmtree(self.temp, ignore_errors=True)
        elif os.path.lexists(self.temp):
            os.remove(self.temp)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._committed:
            self._discard()
