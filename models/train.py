"""Training a MEM-REC (or full-table) DLRM on a Parquet file: the API ``memrec-infer train`` wraps.

Sparse features are named by column: ``carrier`` (one-hot, or multi-hot if the column is a list),
``carrier*flight`` (a cross of two or more one-hot columns, ``dtype: "cross"``). Dense features
are numeric columns; nulls become the training mean (``fill``), then a transform applies
(``identity``, ``log1p`` of ``max(x, 0)``, or ``standard`` with the training mean and std).

Validation rows come from ``valid`` (a second file), or from ``split``, either a condition
``"COLUMN OP VALUE"`` (OP one of ``== != < <= > >=``; rows where it holds are validation rows,
e.g. ``"month>=11"``), or a fraction ``"0.1"`` / ``"10%"`` of rows drawn at random with the seed.
"""

from __future__ import annotations

import math
import operator
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from memrec_infer.errors import InputDataError, MemrecError, SchemaMismatchError
from memrec_infer.kernels.hashing import draw_seeds
from memrec_infer.prep import DENSE_TRANSFORMS, FeaturePrep, PreparedBatch

from .checkpoint import save_checkpoint
from .dlrm import DLRM, build_dlrm
from .embedding import POOLINGS

EMBEDDINGS = ("memrec", "full")
SHARED_TABLE = "shared"
# A MEM-REC table never gets fewer token rows than this, or than its number of values if that
# is smaller: tiny features (3 airports) cost nothing to keep collision-free.
MIN_TOKEN_ROWS = 64
_OPS = {
    "==": operator.eq,
    "!=": operator.ne,
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}
_CONDITION = re.compile(r"^\s*([^<>=!\s]+)\s*(==|!=|<=|>=|<|>)\s*(.+?)\s*$")


@dataclass
class TrainResult:
    """A trained model and its checkpoint config (``docs/checkpoint.md``)."""

    model: DLRM
    config: dict[str, Any]


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half); NaN if one class only."""
    labels = np.asarray(labels).astype(bool)
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(np.asarray(scores), return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    mean_rank = ends - (counts - 1) / 2.0  # 1-based average rank of each distinct score
    rank_sum = float(mean_rank[inverse][labels].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def _read(data: str | os.PathLike | pa.Table, what: str) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    try:
        return pq.read_table(os.fspath(data))
    except FileNotFoundError:
        raise InputDataError(f"{what} file {os.fspath(data)!r} does not exist") from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputDataError(
            f"{what} file {os.fspath(data)!r} is not readable Parquet: {exc}"
        ) from exc


def _check_settings(
    *, dim: int, epochs: int, batch_size: int, threads: int | None, seed: int, lr: float,
    compression: float,
) -> None:  # fmt: skip
    # Numbers a run cannot train with (--epochs 0 wrote an untrained model, --lr nan a broken
    # one, --batch-size 0 ended in a traceback), named as the command line names them.
    problems = [
        f"{flag} must be >= {low}, got {v}"
        for flag, v, low in (
            ("--dim", dim, 1),
            ("--epochs", epochs, 1),
            ("--batch-size", batch_size, 1),
            ("--threads", threads, 1),
            ("--seed", seed, 0),
        )  # fmt: skip
        if v is not None and v < low
    ]
    if not (math.isfinite(lr) and lr > 0):
        problems.append(f"--lr must be a finite number > 0, got {lr}")
    if not (math.isfinite(compression) and compression >= 1):
        problems.append(f"--compression must be a finite number >= 1, got {compression}")
    if problems:
        raise MemrecError("; ".join(problems))


def _check_names(label: str, dense: Sequence[str], sparse: Sequence[str]) -> None:
    # The label is not a feature, and no feature is named twice: else the model would learn
    # the label itself (valid AUC 1.0), or convert would refuse the checkpoint afterwards.
    crosses = [[c.strip() for c in s.split("*")] for s in sparse]
    if label in dense or any(label in parts for parts in crosses):
        raise MemrecError(
            f"the label column {label!r} is also given as a feature (--dense or --sparse); a "
            "model would learn the label itself"
        )
    for what, names in (("--dense", list(dense)), ("--sparse", ["*".join(p) for p in crosses])):
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise MemrecError(f"{what} names {', '.join(map(repr, twice))} more than once")
    for parts in crosses:
        if len(set(parts)) < len(parts):
            raise MemrecError(f"--sparse {'*'.join(parts)!r} crosses a column with itself")


def _check_columns(table: pa.Table, label: str, columns: Sequence[str], source: str) -> None:
    names = table.column_names
    problems = []
    if label not in names:
        problems.append(f"label column {label!r} not found")
    missing = [c for c in columns if c not in names]
    if missing:
        problems.append(f"column(s) {', '.join(repr(c) for c in missing)} not found")
    if problems:
        raise SchemaMismatchError(
            f"{source}: {'; '.join(problems)}. Columns are: {', '.join(names)}. "
            "Check --label, --dense and --sparse."
        )


def _labels(table: pa.Table, label: str, source: str) -> np.ndarray:
    col = table.column(label)
    if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)
            or pa.types.is_boolean(col.type)):  # fmt: skip
        raise InputDataError(f"{source}: label {label!r} must be 0/1 numbers, found {col.type}")
    if col.null_count:
        raise InputDataError(
            f"{source}: label {label!r} has {col.null_count} null(s); drop those rows first"
        )
    y = pc.cast(col, pa.float32()).to_numpy()
    bad = ~np.isin(y, (0.0, 1.0))
    if bad.any():
        raise InputDataError(
            f"{source}: label {label!r} must be 0 or 1, found {y[bad][0]!r} "
            f"({int(bad.sum())} such rows)"
        )
    return y


def _split_mask(table: pa.Table, split: str, seed: int) -> np.ndarray:
    """True for validation rows (see the module docstring for the syntax)."""
    text = split.strip()
    frac = None
    try:
        frac = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        pass
    if frac is not None:
        if not 0 < frac < 1:
            raise MemrecError(f"--split fraction must be in (0, 1), got {split!r}")
        rng = np.random.default_rng([seed, 1])
        return rng.random(table.num_rows) < frac
    match = _CONDITION.match(text)
    if not match:
        raise MemrecError(
            f"--split {split!r} is neither a fraction ('0.1', '10%') nor a condition "
            "'COLUMN OP VALUE' with OP one of == != < <= > >= (e.g. 'month>=11')"
        )
    column, op, raw = match.groups()
    if column not in table.column_names:
        raise SchemaMismatchError(
            f"--split {split!r}: column {column!r} not found; columns are: "
            f"{', '.join(table.column_names)}"
        )
    col = table.column(column)
    raw = raw.strip("'\"")
    value: Any = raw
    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
        try:
            value = float(raw)
        except ValueError:
            raise MemrecError(f"--split {split!r}: {column!r} is numeric, {raw!r} is not") from None
    mask = _OPS[op](np.asarray(col.to_numpy(zero_copy_only=False)), value)
    return np.asarray(mask, dtype=bool) & np.asarray(col.is_valid().to_numpy(zero_copy_only=False))


def _sparse_specs(table: pa.Table, sparse: Sequence[str], pooling: str, share: bool) -> list[dict]:
    specs = []
    for name in sparse:
        columns = [c.strip() for c in name.split("*")]
        types = [table.schema.field(c).type for c in columns]
        is_list = [pa.types.is_list(t) or pa.types.is_large_list(t) for t in types]
        if len(columns) > 1:
            if any(is_list):
                raise InputDataError(
                    f"cross {name!r}: crosses take one-hot columns, but "
                    f"{columns[is_list.index(True)]!r} is a list column"
                )
            dtype, multi_hot = "cross", False
        else:
            t = types[0].value_type if is_list[0] else types[0]
            t = t.value_type if pa.types.is_dictionary(t) else t
            if pa.types.is_integer(t):
                dtype = "int"
            elif pa.types.is_string(t) or pa.types.is_large_string(t):
                dtype = "string"
            else:
                raise InputDataError(
                    f"sparse column {name!r} must hold integers or strings (or lists of them), "
                    f"found {types[0]}; use --dense for numbers"
                )
            multi_hot = is_list[0]
        table_name = SHARED_TABLE if share else name.replace(".", "_")
        specs.append(
            {"name": name, "columns": columns, "dtype": dtype, "multi_hot": multi_hot,
             "table": table_name, "pooling": pooling}
        )  # fmt: skip
    return specs


def _dense_specs(
    table: pa.Table, dense: Sequence[str], transform: str, column_transforms: Mapping[str, str]
) -> list[dict]:
    unknown = sorted(set(column_transforms) - set(dense))
    if unknown:
        raise MemrecError(
            f"transform given for {', '.join(map(repr, unknown))}, which is not a dense column; "
            f"dense columns are: {', '.join(dense)}"
        )
    specs = []
    for name in dense:
        how = column_transforms.get(name, transform)
        if how not in DENSE_TRANSFORMS:
            raise MemrecError(
                f"transform {how!r} for {name!r} is not one of {', '.join(DENSE_TRANSFORMS)}"
            )
        col = table.column(name)
        if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
            raise InputDataError(f"dense column {name!r} must hold numbers, found {col.type}")
        x = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
        x = x[~np.isnan(x)]
        fill = float(x.mean()) if x.size else 0.0
        spec = {"name": name, "transform": how, "fill": fill}
        if how == "standard":
            std = float(x.std()) if x.size else 0.0
            spec.update(mean=fill, std=std if std > 0 else 1.0)
        specs.append(spec)
    return specs


class _Jagged:
    """One feature's ids for a whole data set, gathered into mini-batches by row."""

    def __init__(self, pb: PreparedBatch, f: int) -> None:
        start, stop = int(pb.offsets[f, 0]), int(pb.offsets[f, -1])
        self.values = torch.from_numpy(pb.values[start:stop].copy())
        offsets = pb.offsets[f] - start
        self.starts = torch.from_numpy(offsets[:-1].copy())
        self.lengths = torch.from_numpy(np.diff(offsets))
        self.one_hot = bool((self.lengths == 1).all())

    def take(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Ids and bag lengths of ``rows``."""
        if self.one_hot:
            return self.values[rows], self.lengths[rows]
        lengths = self.lengths[rows]
        total = int(lengths.sum())
        # Position p of the output belongs to bag b; its source is starts[b] + (p - out_start[b]).
        out_starts = torch.cumsum(lengths, 0) - lengths
        shift = torch.repeat_interleave(self.starts[rows] - out_starts, lengths, output_size=total)
        return self.values[torch.arange(total) + shift], lengths


class _Data:
    """A prepared data set held as tensors, sliced into (dense, values, offsets) batches."""

    def __init__(self, pb: PreparedBatch, labels: np.ndarray) -> None:
        self.n = pb.num_rows
        self.dense = torch.from_numpy(pb.dense)
        self.labels = torch.from_numpy(np.array(labels, dtype=np.float32))
        self.features = [_Jagged(pb, f) for f in range(pb.offsets.shape[0])]

    def batch(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        parts, lengths = zip(*(f.take(rows) for f in self.features), strict=True)
        lens = torch.stack(lengths)  # [F, B]
        offsets = torch.zeros(lens.shape[0], lens.shape[1] + 1, dtype=torch.int64)
        offsets[:, 1:] = torch.cumsum(lens.reshape(-1), 0).reshape(lens.shape)
        offsets[1:, 0] = offsets[:-1, -1]
        return self.dense[rows], torch.cat(parts), offsets


def _predict(model: DLRM, data: _Data, batch_size: int = 8192) -> np.ndarray:
    model.eval()
    out = []
    with torch.no_grad():
        for s in range(0, data.n, batch_size):
            rows = torch.arange(s, min(s + batch_size, data.n))
            out.append(model(*data.batch(rows)).numpy())
    model.train()
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def _logloss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p.astype(np.float64), 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _table_configs(
    specs: list[dict],
    ids_seen: list[np.ndarray],
    embedding: str,
    rng: np.random.Generator,
    compression: float,
    k: int,
    k_w: int,
    weight_rows: int | None,
    scalar_weight: bool,
) -> list[dict]:
    """Table entries of the config, in order of first use; vocabularies for full tables."""
    groups: dict[str, list[int]] = {}
    for f, s in enumerate(specs):
        groups.setdefault(s["table"], []).append(f)
    tables = []
    for name, feats in groups.items():
        features = [specs[f]["name"] for f in feats]
        if embedding == "full":
            tables.append({"name": name, "kind": "full", "features": features,
                           "rows": int(ids_seen[feats[0]].size) + 1})  # fmt: skip
            continue
        n_values = sum(int(ids_seen[f].size) + 1 for f in feats)
        rows = max(math.ceil(n_values / compression), min(n_values, MIN_TOKEN_ROWS))
        w_rows = weight_rows if weight_rows is not None else max(1, rows // 4)
        tables.append(
            {"name": name, "kind": "memrec", "features": features, "rows": int(rows), "k": k,
             "token_seeds": [[int(v) for v in r] for r in draw_seeds(rng, k)],
             "weight_rows": int(w_rows), "weight_cols": 1 if scalar_weight else k, "k_w": k_w,
             "weight_seeds": [[int(v) for v in r] for r in draw_seeds(rng, k_w)],
             # The full table this one replaces: one row per distinct training value.
             "cardinality": sum(int(ids_seen[f].size) for f in feats)}
        )  # fmt: skip
    return tables


def _table_bytes(model: DLRM) -> tuple[int, int]:
    """Bytes of the embedding tables (token + weight, or full rows) and of the vocabularies."""
    tables = vocab = 0
    for name, t in model.embeddings.state_dict().items():
        size = t.numel() * t.element_size()
        if name.endswith(".vocab"):
            vocab += size
        else:
            tables += size
    return tables, vocab


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def train(
    data: str | os.PathLike | pa.Table,
    label: str,
    dense: Sequence[str],
    sparse: Sequence[str],
    output: str | os.PathLike | None = None,
    *,
    valid: str | os.PathLike | pa.Table | None = None,
    split: str | None = "0.1",
    embedding: str = "memrec",
    dim: int = 16,
    compression: float = 16.0,
    k: int = 3,
    k_w: int = 2,
    weight_rows: int | None = None,
    scalar_weight: bool = False,
    pooling: str = "sum",
    share: bool = False,
    dense_arch: Sequence[int] | None = None,
    over_arch: Sequence[int] = (64, 32, 1),
    interaction: str = "dot",
    self_interaction: bool = False,
    transform: str = "standard",
    column_transforms: Mapping[str, str] | None = None,
    epochs: int = 1,
    batch_size: int = 512,
    lr: float = 2e-3,
    seed: int = 0,
    threads: int | None = None,
    log: Callable[[str], None] | None = _stderr,
) -> TrainResult:
    """Train a DLRM with MEM-REC (or full) embedding tables and optionally save a checkpoint.

    Parameters
    ----------
    data : Parquet path or pyarrow Table
        Training rows (all of them, or all but the ``split`` rows).
    label : str
        The 0/1 label column.
    dense : list of str
        Numeric columns, in the dense input order.
    sparse : list of str
        Categorical features: a column name, or ``"a*b"`` for a cross; list columns are
        multi-hot bags. Their order is the F axis.
    output : path, optional
        Where to write the checkpoint (``docs/checkpoint.md``).
    valid : Parquet path or pyarrow Table, optional
        Validation rows; if given, ``split`` is ignored.
    split : str or None
        ``"COLUMN OP VALUE"`` (validation rows are those where it holds) or a random fraction
        (``"0.1"``, ``"10%"``); None trains on everything without validation.
    embedding : ``"memrec"`` or ``"full"``
    dim : int
        D, the embedding dimension.
    compression : float
        MEM-REC: token rows of a table = its number of values (+1 each for unseen) divided by
        this, but at least ``min(values, 64)``.
    k, k_w : int
        MEM-REC: token hashes and weight hashes per value.
    weight_rows : int, optional
        MEM-REC: weight table rows (default: token rows // 4).
    scalar_weight : bool
        MEM-REC: one weight per value instead of one per token hash.
    pooling : ``"sum"`` or ``"mean"``
        Bag pooling of every feature.
    share : bool
        MEM-REC: put every feature into one table (its slot keeps them apart in the hash).
    dense_arch, over_arch : layer widths
        Bottom MLP (default ``[64, dim]``) and top MLP (last width 1).
    interaction : ``"dot"`` or ``"cat"``
    self_interaction : bool
    transform : str
        Dense transform of every column: ``"identity"``, ``"log1p"`` or ``"standard"``.
    column_transforms : mapping of column -> str, optional
        Per-column exceptions to ``transform``.
    epochs, batch_size, lr, seed
        Adam on every parameter; the seed fixes hash seeds, initialisation and shuffling.
    threads : int, optional
        torch intra-op threads (``torch.set_num_threads``); None leaves torch's setting.
    log : callable or None
        Receives progress lines (default: stderr); None for silence.

    Returns
    -------
    TrainResult
    """
    t0 = time.perf_counter()
    _check_settings(dim=dim, epochs=epochs, batch_size=batch_size, threads=threads, seed=seed,
                    lr=lr, compression=compression)  # fmt: skip
    if threads is not None:
        torch.set_num_threads(threads)
    say = log or (lambda _msg: None)
    if embedding not in EMBEDDINGS:
        raise MemrecError(f"embedding must be 'memrec' or 'full', got {embedding!r}")
    if pooling not in POOLINGS:
        raise MemrecError(f"pooling must be 'sum' or 'mean', got {pooling!r}")
    if not sparse:
        raise MemrecError("no sparse features: give at least one with --sparse")
    if embedding == "full" and share:
        raise MemrecError("--share needs MEM-REC tables; full tables cannot be shared")
    if k < 1 or k_w < 1 or (weight_rows is not None and weight_rows < 1):  # compression: above
        raise MemrecError(f"need k >= 1, k_w >= 1, weight_rows >= 1; got {k}, {k_w}, {weight_rows}")
    _check_names(label, dense, sparse)
    dense_arch = list(dense_arch) if dense_arch is not None else [64, dim]
    source = os.fspath(data) if not isinstance(data, pa.Table) else "training data"
    table = _read(data, "training")
    columns = list(dict.fromkeys([*dense, *(c.strip() for s in sparse for c in s.split("*"))]))
    _check_columns(table, label, columns, source)
    if table.num_rows == 0:
        raise InputDataError(f"{source}: has no rows to train on")
    if valid is not None:
        valid_table = _read(valid, "validation")
        vsource = os.fspath(valid) if not isinstance(valid, pa.Table) else "validation data"
        _check_columns(valid_table, label, columns, vsource)
        if valid_table.num_rows == 0:
            raise InputDataError(f"{vsource}: has no rows to validate on")
    elif split is not None:
        mask = _split_mask(table, split, seed)
        valid_table, table = table.filter(pa.array(mask)), table.filter(pa.array(~mask))
        if table.num_rows == 0 or valid_table.num_rows == 0:
            raise InputDataError(
                f"--split {split!r} leaves {table.num_rows} training and "
                f"{valid_table.num_rows} validation rows; both must be non-empty"
            )
    else:
        valid_table = None
    y_train = _labels(table, label, source)
    dense_specs = _dense_specs(table, dense, transform, column_transforms or {})
    sparse_specs = _sparse_specs(table, sparse, pooling, share)
    prep = FeaturePrep(dense=dense_specs, sparse=sparse_specs)
    pb = prep(table)
    ids_seen = [np.unique(pb.values[pb.offsets[f, 0] : pb.offsets[f, -1]])
                for f in range(len(sparse_specs))]  # fmt: skip
    rng = np.random.default_rng(seed)
    tables = _table_configs(
        sparse_specs, ids_seen, embedding, rng, compression, k, k_w, weight_rows, scalar_weight
    )
    config: dict[str, Any] = {
        "embedding_dim": int(dim),
        "dense": dense_specs,
        "sparse": sparse_specs,
        "tables": tables,
        "dense_arch": [int(w) for w in dense_arch],
        "over_arch": [int(w) for w in over_arch],
        "interaction": interaction,
        "self_interaction": bool(self_interaction),
        "label": label,
    }
    torch.manual_seed(seed)
    try:
        model = build_dlrm(config)
    except ValueError as exc:
        raise MemrecError(f"invalid model shape: {exc}") from exc
    if embedding == "full":
        for f, s in enumerate(sparse_specs):
            model.embeddings[s["table"]].vocab.copy_(torch.from_numpy(ids_seen[f]))
    train_data = _Data(pb, y_train)
    valid_data = None
    if valid_table is not None:
        valid_data = _Data(prep(valid_table), _labels(valid_table, label, "validation data"))
    n_values = sum(int(v.size) for v in ids_seen)
    say(
        f"train: {train_data.n} rows, valid: {valid_data.n if valid_data else 0} rows; "
        f"{len(dense_specs)} dense, {len(sparse_specs)} sparse features ({n_values} values); "
        f"{embedding} tables {_table_bytes(model)[0] / 1e6:.3f} MB"
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    gen = torch.Generator().manual_seed(seed)
    history = []
    model.train()
    for epoch in range(1, epochs + 1):
        te = time.perf_counter()
        order = torch.randperm(train_data.n, generator=gen)
        total, steps = 0.0, 0
        for s in range(0, train_data.n, batch_size):
            rows = order[s : s + batch_size]
            logits = model.logits(*train_data.batch(rows))
            loss = loss_fn(logits, train_data.labels[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item()
            steps += 1
        record: dict[str, Any] = {"epoch": epoch, "train_logloss": total / max(steps, 1)}
        line = f"epoch {epoch}/{epochs}: train logloss {record['train_logloss']:.4f}"
        if valid_data is not None:
            p = _predict(model, valid_data)
            y = valid_data.labels.numpy()
            record.update(valid_auc=auc(y, p), valid_logloss=_logloss(y, p))
            shown = (
                "n/a (labels of one class)"
                if math.isnan(record["valid_auc"])
                else (f"{record['valid_auc']:.4f}")
            )
            line += f", valid AUC {shown}, logloss {record['valid_logloss']:.4f}"
        history.append(record)
        say(f"{line} ({time.perf_counter() - te:.1f} s)")
    table_bytes, vocab_bytes = _table_bytes(model)
    full_bytes = sum((int(v.size) + 1) * dim * 4 for v in ids_seen)
    config["train"] = {
        "data": source,
        "valid": (os.fspath(valid) if valid is not None and not isinstance(valid, pa.Table)
                  else None if valid is None else "validation data"),
        "split": split if valid is None else None,
        "rows_train": train_data.n,
        "rows_valid": valid_data.n if valid_data else 0,
        "embedding": embedding,
        "seed": seed,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "optimizer": "adam",
        "history": history,
        "valid_auc": history[-1].get("valid_auc") if history else None,
        "table_bytes": table_bytes,
        "vocab_bytes": vocab_bytes,
        "full_table_bytes": full_bytes,
        "compression_ratio": full_bytes / table_bytes if table_bytes else None,
        "seconds": round(time.perf_counter() - t0, 2),
    }  # fmt: skip
    say(
        f"embedding tables {table_bytes / 1e6:.3f} MB (+ vocab {vocab_bytes / 1e6:.3f} MB); "
        f"full tables would be {full_bytes / 1e6:.3f} MB ({full_bytes / table_bytes:.1f}x)"
    )
    model.eval()
    if output is not None:
        save_checkpoint(model, config, output)
        say(f"wrote {os.fspath(output)}")
    return TrainResult(model=model, config=config)
