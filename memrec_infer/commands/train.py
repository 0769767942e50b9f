"""``memrec-infer train``: fit a DLRM with MEM-REC (or full) tables on a Parquet file.

torch is imported only when the command runs, so the rest of the CLI works without it.
"""

from __future__ import annotations

import os

import click

from ..errors import MemrecError

_EXAMPLE = """
\b
Example (flights, months 1-10 train, 11-12 validation):
  memrec-infer train data/flights.parquet --label delayed --split "month>=11" \\
    --dense day,sched_dep_time,sched_arr_time,distance,hour,minute,plane_year,engines,seats \\
    --sparse carrier,flight,tailnum,origin,dest,manufacturer,plane_model \\
    --sparse "carrier*flight,tailnum*dest,origin*dest*hour" -o model.pt
"""


def _names(values: tuple[str, ...]) -> list[str]:
    """Repeated, comma-separated option values -> one list."""
    return [n.strip() for v in values for n in v.split(",") if n.strip()]


def _widths(text: str | None, option: str) -> list[int] | None:
    if text is None:
        return None
    try:
        widths = [int(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise click.BadParameter(
            f"expected comma-separated integers, got {text!r}", param_hint=option
        ) from None
    if not widths or min(widths) < 1:
        raise click.BadParameter(f"expected positive layer widths, got {text!r}", param_hint=option)
    return widths


def _transforms(values: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """``--transform log1p`` sets the default; ``--transform distance=log1p`` one column."""
    default = "standard"
    per_column: dict[str, str] = {}
    defaults = []
    for item in _names(values):
        if "=" in item:
            column, how = (s.strip() for s in item.split("=", 1))
            if column in per_column and per_column[column] != how:
                raise click.BadParameter(
                    f"{column!r} is given two transforms, {per_column[column]} and {how}",
                    param_hint="--transform",
                )
            per_column[column] = how
        else:
            defaults.append(item)
    if len(set(defaults)) > 1:
        raise click.BadParameter(
            f"two transforms for every column, {' and '.join(defaults)}; give one",
            param_hint="--transform",
        )
    return (defaults[0] if defaults else default), per_column


@click.command(
    "train",
    epilog=_EXAMPLE,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.argument("data", type=click.Path(dir_okay=False))
@click.option("--label", required=True, help="The 0/1 label column.")
@click.option("--dense", multiple=True, help="Numeric columns, comma-separated (repeatable).")
@click.option(
    "--sparse",
    multiple=True,
    required=True,
    help="Categorical columns, comma-separated (repeatable); 'a*b' crosses columns; "
    "list columns are multi-hot bags.",
)
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False), help="Checkpoint to write."
)
@click.option("--force", is_flag=True, help="Replace the checkpoint if it exists.")
@click.option("--valid", type=click.Path(dir_okay=False), help="Validation Parquet file.")
@click.option(
    "--split",
    help="Validation rows when --valid is absent: 'COLUMN OP VALUE' (OP: == != < <= > >=, "
    "e.g. 'month>=11') or a random fraction ('0.1', '10%'); 'none' for no validation. "
    "[default: 0.1]",
)
@click.option(
    "--embedding", type=click.Choice(["memrec", "full"]), default="memrec", show_default=True
)
@click.option("--dim", default=16, show_default=True, help="Embedding dimension D.")
@click.option(
    "--compression",
    default=16.0,
    show_default=True,
    help="MEM-REC: token rows = values / this (at least min(values, 64)) per table.",
)
@click.option("--k", "k", default=3, show_default=True, help="MEM-REC: token hashes per value.")
@click.option(
    "--k-w", "k_w", default=2, show_default=True, help="MEM-REC: weight hashes per value."
)
@click.option(
    "--weight-rows", type=int, help="MEM-REC: weight table rows [default: token rows // 4]."
)
@click.option("--scalar-weight", is_flag=True, help="MEM-REC: one weight per value, not per hash.")
@click.option("--pooling", type=click.Choice(["sum", "mean"]), default="sum", show_default=True)
@click.option("--share", is_flag=True, help="MEM-REC: put every feature in one shared table.")
@click.option("--dense-arch", help="Bottom MLP widths, last = --dim for dot [default: 64,DIM].")
@click.option("--over-arch", default="64,32,1", show_default=True, help="Top MLP widths, last = 1.")
@click.option("--interaction", type=click.Choice(["dot", "cat"]), default="dot", show_default=True)
@click.option("--self-interaction", is_flag=True, help="dot: include each vector with itself.")
@click.option(
    "--transform",
    multiple=True,
    help="Dense transform: identity, log1p or standard (the default), for every column "
    "('log1p') or one ('distance=log1p'); repeatable.",
)
@click.option("--epochs", default=1, show_default=True)
@click.option("--batch-size", default=512, show_default=True)
@click.option("--lr", default=2e-3, show_default=True, help="Adam learning rate.")
@click.option("--seed", default=0, show_default=True, help="Fixes hash seeds, init and shuffling.")
@click.option(
    "--threads",
    default=1,
    show_default=True,
    help="torch threads; the mini-batches are small, so one thread is usually fastest.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
def command(data, label, dense, sparse, output, force, valid, split, embedding, dim, compression,
            k, k_w, weight_rows, scalar_weight, pooling, share, dense_arch, over_arch, interaction,
            self_interaction, transform, epochs, batch_size, lr, seed, threads, quiet):  # fmt: skip  # noqa: ANN001, ANN201
    """Train a DLRM with MEM-REC (or full) embedding tables and write a checkpoint."""
    try:
        from memrec_infer.models.train import train
    except ImportError as exc:
        if exc.name != "torch" and "torch" not in str(exc):
            raise
        raise click.ClickException(
            "memrec-infer train needs PyTorch, which is not installed; install the train "
            "extra: pip install 'memrec-infer[train]'"
        ) from exc
    default_transform, column_transforms = _transforms(transform)
    if valid is not None and split is not None:
        raise click.BadParameter(
            "--split chooses validation rows from DATA, --valid gives them; give one",
            param_hint="--split",
        )
    split = "0.1" if split is None else split
    try:
        output = _check_output(output, force, [data] + ([valid] if valid else []))
        train(
            data,
            label,
            _names(dense),
            _names(sparse),
            output,
            valid=valid,
            split=None if split.strip().lower() == "none" else split,
            embedding=embedding,
            dim=dim,
            compression=compression,
            k=k,
            k_w=k_w,
            weight_rows=weight_rows,
            scalar_weight=scalar_weight,
            pooling=pooling,
            share=share,
            dense_arch=_widths(dense_arch, "--dense-arch"),
            over_arch=_widths(over_arch, "--over-arch"),
            interaction=interaction,
            self_interaction=self_interaction,
            transform=default_transform,
            column_transforms=column_transforms,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            threads=threads,
            log=None if quiet else (lambda msg: click.echo(msg, err=True)),
        )
    except MemrecError as exc:
        raise click.ClickException(str(exc)) from exc


def _check_output(output: str, force: bool, inputs: list[str]) -> str:
    # Before training, not after it: the checkpoint's directory takes files, and the
    # checkpoint replaces neither an input nor (without --force) an existing file.
    from ..errors import OutputPathError
    from ..parquet_output import check_not_input, writable_path

    path = writable_path(output)
    check_not_input(path, inputs, what="the checkpoint")
    if os.path.lexists(path) and not force:
        raise OutputPathError(f"{output} exists; pass --force to replace it")
    return path
