"""The ``memrec_dlrm`` family: checkpoints written by ``memrec-infer train`` (docs/checkpoint.md).

Source tensor names -> canonical names (:mod:`memrec_infer.spec`):

==================================  =============================
``embeddings.{table}.token``        ``sparse.{table}.token``  (memrec)
``embeddings.{table}.table``        ``sparse.{table}.token``  (full)
``embeddings.{table}.weight``       ``sparse.{table}.weight`` (memrec)
``embeddings.{table}.vocab``        ``sparse.{table}.vocab``  (full)
``dense_arch.{i}.weight|bias``      ``dense_arch.{i}.weight|bias``
``over_arch.{i}.weight|bias``       ``over_arch.{i}.weight|bias``
==================================  =============================
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..kernels.hashing import seeds_from_hex
from ..spec import (
    FEATURE_DTYPES,
    INTERACTIONS,
    POOLINGS,
    TABLE_KINDS,
    TRANSFORMS,
    DenseSpec,
    FeatureSpec,
    LayerSpec,
    ModelSpec,
    TableSpec,
    float32_finite,
    layer_bias,
    layer_weight,
    over_arch_input,
    table_rows,
    table_vocab,
    table_weight,
)
from . import register

CHECKPOINT_FORMAT = "memrec-infer-checkpoint"
TOP_KEYS = ("format", "family", "family_revision", "config", "state_dict")
# Rows are addressed by 32-bit fastrange hashing (docs/hashing.md section 2).
MAX_HASHED_ROWS = 2**31 - 1


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# (name, shape, dtype) of one expected tensor; shape entries None when unknown (config broken).
_Expected = tuple[str, tuple[int | None, ...], str]


class _Checker:
    """Collects every problem of one checkpoint; nothing stops at the first."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def add(self, msg: str) -> None:
        self.problems.append(msg)

    def check_seeds(self, where: str, seeds: Any, k: Any) -> None:
        if not isinstance(seeds, list) or (_is_int(k) and len(seeds) != k):
            self.add(f"{where}: expected a list of k={k} rows of 4 seeds, found {seeds!r:.60}")
            return
        for row in seeds:
            ok = isinstance(row, list) and len(row) == 4
            ok = ok and all(
                (_is_int(v) and 0 <= v < 2**64) or (isinstance(v, str) and _hex_u64(v)) for v in row
            )
            if not ok:
                self.add(f"{where}: every row must be 4 integers in [0, 2**64), found {row!r:.60}")
                return


def _hex_u64(v: str) -> bool:
    try:
        return v.startswith("0x") and 0 <= int(v, 16) < 2**64
    except ValueError:
        return False


@register("memrec_dlrm")
class MemrecDlrm:
    """Adapter for ``memrec_dlrm`` checkpoints, revision 1 (MEM-REC and full tables)."""

    name = "memrec_dlrm"
    revisions = frozenset({1})

    # ------------------------------------------------------------------ validate
    def validate(self, checkpoint: dict[str, Any]) -> list[str]:
        """Every problem of ``checkpoint`` (config and tensors) as messages; [] when clean."""
        c = _Checker()
        if not isinstance(checkpoint, dict):
            return [f"the checkpoint must be a dict, found {type(checkpoint).__name__}"]
        for key in TOP_KEYS:
            if key not in checkpoint:
                c.add(f"top-level key {key!r} is missing")
        if checkpoint.get("format", CHECKPOINT_FORMAT) != CHECKPOINT_FORMAT:
            c.add(f"format must be {CHECKPOINT_FORMAT!r}, found {checkpoint.get('format')!r}")
        rev = checkpoint.get("family_revision", 1)
        if rev not in self.revisions:
            c.add(f"family_revision {rev!r} is not supported (supported: {sorted(self.revisions)})")
        config = checkpoint.get("config", {})
        state = checkpoint.get("state_dict", {})
        if not isinstance(config, dict):
            c.add(f"config must be a dict, found {type(config).__name__}")
            config = {}
        if not isinstance(state, dict):
            c.add(f"state_dict must be a dict, found {type(state).__name__}")
            state = {}
        expected = self._check_config(config, c)
        self._check_tensors(state, expected, c)
        return c.problems

    def _check_config(self, cfg: dict[str, Any], c: _Checker) -> list[_Expected]:
        dim = cfg.get("embedding_dim")
        if not (_is_int(dim) and dim > 0):
            c.add(f"config.embedding_dim must be a positive int, found {dim!r}")
            dim = None
        dense = self._check_dense(cfg.get("dense"), c)
        sparse = cfg.get("sparse")
        if not isinstance(sparse, list) or not sparse:
            c.add("config.sparse must be a non-empty list of features")
            sparse = []
        tables = cfg.get("tables")
        if not isinstance(tables, list) or not tables:
            c.add("config.tables must be a non-empty list of tables")
            tables = []
        expected = self._check_tables(tables, dim, c)
        self._check_features(sparse, tables, c)

        interaction = cfg.get("interaction")
        if interaction not in INTERACTIONS:
            c.add(f"config.interaction must be one of {INTERACTIONS}, found {interaction!r}")
        self_inter = cfg.get("self_interaction", False)
        if not isinstance(self_inter, bool):
            c.add(f"config.self_interaction must be true or false, found {self_inter!r}")
            self_inter = False
        if self_inter and interaction == "cat":
            c.add("config.self_interaction is only meaningful with interaction 'dot'")
        label = cfg.get("label")
        if label is not None and not isinstance(label, str):
            c.add(f"config.label must be a string, found {label!r}")
        if not isinstance(cfg.get("train", {}), dict):
            c.add("config.train must be a dict")

        dense_arch = self._check_arch(cfg, "dense_arch", c)
        over_arch = self._check_arch(cfg, "over_arch", c)
        if dense_arch and interaction == "dot" and dim is not None and dense_arch[-1] != dim:
            c.add(
                f"config.dense_arch's last width must equal embedding_dim={dim} for the dot "
                f"interaction, found {dense_arch[-1]}"
            )
        if over_arch and over_arch[-1] != 1:
            c.add(f"config.over_arch's last width must be 1 (the score), found {over_arch[-1]}")

        n_dense = len(dense) if dense is not None else None
        expected += self._arch_tensors("dense_arch", n_dense, dense_arch)
        over_in = None
        if dense_arch and dim is not None and interaction in INTERACTIONS:
            over_in = over_arch_input(interaction, dense_arch[-1], len(sparse), dim, self_inter)
        expected += self._arch_tensors("over_arch", over_in, over_arch)
        return expected

    def _check_dense(self, dense: Any, c: _Checker) -> list[dict[str, Any]] | None:
        if not isinstance(dense, list) or not dense:
            c.add("config.dense must be a non-empty list of dense columns")
            return None
        names = set()
        for i, d in enumerate(dense):
            where = f"config.dense[{i}]"
            if not isinstance(d, dict):
                c.add(f"{where} must be a dict, found {d!r:.40}")
                continue
            name = d.get("name")
            if not isinstance(name, str) or not name:
                c.add(f"{where}.name must be a non-empty string, found {name!r}")
            elif name in names:
                c.add(f"{where}.name {name!r} is used twice")
            names.add(name)
            if d.get("transform") not in TRANSFORMS:
                c.add(
                    f"{where}.transform must be one of {TRANSFORMS}, found {d.get('transform')!r}"
                )
            # Finite in float32, as the model directory's reader requires (``float32_finite``).
            if not float32_finite(d.get("fill", 0.0)):
                c.add(f"{where}.fill must be a number finite in float32, found {d.get('fill')!r}")
            if d.get("transform") == "standard":
                if not float32_finite(d.get("mean")):
                    c.add(
                        f"{where}.mean must be a number finite in float32 for 'standard', found "
                        f"{d.get('mean')!r}"
                    )
                std = d.get("std")
                if not float32_finite(std, positive=True):
                    c.add(
                        f"{where}.std must be a number > 0 and finite in float32 for 'standard', "
                        f"found {std!r}"
                    )
        return dense

    def _check_tables(self, tables: list[Any], dim: int | None, c: _Checker) -> list[_Expected]:
        expected: list[_Expected] = []
        names = set()
        for i, t in enumerate(tables):
            where = f"config.tables[{i}]"
            if not isinstance(t, dict):
                c.add(f"{where} must be a dict, found {t!r:.40}")
                continue
            name = t.get("name")
            if not isinstance(name, str) or not name or "." in name:
                c.add(f"{where}.name must be a non-empty string without '.', found {name!r}")
                continue
            if name in names:
                c.add(f"{where}.name {name!r} is used twice")
            names.add(name)
            where = f"table {name!r}"
            kind = t.get("kind")
            feats = t.get("features")
            if not (isinstance(feats, list) and feats and all(isinstance(f, str) for f in feats)):
                c.add(f"{where}: features must be a non-empty list of names, found {feats!r:.60}")
            card = t.get("cardinality")
            if card is not None and not (_is_int(card) and card >= 0):
                c.add(f"{where}: cardinality must be a non-negative int, found {card!r}")
            rows = t.get("rows")
            if not (_is_int(rows) and rows >= 1):
                c.add(f"{where}: rows must be a positive int, found {rows!r}")
                rows = None
            if kind == "memrec":
                if rows is not None and rows > MAX_HASHED_ROWS:
                    c.add(f"{where}: rows must be < 2**31 for hashing, found {rows}")
                k, kw = t.get("k"), t.get("k_w")
                wr, wc = t.get("weight_rows"), t.get("weight_cols")
                for key, v in (("k", k), ("k_w", kw), ("weight_rows", wr)):
                    if not (_is_int(v) and 1 <= v <= MAX_HASHED_ROWS):
                        c.add(f"{where}: {key} must be a positive int, found {v!r}")
                if not (_is_int(wc) and (wc == 1 or wc == k)):
                    c.add(f"{where}: weight_cols must be 1 or k={k!r}, found {wc!r}")
                c.check_seeds(f"{where}: token_seeds", t.get("token_seeds"), k)
                c.check_seeds(f"{where}: weight_seeds", t.get("weight_seeds"), kw)
                wr = wr if _is_int(wr) else None
                wc = wc if _is_int(wc) else None
                expected.append((f"embeddings.{name}.token", (rows, dim), "float32"))
                expected.append((f"embeddings.{name}.weight", (wr, wc), "float32"))
            elif kind == "full":
                expected.append((f"embeddings.{name}.table", (rows, dim), "float32"))
                vrows = rows - 1 if rows is not None else None
                expected.append((f"embeddings.{name}.vocab", (vrows,), "int64"))
            else:
                c.add(f"{where}: kind must be one of {TABLE_KINDS}, found {kind!r}")
        return expected

    def _check_features(self, sparse: list[Any], tables: list[Any], c: _Checker) -> None:
        by_table = {t["name"]: t for t in tables if isinstance(t, dict) and "name" in t}
        names = set()
        for i, f in enumerate(sparse):
            where = f"config.sparse[{i}]"
            if not isinstance(f, dict):
                c.add(f"{where} must be a dict, found {f!r:.40}")
                continue
            name = f.get("name")
            if not isinstance(name, str) or not name:
                c.add(f"{where}.name must be a non-empty string, found {name!r}")
                continue
            if name in names:
                c.add(f"{where}.name {name!r} is used twice")
            names.add(name)
            where = f"feature {name!r}"
            dtype, cols, multi = f.get("dtype"), f.get("columns"), f.get("multi_hot", False)
            if dtype not in FEATURE_DTYPES:
                c.add(f"{where}: dtype must be one of {FEATURE_DTYPES}, found {dtype!r}")
            if not (isinstance(cols, list) and cols and all(isinstance(x, str) for x in cols)):
                c.add(f"{where}: columns must be a non-empty list of names, found {cols!r:.60}")
            elif dtype == "cross" and len(cols) < 2:
                c.add(f"{where}: a cross needs two or more columns, found {cols}")
            elif dtype in ("int", "string") and len(cols) != 1:
                c.add(f"{where}: an {dtype} feature reads exactly one column, found {cols}")
            if not isinstance(multi, bool):
                c.add(f"{where}: multi_hot must be true or false, found {multi!r}")
            elif multi and dtype == "cross":
                c.add(f"{where}: a cross cannot be multi_hot")
            if f.get("pooling", "sum") not in POOLINGS:
                c.add(f"{where}: pooling must be one of {POOLINGS}, found {f.get('pooling')!r}")
            table = by_table.get(f.get("table"))
            if table is None:
                c.add(f"{where}: table {f.get('table')!r} is not in config.tables")
            elif name not in (table.get("features") or []):
                c.add(f"{where}: table {table['name']!r} does not list it in its features")
        for t in by_table.values():
            for fname in t.get("features") or []:
                if fname not in names:
                    c.add(f"table {t['name']!r}: feature {fname!r} is not in config.sparse")

    def _check_arch(self, cfg: dict[str, Any], key: str, c: _Checker) -> list[int]:
        widths = cfg.get(key)
        if not (isinstance(widths, list) and widths and all(_is_int(w) and w > 0 for w in widths)):
            c.add(f"config.{key} must be a non-empty list of positive ints, found {widths!r:.60}")
            return []
        return widths

    @staticmethod
    def _arch_tensors(arch: str, n_in: int | None, widths: list[int]) -> list[_Expected]:
        out: list[_Expected] = []
        for i, w in enumerate(widths):
            out.append((layer_weight(arch, i), (w, n_in), "float32"))
            out.append((layer_bias(arch, i), (w,), "float32"))
            n_in = w
        return out

    @staticmethod
    def _check_tensors(state: dict[str, Any], expected: list[_Expected], c: _Checker) -> None:
        names = {name for name, _, _ in expected}
        missing = [name for name, _, _ in expected if name not in state]
        unexpected = sorted(set(state) - names)
        if missing:
            c.add(f"state_dict is missing {len(missing)} tensor(s): {', '.join(missing)}")
        if unexpected:
            c.add(f"state_dict has unexpected tensor(s): {', '.join(map(str, unexpected))}")
        for name, shape, dtype in expected:
            if name not in state:
                continue
            arr = state[name]
            if not isinstance(arr, np.ndarray):
                c.add(f"{name}: expected a tensor, found {type(arr).__name__}")
                continue
            want = "[" + ", ".join("?" if s is None else str(s) for s in shape) + "]"
            ok_shape = arr.ndim == len(shape) and all(
                s is None or s == n for s, n in zip(shape, arr.shape, strict=True)
            )
            if not ok_shape or arr.dtype != np.dtype(dtype):
                c.add(f"{name}: expected {dtype} {want}, found {arr.dtype} {list(arr.shape)}")
                continue
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                c.add(f"{name}: contains NaN or infinite values")
            if name.endswith(".vocab") and arr.size > 1 and not (np.diff(arr) > 0).all():
                c.add(f"{name}: the vocabulary must be strictly increasing")

    # ------------------------------------------------------------------ to_spec
    def to_spec(self, checkpoint: dict[str, Any]) -> ModelSpec:
        """Map a checkpoint that :meth:`validate` accepted onto a :class:`ModelSpec`."""
        cfg, state = checkpoint["config"], checkpoint["state_dict"]
        tensors: dict[str, np.ndarray] = {}
        tables = []
        for t in cfg["tables"]:
            name = t["name"]
            if t["kind"] == "memrec":
                tensors[table_rows(name)] = state[f"embeddings.{name}.token"]
                tensors[table_weight(name)] = state[f"embeddings.{name}.weight"]
                tables.append(
                    TableSpec(
                        name=name,
                        kind="memrec",
                        features=tuple(t["features"]),
                        rows=t["rows"],
                        cardinality=t.get("cardinality"),
                        k=t["k"],
                        token_seeds=seeds_from_hex(t["token_seeds"]),
                        weight_rows=t["weight_rows"],
                        weight_cols=t["weight_cols"],
                        k_w=t["k_w"],
                        weight_seeds=seeds_from_hex(t["weight_seeds"]),
                    )
                )
            else:
                tensors[table_rows(name)] = state[f"embeddings.{name}.table"]
                tensors[table_vocab(name)] = state[f"embeddings.{name}.vocab"]
                tables.append(
                    TableSpec(
                        name=name,
                        kind="full",
                        features=tuple(t["features"]),
                        rows=t["rows"],
                        cardinality=t["rows"] - 1,
                    )
                )
        by_table = {t.name: t for t in tables}
        sparse = tuple(
            FeatureSpec(
                name=f["name"],
                columns=tuple(f["columns"]),
                dtype=f["dtype"],
                multi_hot=f.get("multi_hot", False),
                table=f["table"],
                slot=by_table[f["table"]].features.index(f["name"]),
                pooling=f.get("pooling", "sum"),
            )
            for f in cfg["sparse"]
        )
        dense = tuple(
            DenseSpec(
                name=d["name"],
                transform=d["transform"],
                fill=float(d.get("fill", 0.0)),
                mean=float(d["mean"]) if d["transform"] == "standard" else None,
                std=float(d["std"]) if d["transform"] == "standard" else None,
            )
            for d in cfg["dense"]
        )
        dim = cfg["embedding_dim"]
        self_inter = cfg.get("self_interaction", False)
        over_in = over_arch_input(
            cfg["interaction"], cfg["dense_arch"][-1], len(sparse), dim, self_inter
        )
        dense_arch = _layers("dense_arch", len(dense), cfg["dense_arch"], relu_last=True)
        over_arch = _layers("over_arch", over_in, cfg["over_arch"], relu_last=False)
        for layer in dense_arch + over_arch:
            tensors[layer.weight] = state[layer.weight]
            tensors[layer.bias] = state[layer.bias]
        return ModelSpec(
            family=self.name,
            family_revision=checkpoint["family_revision"],
            embedding_dim=dim,
            dense=dense,
            sparse=sparse,
            tables=tuple(tables),
            dense_arch=dense_arch,
            over_arch=over_arch,
            interaction=cfg["interaction"],
            self_interaction=self_inter,
            label=cfg.get("label"),
            tensors=tensors,
            train=dict(cfg.get("train", {})),
        )


def _layers(arch: str, n_in: int, widths: list[int], relu_last: bool) -> tuple[LayerSpec, ...]:
    layers = []
    for i, w in enumerate(widths):
        relu = relu_last or i < len(widths) - 1
        layers.append(LayerSpec(arch, i, n_in, w, relu))
        n_in = w
    return tuple(layers)
