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
    type=click.Path(file_okay=False),  # a str: Path("") would read as the current directory
    default=None,
    help="Model directory to create. Default: next to the checkpoint, named after it "
    "(model.pt -> model/).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Replace the output directory if it is not empty. Only a model directory written by "
    "convert is replaced; any other directory, or one holding the checkpoint, is refused.",
)
@click.option(
    "--token-dtype",
    # memrec_infer.token_dtype.TOKEN_DTYPES, spelled out: `convert -h` then imports no numpy.
    type=click.Choice(["float32", "float16"]),
    default="float32",
    show_default=True,
    help="How tokens.npy stores the token (and full-table) rows. float16 halves their bytes; "
    "each value is rounded to nearest even, keeping 11 significant bits, so scores then differ "
    "from the checkpoint's by that rounding. A value beyond float16's range (65504) is refused.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress lines on stderr.")
def command(
    checkpoint: Path, output: str | None, force: bool, token_dtype: str, quiet: bool
) -> None:
    """Convert a trained checkpoint into a self-contained model directory.

    The checkpoint is read without torch and without running code from it, validated (every
    problem is reported at once), written to a temporary directory, re-opened with every
    check, run once with ONNX Runtime, then moved into place.

    \b
    Example:
      memrec-infer convert model.pt -o model/
      memrec-infer convert model.pt --force        # writes model/, replacing it
      memrec-infer convert model.pt -o model16/ --token-dtype float16
    """
    from ..convert import convert
    from ..model_dir import table_footprint
    from ..token_dtype import manifest_token_dtype

    if output == "":
        raise click.ClickException(
            "the output path is empty; name a directory, or leave -o out to write next to the "
            "checkpoint"
        )
    log = None if quiet else (lambda msg: click.echo(msg, err=True))
    try:
        out = None if output is None else Path(output)
        manifest = convert(checkpoint, out, force=force, log=log, token_dtype=token_dtype)
    except MemrecError as exc:
        raise click.ClickException(str(exc)) from exc
    if quiet:
        return
    dim, stored = manifest["embedding_dim"], manifest_token_dtype(manifest)
    sizes = [table_footprint(t, dim, stored) for t in manifest["tables"]]
    total = sum(s for s, _ in sizes)
    line = (
        f"{manifest['path']}: {len(manifest['sparse'])} sparse + {len(manifest['dense'])} "
        f"dense features, {len(sizes)} table(s), {total:,} bytes of tables ({stored} tokens)"
    )
    if all(f is not None for _, f in sizes) and total:
        line += f", {sum(f for _, f in sizes) / total:.1f}x smaller than full tables"
    click.echo(line, err=True)
