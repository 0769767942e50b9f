"""``memrec-infer info``: describe a model directory (features, tables, bytes, compression)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..errors import MemrecError
from . import echo_stdout


def describe(manifest: dict[str, Any]) -> dict[str, Any]:
    """A JSON-able description of a model directory's manifest.

    Each table has ``bytes`` (what it occupies in the directory, its rows counted at
    ``token_dtype``'s item size) and ``full_bytes`` (its equivalent full float32 table: one row
    per distinct training value; None if the trainer did not record the cardinality);
    ``compression`` is their ratio.
    """
    from ..model_dir import table_footprint
    from ..token_dtype import manifest_token_dtype

    dim, token_dtype = manifest["embedding_dim"], manifest_token_dtype(manifest)
    tables = []
    for t in manifest["tables"]:
        size, full = table_footprint(t, dim, token_dtype)
        entry = {
            "name": t["name"],
            "kind": t["kind"],
            "features": t["features"],
            "rows": t["rows"],
            "cardinality": t.get("cardinality"),
            "bytes": size,
            "full_bytes": full,
            "compression": (full / size) if full is not None else None,
        }
        if t["kind"] == "memrec":
            entry.update(k=t["k"], weight_shape=[t["weight_rows"], t["weight_cols"]], k_w=t["k_w"])
        tables.append(entry)
    total = sum(t["bytes"] for t in tables)
    fulls = [t["full_bytes"] for t in tables]
    total_full = sum(fulls) if all(f is not None for f in fulls) else None
    return {
        "format_version": manifest["format_version"],
        "family": manifest["family"],
        "family_revision": manifest["family_revision"],
        "embedding_dim": dim,
        "token_dtype": token_dtype,
        "interaction": manifest.get("interaction"),
        "label": manifest.get("label"),
        "dense": manifest["dense"],
        "sparse": [
            {k: f[k] for k in ("name", "columns", "dtype", "multi_hot", "pooling", "table")}
            for f in manifest["sparse"]
        ],
        "tables": tables,
        "table_bytes": total,
        "full_table_bytes": total_full,
        "compression": (total_full / total) if total_full is not None and total else None,
        "files": {name: e["bytes"] for name, e in sorted(manifest["files"].items())},
    }


def _ratio(r: float | None) -> str:
    return "unknown" if r is None else f"{r:,.1f}x"


def _bytes(n: int | None) -> str:
    return "unknown" if n is None else f"{n:,}"


def _grid(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]


def render(d: dict[str, Any], path: Path) -> str:
    """The text form of :func:`describe` for the terminal."""
    out = [
        f"{path}: format {d['format_version']}, family {d['family']} rev "
        f"{d['family_revision']}, D={d['embedding_dim']}, {d['token_dtype']} token rows, "
        f"interaction {d['interaction']}, label {d['label']}",
        f"dense features ({len(d['dense'])}): "
        + ", ".join(f"{x['name']} [{x['transform']}]" for x in d["dense"]),
        f"sparse features ({len(d['sparse'])}):",
    ]
    head = ["name", "columns", "dtype", "pooling", "table"]
    out += _grid(
        [head]
        + [
            [
                f["name"],
                ",".join(f["columns"]),
                f["dtype"] + ("[]" if f["multi_hot"] else ""),
                f["pooling"],
                f["table"],
            ]
            for f in d["sparse"]
        ]
    )
    out.append(f"tables ({len(d['tables'])}):")
    head = ["name", "kind", "shape", "weights", "bytes", "cardinality", "full bytes", "ratio"]
    dim = d["embedding_dim"]
    out += _grid(
        [head]
        + [
            [
                t["name"],
                t["kind"],
                f"{t['rows']} x {dim}",
                "x".join(map(str, t["weight_shape"])) if "weight_shape" in t else "-",
                _bytes(t["bytes"]),
                _bytes(t["cardinality"]),
                _bytes(t["full_bytes"]),
                _ratio(t["compression"]),
            ]
            for t in d["tables"]
        ]
    )
    out.append(
        f"total: {_bytes(d['table_bytes'])} bytes of tables; equivalent full tables "
        f"{_bytes(d['full_table_bytes'])} bytes; compression {_ratio(d['compression'])}"
    )
    out.append("files: " + ", ".join(f"{n} {_bytes(b)}" for n, b in d["files"].items()))
    return "\n".join(out)


@click.command(name="info")
@click.argument("model", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
@click.option("--verify", is_flag=True, help="Also check every file's sha256.")
def command(model: Path, as_json: bool, verify: bool) -> None:
    """Describe a model directory: features, tables, bytes, compression.

    The directory is checked as serving opens it (manifest, file sizes, the ONNX graph's
    inputs and output); ``--verify`` adds the files' sha256.

    Compression compares each table with its equivalent full float32 table (one row per
    distinct training value, as recorded by the trainer; "unknown" if not recorded), whatever
    the model's token dtype: a float16 model counts its halved token bytes.

    \b
    Example:
      memrec-infer info model/
      memrec-infer info model/ --json
    """
    from ..dense_session import open_dense_session
    from ..model_dir import read_model_dir

    try:
        model_dir = read_model_dir(model, verify=verify)
        # The graph too, as serving opens it: a model that ``score`` would refuse is refused
        # here (a graph for another number of dense columns, say).
        open_dense_session(model_dir.onnx_path, model_dir.manifest, threads=1)
    except MemrecError as exc:
        raise click.ClickException(str(exc)) from exc
    manifest = model_dir.manifest
    d = describe(manifest)
    echo_stdout(json.dumps(d, indent=2, sort_keys=True) if as_json else render(d, model))
