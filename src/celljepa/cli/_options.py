"""Options shared by several commands, each defined once, and the argparse types that check their values.

``add_*`` add a group of options to a command's parser; the type parsers (:func:`seeds_arg`, :func:`split_name`,
...) turn a bad value into a usage error that says what was expected. :func:`run_config` maps the protocol, JEPA,
peer and model options onto :meth:`celljepa.bench.config.RunConfig.from_options`, which holds the logic.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .._defaults import BENCHMARK_JEPA_STEPS
from .._errors import InputError

# ---------------------------------------------------------------------------------------------- value types


def csv_list(text: str) -> list[str]:
    """``"a, b,,c"`` → ``["a", "b", "c"]``."""
    return [part.strip() for part in text.split(",") if part.strip()]


def at_least_one(text: str) -> int:
    """An argparse type: a whole number of at least 1 (``--max-folds 0`` would score nothing)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"{value} scores no fold at all; pass 1 or more (or leave it out for every fold)"
        )
    return value


def seeds_arg(text: str) -> list[int]:
    """``0,1,2``: distinct integer seeds."""
    try:
        seeds = [int(x) for x in csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, e.g. 0,1,2; got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct integers, e.g. 0,1,2; got {text!r}")
    return seeds


def split_name(text: str) -> str:
    """The one check of a split name on the command line (a did-you-mean in the usage error)."""
    from .._errors import SplitError
    from ..splits import check_split_name

    try:
        return check_split_name(text)
    except SplitError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def plan_arg(text: str) -> dict[str, int]:
    """``SPLIT[:FOLDS],...`` → ``{split: folds}`` (5 folds when not given)."""
    plan = {}
    for part in csv_list(text):
        name, _, k = part.partition(":")
        if k and not k.isdigit():
            raise argparse.ArgumentTypeError(f"expected SPLIT[:FOLDS], got {part!r}")
        plan[split_name(name)] = int(k) if k else 5
    return plan


def yaml_value(text: str, value: str):
    """A ``--set`` value parsed as plain YAML (a usage error, not a traceback, when it is not)."""
    from .._io import load_yaml

    try:
        return load_yaml(value, source=f"the value of {text!r}") if value.strip() else None
    except InputError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def override(text: str) -> tuple[str, str, object]:
    """``SECTION.KEY=VALUE`` → ``(section, key, value)`` (a JEPA config override)."""
    key, sep, value = text.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not section or not name:
        raise argparse.ArgumentTypeError(f"expected SECTION.KEY=VALUE (e.g. train.ema=off), got {text!r}")
    return section, name, yaml_value(text, value)


def flat_override(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` → ``(key, value)`` (a transition config override)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. set_size=128), got {text!r}")
    return key.strip(), yaml_value(text, value)


def peer_override(text: str) -> tuple[str, str, object]:
    """``PEER.KEY=VALUE`` → ``(peer, key, value)``."""
    key, sep, value = text.partition("=")
    peer, dot, name = key.strip().partition(".")
    if not sep or not dot or not peer or not name:
        raise argparse.ArgumentTypeError(f"expected PEER.KEY=VALUE (e.g. gears.epochs=5), got {text!r}")
    return peer.strip().lower(), name.strip(), yaml_value(text, value)


def peer_seeds_arg(text: str) -> dict[str, int]:
    """``N`` (every peer) or ``PEER=N,...``: how many model seeds each peer is trained with."""
    out: dict[str, int] = {}
    for part in csv_list(text):
        peer, sep, n = part.partition("=")
        name, value = (peer.strip().lower(), n) if sep else ("*", peer)
        if not value.strip().isdigit() or int(value) < 1:
            raise argparse.ArgumentTypeError(f"expected N or PEER=N with N >= 1 (e.g. state=1), got {text!r}")
        out[name] = int(value)
    return out


def model_spec(text: str) -> str:
    """``package.module:Class``: the import path of a user model (imported and checked when the run is built)."""
    module, sep, name = text.strip().partition(":")
    if not sep or not module or not all(part.isidentifier() for part in name.split(".")):
        raise argparse.ArgumentTypeError(f"expected package.module:Class (e.g. mylab.models:MeanShift), got {text!r}")
    return text.strip()


def task_indices(text: str) -> list[int]:
    """``3``, ``0-3`` or ``1,4,7``: the fold task indices of ``--task``."""
    out: list[int] = []
    try:
        for part in text.split(","):
            first, sep, last = part.strip().partition("-")
            out += list(range(int(first), int(last) + 1)) if sep else [int(first)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I, A-B or I,J,... (task indices), got {text!r}") from None
    if not out or min(out) < 0:
        raise argparse.ArgumentTypeError(f"task indices are 0 or more, got {text!r}")
    return out


# ------------------------------------------------------------------------------------------- option groups


def add_overwrite(p: argparse.ArgumentParser) -> None:
    """``--overwrite``."""
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace what --out holds from a run with other inputs (other data, settings or seeds); "
        "without it such a run is refused before anything is written. The old files stay until "
        "the new ones are complete",
    )


def add_jepa_args(p: argparse.ArgumentParser) -> None:
    """The encoder and transition model settings of a benchmark or holdout."""
    p.add_argument("--jepa-config", type=Path, help="JEPA pretraining config (configs/jepa/; default: built-in)")
    p.add_argument(
        "--jepa-steps",
        type=int,
        help=f"train.max_steps of each fold's encoder (default {BENCHMARK_JEPA_STEPS} in benchmarks)",
    )
    p.add_argument(
        "--jepa-set",
        dest="jepa_overrides",
        action="append",
        type=override,
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one JEPA config key, e.g. train.ema=off (repeatable)",
    )
    p.add_argument("--transition-config", type=Path, help="transition model config (configs/transition/)")
    p.add_argument(
        "--transition-set",
        dest="transition_overrides",
        action="append",
        type=flat_override,
        default=[],
        metavar="KEY=VALUE",
        help="override one transition setting, e.g. set_size=128 (repeatable)",
    )


def add_protocol_args(p: argparse.ArgumentParser) -> None:
    """Seeds, the primary model and the inductive / transductive setting."""
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="split seed and model seed when --split-seeds / --model-seeds are not given (default 0)",
    )
    p.add_argument(
        "--split-seeds",
        type=seeds_arg,
        metavar="S,S,...",
        help="split seeds, e.g. 0,1,2 (headline results: 3; they reshuffle the same conditions into folds "
        "and hold nothing out)",
    )
    p.add_argument(
        "--model-seeds",
        type=seeds_arg,
        metavar="S,S,...",
        help="JEPA encoder and transition model seeds, e.g. 0,1,2; a condition's score is their mean",
    )
    p.add_argument(
        "--primary",
        default="jepa_set",
        metavar="MODEL",
        help="the pre-registered model of the verdict: jepa_set (default), jepa_prototype, or the name of a --model",
    )
    p.add_argument(
        "--transductive",
        action="store_true",
        help="let every method fit on the unlabeled control cells of held-out contexts (recorded in the "
        "run config; default: inductive)",
    )


def add_model_args(p: argparse.ArgumentParser) -> None:
    """``--model`` and ``--model-option``: the user's own models, scored beside the others."""
    p.add_argument(
        "--model",
        dest="models",
        action="append",
        type=model_spec,
        default=[],
        metavar="package.module:Class",
        help="a model of your own, scored beside the baselines on every fold (repeatable): the class must "
        "subclass celljepa.models.PerturbationModel and be importable here and in every job (installed, "
        "or on PYTHONPATH, e.g. PYTHONPATH=src); its name can be --primary",
    )
    p.add_argument(
        "--model-option",
        dest="model_options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a keyword argument of the --model class (repeatable; VALUE is YAML); Name.KEY=VALUE when there "
        "are several --model",
    )


def add_data(p: argparse.ArgumentParser, *, default_demo: bool = False) -> None:
    """``--data`` (alias ``--h5ad``), repeatable."""
    p.add_argument(
        "--data",
        "--h5ad",
        action="append",
        default=[],
        metavar="demo|NAME=H5AD|H5AD",
        help="a dataset (repeatable): demo (its two studies, norman2019 and sciplex_gxe), a processed "
        ".h5ad under a name, or one named by its uns['dataset_id']" + (" (default demo)" if default_demo else ""),
    )


def add_split_args(p: argparse.ArgumentParser) -> None:
    """``--split NAME`` and how its folds are drawn (``splits``, ``eval-baselines``)."""
    from ..data.contract import SPLIT_NAMES

    p.add_argument(
        "--split", required=True, type=split_name, metavar="NAME", help=f"the split: {', '.join(SPLIT_NAMES)}"
    )
    p.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    p.add_argument("--folds", type=int, default=5, help="number of folds (default 5; fewer than 3 is a pilot)")
    p.add_argument("--val-fraction", type=float, default=0.15, help="share of non-test groups used for validation")


def add_backed(p: argparse.ArgumentParser) -> None:
    """``--backed`` of the evaluation."""
    p.add_argument(
        "--backed",
        action="store_true",
        help="leave X on disk and read it in chunks (million-cell files; the evaluation space is fitted "
        "without densifying the training matrix)",
    )


def add_progress(p: argparse.ArgumentParser) -> None:
    """``--no-progress``."""
    p.add_argument("--no-progress", action="store_true", help="hide progress bars (e.g. in batch jobs)")


def add_split_file(p: argparse.ArgumentParser, *, required: bool, help: str) -> None:
    """``--split-file JSON``."""
    p.add_argument("--split-file", required=required, type=Path, metavar="JSON", help=help)


def add_task_args(p: argparse.ArgumentParser, *, what: str) -> None:
    """``--list`` | ``--task`` | ``--collect`` of a command that runs as tasks (one Slurm array task each)."""
    tasks = p.add_mutually_exclusive_group()
    tasks.add_argument("--list", action="store_true", help=f"print the {what} with their state and exit")
    tasks.add_argument(
        "--task",
        type=task_indices,
        metavar="I|A-B|I,J",
        help="run only these tasks (e.g. one Slurm array task: --task $SLURM_ARRAY_TASK_ID); writes "
        "their folders, nothing combined; exit 75 when stopped by SIGUSR1/SIGTERM",
    )
    tasks.add_argument(
        "--collect",
        action="store_true",
        help="compute nothing: merge the finished tasks into the combined outputs (an error listing "
        "the unfinished ones)",
    )


# ------------------------------------------------------------------------------------------------- settings


def run_config(args: argparse.Namespace, *, jepa: bool = True):
    """The :class:`~celljepa.bench.config.RunConfig` of the protocol, JEPA, peer and model options.

    A command without peer or model options (``holdout``) gets none.
    """
    from ..bench.config import RunConfig

    return RunConfig.from_options(
        seed=args.seed,
        split_seeds=args.split_seeds,
        model_seeds=args.model_seeds,
        primary=args.primary,
        transductive=args.transductive,
        jepa=jepa,
        jepa_config=args.jepa_config,
        jepa_overrides=args.jepa_overrides,
        jepa_steps=args.jepa_steps,
        transition_config=args.transition_config,
        transition_overrides=args.transition_overrides,
        peers=getattr(args, "peers", ()),
        peer_overrides=getattr(args, "peer_overrides", ()),
        peer_seeds=getattr(args, "peer_seeds", None),
        models=getattr(args, "models", ()),
        model_options=getattr(args, "model_options", None) or None,
    )
