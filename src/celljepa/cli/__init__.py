"""The ``celljepa`` command line.

Commands: ingest, validate, splits, eval-baselines, benchmark, pretrain, train-transition, sweep, holdout, report,
slurm, info. ``python -m celljepa.cli`` is the same as ``celljepa``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .._errors import CelljepaError, storage_error
from .._logging import logger
from .._settings import align_numba_threads, settings
from ..data._keys import suggest
from . import _slurm
from ._commands import COMMANDS as _COMMANDS
from ._commands import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, verbosity
from ._commands import build_parser as _build_parser

__all__ = ["COMMANDS", "EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]

COMMANDS = {**_COMMANDS, "slurm": (_slurm.add_parser, _slurm.run)}


def build_parser():
    """The argument parser of the ``celljepa`` command (every command, ``slurm`` included)."""
    return _build_parser(COMMANDS)


def _unknown_options(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """Name a misspelt option before argparse reports only the required one it hides (``--outt`` vs ``--out``).

    The command (and a nested one, ``slurm benchmark``) is found first; what follows ``--`` is left alone.
    """
    i = 0
    while True:
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        if sub is None:
            break
        found = next((k for k in range(i, len(argv)) if argv[k] == "--" or not argv[k].startswith("-")), None)
        if found is None or argv[found] not in sub.choices:
            return
        parser, i = sub.choices[argv[found]], found + 1
    known = [k for k in parser._option_string_actions if k.startswith("--")]
    for token in argv[i:]:
        if token == "--":
            break
        if not token.startswith("--"):
            continue
        name = token.split("=", 1)[0]
        if name in known or any(k.startswith(name) for k in known):
            continue
        parser.error(f"unknown option {name}.{suggest(name, known)} `{parser.prog} --help` lists the options.")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 error or invalid data, 2 usage)."""
    # a command is its own process: numba (scanpy's kernels) follows OMP_NUM_THREADS there
    if (why := align_numba_threads()) not in (None, "set"):
        logger.warning(why)
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    _unknown_options(parser, argv)
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
