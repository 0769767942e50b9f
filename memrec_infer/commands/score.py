"""``memrec-infer score``: score Parquet files with a model directory, streaming."""

from __future__ import annotations

import click

from ..errors import MemrecError
from ..scoring import DEFAULT_BATCH_SIZE, parse_mapping, score_parquet


@click.command(
    name="score",
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="""\b
Examples:
  memrec-infer score model/ data/flights.parquet -o scores.parquet --keep flight
  memrec-infer score model/ 'logs/day=*/' -o out/ --partitioned --threads 4
  memrec-infer score model/ req.parquet -o s.parquet --map carrier=airline --force
""",
)
@click.argument("model_dir", type=click.Path(file_okay=False))
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "-o", "--output", required=True, help="Output Parquet file (a directory with --partitioned)."
)
@click.option(
    "--map",
    "mapping",
    multiple=True,
    metavar="MODEL_COL=INPUT_COL",
    help="Read the model's column MODEL_COL from the input column INPUT_COL (repeatable).",
)
@click.option(
    "--keep",
    multiple=True,
    metavar="COL",
    help="Copy the input column COL to the output beside the score (repeatable).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=DEFAULT_BATCH_SIZE,
    show_default=True,
    help="Rows per scoring call.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="Threads for the Numba kernels and ONNX Runtime together, at most the cores "
    "[default: all cores].",
)
@click.option("--partitioned", is_flag=True, help="Write a directory of part-NNNNN.parquet files.")
@click.option(
    "--part-rows",
    type=click.IntRange(min=1),
    default=1 << 20,
    show_default=True,
    help="Rows per part file with --partitioned.",
)
@click.option("--force", is_flag=True, help="Overwrite the output if it exists.")
@click.option(
    "--verify/--no-verify",
    default=True,
    show_default=True,
    help="Check the model's files against their recorded sha256 first (reads every byte once).",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary line.")
def command(
    model_dir: str,
    inputs: tuple[str, ...],
    output: str,
    mapping: tuple[str, ...],
    keep: tuple[str, ...],
    batch_size: int,
    threads: int | None,
    partitioned: bool,
    part_rows: int,
    force: bool,
    verify: bool,
    quiet: bool,
) -> None:
    """Score Parquet INPUTS (files, directories, globs) with the model in MODEL_DIR.

    Rows are read as a stream (bounded memory, any input size) and scored in input order;
    the output holds the --keep columns and `score` (float32). It is written under a
    temporary name and renamed only when every row is scored.
    """
    try:
        summary = score_parquet(
            model_dir,
            list(inputs),
            output,
            mapping=parse_mapping(mapping),
            keep=list(keep),
            batch_size=batch_size,
            partitioned=partitioned,
            part_rows=part_rows,
            force=force,
            threads=threads,
            verify=verify,
            progress=not quiet,
        )
    except MemrecError as exc:
        raise click.ClickException(str(exc)) from exc
    if not quiet:
        click.echo(str(summary), err=True)
