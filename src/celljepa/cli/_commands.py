"""The commands of ``celljepa`` except ``slurm`` (which wraps them; :mod:`celljepa.cli._slurm`).

Each command is a pair ``(add(subparsers), run(args) -> exit code)``, defined in the module of its group:
:mod:`._data` (ingest, validate, splits), :mod:`._bench` (eval-baselines, benchmark, sweep, holdout, report),
:mod:`._train` (pretrain, train-transition), :mod:`._info`, :mod:`._peers`. The heavy imports (torch, scanpy,
anndata) happen inside the ``run_*`` functions, so ``celljepa --help`` is fast.
"""

from __future__ import annotations

import argparse

from . import _bench, _data, _info, _peers, _train

__all__ = ["COMMANDS", "check_settings"]

_ALL = {**_data.COMMANDS, **_bench.COMMANDS, **_train.COMMANDS, **_info.COMMANDS, **_peers.COMMANDS}
_ORDER = (
    "ingest",
    "validate",
    "splits",
    "eval-baselines",
    "benchmark",
    "pretrain",
    "train-transition",
    "sweep",
    "holdout",
    "info",
    "report",
    "peers",
)
#: ``{name: (add, run)}`` in the order ``celljepa --help`` lists them.
COMMANDS = dict(sorted(_ALL.items(), key=lambda item: _ORDER.index(item[0]) if item[0] in _ORDER else len(_ORDER)))


def check_settings(command: str, args: argparse.Namespace) -> None:
    """Build the configs a command's arguments describe, so that a bad value fails now.

    ``celljepa slurm`` calls it before it writes a job script, rather than the job failing hours later.
    """
    if command == "pretrain":
        from ..train.config import load_config

        load_config(args.config, overrides=_train.pretrain_overrides(args))
    elif command == "train-transition":
        from ..models.transition import load_transition_config

        load_transition_config(args.config, dict(args.overrides))
    elif command in ("benchmark", "holdout"):
        from ._options import run_config

        run_config(args, jepa=not getattr(args, "no_jepa", False))
