"""``memrec-infer bench``: latency and throughput per stage, optionally against a baseline."""

from __future__ import annotations

import json

import click

from ..errors import MemrecError
from . import echo_stdout


def _int_list(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None
    if not out or min(out) < 1:
        raise click.BadParameter(f"expected positive integers, got {value!r}")
    return out


@click.command(
    name="bench",
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="""\b
Examples:
  memrec-infer bench model/
  memrec-infer bench model/ --batch-sizes 1,1024 --threads 1,2 --json > bench.json
  memrec-infer bench model/ --baseline full_model/ --input data/flights.parquet --plot b.png
""",
)
@click.argument("model_dir", type=click.Path(file_okay=False))
@click.option(
    "--batch-sizes",
    default="1,64,1024,16384",
    show_default=True,
    callback=_int_list,
    help="Comma-separated batch sizes.",
)
@click.option(
    "--threads",
    default=None,
    callback=_int_list,
    help="Comma-separated thread counts (Numba and ONNX Runtime together; more than the cores "
    "run as all cores) [default: 1 and all cores].",
)
@click.option(
    "--baseline",
    type=click.Path(file_okay=False),
    default=None,
    help="A second model directory (e.g. the full-table model) timed on the same batches.",
)
@click.option(
    "--input",
    "input_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Take rows from this Parquet file instead of generating them.",
)
@click.option(
    "--seconds",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Time budget per batch size and thread count.",
)
@click.option(
    "--iterations",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="At most this many timed calls per batch size and thread count.",
)
@click.option(
    "--warmup",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Untimed calls first; the first one is reported separately (warm-up).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of generated input.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout.")
@click.option(
    "--plot",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write latency vs batch size per stage to this PNG (needs matplotlib).",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress lines on stderr.")
def command(
    model_dir: str,
    batch_sizes: list[int],
    threads: list[int] | None,
    baseline: str | None,
    input_path: str | None,
    seconds: float,
    iterations: int,
    warmup: int,
    seed: int,
    as_json: bool,
    plot: str | None,
    quiet: bool,
) -> None:
    """Measure MODEL_DIR: p50/p99 latency and rows/s per stage (prepare, embed, dense, total).

    Every batch size is measured at every thread count; the first call of each is reported
    apart (warm-up), and so are loading (or, on a first run, compiling) the lookup kernels and
    the start-up time (process start to the first scored batch). Input rows are generated from
    the model's schema unless --input is given.
    """
    from ..benchmark import check_plot_path, format_table, run_benchmark
    from ..benchmark import plot as draw

    log = None if quiet else (lambda msg: click.echo(msg, err=True))
    try:
        if plot is not None:
            plot = check_plot_path(plot)  # before minutes of measuring, not after
        result = run_benchmark(
            model_dir,
            batch_sizes,
            threads,
            baseline_dir=baseline,
            input_path=input_path,
            seconds=seconds,
            max_iterations=iterations,
            warmup=warmup,
            seed=seed,
            log=log,
        )
    except MemrecError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        echo_stdout(json.dumps(result.to_dict(), indent=1))
    else:
        echo_stdout(format_table(result))
    if plot is not None:  # after the results are out: a failure here loses nothing
        try:
            draw(result, plot)
        except MemrecError as exc:
            raise click.ClickException(str(exc)) from exc
