"""One module per CLI command, each exposing a ``command``; see ``memrec_infer.cli``."""

from __future__ import annotations

import os
import sys

import click


def echo_stdout(text: str) -> None:
    """``click.echo(text)`` to standard output, a failed write as a one-line error.

    A full disk (``> /dev/full``) or a reader that went away (``| head -c 1``) would otherwise
    end in a traceback, and in another one when Python flushes the stream on exit.
    """
    try:
        click.echo(text)
        sys.stdout.flush()
    except OSError as exc:
        # Whatever is left in the buffer cannot be written either: drop it, so that the exit
        # does not try again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        raise click.ClickException(
            f"could not write to standard output: {exc.strerror or exc}"
        ) from exc
