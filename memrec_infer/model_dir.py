"""Write and strictly read the model directory (docs/model-format.md, format_version 1).

Writing streams each table into the stacked ``tokens.npy`` / ``weights.npy`` / ``vocab.npy``
(NumPy 1.0 headers, little-endian, C-order, data 64-byte aligned) while hashing them, then writes
``dense.onnx`` and ``manifest.json`` (sorted keys) with every file's byte size and sha256.
``tokens.npy`` is float32 or, on request, float16 (``token_dtype``: see
:mod:`memrec_infer.token_dtype`).

Reading trusts nothing: supported format version, exact file sizes, sha256 (``verify=True``),
``.npy`` header (version, dtype, order, alignment, shape), every table's range inside the stacked
arrays, every manifest field that feature prep, the kernels or ``info`` read later (presence,
type, allowed values, numbers finite in float32, ``std > 0``), and the manifest's description
of the ONNX graph (whose file ONNX Runtime checks when it opens it: see
:mod:`memrec_infer.dense_session`). Any failure raises
:class:`~memrec_infer.errors.InvalidModelError` naming the file and the check; arrays are
memory-mapped, so opening copies nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InvalidModelError
from .errors import model_file_error as _fail
from .spec import (
    FEATURE_DTYPES,
    INTERACTIONS,
    POOLINGS,
    TRANSFORMS,
    ModelSpec,
    float32_finite,
    table_rows,
    table_vocab,
    table_weight,
)
from .token_dtype import (
    DEFAULT_TOKEN_DTYPE,
    TOKEN_DTYPES,
    check_token_dtype,
    check_token_range,
    is_token_dtype,
    manifest_token_dtype,
)

__all__ = [
    "FORMAT_VERSION",
    "SUPPORTED_FORMAT_VERSIONS",
    "ModelDir",
    "TableArrays",
    "parse_seeds",
    "read_model_dir",
    "table_footprint",
    "write_model_dir",
    "writer_versions",
]

FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = frozenset({1})
HASHING = "memrec-hash-v1"
MANIFEST = "manifest.json"
TOKENS, WEIGHTS, VOCAB, DENSE_ONNX = "tokens.npy", "weights.npy", "vocab.npy", "dense.onnx"
ALIGN = 64
_CHUNK = 1 << 24


# ---------------------------------------------------------------------------------- writing
def _write_npy(path: Path, dtype: str, shape: tuple[int, ...], parts: Iterable[np.ndarray]) -> dict:
    """Write a stacked ``.npy`` from ``parts`` without concatenating them in memory.

    Each part is converted to ``dtype`` one chunk at a time (``astype``: for float16, NumPy's
    round-to-nearest-even cast), so a narrowing write never holds a whole converted table.
    """
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        head, {"descr": dtype, "fortran_order": False, "shape": shape}
    )
    header = head.getvalue()
    # NumPy pads format 1.0 headers to 64 bytes; memory-mapped tables rely on it, so check.
    if len(header) % ALIGN:
        raise RuntimeError(f"numpy wrote a {len(header)}-byte .npy header, not 64-aligned")
    sha = hashlib.sha256(header)
    dt = np.dtype(dtype)
    with open(path, "wb") as f:
        f.write(header)
        for part in parts:
            data = np.ascontiguousarray(part).reshape(-1)
            for start in range(0, data.size, _CHUNK):
                chunk = data[start : start + _CHUNK].astype(dt, copy=False).tobytes()
                sha.update(chunk)
                f.write(chunk)
    return {"bytes": path.stat().st_size, "sha256": sha.hexdigest()}


def _file_entry(path: Path) -> dict:
    return {"bytes": path.stat().st_size, "sha256": _sha256(path)}


def _sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            sha.update(block)
    return sha.hexdigest()


def _seeds_hex(seeds: np.ndarray) -> list[list[str]]:
    return [[f"0x{int(v):016x}" for v in row] for row in np.asarray(seeds, dtype=np.uint64)]


def _table_entries(spec: ModelSpec) -> list[dict[str, Any]]:
    entries, tok, wgt, voc = [], 0, 0, 0
    for t in spec.tables:
        e: dict[str, Any] = {
            "name": t.name,
            "kind": t.kind,
            "features": list(t.features),
            "rows": t.rows,
            "token_offset": tok,
            "cardinality": t.cardinality,
        }
        tok += t.rows
        if t.kind == "memrec":
            e.update(
                k=t.k,
                token_seeds=_seeds_hex(t.token_seeds),
                weight_rows=t.weight_rows,
                weight_cols=t.weight_cols,
                weight_offset=wgt,
                k_w=t.k_w,
                weight_seeds=_seeds_hex(t.weight_seeds),
            )
            wgt += t.weight_rows * t.weight_cols
        else:
            e["vocab_offset"] = voc
            voc += t.rows - 1
        entries.append(e)
    return entries


def write_model_dir(
    spec: ModelSpec,
    out: str | Path,
    dense_graph: Any,
    opset: int,
    source: dict[str, Any],
    writer: dict[str, str],
    token_dtype: str = DEFAULT_TOKEN_DTYPE,
) -> dict[str, Any]:
    """Write ``spec`` as a model directory into the existing empty directory ``out``.

    Parameters
    ----------
    spec : ModelSpec
        A validated spec; its table tensors must be float32 / int64 of the declared shapes.
    out : str or Path
        An existing, empty directory.
    dense_graph : onnx.ModelProto
        The dense graph (see :func:`memrec_infer.onnx_graph.build_dense_graph`).
    opset : int
        The graph's opset, recorded in the manifest.
    source : dict
        Provenance recorded as ``manifest["source"]`` (checkpoint name, sha256, train record).
    writer : dict
        Versions of the writing software, recorded as ``manifest["writer"]``.
    token_dtype : {"float32", "float16"}
        How ``tokens.npy`` stores the table rows, recorded as ``manifest["token_dtype"]``;
        float16 rounds them to nearest even (see :mod:`memrec_infer.token_dtype`).

    Returns
    -------
    dict
        The manifest written to ``manifest.json``.

    Raises
    ------
    ValueError
        ``token_dtype`` is not one of the supported names.
    CheckpointError
        A table value does not fit ``token_dtype`` (float16: ``|x| > 65504``); raised before
        any file is written.
    """
    check_token_dtype(token_dtype)
    check_token_range(spec, token_dtype, str(source.get("checkpoint", "the model spec")))
    out = Path(out)
    dim = spec.embedding_dim
    memrec = [t for t in spec.tables if t.kind == "memrec"]
    full = [t for t in spec.tables if t.kind == "full"]
    files = {
        TOKENS: _write_npy(
            out / TOKENS,
            TOKEN_DTYPES[token_dtype],
            (sum(t.rows for t in spec.tables), dim),
            (spec.tensors[table_rows(t.name)] for t in spec.tables),
        ),
        WEIGHTS: _write_npy(
            out / WEIGHTS,
            "<f4",
            (sum(t.weight_rows * t.weight_cols for t in memrec),),
            (spec.tensors[table_weight(t.name)] for t in memrec),
        ),
        VOCAB: _write_npy(
            out / VOCAB,
            "<i8",
            (sum(t.rows - 1 for t in full),),
            (spec.tensors[table_vocab(t.name)] for t in full),
        ),
    }
    (out / DENSE_ONNX).write_bytes(dense_graph.SerializeToString())
    files[DENSE_ONNX] = _file_entry(out / DENSE_ONNX)

    manifest = {
        "format_version": FORMAT_VERSION,
        "family": spec.family,
        "family_revision": spec.family_revision,
        "hashing": HASHING,
        "embedding_dim": dim,
        "token_dtype": token_dtype,
        "dense": [_dense_entry(d) for d in spec.dense],
        "sparse": [
            {
                "name": f.name,
                "columns": list(f.columns),
                "dtype": f.dtype,
                "multi_hot": f.multi_hot,
                "table": f.table,
                "slot": f.slot,
                "pooling": f.pooling,
            }
            for f in spec.sparse
        ],
        "tables": _table_entries(spec),
        "interaction": spec.interaction,
        "self_interaction": spec.self_interaction,
        "dense_graph": {
            "file": DENSE_ONNX,
            "inputs": ["dense", "embeddings"],
            "output": "score",
            "opset": opset,
        },
        "files": files,
        "label": spec.label,
        "source": source,
        "writer": writer,
    }
    text = json.dumps(manifest, sort_keys=True, indent=1, allow_nan=False)
    (out / MANIFEST).write_text(text + "\n", encoding="utf-8")
    return manifest


def _dense_entry(d: Any) -> dict[str, Any]:
    e = {"name": d.name, "transform": d.transform, "fill": d.fill}
    if d.transform == "standard":
        e.update(mean=d.mean, std=d.std)
    return e


def writer_versions() -> dict[str, str]:
    """Versions of the software that writes a model directory."""
    import onnx

    from . import __version__

    return {
        "memrec_infer": __version__,
        "numpy": np.__version__,
        "onnx": onnx.__version__,
        "python": platform.python_version(),
    }


# ---------------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class TableArrays:
    """One table's arrays: memory-mapped views into the stacked files, seeds as ``uint64``.

    ``token`` is [rows, D] in the manifest's ``token_dtype`` (token rows for ``memrec``, all rows
    for ``full``); ``weight`` is [weight_rows, weight_cols] and ``token_seeds`` /
    ``weight_seeds`` are [k, 4] / [k_w, 4] (``memrec`` only, else None); ``vocab`` is int64
    [rows - 1] (``full`` only, else None).
    """

    name: str
    kind: str
    features: tuple[str, ...]
    token: np.ndarray
    weight: np.ndarray | None
    vocab: np.ndarray | None
    token_seeds: np.ndarray | None
    weight_seeds: np.ndarray | None


@dataclass(frozen=True)
class ModelDir:
    """An opened, checked model directory.

    Attributes
    ----------
    path : Path
    manifest : dict
        The parsed ``manifest.json``.
    tokens, weights, vocab : numpy.ndarray
        The stacked arrays, memory-mapped read-only: ``tokens`` float32 or float16 (the
        manifest's ``token_dtype``), ``weights`` float32, ``vocab`` int64.
    onnx_path : Path
        The dense graph file.
    tables : dict[str, TableArrays]
        Every table by name, in manifest order.
    """

    path: Path
    manifest: dict[str, Any]
    tokens: np.ndarray
    weights: np.ndarray
    vocab: np.ndarray
    onnx_path: Path
    tables: dict[str, TableArrays]


def parse_seeds(rows: Any, where: str = "seeds") -> np.ndarray:
    """Hash seeds from the manifest (``[["0x..", x4], ...]``) as a ``uint64`` array [k, 4].

    Raises
    ------
    InvalidModelError
        A row is not four ``"0x"``-prefixed hex strings of at most 64 bits.
    """
    out = []
    if not isinstance(rows, list):
        raise InvalidModelError(f"{where}: expected a list of [4] hex strings, found {rows!r:.60}")
    for row in rows:
        vals = []
        for v in row if isinstance(row, list) and len(row) == 4 else [None]:
            try:
                if not (isinstance(v, str) and v.startswith("0x")):
                    raise ValueError
                n = int(v, 16)
                if not 0 <= n < 2**64:
                    raise ValueError
            except ValueError:
                raise InvalidModelError(
                    f"{where}: expected rows of four '0x' hex strings < 2**64, found {row!r:.80}"
                ) from None
            vals.append(n)
        out.append(vals)
    return np.array(out, dtype=np.uint64).reshape(len(out), 4)


def _open_npy(path: Path, dtype: str, ndim: int, recorded_bytes: int, why: str = "") -> np.ndarray:
    """Memory-map a ``.npy`` after checking its header; ``why`` says where ``dtype`` comes from."""
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            if version != (1, 0):
                raise _fail(path, f"npy format version {version}, expected (1, 0)")
            shape, fortran, dt = np.lib.format.read_array_header_1_0(f)
        except ValueError as exc:
            raise _fail(path, f"not a valid .npy header ({exc})") from None
        offset = f.tell()
    want = np.dtype(dtype)
    if dt != want or fortran or len(shape) != ndim:
        raise _fail(
            path,
            f"expected {want.str} ({want.name}{why}) C-order {ndim}-d array, found {dt.str} "
            f"({dt.name}) {'Fortran' if fortran else 'C'}-order shape {shape}",
        )
    if offset % ALIGN:
        raise _fail(path, f"array data starts at byte {offset}, not {ALIGN}-byte aligned")
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    if expected != recorded_bytes:
        raise _fail(path, f"header says {expected} bytes, the manifest records {recorded_bytes}")
    return np.load(path, mmap_mode="r", allow_pickle=False)


def _check_files(root: Path, files: Any, verify: bool) -> None:
    if not isinstance(files, dict):
        raise _fail(root / MANIFEST, "'files' must map file names to {bytes, sha256}")
    for name in (TOKENS, WEIGHTS, VOCAB, DENSE_ONNX):
        if name not in files:
            raise _fail(root / MANIFEST, f"'files' has no entry for {name}")
    for name, entry in files.items():
        path = root / name
        if "/" in name or "\\" in name or name.startswith("."):
            raise _fail(root / MANIFEST, f"'files' names {name!r}, outside the directory")
        if not isinstance(entry, dict) or not _is_int(entry.get("bytes")):
            raise _fail(root / MANIFEST, f"'files'[{name!r}] must have an integer 'bytes'")
        if not path.is_file():
            raise _fail(path, _not_a_file(path))
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise _fail(
                path, f"size check failed: {size} bytes, the manifest records {entry['bytes']}"
            )
        if verify and _sha256(path) != entry.get("sha256"):
            raise _fail(path, "sha256 check failed: the file is corrupted or was modified")


def _not_a_file(path: Path) -> str:
    # Why ``path`` is not a regular file: missing, or something else in its place.
    if not path.exists():
        return "file is missing"
    return "is a directory, not a file" if path.is_dir() else "is not a regular file"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _at(where: str) -> str:
    # A message's prefix naming the entry (``"table 'x': "``); "" for a top-level key.
    return f"{where}: " if where else ""


def _int_field(path: Path, entry: dict, key: str, where: str, low: int = 0) -> int:
    v = entry.get(key)
    if not _is_int(v) or v < low:
        raise _fail(path, f"{_at(where)}'{key}' must be an int >= {low}, found {v!r}")
    return v


def _seeds_field(path: Path, entry: dict, key: str, where: str) -> np.ndarray:
    try:
        return parse_seeds(entry.get(key), f"{where}: {key}")
    except InvalidModelError as exc:
        raise _fail(path, str(exc)) from None


def _float32_field(
    path: Path, entry: dict, key: str, where: str, why: str, positive: bool = False
) -> None:
    # Prep computes in float32: a value that is not finite there (1e39 overflows; a std of
    # 1e-46 becomes 0) would turn every score into NaN or inf without an error.
    v = entry.get(key)
    if not float32_finite(v, positive):
        found = f"found {v!r}" if key in entry else "it is missing"
        kind = "a number > 0" if positive else "a number"
        raise _fail(path, f"{where}: '{key}' must be {kind}, finite as float32 ({why}), {found}")


def _entry_where(path: Path, section: str, i: int, entry: Any, seen: set[str]) -> str:
    """``"dense[0] ('day')"``: where an entry of a list of named entries is, for messages."""
    name = entry.get("name") if isinstance(entry, dict) else None
    if not isinstance(name, str) or not name:
        raise _fail(path, f"{section}[{i}] must be a dict with a non-empty string 'name'")
    if name in seen:
        raise _fail(path, f"{section}[{i}]: name {name!r} is used twice in {section!r}")
    seen.add(name)
    return f"{section}[{i}] ({name!r})"


def _one_of(path: Path, entry: dict, key: str, where: str, allowed: tuple[str, ...]) -> str:
    v = entry.get(key)
    if not isinstance(v, str) or v not in allowed:
        found = f"found {v!r}" if key in entry else "it is missing"
        raise _fail(
            path, f"{_at(where)}'{key}' must be one of {', '.join(map(repr, allowed))}, {found}"
        )
    return v


def _table_arrays(
    root: Path, m: dict, tokens: np.ndarray, weights: np.ndarray, vocab: np.ndarray
) -> dict[str, TableArrays]:
    mpath = root / MANIFEST
    if not isinstance(m.get("tables"), list):
        raise _fail(mpath, "'tables' must be a list")
    out: dict[str, TableArrays] = {}
    for i, t in enumerate(m["tables"]):
        _entry_where(mpath, "tables", i, t, set(out))
        where = f"table {t['name']!r}"
        rows = _int_field(mpath, t, "rows", where, 1)
        card = t.get("cardinality")
        if card is not None and not (_is_int(card) and card >= 0):
            raise _fail(
                mpath,
                f"{where}: 'cardinality' must be an int >= 0 or null (unknown), found {card!r}",
            )
        tok = _int_field(mpath, t, "token_offset", where)
        if tok + rows > tokens.shape[0]:
            raise _fail(
                root / TOKENS,
                f"range check failed: {where} needs rows [{tok}, {tok + rows}), the file has "
                f"{tokens.shape[0]}",
            )
        token, weight, voc, tseeds, wseeds = tokens[tok : tok + rows], None, None, None, None
        if t.get("kind") == "memrec":
            k = _int_field(mpath, t, "k", where, 1)
            k_w = _int_field(mpath, t, "k_w", where, 1)
            wr = _int_field(mpath, t, "weight_rows", where, 1)
            wc = _int_field(mpath, t, "weight_cols", where, 1)
            wo = _int_field(mpath, t, "weight_offset", where)
            if wc not in (1, k):
                raise _fail(mpath, f"{where}: weight_cols must be 1 or k={k}, found {wc}")
            if wo + wr * wc > weights.shape[0]:
                raise _fail(
                    root / WEIGHTS,
                    f"range check failed: {where} needs elements [{wo}, {wo + wr * wc}), the "
                    f"file has {weights.shape[0]}",
                )
            weight = weights[wo : wo + wr * wc].reshape(wr, wc)
            tseeds = _seeds_field(mpath, t, "token_seeds", where)
            wseeds = _seeds_field(mpath, t, "weight_seeds", where)
            if tseeds.shape[0] != k or wseeds.shape[0] != k_w:
                raise _fail(mpath, f"{where}: expected {k} token and {k_w} weight seed rows")
        elif t.get("kind") == "full":
            vo = _int_field(mpath, t, "vocab_offset", where)
            if vo + rows - 1 > vocab.shape[0]:
                raise _fail(
                    root / VOCAB,
                    f"range check failed: {where} needs ids [{vo}, {vo + rows - 1}), the file "
                    f"has {vocab.shape[0]}",
                )
            voc = vocab[vo : vo + rows - 1]
        else:
            raise _fail(mpath, f"{where}: kind must be 'memrec' or 'full', found {t.get('kind')!r}")
        features = t.get("features")
        if not (isinstance(features, list) and all(isinstance(f, str) for f in features)):
            raise _fail(mpath, f"{where}: 'features' must be a list of names")
        out[t["name"]] = TableArrays(
            t["name"], t["kind"], tuple(features), token, weight, voc, tseeds, wseeds
        )
    return out


def _check_dense(path: Path, dense: Any) -> None:
    if not isinstance(dense, list):
        raise _fail(path, "'dense' must be a list of {name, transform, fill[, mean, std]}")
    seen: set[str] = set()
    for i, d in enumerate(dense):
        where = _entry_where(path, "dense", i, d, seen)
        transform = _one_of(path, d, "transform", where, TRANSFORMS)
        _float32_field(path, d, "fill", where, "what a null becomes")
        if transform == "standard":
            _float32_field(path, d, "mean", where, "transform 'standard' subtracts it")
            _float32_field(path, d, "std", where, "transform 'standard' divides by it", True)


def _check_sparse(path: Path, f: dict, where: str) -> None:
    dtype = _one_of(path, f, "dtype", where, FEATURE_DTYPES)
    cols = f.get("columns")
    if not (isinstance(cols, list) and cols and all(isinstance(c, str) and c for c in cols)):
        found = f"found {cols!r:.60}" if "columns" in f else "it is missing"
        raise _fail(path, f"{where}: 'columns' must be a non-empty list of column names, {found}")
    # Prep reads the first column of a one-hot int/string feature and of a bag: extra columns
    # would be ignored, not scored.
    if dtype == "cross" and len(cols) < 2:
        raise _fail(path, f"{where}: a 'cross' feature needs two or more 'columns', found {cols}")
    if dtype != "cross" and len(cols) != 1:
        raise _fail(path, f"{where}: dtype {dtype!r} reads exactly one column, found {cols}")
    multi = f.get("multi_hot")
    if not isinstance(multi, bool):
        found = f"found {multi!r}" if "multi_hot" in f else "it is missing"
        raise _fail(path, f"{where}: 'multi_hot' must be true or false, {found}")
    if multi and dtype == "cross":
        raise _fail(path, f"{where}: a 'cross' feature cannot be multi_hot")
    _one_of(path, f, "pooling", where, POOLINGS)


def _check_schema(root: Path, m: dict, tables: dict[str, TableArrays]) -> None:
    mpath = root / MANIFEST
    _check_dense(mpath, m.get("dense"))
    if not isinstance(m.get("sparse"), list) or not m["sparse"]:
        raise _fail(mpath, "'sparse' must be a non-empty list of features")
    seen: set[str] = set()
    for i, f in enumerate(m["sparse"]):
        where = _entry_where(mpath, "sparse", i, f, seen)
        _check_sparse(mpath, f, where)
        table = f.get("table")
        if not isinstance(table, str) or table not in tables:
            raise _fail(mpath, f"{where}: 'table' must name a table in 'tables', found {table!r}")
        t = tables[table]
        slot = f.get("slot")
        if not _is_int(slot) or not 0 <= slot < len(t.features) or t.features[slot] != f["name"]:
            raise _fail(
                mpath,
                f"{where}: slot {slot!r} does not match table {t.name!r}'s features "
                f"{list(t.features)}",
            )


def _graph_path(root: Path, m: dict) -> Path:
    # The graph file's interface is checked where ONNX Runtime opens it (``dense_session``):
    # parsing it here would import ``onnx``, which serving never needs.
    g = m.get("dense_graph")
    want = {"file": DENSE_ONNX, "inputs": ["dense", "embeddings"], "output": "score"}
    if not isinstance(g, dict) or any(g.get(key) != value for key, value in want.items()):
        raise _fail(root / MANIFEST, f"'dense_graph' must hold {want} (and the opset)")
    return root / DENSE_ONNX


def _check_header(path: Path, m: dict) -> None:
    # What ``info`` shows of the model besides features, tables and files.
    if not isinstance(m.get("family"), str) or not m["family"]:
        raise _fail(path, f"'family' must be a non-empty string, found {m.get('family')!r}")
    _int_field(path, m, "family_revision", "", 1)
    _one_of(path, m, "interaction", "", INTERACTIONS)
    if not isinstance(m.get("label"), str | None):
        raise _fail(path, f"'label' must be a string or null, found {m['label']!r}")


def read_model_dir(path: str | Path, verify: bool = False) -> ModelDir:
    """Open a model directory, checking it strictly; arrays are memory-mapped read-only.

    Parameters
    ----------
    path : str or Path
        The directory written by ``memrec-infer convert``.
    verify : bool
        Also check every file's sha256 (reads every byte once).

    Returns
    -------
    ModelDir

    Raises
    ------
    InvalidModelError
        Missing directory or file, unsupported ``format_version`` or ``token_dtype``, a size,
        sha256, header, shape, dtype or range check failed, or a manifest field is missing,
        mistyped or out of range (a feature's ``columns``, ``dtype``, ``transform``, a
        non-finite ``fill`` / ``mean``, a ``std`` not > 0, ...); the message names the
        directory, the file, the entry and field, and what was expected.
    """
    root = Path(path)
    mpath = root / MANIFEST
    if not root.is_dir():
        raise InvalidModelError(f"model directory {root} does not exist or is not a directory")
    if not mpath.is_file():
        raise _fail(
            mpath, f"{_not_a_file(mpath)}; is this a directory made by memrec-infer convert?"
        )
    try:
        m = json.loads(mpath.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise _fail(mpath, f"not valid JSON ({exc})") from None
    if not isinstance(m, dict):
        raise _fail(mpath, "must hold a JSON object")
    version = m.get("format_version")
    if not _is_int(version):  # not bool: True == 1 in Python, and 1.0 == 1
        raise _fail(
            mpath,
            f"'format_version' must be an integer (supported: "
            f"{sorted(SUPPORTED_FORMAT_VERSIONS)}), found {version!r}",
        )
    if version not in SUPPORTED_FORMAT_VERSIONS:
        raise _fail(
            mpath,
            f"format_version {version!r} is not supported by this memrec-infer (supported: "
            f"{sorted(SUPPORTED_FORMAT_VERSIONS)}); upgrade memrec-infer or re-convert",
        )
    if m.get("hashing") != HASHING:
        raise _fail(mpath, f"hashing must be {HASHING!r}, found {m.get('hashing')!r}")
    _check_header(mpath, m)
    dim = _int_field(mpath, m, "embedding_dim", "", 1)
    token_dtype = manifest_token_dtype(m)  # absent: float32, as before the key existed
    if not is_token_dtype(token_dtype):
        raise _fail(
            mpath,
            f"'token_dtype' must be one of {', '.join(map(repr, TOKEN_DTYPES))} (absent means "
            f"{DEFAULT_TOKEN_DTYPE!r}), found {token_dtype!r}",
        )
    _check_files(root, m.get("files"), verify)
    files = m["files"]
    # The header check refuses a tokens.npy whose dtype is not the one the manifest names.
    why = f", as {MANIFEST}'s token_dtype says" if "token_dtype" in m else ", the default"
    tokens = _open_npy(root / TOKENS, TOKEN_DTYPES[token_dtype], 2, files[TOKENS]["bytes"], why)
    if tokens.shape[1] != dim:
        raise _fail(root / TOKENS, f"shape check failed: {tokens.shape}, expected [R, {dim}]")
    weights = _open_npy(root / WEIGHTS, "<f4", 1, files[WEIGHTS]["bytes"])
    vocab = _open_npy(root / VOCAB, "<i8", 1, files[VOCAB]["bytes"])
    tables = _table_arrays(root, m, tokens, weights, vocab)
    _check_schema(root, m, tables)
    onnx_path = _graph_path(root, m)
    return ModelDir(root, m, tokens, weights, vocab, onnx_path, tables)


# ---------------------------------------------------------------------------------- sizes
def table_footprint(
    entry: dict[str, Any], dim: int, token_dtype: str = DEFAULT_TOKEN_DTYPE
) -> tuple[int, int | None]:
    """Bytes a table takes in the directory, and bytes of its equivalent full table.

    The table's rows count ``token_dtype``'s item size (the manifest's, see
    :func:`memrec_infer.token_dtype.manifest_token_dtype`). The equivalent full table is
    float32 with one row per distinct training value (``cardinality`` rows of ``dim``); a
    ``full`` table's equivalent is itself stored as float32 (rows and vocabulary). None when a
    ``memrec`` table's cardinality is unknown.
    """
    # The baseline stays float32 whatever the storage: "x smaller than full tables" compares
    # with the uncompressed model a checkpoint would serve, so float16 storage counts as
    # compression too.
    itemsize = np.dtype(TOKEN_DTYPES[token_dtype]).itemsize
    rows, vocab_bytes = entry["rows"], (entry["rows"] - 1) * 8
    if entry["kind"] == "full":
        return rows * dim * itemsize + vocab_bytes, rows * dim * 4 + vocab_bytes
    size = rows * dim * itemsize + entry["weight_rows"] * entry["weight_cols"] * 4
    card = entry.get("cardinality")
    return size, (card * dim * 4 if _is_int(card) else None)
