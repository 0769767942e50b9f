"""The ``memrec-infer`` command line: one click group, commands loaded lazily.

Each command lives in ``memrec_infer/commands/<name>.py`` as a module-level ``command``. Loading
them only when invoked keeps ``memrec-infer --help`` and start-up fast (no Numba, ONNX Runtime
or torch import until a command needs it).
"""

from __future__ import annotations

import importlib
import signal

import click

from . import __version__

# name -> one-line summary shown by `memrec-infer --help` without importing the command.
COMMANDS = {
    "train": "Train a MEM-REC (or full-table) DLRM on a Parquet file (needs the train extra).",
    "convert": "Convert a trained checkpoint into a self-contained model directory.",
    "info": "Describe a model directory: features, tables, bytes, compression.",
    "score": "Score Parquet files with a model directory, streaming.",
    "bench": "Measure latency and throughput per stage against the uncompressed baseline.",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module = importlib.import_module(f"memrec_infer.commands.{cmd_name}")
        return module.command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl(list(COMMANDS.items()))


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # As for Ctrl-C: unwind, so that the temporaries of unfinished outputs are removed on the
    # way out (the default action ends the process on the spot and leaves them behind).
    raise SystemExit(128 + signum)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="memrec-infer")
def main() -> None:
    """CPU inference for recommendation models with MEM-REC compressed embeddings.

    \b
    Example (the bundled sample):
      memrec-infer train data/flights.parquet --label delayed -o model.pt ...
      memrec-infer convert model.pt -o model/
      memrec-infer score model/ data/flights.parquet -o scores.parquet
      memrec-infer bench model/
    """
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
