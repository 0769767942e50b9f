"""``memrec-infer convert``: checkpoint in, self-contained model directory out."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import MemrecError


@click.command(name="convert")
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Model directory to create. Default: next to the checkpoint, named after it "
    "(model.pt -> model/).",
)
@click.option("--force", is_flag=True, help="Replace the output directory if it is not empty.")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines on stderr.")
def command(checkpoint: Path, output: Path | None, force: bool, quiet: bool) -> None:
    """Convert a trained checkpoint into a self-contained model directory.

    The checkpoint is read without torch and without running code from it, validated (every
    problem is reported at once), written to a temporary directory, re-opened with every
    check, run once with ONNX Runtime, then moved into place.

    \b
    Example:
      memrec-infer convert model.pt -o model/
      memrec-infer convert model.pt --force        # writes model/, replacing it
    """
    from ..convert import convert
    from ..model_dir import table_footprint

    log = None if quiet else (lambda msg: click.echo(msg, err=True))
    try:
        manifest = convert(checkpoint, output, force=force, log=log)
    except MemrecError as exc:
        raise click.ClickException(str(exc)) from exc
    if quiet:
        return
    dim = manifest["embedding_dim"]
    sizes = [table_footprint(t, dim) for t in manifest["tables"]]
    total = sum(s for s, _ in sizes)
    line = (
        f"{manifest['path']}: {len(manifest['sparse'])} sparse + {len(manifest['dense'])} "
        f"dense features, {len(sizes)} table(s), {total:,} bytes of tables"
    )
    if all(f is not None for _, f in sizes) and total:
        line += f", {sum(f for _, f in sizes) / total:.1f}x smaller than full tables"
    click.echo(line, err=True)
