"""``celljepa info``: versions and the build of the compiled kernels."""

from __future__ import annotations

import argparse
import json

from .._version import __version__
from ._parser import EXIT_OK, Subcommands


def add_info(sub: Subcommands) -> None:
    """The ``info`` command."""
    sub.add_parser("info", help="print versions and the build of the compiled kernels (JSON)")


def run_info(args: argparse.Namespace) -> int:
    """``celljepa info``: prints JSON."""
    from ..kernels import available_backends, build_info

    print(json.dumps({"celljepa": __version__, "build": build_info(), "backends": available_backends()}, indent=2))
    return EXIT_OK


COMMANDS = {"info": (add_info, run_info)}
