"""Parquet input for scoring: find the files, check their schemas up front, stream their rows.

Inputs are files, directories (hive-partitioned or not) and glob patterns. Every input is
expanded to a list of files in sorted path order, which is the order rows are scored and
written in. Each file's footer is read before any scoring starts, so an unreadable file or a
column of the wrong type is reported by file name before the first row is scored.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from .errors import InputDataError, SchemaMismatchError

# Arrow's own discovery skips these: Spark's _SUCCESS, _metadata, editors' .swp, our temp files.
_IGNORED_PREFIXES = (".", "_")
_GLOB_CHARS = frozenset("*?[")
# At most this many files are named in one schema error; the rest are counted.
_MAX_FILES_NAMED = 5
# Batches Arrow's scanner decodes ahead of the reader thread within one file.
_BATCH_READAHEAD = 2


@dataclass(frozen=True)
class InputFile:
    """One Parquet file of the input, with the columns its path contributes (hive partitions)."""

    path: str
    fragment: ds.ParquetFileFragment
    schema: pa.Schema  # the file's own columns, then its partition columns
    num_rows: int


@dataclass(frozen=True)
class InputBatch:
    """A record batch read from ``path``, holding rows ``start`` to ``start + num_rows``."""

    path: str
    start: int
    batch: pa.RecordBatch


def _is_glob(text: str) -> bool:
    return any(c in _GLOB_CHARS for c in text)


def _visible(relpath: str) -> bool:
    return not any(part.startswith(_IGNORED_PREFIXES) for part in relpath.split(os.sep))


def _files_under(root: str) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        # Hidden and underscore directories are skipped as a whole, as Arrow's discovery does.
        dirnames[:] = [d for d in dirnames if _visible(d)]
        found.extend(os.path.join(dirpath, f) for f in filenames if _visible(f))
    return sorted(found)


def _dataset(files: list[str], base_dir: str | None) -> ds.FileSystemDataset:
    try:
        if base_dir is None:
            return ds.dataset(files, format="parquet")
        return ds.dataset(files, format="parquet", partitioning="hive", partition_base_dir=base_dir)
    except (OSError, pa.ArrowException) as exc:
        dup = _duplicate_column(files)
        if dup is not None:
            raise InputDataError(
                f"{dup[0]}: column {dup[1]!r} appears more than once; expected unique column "
                "names (rename one of them)"
            ) from exc
        where = base_dir if base_dir is not None else ", ".join(files)
        raise InputDataError(f"{where}: not a readable Parquet file or dataset: {exc}") from exc


def _duplicate_column(files: list[str]) -> tuple[str, str] | None:
    """The first file with a column name used twice, and that name (Arrow refuses such files
    without naming either); None if there is none. Read only after a failure."""
    for path in files:
        try:
            names = pq.read_schema(path).names
        except (OSError, pa.ArrowException):
            continue
        seen = set()
        for name in names:
            if name in seen:
                return path, name
            seen.add(name)
    return None


def _expand(item: str) -> list[tuple[list[str], str | None]]:
    """One input argument -> groups of (files, hive base directory or None)."""
    if os.path.isdir(item):
        files = _files_under(item)
        if not files:
            raise InputDataError(f"{item}: the directory holds no Parquet files")
        return [(files, item)]
    if os.path.isfile(item):
        return [([item], None)]
    if _is_glob(item):
        matches = sorted(glob.glob(item, recursive=True))
        if not matches:
            raise InputDataError(f"{item}: no file or directory matches this pattern")
        return [group for m in matches for group in _expand(m)]
    raise InputDataError(f"{item}: no such file or directory")


def find_inputs(inputs: Sequence[str | os.PathLike[str]]) -> list[InputFile]:
    """Expand input arguments into Parquet files, reading each file's footer.

    A directory contributes every file below it (names starting with ``.`` or ``_`` skipped),
    and ``key=value`` directory names below it become columns (hive partitioning). A glob
    pattern contributes every file or directory it matches. Files come in sorted path order
    within each argument, arguments in the order given.

    Raises
    ------
    InputDataError
        An input does not exist, matches nothing, or a file is not readable Parquet.
    """
    if not inputs:
        raise InputDataError("no input given: name at least one Parquet file or directory")
    found: list[InputFile] = []
    for item in inputs:
        for files, base_dir in _expand(os.fspath(item)):
            dataset = _dataset(files, base_dir)
            keys = _partition_keys(files, base_dir)
            part_fields = [f for f in dataset.schema if f.name in keys]
            for fragment in dataset.get_fragments():
                found.append(_input_file(fragment, part_fields))
    return found


def _partition_keys(files: list[str], base_dir: str | None) -> set[str]:
    """Hive keys (``key=value`` directory names) below ``base_dir``.

    Taken from the paths rather than ``dataset.partitioning``, whose schema is not reliable
    when the directory has no partitions at all.
    """
    if base_dir is None:
        return set()
    keys = set()
    for path in files:
        for part in os.path.dirname(os.path.relpath(path, base_dir)).split(os.sep):
            key, sep, _ = part.partition("=")
            if sep and key:
                keys.add(key)
    return keys


def _input_file(fragment: ds.ParquetFileFragment, part_fields: list[pa.Field]) -> InputFile:
    try:
        physical = fragment.physical_schema
        num_rows = fragment.metadata.num_rows
    except (OSError, pa.ArrowException) as exc:
        raise InputDataError(f"{fragment.path}: not a readable Parquet file: {exc}") from exc
    # Arrow would fill such a column from the directory name, hiding the file's own values.
    keys = ds.get_partition_keys(fragment.partition_expression)
    clash = [k for k in keys if k in physical.names]
    if clash:
        raise InputDataError(
            f"{fragment.path}: column {clash[0]!r} is both in the file and in its directory "
            f"name ({clash[0]}={keys[clash[0]]}); expected it in one place only (rename the "
            "directory or the column)"
        )
    fields = list(physical) + [f for f in part_fields if f.name not in physical.names]
    return InputFile(fragment.path, fragment, pa.schema(fields), num_rows)


def _unify(column: str, files: list[InputFile]) -> pa.DataType:
    """One type for ``column`` that every file's type converts to, or a SchemaMismatchError."""
    by_type: dict[pa.DataType, list[str]] = {}
    for f in files:
        by_type.setdefault(f.schema.field(column).type, []).append(f.path)
    if len(by_type) == 1:
        return next(iter(by_type))
    # Some files dictionary-encoded and some not (writers differ): read them all decoded.
    plain = {t.value_type if pa.types.is_dictionary(t) else t for t in by_type}
    try:
        unified = pa.unify_schemas(
            [pa.schema([pa.field(column, t)]) for t in plain], promote_options="permissive"
        )
        return unified.field(column).type
    except (pa.ArrowTypeError, pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    kinds = "; ".join(
        f"{t} in {', '.join(paths[:_MAX_FILES_NAMED])}"
        + (f" and {len(paths) - _MAX_FILES_NAMED} more" if len(paths) > _MAX_FILES_NAMED else "")
        for t, paths in by_type.items()
    )
    raise SchemaMismatchError(
        f"column {column!r} has incompatible types across the input files ({kinds}); "
        "expected one type (or types that widen to one, e.g. int32 and int64) in every file"
    )


def read_schema(files: list[InputFile], columns: Sequence[str]) -> pa.Schema:
    """The schema ``columns`` are read with: one type per column over all ``files``.

    Raises
    ------
    SchemaMismatchError
        A column is missing from some files (they are named), or has types that do not widen to
        one type (the files of each type are named).
    """
    problems = []
    for f in files:
        missing = [c for c in columns if f.schema.get_field_index(c) < 0]
        if missing:
            problems.append(f"{f.path}: missing column(s) {', '.join(map(repr, missing))}")
    if problems:
        more = len(problems) - _MAX_FILES_NAMED
        text = "; ".join(problems[:_MAX_FILES_NAMED]) + (
            f"; and {more} more files" if more > 0 else ""
        )
        raise SchemaMismatchError(text)
    return pa.schema([pa.field(c, _unify(c, files)) for c in columns])


def iter_batches(
    files: Sequence[InputFile], schema: pa.Schema, batch_rows: int
) -> Iterator[InputBatch]:
    """Stream the ``schema``'s columns of every file, in order, cast to the ``schema``'s types.

    Raises
    ------
    InputDataError
        A file cannot be read or decoded (e.g. corrupt data pages): the message names the file
        and the first row that could not be read.
    """
    # Page checksums are verified where the writer stored them: corruption is an error, not
    # silently wrong scores. pre_buffer (whole row groups fetched ahead) and Arrow's own
    # threads buffer 200-300 MB more for a Criteo-sized file, and buy nothing here: the
    # reader thread already runs beside scoring, which keeps the other cores busy.
    options = ds.ParquetFragmentScanOptions(page_checksum_verification=True, pre_buffer=False)
    for f in files:
        start = 0
        try:
            batches = f.fragment.to_batches(
                schema=schema,
                columns=schema.names,
                batch_size=batch_rows,
                fragment_scan_options=options,
                use_threads=False,
                # Arrow's defaults (16 batches, 4 files ahead) buffer hundreds of MB when scoring
                # is slower than decoding.
                batch_readahead=_BATCH_READAHEAD,
                fragment_readahead=1,
            )
            for batch in batches:
                yield InputBatch(f.path, start, batch)
                start += batch.num_rows
        except (OSError, pa.ArrowException) as exc:
            where = _bad_row_group(f, schema.names, start) or f"rows from row {start:,} on"
            column = _bad_cast(f, schema)
            raise InputDataError(
                f"{f.path}: cannot read {where} (the file has {f.num_rows:,} rows): "
                + (f"{column}: " if column else "")
                + str(exc)
            ) from exc


def _bad_cast(f: InputFile, schema: pa.Schema) -> str | None:
    """The first column of the file whose values do not fit the type the inputs share, e.g.
    ``"column 'id' (uint64 in this file, int64 in the inputs)"``; None if every column fits.

    Files of one input may store a column as different types (int32 in one, uint64 in another);
    they are read as one type, and a value that does not fit fails the whole read. Only after a
    failure, like ``_bad_row_group``.
    """
    try:
        pf = pq.ParquetFile(f.path)
        own = pf.schema_arrow
        for field in schema:
            i = own.get_field_index(field.name)
            if i < 0 or own.field(i).type == field.type:
                continue
            try:
                pf.read(columns=[field.name]).column(0).cast(field.type)
            except pa.ArrowException:
                types = f"{own.field(i).type} in this file, {field.type} in the inputs"
                return f"column {field.name!r} ({types})"
    except (OSError, pa.ArrowException):
        return None
    return None


def _bad_row_group(f: InputFile, columns: Sequence[str], start: int) -> str | None:
    """Which row group at or after row ``start`` fails to read, e.g. ``"rows 1,250-1,499 (row
    group 5)"``; None if none fails when read alone.

    The scanner reads ahead, so its error does not say where it happened; this re-reads row
    groups one by one, and only after a failure.
    """
    try:
        pf = pq.ParquetFile(f.path)
        physical = [c for c in columns if c in pf.schema_arrow.names]
        first = 0
        for i in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(i).num_rows
            if first + n > start:
                try:
                    pf.read_row_group(i, columns=physical)
                except (OSError, pa.ArrowException):
                    return f"rows {first:,}-{first + n - 1:,} (row group {i})"
            first += n
    except (OSError, pa.ArrowException):
        return None
    return None
