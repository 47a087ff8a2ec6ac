"""The ``celljepa`` command line.

Commands: ingest, validate, splits, eval-baselines, benchmark, pretrain, train-transition, sweep, holdout, report,
peers, slurm, info. ``python -m celljepa.cli`` is the same as ``celljepa``.

Layout: :mod:`._parser` (the parser, exit codes, did-you-mean for commands and options), :mod:`._options` (the
options several commands share and the types that check them), one module per group of commands (:mod:`._data`,
:mod:`._bench`, :mod:`._train`, :mod:`._peers`, :mod:`._info`, :mod:`._slurm`), :mod:`._commands` (the registry).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from .._errors import CelljepaError, storage_error
from .._logging import logger
from .._settings import settings
from .._threads import prepare_command
from . import _slurm
from ._commands import COMMANDS as _COMMANDS
from ._parser import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, CommandParser, verbosity
from ._parser import build_parser as _build_parser

__all__ = ["COMMANDS", "EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main", "verbosity"]

#: ``{name: (add, run)}`` of every command, ``slurm`` included.
COMMANDS = {**_COMMANDS, "slurm": (_slurm.add_parser, _slurm.run)}


def build_parser() -> CommandParser:
    """The argument parser of the ``celljepa`` command (every command, ``slurm`` included)."""
    return _build_parser(COMMANDS)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 error or invalid data, 2 usage)."""
    # a command is its own process: its thread pools are sized to the CPUs it may use and idle threads sleep,
    # set before torch, numba or the kernels start a pool
    threads = prepare_command()
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)  # an unknown command or option: a usage error with a did-you-mean
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    settings.verbosity = verbosity(args)
    for line in threads:
        logger.info(f"threads: {line}")
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
