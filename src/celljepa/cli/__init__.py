"""The ``celljepa`` command line.

Commands: ingest, validate, splits, eval-baselines, benchmark, pretrain, train-transition, sweep, holdout, report,
slurm, info. ``python -m celljepa.cli`` is the same as ``celljepa``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from .._errors import CelljepaError, storage_error
from .._settings import settings
from . import _slurm
from ._commands import COMMANDS as _COMMANDS
from ._commands import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, verbosity
from ._commands import build_parser as _build_parser

__all__ = ["COMMANDS", "EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]

COMMANDS = {**_COMMANDS, "slurm": (_slurm.add_parser, _slurm.run)}


def build_parser():
    """The argument parser of the ``celljepa`` command (every command, ``slurm`` included)."""
    return _build_parser(COMMANDS)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 error or invalid data, 2 usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    settings.verbosity = verbosity(args)
    try:
        return COMMANDS[args.command][1](args)
    except CelljepaError as err:
        if os.environ.get("CELLJEPA_DEBUG"):
            raise
        print(f"celljepa {args.command}: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    except (OSError, RuntimeError) as err:  # the disk a run writes to: full, read-only, not ours
        message = storage_error(err)
        if message is None or os.environ.get("CELLJEPA_DEBUG"):
            raise
        print(f"celljepa {args.command}: error: {message}", file=sys.stderr)
        return EXIT_ERROR
