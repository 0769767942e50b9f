"""Batch scoring of Parquet input of any size: ``memrec-infer score`` as a Python function.

The input is streamed: a background thread reads and decodes the next batch
(:mod:`memrec_infer.parquet_input`) while the caller's thread scores the current one, and scores
are appended to the output as they come (:mod:`memrec_infer.parquet_output`), so memory stays
bounded by a few batches whatever the input's size. Rows come out in input order.

Example::

    from memrec_infer.scoring import score_parquet
    summary = score_parquet("model/", ["data/flights.parquet"], "scores.parquet",
                            keep=["flight"], threads=2)
    print(summary)
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TextIO

import numpy as np
import pyarrow as pa

from .errors import (
    BadValueError,
    InputDataError,
    InvalidModelError,
    MemrecError,
    SchemaMismatchError,
)
from .parquet_input import InputBatch, InputFile, find_inputs, iter_batches, read_schema
from .parquet_output import ScoresWriter, check_not_input, check_output
from .progress import Progress
from .readahead import readahead
from .runtime import COMPILING_NOTICE, Model, load

__all__ = ["DEFAULT_BATCH_SIZE", "ScoreSummary", "parse_mapping", "score_parquet"]

# Peak memory grows with the batch (ONNX Runtime holds the interaction and MLP activations,
# ~22 KB a row for a Criteo-sized DLRM): 16384 rows stay well under 1 GB, and are already
# large enough that per-call overheads do not show (bench/reports/score.md).
DEFAULT_BATCH_SIZE = 16384
SCORE_COLUMN = "score"
# Batches decoded ahead of the one being scored: one overlaps the scoring, one absorbs jitter.
_READAHEAD = 2


@dataclass(frozen=True)
class ScoreSummary:
    """What a scoring run did."""

    output: str
    rows: int
    seconds: float
    files: int

    @property
    def rows_per_second(self) -> float:
        """Rows scored per second of wall time, end to end."""
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        what = f"{self.rows:,} rows" if self.rows else "0 rows (the input has no rows)"
        return (
            f"scored {what} from {self.files:,} file(s) in {self.seconds:.2f} s "
            f"({self.rows_per_second:,.0f} rows/s) -> {self.output}"
        )


@dataclass(frozen=True)
class _Chunk:
    """A batch of ``batch_size`` input rows (fewer at the end) and where they came from."""

    table: pa.Table
    segments: tuple[tuple[str, int, int], ...]  # (file, first row, end row), in order

    def where(self) -> str:
        return " and ".join(f"rows {a:,}-{b - 1:,} of {path}" for path, a, b in self.segments)

    def locate(self, row: int) -> str:
        """Where the chunk's ``row`` (0-based) came from: ``"<file>: row <n>"``."""
        for path, a, b in self.segments:
            if row < b - a:
                return f"{path}: row {a + row:,}"
            row -= b - a
        raise IndexError(row)


def parse_mapping(pairs: Iterable[str]) -> dict[str, str]:
    """``["model_col=input_col", ...]`` -> ``{model_col: input_col}``.

    Raises
    ------
    SchemaMismatchError
        An item is not of the form ``model_col=input_col``, or names a model column twice.
    """
    out: dict[str, str] = {}
    for item in pairs:
        model_col, sep, input_col = item.partition("=")
        if not sep or not model_col or not input_col:
            raise SchemaMismatchError(f"--map {item!r}: expected MODEL_COLUMN=INPUT_COLUMN")
        if model_col in out:
            raise SchemaMismatchError(f"--map: model column {model_col!r} is mapped twice")
        out[model_col] = input_col
    return out


def _rechunk(batches: Iterator[InputBatch], rows: int) -> Iterator[_Chunk]:
    """Regroup record batches into chunks of exactly ``rows`` rows (the last may be shorter).

    Parquet yields batches as its row groups cut them; the kernels and ONNX Runtime run best on
    large, steady batches.
    """
    pending: list[InputBatch] = []
    have = 0
    for ib in batches:
        if ib.batch.num_rows == 0:
            continue
        pending.append(ib)
        have += ib.batch.num_rows
        while have >= rows:
            take: list[InputBatch] = []
            need = rows
            while need:
                head = pending[0]
                n = head.batch.num_rows
                if n <= need:
                    take.append(pending.pop(0))
                    need -= n
                else:
                    take.append(InputBatch(head.path, head.start, head.batch.slice(0, need)))
                    pending[0] = InputBatch(head.path, head.start + need, head.batch.slice(need))
                    need = 0
            have -= rows
            yield _make_chunk(take)
    if pending:
        yield _make_chunk(pending)


def _make_chunk(parts: list[InputBatch]) -> _Chunk:
    segments: list[tuple[str, int, int]] = []
    for p in parts:
        stop = p.start + p.batch.num_rows
        if segments and segments[-1][0] == p.path and segments[-1][2] == p.start:
            segments[-1] = (p.path, segments[-1][1], stop)
        else:
            segments.append((p.path, p.start, stop))
    return _Chunk(pa.Table.from_batches([p.batch for p in parts]), tuple(segments))


def _check_files(
    model: Model, files: list[InputFile], source: Mapping[str, str], keep: Sequence[str]
) -> pa.Schema:
    """Check every file against the model up front; return the schema to read with."""
    read_cols = list(dict.fromkeys([*source.values(), *keep]))
    schema = read_schema(files, read_cols)
    renamed_note = ""
    if any(m != i for m, i in source.items()):
        renamed_note = (
            " (after --map " + ", ".join(f"{m}={i}" for m, i in source.items() if m != i) + ")"
        )
    problems = []
    for f in files:
        try:
            model.prep.check_schema(_model_schema(f.schema, source), source=f.path)
        except SchemaMismatchError as exc:
            problems.append(str(exc))
    if not problems:
        # Each file's type is fine; the widened common type must be too (int32 + float -> double).
        try:
            model.prep.check_schema(
                _model_schema(schema, source), source="the input files' common schema"
            )
        except SchemaMismatchError as exc:
            problems.append(str(exc))
    if problems:
        more = len(problems) - 5
        text = "; ".join(problems[:5]) + (f"; and {more} more files" if more > 0 else "")
        raise SchemaMismatchError(text + renamed_note)
    return schema


def _model_schema(schema: pa.Schema, source: Mapping[str, str]) -> pa.Schema:
    return pa.schema([pa.field(m, schema.field(i).type) for m, i in source.items()])


def score_parquet(
    model: Model | str | os.PathLike[str],
    inputs: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    mapping: Mapping[str, str] | None = None,
    keep: Sequence[str] = (),
    batch_size: int = DEFAULT_BATCH_SIZE,
    partitioned: bool = False,
    part_rows: int = 1 << 20,
    force: bool = False,
    threads: int | None = None,
    verify: bool = True,
    progress: bool = False,
    stream: TextIO | None = None,
) -> ScoreSummary:
    """Score Parquet input with a model, streaming, and write the scores to Parquet.

    Parameters
    ----------
    model : a :class:`~memrec_infer.runtime.Model` (or any object with its ``prep`` and
        ``predict``), or the path of a model directory
    inputs : Parquet files, directories (hive-partitioned or not) and glob patterns
    output : the output file (or directory, with ``partitioned``); its directory must exist
    mapping : ``{model_column: input_column}`` for input columns named differently
    keep : input columns copied to the output beside ``score`` (e.g. a request id)
    batch_size : rows per scoring call
    partitioned : write a directory of part files instead of one file
    part_rows : rows per part file when ``partitioned``
    force : overwrite an existing output
    threads : threads for Numba and ONNX Runtime together; only when ``model`` is a path
    verify : check the model directory's files against their recorded sha256 before scoring
        (reads every byte once: a corrupted table would give finite, wrong scores); only
        when ``model`` is a path
    progress : draw a progress bar on ``stream`` (default stderr)

    Returns
    -------
    ScoreSummary
        The output path, rows scored, files read and wall time.

    Raises
    ------
    SchemaMismatchError
        Before scoring: a column is missing or of a type the model cannot take (the file and
        column are named).
    InputDataError
        An input cannot be read; before scoring where the footer shows it, else during the run
        with the file and row range. Or a dense value is infinite (or beyond float32's range):
        the file, row and column are named.
    InvalidModelError
        The model gave a score that is not finite (its tables or graph hold NaN or inf).
    OutputPathError
        The output exists (without ``force``), its directory does not or cannot be written
        in, it is one of the inputs, or writing it failed.
    """
    started = time.perf_counter()
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out_path = check_output(os.fspath(output), partitioned=partitioned, force=force)
    if isinstance(model, str | os.PathLike):
        model = load(model, threads=threads, verify=verify)
    elif threads is not None:
        raise ValueError("threads is set when loading: pass a model path, or load(threads=)")

    mapping = dict(mapping or {})
    model_cols = model.prep.columns
    unknown = [c for c in mapping if c not in model_cols]
    if unknown:
        raise SchemaMismatchError(
            f"--map names {', '.join(map(repr, unknown))}, not column(s) of the model; its "
            f"columns are {', '.join(model_cols)}"
        )
    keep = list(dict.fromkeys(keep))
    if SCORE_COLUMN in keep:
        raise SchemaMismatchError(
            f"--keep {SCORE_COLUMN!r}: the output's {SCORE_COLUMN!r} column holds the scores"
        )
    source = {c: mapping.get(c, c) for c in model_cols}

    files = find_inputs(inputs)
    check_not_input(out_path, [f.path for f in files])
    schema = _check_files(model, files, source, keep)
    out_schema = pa.schema([schema.field(k) for k in keep] + [(SCORE_COLUMN, pa.float32())])
    total = sum(f.num_rows for f in files)

    bar = Progress(total, stream=stream, enabled=progress)
    if isinstance(model, Model) and total:
        # Before the first batch, so a first run on a machine says why it waits a minute: the
        # kernels of the full batches and of the last, shorter one (it may take the serial one).
        sizes = {min(batch_size, total), total % batch_size or batch_size}
        model.load_kernels(sizes, on_slow=lambda: bar.message(COMPILING_NOTICE))
        bar.restart()  # a compile's minute is not the rows' rate
    try:
        with ScoresWriter(out_path, out_schema, partitioned=partitioned, part_rows=part_rows) as w:
            chunks = _rechunk(iter_batches(files, schema, batch_size), batch_size)
            for chunk in readahead(chunks, depth=_READAHEAD):
                w.write(_score_chunk(model, chunk, source, keep, out_schema))
                bar.update(chunk.table.num_rows)
            w.commit()
    finally:
        bar.close()
    return ScoreSummary(out_path, w.rows, time.perf_counter() - started, len(files))


def _score_chunk(
    model: Model,
    chunk: _Chunk,
    source: Mapping[str, str],
    keep: Sequence[str],
    out_schema: pa.Schema,
) -> pa.Table:
    t = chunk.table
    inputs = pa.Table.from_arrays([t.column(i) for i in source.values()], names=list(source))
    try:
        scores = model.predict(inputs)
    except BadValueError as exc:
        raise InputDataError(f"{chunk.locate(exc.row)}: {exc.detail}") from exc
    except (MemrecError, pa.ArrowException) as exc:
        raise InputDataError(f"{chunk.where()}: cannot score: {exc}") from exc
    scores = np.asarray(scores, dtype=np.float32)
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        # Prepared inputs are finite (prep checks them), so the model's own numbers are not.
        name = f"model directory {model.path}" if isinstance(model, Model) else "the model"
        raise InvalidModelError(
            f"{name}: {bad.size:,} of the {len(scores):,} scores of "
            f"{chunk.where()} are not finite (first at {chunk.locate(int(bad[0]))}): its tables "
            "or dense graph hold NaN or infinite values, or are damaged (`memrec-infer info "
            "--verify` checks its files against their recorded checksums)"
        )
    return pa.Table.from_arrays([t.column(k) for k in keep] + [pa.array(scores)], schema=out_schema)
