"""The argument parser of ``celljepa``: exit codes, verbosity, and did-you-mean for commands and options.

:class:`CommandParser` is an :class:`argparse.ArgumentParser` that names a misspelt command (``celljepa benchmrak``)
or option (``--no-jpea``) with the closest real one before argparse would report something else (an invalid
choice, or only the required option that the typo hides). Every sub-command's parser is one too (argparse makes
sub-parsers of the parent's class), so ``celljepa slurm benchmark --tme`` and the wrapped arguments after ``--``
(parsed by ``benchmark``'s own parser) get the same help. Only argparse's public interface is used.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from .._version import __version__
from ..data._keys import suggest

__all__ = [
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CommandParser",
    "Subcommands",
    "add_verbosity",
    "build_parser",
    "verbosity",
]

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 75  # EX_TEMPFAIL: stopped on SIGTERM/SIGUSR1 after a checkpoint; run the command again to resume


class Subcommands(Protocol):
    """What ``add_subparsers()`` returns, as the ``_add_NAME(sub)`` functions of the commands use it."""

    choices: Mapping[str, argparse.ArgumentParser]

    def add_parser(self, name: str, **kwargs) -> argparse.ArgumentParser:
        """Add the parser of one sub-command."""


class _RecordingGroup:
    """An argument group that reports each action it adds to its parser (the parser then knows every flag)."""

    def __init__(self, group, record: Callable[[argparse.Action], None]):
        self._group, self._record = group, record

    def add_argument(self, *args, **kwargs) -> argparse.Action:
        action = self._group.add_argument(*args, **kwargs)
        self._record(action)
        return action

    def __getattr__(self, name: str):
        return getattr(self._group, name)


class CommandParser(argparse.ArgumentParser):
    """An argument parser whose unknown commands and options are usage errors with a did-you-mean.

    It records every action added to it (directly, in an argument group or a mutually exclusive group) and the
    sub-commands of ``add_subparsers``; :meth:`check_names` runs before each parse, at every level of sub-commands.
    """

    def __init__(self, *args, **kwargs):
        self.recorded_actions: list[argparse.Action] = []
        self.commands: Mapping[str, argparse.ArgumentParser] | None = None
        self._groups_record = False  # argparse's own groups (positionals, options) stay plain
        super().__init__(*args, **kwargs)
        self._groups_record = True

    def add_argument(self, *args, **kwargs) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        self.recorded_actions.append(action)
        return action

    def add_argument_group(self, *args, **kwargs):
        group = super().add_argument_group(*args, **kwargs)
        return _RecordingGroup(group, self.recorded_actions.append) if self._groups_record else group

    def add_mutually_exclusive_group(self, **kwargs):
        return _RecordingGroup(super().add_mutually_exclusive_group(**kwargs), self.recorded_actions.append)

    def add_subparsers(self, **kwargs):
        action = super().add_subparsers(**kwargs)
        self.commands = action.choices
        return action

    def long_options(self, *, shown: bool = False) -> list[str]:
        """Every ``--flag`` of this parser (not of its sub-commands); ``shown``: only those its help lists."""
        return [
            s
            for a in self.recorded_actions
            if not (shown and a.help == argparse.SUPPRESS)
            for s in a.option_strings
            if s.startswith("--")
        ]

    def check_names(self, argv: Sequence[str]) -> None:
        """Refuse an unknown command or ``--option`` in ``argv`` with the closest real one (a usage error).

        The tokens up to the command (or to ``--``) are this parser's; the command's parser checks the rest when
        argparse hands them over. An option value that starts with ``--`` is no concern: argparse refuses it too.
        """
        known = self.long_options()
        for token in argv:
            if token == "--":
                return
            if self.commands is not None and not token.startswith("-"):
                if token not in self.commands:
                    self.error(
                        f"unknown command {token!r}.{suggest(token, self.commands)} "
                        f"`{self.prog} --help` lists the commands."
                    )
                return
            if not token.startswith("--"):
                continue
            name = token.split("=", 1)[0]
            if name in known or any(k.startswith(name) for k in known):  # argparse accepts a unique prefix
                continue
            shown = self.long_options(shown=True)
            self.error(f"unknown option {name}.{suggest(name, shown)} `{self.prog} --help` lists the options.")

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        self.check_names(args)
        return super().parse_known_args(args, namespace)


def build_parser(commands: Mapping[str, tuple]) -> CommandParser:
    """The argument parser of the ``celljepa`` command with ``commands`` (``{name: (add, run)}``)."""
    parser = CommandParser(prog="celljepa", description="Perturbation response prediction with JEPA.")
    parser.add_argument("--version", action="version", version=f"celljepa {__version__}")
    add_verbosity(parser, default=0)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add, _ in commands.values():
        add(sub)
    for sp in sub.choices.values():  # -v / -q after the command too (not reset when absent there)
        add_verbosity(sp, default=argparse.SUPPRESS)
    return parser


def add_verbosity(p: argparse.ArgumentParser, *, default) -> None:
    """``-v`` / ``-q`` (counted) on ``p``."""
    p.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=default,
        help="more log output (default: the start and end of each step; -v adds debug messages)",
    )
    p.add_argument(
        "-q", "--quiet", action="count", default=default, help="less log output (-q warnings only, -qq errors only)"
    )


def verbosity(args: argparse.Namespace) -> int:
    """``cj.settings.verbosity`` of the parsed arguments: 2 (info) by default, -v 3 (debug), -q 1, -qq 0."""
    return max(0, min(3, 2 + getattr(args, "verbose", 0) - getattr(args, "quiet", 0)))
