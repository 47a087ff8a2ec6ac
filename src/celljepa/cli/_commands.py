"""The commands of ``celljepa`` except ``slurm`` (which wraps them; :mod:`celljepa.cli._slurm`).

Each command is a pair ``(_add_NAME(subparsers), _cmd_NAME(args) -> exit code)`` in :data:`COMMANDS`; the
heavy imports (torch, scanpy, anndata) happen inside the ``_cmd_*`` functions, so ``celljepa --help`` is fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from .._defaults import BENCHMARK_JEPA_STEPS
from .._errors import ContractError, InputError
from .._version import __version__

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 75  # EX_TEMPFAIL: stopped on SIGTERM/SIGUSR1 after a checkpoint; run the command again to resume


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _add_ingest(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ingest",
        help="bring a perturbation .h5ad into the celljepa contract",
        description=(
            "Read SOURCE (.h5ad in scPerturb, GEARS/CPA, PerturBench or a generic layout; 'demo' = the bundled "
            "PerturBench devel file), write the contract columns, keep counts in layers['counts'], set X to "
            "library-size + log1p (unless already log-normalised), validate, and write "
            "OUT/<dataset-id>/<preprocess_version>.h5ad atomically. Prints the path written."
        ),
    )
    p.add_argument("source", help="input .h5ad file, or 'demo' for the bundled demo dataset")
    p.add_argument("--dataset-id", required=True, help="name of the dataset (a folder name, e.g. norman2019)")
    p.add_argument("--out", required=True, type=Path, help="output folder (e.g. data/processed)")
    p.add_argument(
        "--format",
        default="auto",
        choices=["auto", "scperturb", "gears", "perturbench", "generic"],
        help="source layout (default: detect)",
    )
    p.add_argument("--perturbation-key", help="obs column with perturbation labels")
    p.add_argument("--control-values", type=_csv, help="comma-separated control label(s), e.g. control,non-targeting")
    p.add_argument("--context-key", help="obs column with the context (cell line / cell type)")
    p.add_argument("--context-value", help="context of every cell when there is no context column, e.g. THP-1")
    p.add_argument("--dose-key", help="obs column with the dose")
    p.add_argument("--time-key", help="obs column with the time since perturbation")
    p.add_argument("--time-unit", choices=["h", "min", "d"], help="unit of plain numbers in --time-key (default h)")
    p.add_argument("--combo-sep", help="separator of combination labels, e.g. '+'")
    p.add_argument("--perturbation-kind", help="token kind of every perturbation: gene, drug, cytokine, ...")
    p.add_argument("--kind-key", help="obs column with a per-cell perturbation type (CRISPRi, drug, ...)")
    p.add_argument("--control-key", help="obs column flagging controls (0/1), checked against --control-values")
    p.add_argument("--cell-type-key", help="obs column copied to obs['cell_type']")
    p.add_argument("--batch-key", help="obs column copied to obs['batch']")
    p.add_argument("--assume", choices=["counts", "log1p"], help="declare what X holds instead of detecting it")
    p.add_argument("--min-cells", type=int, default=10, help="minimum cells per condition (default 10)")
    p.add_argument("--no-overwrite", action="store_true", help="fail if the output file exists")


def _cmd_ingest(args: argparse.Namespace) -> int:
    from ..data._ingest import ingest
    from ..datasets import demo_path

    source = demo_path() if args.source == "demo" else Path(args.source)
    keys = {
        "perturbation_key": args.perturbation_key,
        "control_values": args.control_values,
        "context_key": args.context_key,
        "context_value": args.context_value,
        "dose_key": args.dose_key,
        "time_key": args.time_key,
        "time_unit": args.time_unit,
        "combo_sep": args.combo_sep,
        "perturbation_kind": args.perturbation_kind,
        "kind_key": args.kind_key,
        "control_key": args.control_key,
        "cell_type_key": args.cell_type_key,
        "batch_key": args.batch_key,
    }
    path = ingest(
        source,
        dataset_id=args.dataset_id,
        out_dir=args.out,
        format=args.format,
        min_cells=args.min_cells,
        assume=args.assume,
        overwrite=not args.no_overwrite,
        **keys,
    )
    print(path)
    return EXIT_OK


def _add_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate",
        help="check an .h5ad against the data contract",
        description="Exit 0 when H5AD follows the contract; otherwise print every violation and exit 1.",
    )
    p.add_argument("h5ad", type=Path)
    p.add_argument(
        "--min-cells",
        type=int,
        default=None,
        help="minimum cells per condition (default: the value recorded at ingestion, else 10)",
    )


def _cmd_validate(args: argparse.Namespace) -> int:
    from ..data._validate import contract_violations
    from ..data.readers import read_source

    adata = read_source(args.h5ad)
    violations = contract_violations(adata, min_cells=args.min_cells)
    if violations:
        print(str(ContractError(violations, source=str(args.h5ad))), file=sys.stderr)
        return EXIT_ERROR
    n_pert = adata.obs.loc[~adata.obs["is_control"], "perturbation_id"].nunique()
    print(
        f"{args.h5ad}: valid ({adata.n_obs} cells, {adata.n_vars} genes, {n_pert} perturbations, "
        f"{adata.obs['context_id'].nunique()} contexts)"
    )
    return EXIT_OK


def _add_splits(sub: argparse._SubParsersAction) -> None:
    from ..data.contract import SPLIT_NAMES

    p = sub.add_parser(
        "splits",
        help="write deterministic OOD split files (one JSON per fold)",
        description="Write OUT/<dataset_id>.<split>.seed<S>.fold<F>.json for every fold. "
        f"Splits: {', '.join(SPLIT_NAMES)}. Same inputs and seed give byte-identical files.",
    )
    p.add_argument("h5ad", type=Path)
    _add_split_args(p)
    p.add_argument("--out", required=True, type=Path)


def _cmd_splits(args: argparse.Namespace) -> int:
    import anndata as ad

    from .._io import check_readable_h5ad
    from ..splits import make_split_folds, write_split_files

    split = args.split  # checked by the parser (_split_name)
    check_readable_h5ad(args.h5ad)
    backed = ad.read_h5ad(args.h5ad, backed="r")  # only obs and uns are needed
    try:
        obs = backed.obs.copy()
        dataset_id = str(backed.uns.get("dataset_id", args.h5ad.stem))
    finally:
        backed.file.close()
    folds = make_split_folds(
        obs, split, dataset_id=dataset_id, n_folds=args.folds, seed=args.seed, val_fraction=args.val_fraction
    )
    for path in write_split_files(folds, args.out):
        print(path)
    return EXIT_OK


def _headless_pyplot():
    """Return pyplot on the Agg backend: run folders get PNGs, never windows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _fold_figures(result, out: Path) -> list[Path]:
    from .. import pl

    plt = _headless_pyplot()
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    bars = fig_dir / "metrics_ci.png"
    plt.close(pl.benchmark(result.metrics, save=bars, show=False, return_fig=True))
    heat = fig_dir / "edistance_heatmap.png"
    table = result.per_condition.pivot(index="condition", columns="method", values="edistance")
    table = table[list(dict.fromkeys(result.per_condition["method"]))]
    table.index.name, table.columns.name = "test condition", "method"
    plt.close(pl.edistance(distances=table, cluster=False, save=heat, show=False, return_fig=True))
    return [bars, heat]


def _report_figure(verdicts: list[dict], path: Path) -> Path:
    from .. import pl

    plt = _headless_pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    plt.close(pl.where_jepa_helps(verdicts, save=path, show=False, return_fig=True))
    return path


def _combined_figures(combined: dict, out: Path) -> list[Path]:
    from .. import pl

    plt = _headless_pyplot()
    paths = []
    (out / "figures").mkdir(parents=True, exist_ok=True)
    for key, metrics in combined.items():
        path = out / "figures" / f"{key.replace('/', '__')}.png"
        plt.close(
            pl.benchmark(
                metrics,
                metrics_to_show=["edistance", "delta_pearson", "mse", "mrr"],
                title=f"{key} (all folds, 95% bootstrap CIs)",
                save=path,
                show=False,
                return_fig=True,
            )
        )
        paths.append(path)
    if any("verdict" in m for m in combined.values()):
        path = out / "figures" / "verdict.png"
        plt.close(pl.verdict(combined, save=path, show=False, return_fig=True))
        paths.insert(0, path)
    return paths


def _at_least_one(text: str) -> int:
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


def _add_overwrite(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace what --out holds from a run with other inputs (other data, settings or seeds); "
        "without it such a run is refused before anything is written. The old files stay until "
        "the new ones are complete",
    )


def _add_eval_baselines(sub: argparse._SubParsersAction) -> None:

    p = sub.add_parser(
        "eval-baselines",
        help="score the baselines on one split fold and write a run folder",
        description="Fit the evaluation space (HVGs + PCA on training cells), fit and tune every applicable "
        "baseline, score them on the fold's test conditions, and write config.json, metrics.json, "
        "per_condition.csv, split.json, eval_space.npz, figures/ and report.md into OUT.",
    )
    p.add_argument("h5ad", type=Path, help="a processed .h5ad (celljepa ingest)")
    _add_split_args(p)
    p.add_argument("--fold", type=int, required=True, help="the fold to score (0 .. --folds - 1)")
    p.add_argument("--n-hvg", type=int, default=2000)
    p.add_argument("--n-pcs", type=int, default=50)
    p.add_argument("--out", required=True, type=Path, help="run folder, e.g. runs/<run_id>")
    _add_overwrite(p)
    _add_backed(p)


def _cmd_eval_baselines(args: argparse.Namespace) -> int:
    from ..bench import EvalConfig, eval_baselines
    from ..data.readers import read_source

    adata = read_source(args.h5ad, backed=args.backed)  # args.split is checked by the parser (_split_name)
    result = eval_baselines(
        adata,
        split=args.split,
        fold=args.fold,
        seed=args.seed,
        n_folds=args.folds,
        val_fraction=args.val_fraction,
        out=args.out,
        source=str(args.h5ad),
        config=EvalConfig(n_hvg=args.n_hvg, n_pcs=args.n_pcs, seed=args.seed),
        figure_maker=_fold_figures,
        overwrite=args.overwrite,
    )
    m = result.metrics
    print(
        f"{args.out / 'report.md'}: {m['n_test_conditions']} test conditions, comparator {m['comparator']} "
        f"(chosen on validation; test E-distance {m['methods'][m['comparator']]['edistance']['mean']:.3f})"
    )
    return EXIT_OK


def _add_jepa_args(p: argparse.ArgumentParser) -> None:
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
        type=_override,
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one JEPA config key, e.g. train.ema=off (repeatable)",
    )
    p.add_argument("--transition-config", type=Path, help="transition model config (configs/transition/)")
    p.add_argument(
        "--transition-set",
        dest="transition_overrides",
        action="append",
        type=_flat_override,
        default=[],
        metavar="KEY=VALUE",
        help="override one transition setting, e.g. set_size=128 (repeatable)",
    )


def _seeds_arg(text: str) -> list[int]:
    try:
        seeds = [int(x) for x in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, e.g. 0,1,2; got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct integers, e.g. 0,1,2; got {text!r}")
    return seeds


def _add_protocol_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="split seed and model seed when --split-seeds / --model-seeds are not given (default 0)",
    )
    p.add_argument(
        "--split-seeds",
        type=_seeds_arg,
        metavar="S,S,...",
        help="split seeds, e.g. 0,1,2 (headline results: 3; they reshuffle the same conditions into folds "
        "and hold nothing out)",
    )
    p.add_argument(
        "--model-seeds",
        type=_seeds_arg,
        metavar="S,S,...",
        help="JEPA encoder and transition model seeds, e.g. 0,1,2; a condition's score is their mean",
    )
    p.add_argument(
        "--primary",
        default="jepa_set",
        choices=["jepa_set", "jepa_prototype"],
        help="the pre-registered model of the verdict (default jepa_set)",
    )
    p.add_argument(
        "--transductive",
        action="store_true",
        help="let every method fit on the unlabeled control cells of held-out contexts (recorded in the "
        "run config; default: inductive)",
    )


def _run_config(args: argparse.Namespace, *, jepa: bool = True):
    """The :class:`~celljepa.bench.config.RunConfig` of the protocol and model options (checked here, first).

    Encoder steps: ``--jepa-steps``, else what ``--jepa-config`` / ``--jepa-set train.max_steps=`` say, else
    :data:`~celljepa._defaults.BENCHMARK_JEPA_STEPS`.
    """
    from ..bench.config import RunConfig
    from ..bench.evaluate import EvalConfig
    from ..models.transition import load_transition_config
    from ..train.config import load_config

    overrides: dict = {}
    for section, key, value in args.jepa_overrides:
        overrides.setdefault(section, {})[key] = value
    steps = args.jepa_steps
    if steps is None and not args.jepa_config and "max_steps" not in overrides.get("train", {}):
        steps = BENCHMARK_JEPA_STEPS
    return RunConfig(
        split_seeds=args.split_seeds or [args.seed],
        model_seeds=args.model_seeds or [args.seed],
        evaluation=EvalConfig(primary=args.primary, transductive=args.transductive),
        jepa=load_config(args.jepa_config, overrides=overrides) if jepa else None,
        transition=load_transition_config(args.transition_config, dict(args.transition_overrides)),
        jepa_steps=steps if jepa else None,
    )


def _split_name(text: str) -> str:
    """The one check of a split name on the command line (a did-you-mean in the usage error)."""
    from .._errors import SplitError
    from ..splits import check_split_name

    try:
        return check_split_name(text)
    except SplitError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _plan_arg(text: str) -> dict[str, int]:
    plan = {}
    for part in _csv(text):
        name, _, k = part.partition(":")
        if k and not k.isdigit():
            raise argparse.ArgumentTypeError(f"expected SPLIT[:FOLDS], got {part!r}")
        plan[_split_name(name)] = int(k) if k else 5
    return plan


def _add_data(p: argparse.ArgumentParser, *, default_demo: bool = False) -> None:
    p.add_argument(
        "--data",
        "--h5ad",
        action="append",
        default=[],
        metavar="demo|NAME=H5AD|H5AD",
        help="a dataset (repeatable): demo (its two studies, norman2019 and sciplex_gxe), a processed "
        ".h5ad under a name, or one named by its uns['dataset_id']" + (" (default demo)" if default_demo else ""),
    )


def _add_split_args(p: argparse.ArgumentParser) -> None:
    """``--split NAME`` and how its folds are drawn (``splits``, ``eval-baselines``)."""
    from ..data.contract import SPLIT_NAMES

    p.add_argument(
        "--split", required=True, type=_split_name, metavar="NAME", help=f"the split: {', '.join(SPLIT_NAMES)}"
    )
    p.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    p.add_argument("--folds", type=int, default=5, help="number of folds (default 5; fewer than 3 is a pilot)")
    p.add_argument("--val-fraction", type=float, default=0.15, help="share of non-test groups used for validation")


def _add_backed(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--backed",
        action="store_true",
        help="leave X on disk and read it in chunks (million-cell files; the evaluation space is fitted "
        "without densifying the training matrix)",
    )


def _add_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="hide progress bars (e.g. in batch jobs)")


def _add_split_file(p: argparse.ArgumentParser, *, required: bool, help: str) -> None:
    p.add_argument("--split-file", required=required, type=Path, metavar="JSON", help=help)


def _add_benchmark(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "benchmark",
        help="run the benchmark (ingest, splits, baselines, JEPA models, report)",
        description="--data demo (the default): the bundled file as its two studies, norman2019 (S1, S3) and "
        "sciplex_gxe (S1, S2); --data [NAME=]H5AD --splits S1_unseen_perturbation:5,... for processed "
        "datasets (repeatable; demo and files can be mixed). Per fold: "
        "baselines tuned on validation groups, and (unless --no-jepa) a JEPA encoder pretrained on the "
        "cells the predictors may see plus the prototype and set transition models. Writes one run "
        "folder per dataset x split x fold, metrics_combined.json and report.md (with the verdict).",
    )
    _add_data(p, default_demo=True)
    p.add_argument(
        "--splits",
        type=_plan_arg,
        help="the splits of the --data files, SPLIT[:FOLDS],... (default S1_unseen_perturbation:5; the "
        "demo keeps its own)",
    )
    _add_protocol_args(p)
    p.add_argument("--out", required=True, type=Path)
    _add_overwrite(p)
    _add_progress(p)
    p.add_argument("--no-jepa", action="store_true", help="baselines only (no JEPA pretraining, no transition models)")
    p.add_argument("--jepa", action="store_true", help=argparse.SUPPRESS)  # JEPA is part of the default benchmark
    p.add_argument(
        "--jepa-knn",
        action="store_true",
        help="also pretrain one encoder on all cells of each dataset and report kNN accuracy vs PCA",
    )
    p.add_argument("--max-folds", type=_at_least_one, help="score only the first K folds of each split (quick runs)")
    p.add_argument(
        "--peers",
        default="",
        metavar="NAME,...",
        help="published tools scored beside the baselines, e.g. scgen,gears,cpa (see `celljepa peers list`)",
    )
    p.add_argument(
        "--peer-set",
        action="append",
        default=[],
        type=_peer_override,
        metavar="PEER.KEY=VALUE",
        dest="peer_overrides",
        help="override a peer's published setting, e.g. gears.epochs=5 (repeatable)",
    )
    p.add_argument(
        "--peer-seeds",
        type=_peer_seeds_arg,
        default={},
        metavar="N|PEER=N,...",
        help="train peers with the first N model seeds only where their compute does not fit (default: "
        "every model seed, like every trained method), e.g. state=1 or 1; stated in the report",
    )
    p.add_argument(
        "--final",
        action="store_true",
        help="a final verdict: refuse a dirty checkout, and freeze the commit and a digest of the full "
        "configuration in OUT/final.json before the first fold (run from a clone installed with "
        "`pip install -e .`)",
    )
    p.add_argument(
        "--held-out-datasets",
        type=_csv,
        default=[],
        metavar="NAME,...",
        help="with --final: the datasets of this run never seen while the models and defaults were "
        "developed (recorded and stated in the report; split seeds hold nothing out)",
    )
    p.add_argument(
        "--reuse",
        type=Path,
        metavar="RUN",
        help="add the --peers to a finished run of the same plan and settings: score the baselines (checked "
        "equal to RUN's) and the peers here, take every other method from RUN, redo the verdicts",
    )
    p.add_argument(
        "--predictions",
        action="store_true",
        help="write each fold's predicted and observed cells as predictions.h5ad (the layout cell-eval "
        "reads; every method, model seed and test condition: large for big screens)",
    )
    _add_backed(p)
    _add_task_args(p, what="fold tasks (index, dataset, split, split seed, fold, state, folder)")
    _add_jepa_args(p)


def _peer_override(text: str) -> tuple[str, str, object]:
    key, sep, value = text.partition("=")
    peer, dot, name = key.strip().partition(".")
    if not sep or not dot or not peer or not name:
        raise argparse.ArgumentTypeError(f"expected PEER.KEY=VALUE (e.g. gears.epochs=5), got {text!r}")
    return peer.strip().lower(), name.strip(), _yaml_value(text, value)


def _peer_seeds_arg(text: str) -> dict[str, int]:
    """``N`` (every peer) or ``PEER=N,...``: how many model seeds each peer is trained with."""
    out: dict[str, int] = {}
    for part in _csv(text):
        peer, sep, n = part.partition("=")
        name, value = (peer.strip().lower(), n) if sep else ("*", peer)
        if not value.strip().isdigit() or int(value) < 1:
            raise argparse.ArgumentTypeError(f"expected N or PEER=N with N >= 1 (e.g. state=1), got {text!r}")
        out[name] = int(value)
    return out


def _run_tasks(command: str, args: argparse.Namespace, call):
    """``(exit code, None)`` when the command ran tasks (``--task``) or was stopped (75), else ``(None, result)``."""
    from ..bench.tasks import TaskInterrupted

    try:
        result = call()
    except TaskInterrupted as stop:
        print(f"celljepa {command}: {stop}", file=sys.stderr)
        return EXIT_INTERRUPTED, None
    if args.task is not None:
        for i, state in result["tasks"].items():
            print(f"task {i}: {state}")
        return EXIT_OK, None
    return None, result


def _task_indices(text: str) -> list[int]:
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


def benchmark_inputs(args: argparse.Namespace):
    """``(datasets, plan, run)`` of ``celljepa benchmark``'s arguments; every setting is checked first."""
    from ..bench import DEMO_PLAN
    from ..bench.run import load_data_args

    items = args.data or ["demo"]
    if args.splits and items == ["demo"]:
        raise InputError("--splits is for --data files (the demo has a fixed plan).")
    run = _run_config(args, jepa=not args.no_jepa)
    peer_params: dict = {}
    for peer, key, value in args.peer_overrides:
        peer_params.setdefault(peer, {})[key] = value
    run = dataclasses.replace(run, peers=args.peers, peer_params=peer_params, peer_seeds=args.peer_seeds)
    if run.peers and not args.collect and not args.list:
        from ..peers import peer_status

        missing = [st for st in map(peer_status, run.peers) if not st["available"]]
        if missing:
            raise InputError("peer(s) not available: " + "; ".join(f"{st['name']}: {st['reason']}" for st in missing))
    if args.backed and run.jepa is not None:
        raise InputError(
            "--backed runs the baselines, the evaluation space and the scoring on data left on disk; "
            "the fold encoders of the JEPA models need the data in memory. Fix: add --no-jepa, or "
            "drop --backed."
        )
    datasets = load_data_args(items, backed=args.backed)
    plan = {
        d: DEMO_PLAN[d]["splits"]
        if "demo" in items and d in DEMO_PLAN
        else (args.splits or {"S1_unseen_perturbation": 5})
        for d in datasets
    }
    return datasets, plan, run


def _cmd_benchmark(args: argparse.Namespace) -> int:
    from .._io import write_h5ad_atomic
    from ..bench import DEMO_PLAN, benchmark
    from ..bench.run import benchmark_tasks, task_dir
    from ..data._ingest import processed_path

    datasets, plan, run = benchmark_inputs(args)
    jepa_knn = None
    if args.jepa_knn:
        from ..train.config import load_config

        jepa_knn = load_config(args.jepa_config, overrides={"train": {"seed": run.model_seeds[0]}})
    if args.list:
        from ..bench.run import _FoldTasks

        state = _FoldTasks(datasets, plan, args.out, run, None, True, args.predictions, args.reuse)
        for i, (d, split, s, fold) in enumerate(benchmark_tasks(datasets, plan, run=run, max_folds=args.max_folds)):
            done = "done" if state.finished(d, split, s, fold) is not None else "to do"
            print(
                f"{i}\t{d}\t{split}\tsplit_seed{s}\tfold{fold['fold']}\t{done}\t"
                f"{task_dir(args.out, d, split, s, fold['fold'])}"
            )
        return EXIT_OK
    code, _ = _run_tasks(
        "benchmark",
        args,
        lambda: benchmark(
            datasets,
            plan,
            out=args.out,
            run=run,
            figure_maker=_fold_figures,
            combined_figure_maker=_combined_figures,
            progress=not args.no_progress,
            jepa_knn=jepa_knn,
            max_folds=args.max_folds,
            tasks=args.task,
            collect=args.collect,
            predictions=args.predictions,
            reuse=args.reuse,
            final=args.final,
            held_out_datasets=args.held_out_datasets,
            overwrite=args.overwrite,
        ),
    )
    if code is not None:
        return code
    for dataset_id in datasets:  # the demo's studies as processed files beside the run, for reuse
        if "demo" in (args.data or ["demo"]) and dataset_id in DEMO_PLAN:
            write_h5ad_atomic(datasets[dataset_id], processed_path(args.out / "data", dataset_id))
    print(args.out / "report.md")
    return EXIT_OK


def _yaml_value(text: str, value: str):
    """A ``--set`` value parsed as plain YAML (a usage error, not a traceback, when it is not)."""
    from .._io import load_yaml

    try:
        return load_yaml(value, source=f"the value of {text!r}") if value.strip() else None
    except InputError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _flat_override(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. set_size=128), got {text!r}")
    return key.strip(), _yaml_value(text, value)


def _add_train_transition(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-transition",
        help="train the JEPA transition models on one split fold and score them",
        description="Load the CellJEPA encoder of a pretraining run (celljepa pretrain --split-file SPLIT.json), train "
        "the prototype and set transition models on the fold's training cells (early stopping on its "
        "validation groups), score them beside every baseline in the fold's evaluation space, and write "
        "OUT/config.json, metrics.json, per_condition.csv, split.json, eval_space.npz, report.md and "
        "models/<name>/transition.pt (load with JEPATransition.load). Under torchrun or srun with several "
        "tasks the transition models train with DistributedDataParallel (rank 0 scores and writes).",
    )
    p.add_argument("h5ad", type=Path, help="a processed .h5ad (celljepa ingest)")
    p.add_argument("--jepa", required=True, type=Path, help="pretraining run folder (or its model/ folder)")
    _add_split_file(p, required=True, help="split JSON of one fold (celljepa splits)")
    p.add_argument("--config", type=Path, help="transition config YAML (configs/transition/default.yaml)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        type=_flat_override,
        default=[],
        metavar="KEY=VALUE",
        help="override one transition setting, e.g. --set loss_space=jepa (repeatable)",
    )
    p.add_argument("--kinds", type=_csv, default=["prototype", "set"], help="models to train (default prototype,set)")
    p.add_argument("--drug-metadata", type=Path, help="drug targets/pathways table for drug: tokens")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--allow-unsplit-encoder",
        action="store_true",
        help="accept an encoder pretrained without this split (it has seen the test cells, unlabelled)",
    )
    p.add_argument("--out", required=True, type=Path, help="run folder, e.g. runs/<run_id>")
    _add_overwrite(p)


def _cmd_train_transition(args: argparse.Namespace) -> int:
    from ..bench.run import train_transition
    from ..data.readers import read_source
    from ..models.transition import load_transition_config
    from ..train.distributed import distributed_session

    cfg = load_transition_config(args.config, dict(args.overrides)).replace(seed=args.seed)
    adata = read_source(args.h5ad)
    with distributed_session(cfg.device):
        result = train_transition(
            adata,
            jepa_run=args.jepa,
            split=args.split_file,
            out=args.out,
            config=cfg,
            kinds=args.kinds,
            drug_metadata=args.drug_metadata,
            source=str(args.h5ad),
            allow_unsplit_encoder=args.allow_unsplit_encoder,
            figure_maker=_fold_figures,
            overwrite=args.overwrite,
        )
    if result is None:  # a rank other than 0 of a distributed run: rank 0 reports
        return EXIT_OK
    m = result.metrics
    from ..eval.report import verdict_sentence

    print(args.out / "report.md")
    print(verdict_sentence(f"{m['dataset_id']} {m['split']} fold {m['fold']}", m))
    return EXIT_OK


def _override(text: str) -> tuple[str, str, object]:
    key, sep, value = text.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not section or not name:
        raise argparse.ArgumentTypeError(f"expected SECTION.KEY=VALUE (e.g. train.ema=off), got {text!r}")
    return section, name, _yaml_value(text, value)


def _add_pretrain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain",
        help="JEPA pretraining of cell embeddings; writes a run folder",
        description="Train a CellJEPA encoder on H5AD (log-normalised X) and write OUT/config.yaml (resolved), "
        "metrics.jsonl, checkpoints/{last,best}.pt, model/, embeddings.npz and eval.json (collapse "
        "diagnostics, kNN accuracy on X_jepa vs X_pca). On SIGTERM or SIGUSR1 the current step finishes, "
        f"a checkpoint is written and the command exits with code {EXIT_INTERRUPTED}; the same command "
        "again resumes. Under torchrun or srun with several tasks it trains with DistributedDataParallel "
        "(train.batch_size is the global batch; rank 0 writes the run folder).",
    )
    p.add_argument(
        "h5ad",
        type=Path,
        nargs="+",
        help="processed .h5ad file(s) (celljepa ingest); several: one model on all of them",
    )
    p.add_argument(
        "--feature-set",
        help="map the data onto a gene list: a stored id (foundation-v1, the default with "
        "several files), a feature set file, or intersection / union_hvg built from "
        "the given files; genes a dataset lacks are absent",
    )
    p.add_argument("--config", type=Path, help="YAML config (see configs/jepa/); default: built-in defaults")
    _add_split_file(p, required=False, help="split JSON (celljepa splits): train on its training cells only")
    p.add_argument("--out", required=True, type=Path, help="run folder, e.g. runs/<run_id>")
    p.add_argument("--fast-dev", action="store_true", help="a 20-step smoke run of every stage")
    p.add_argument("--backed", action="store_true", help="stream cells from disk in chunks (data.chunk_size)")
    p.add_argument("--seed", type=int, help="override train.seed")
    p.add_argument("--device", help="override train.device (auto, cpu, cuda, cuda:N)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        type=_override,
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config key, e.g. --set train.ema=off --set mask.kind=random (repeatable)",
    )
    p.add_argument("--restart", action="store_true", help="discard the folder's checkpoints and start over")
    _add_progress(p)


def _pretrain_overrides(args: argparse.Namespace) -> dict:
    overrides: dict = {}
    for section, key, value in args.overrides:
        overrides.setdefault(section, {})[key] = value
    if args.seed is not None:
        overrides.setdefault("train", {})["seed"] = args.seed
    if args.device is not None:
        overrides.setdefault("train", {})["device"] = args.device
    return overrides


def check_settings(command: str, args: argparse.Namespace) -> None:
    """Build the configs a command's arguments describe, so that a bad value fails now.

    ``celljepa slurm`` calls it before it writes a job script, rather than the job failing hours later.
    """
    if command == "pretrain":
        from ..train.config import load_config

        load_config(args.config, overrides=_pretrain_overrides(args))
    elif command == "train-transition":
        from ..models.transition import load_transition_config

        load_transition_config(args.config, dict(args.overrides))
    elif command in ("benchmark", "holdout"):
        _run_config(args, jepa=not getattr(args, "no_jepa", False))


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from ..bench.pretrain import knn_summary, pretrain
    from ..train.checkpoint import TrainingInterrupted
    from ..train.distributed import distributed_session

    overrides = _pretrain_overrides(args)
    try:
        with distributed_session(args.device):
            result = pretrain(
                args.h5ad,
                out=args.out,
                config=args.config,
                split=args.split_file,
                fast_dev=args.fast_dev,
                backed=True if args.backed else None,
                overrides=overrides,
                restart=args.restart,
                progress=not args.no_progress,
                feature_set=args.feature_set,
            )
    except TrainingInterrupted as stop:
        print(f"celljepa pretrain: {stop}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if result is None:  # a rank other than 0 of a distributed run: rank 0 reports
        return EXIT_OK
    d = result["diagnostics"]
    print(
        f"{args.out / 'eval.json'}: effective rank {d['effective_rank']:.1f}/{d['dims']}, min std {d['std_min']:.4f}"
        f"{' (COLLAPSED)' if result['collapsed'] else ''}"
    )
    table = knn_summary(result)
    if len(table):
        print(table.pivot(index="label", columns="embedding", values="accuracy").round(3).to_string())
    return EXIT_OK


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="run a config grid (ablations x seeds) of JEPA benchmarks and collect one ablation table",
        description="Expand GRID (configs/sweeps/*.yaml) into tasks (ablation, seed; and fold with fold_tasks: true); "
        "run all of them in turn, or only --task I (e.g. one Slurm array task: --task "
        "$SLURM_ARRAY_TASK_ID; `celljepa slurm sweep` writes that array), each into OUT/<ablation>/"
        "seed<k>[/fold<f>]/ (a finished task is skipped). Afterwards, or with --collect alone, merge the "
        "finished tasks into OUT/ablation.md and ablation.json and list missing or failed ones.",
    )
    p.add_argument("--grid", required=True, type=Path, help="grid YAML")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--task", type=int, help="run only this task index")
    p.add_argument("--collect", action="store_true", help="only merge finished tasks")
    p.add_argument("--list", action="store_true", help="print the tasks and exit")
    p.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="NAME=H5AD",
        help="processed .h5ad of a grid dataset (overrides its h5ad:)",
    )
    _add_progress(p)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from ..bench.sweep import _load_datasets, collect_sweep, load_grid, parse_data_args, run_sweep_task

    grid = load_grid(args.grid, parse_data_args(args.data))
    if args.list:
        for i, (ablation, seed, fold) in enumerate(grid.tasks):
            where = grid.task_dir(args.out, ablation, seed, fold)
            print(f"{i}\t{ablation}\tseed{seed}" + ("" if fold is None else f"\tfold{fold}") + f"\t{where}")
        return EXIT_OK
    if not args.collect:
        indices = [args.task] if args.task is not None else range(len(grid.tasks))
        datasets = _load_datasets(grid)
        for i in indices:
            run_sweep_task(grid, i, args.out, progress=not args.no_progress, datasets=datasets)
    result = collect_sweep(grid, args.out)
    print(f"{args.out / 'ablation.md'}: {result['finished']}/{result['tasks']} tasks finished")
    for m in result["missing"]:
        print(f"missing: task {m['index']} ({m['ablation']}, seed {m['seed']}): {m['state']}, {m['folder']}")
    return EXIT_OK if args.task is not None or not result["missing"] else EXIT_ERROR


def _add_info(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("info", help="print versions and the build of the compiled kernels (JSON)")


def _cmd_info(args: argparse.Namespace) -> int:
    from ..kernels import available_backends, build_info

    print(json.dumps({"celljepa": __version__, "build": build_info(), "backends": available_backends()}, indent=2))
    return EXIT_OK


def _add_holdout(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "holdout",
        help="cross-dataset holdout (S4): pretrain on the other datasets, evaluate on the held-out one",
        description="Map every dataset onto one feature set, pretrain a CellJEPA encoder on all datasets but "
        "--holdout, and on the held-out dataset compare (a) kNN accuracy of its labels on that encoder's "
        "embedding, on a JEPA pretrained on it alone and on its own PCA, and (b) the transition models "
        "on its own splits with the encoder from elsewhere versus its own, beside the tuned baselines. "
        "Writes OUT/holdout.json, holdout.md and feature_set.txt (celljepa report merges them).",
    )
    _add_data(p)
    p.add_argument("--holdout", required=True, help="the dataset held out")
    p.add_argument(
        "--splits",
        type=_plan_arg,
        default={"S1_unseen_perturbation": 3},
        help="the held-out dataset's own splits, SPLIT[:FOLDS],... (default S1_unseen_perturbation:3)",
    )
    p.add_argument("--max-folds", type=_at_least_one, help="score only the first K folds of each split")
    p.add_argument(
        "--feature-set",
        default="foundation-v1",
        help="gene list (stored id, file, intersection, union_hvg); default foundation-v1",
    )
    _add_jepa_args(p)
    _add_protocol_args(p)
    p.add_argument("--out", required=True, type=Path)
    _add_overwrite(p)
    _add_progress(p)
    _add_task_args(p, what="tasks (the encoders first, then the folds)")


def _add_task_args(p: argparse.ArgumentParser, *, what: str) -> None:
    tasks = p.add_mutually_exclusive_group()
    tasks.add_argument("--list", action="store_true", help=f"print the {what} with their state and exit")
    tasks.add_argument(
        "--task",
        type=_task_indices,
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


def holdout_inputs(args: argparse.Namespace):
    """``(datasets, run)`` of ``celljepa holdout``'s arguments; every setting is checked first."""
    from ..bench.run import load_data_args

    run = _run_config(args)
    datasets = load_data_args(args.data)
    if args.holdout not in datasets:
        raise InputError(f"--holdout {args.holdout!r} is not one of the --data datasets {list(datasets)}.")
    return datasets, run


def _cmd_holdout(args: argparse.Namespace) -> int:
    from ..bench.holdout import holdout_markdown, holdout_run, holdout_tasks

    datasets, run = holdout_inputs(args)
    common = dict(out=args.out, run=run, feature_set=args.feature_set, splits=args.splits, max_folds=args.max_folds)
    if args.list:
        for i, (kind, label, folder) in enumerate(holdout_tasks(datasets, args.holdout, **common)):
            done = (folder / ("inputs.json" if kind == "encoder" else "fold.json")).is_file()
            print(f"{i}\t{kind}\t{label}\t{'done' if done else 'to do'}\t{folder}")
        return EXIT_OK
    code, result = _run_tasks(
        "holdout",
        args,
        lambda: holdout_run(
            datasets,
            args.holdout,
            **common,
            progress=not args.no_progress,
            tasks=args.task,
            collect=args.collect,
            overwrite=args.overwrite,
        ),
    )
    if code is not None:
        return code
    print(args.out / "holdout.md")
    print(holdout_markdown(result))
    return EXIT_OK


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="merge benchmark, fold and sweep runs into one report (verdicts, tables, ablations, compute)",
        description="Merge run folders into OUT/report.md, OUT/report.json and OUT/figures/where_jepa_helps.png: a "
        "benchmark run (metrics_combined.json), a fold run of eval-baselines / train-transition "
        "(metrics.json + config.json) or a sweep folder (ablation.json). Every number is copied from "
        "the runs, never re-estimated. Prints the report's path.",
    )
    p.add_argument("--runs", required=True, nargs="+", type=Path, metavar="RUN", help="run folders to merge")
    p.add_argument("--out", required=True, type=Path, help="output folder, e.g. reports/<name>")
    p.add_argument("--title", help="title of the report")


def _cmd_report(args: argparse.Namespace) -> int:
    from ..bench.consolidate import consolidate

    report = consolidate(args.runs, args.out, title=args.title, figure_maker=_report_figure)
    outcomes = [v["outcome"] for v in report["verdicts"]]
    from ..eval.verdict import OUTCOMES

    counts = ", ".join(
        f"{outcomes.count(o)} {o}" for o in (*OUTCOMES, "old protocol", "protocol v2", "superseded") if o in outcomes
    )
    print(
        f"{args.out / 'report.md'}: {len(report['runs'])} run(s), {len(outcomes)} verdict row(s)"
        + (f" ({counts})" if counts else "")
    )
    return EXIT_OK


def _add_peers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "peers",
        help="the published tools scored beside celljepa (scGen, GEARS, CPA, State): list, install, remove",
        description="list: each peer, whether it runs here (its import is tried) and why not. install NAME: make "
        "its isolated environment under the peers folder ($CELLJEPA_PEERS_HOME, default "
        "~/.cache/celljepa/peers) with pip, from PyPI; benchmarks then run it there through a "
        "subprocess. remove NAME: delete that environment.",
    )
    actions = p.add_subparsers(dest="action", metavar="{list,install,remove}", required=True)
    a = actions.add_parser("list", help="each peer, whether it runs here, and why not")
    a.add_argument("names", nargs="*", metavar="NAME", help="the peers to show (default: all)")
    a.add_argument("--json", action="store_true", help="print JSON")
    a.add_argument(
        "--available", action="store_true", help="print only the names of the peers that run here, one per line"
    )
    a = actions.add_parser("install", help="make a peer's isolated environment (pip, from PyPI)")
    a.add_argument("names", nargs="+", metavar="NAME", help="the peers to install")
    a.add_argument(
        "--python",
        help="the interpreter to make the environment with (default: the version the "
        "peer needs, found on PATH or in pyenv)",
    )
    a.add_argument("--force", action="store_true", help="make an installed environment again")
    a.add_argument(
        "--keep-free",
        type=float,
        default=0.0,
        metavar="GB",
        help="leave this much disk free besides the environment (default 0)",
    )
    a.add_argument(
        "--if-space", action="store_true", help="skip a peer the disk has no room for, saying so, instead of failing"
    )
    a = actions.add_parser("remove", help="delete a peer's environment")
    a.add_argument("names", nargs="+", metavar="NAME", help="the peers to remove")


def _cmd_peers(args: argparse.Namespace) -> int:
    from ..peers import PEERS, NoSpaceError, install_peer, parse_peers, peer_status, peers_home, remove_peer

    names = parse_peers(args.names) if args.names else ()
    if args.action == "list":
        rows = [peer_status(n) for n in (names or tuple(PEERS))]
        if args.available:
            for row in rows:
                if row["available"]:
                    print(row["name"])
            return EXIT_OK
        if args.json:
            print(json.dumps(rows, indent=1))
            return EXIT_OK
        print(f"peers folder: {peers_home()}")
        for row in rows:
            state = f"available ({row['where']})" if row["available"] else f"not available: {row['reason']}"
            print(f"{row['name']:<6} {state}")
            print(f"       {row['title']}; predicts {row['predicts']}")
        return EXIT_OK
    for name in names:
        if args.action == "install":
            try:
                install_peer(name, python=args.python, force=args.force, keep_free_gb=args.keep_free)
            except NoSpaceError as err:
                if not args.if_space:
                    raise
                print(f"celljepa peers: skipped {name}: {err}")
        elif remove_peer(name):
            print(f"removed {name}'s environment")
        else:
            print(f"{name} has no environment under {peers_home()}")
    return EXIT_OK


COMMANDS = {
    "ingest": (_add_ingest, _cmd_ingest),
    "validate": (_add_validate, _cmd_validate),
    "splits": (_add_splits, _cmd_splits),
    "eval-baselines": (_add_eval_baselines, _cmd_eval_baselines),
    "benchmark": (_add_benchmark, _cmd_benchmark),
    "pretrain": (_add_pretrain, _cmd_pretrain),
    "train-transition": (_add_train_transition, _cmd_train_transition),
    "sweep": (_add_sweep, _cmd_sweep),
    "holdout": (_add_holdout, _cmd_holdout),
    "info": (_add_info, _cmd_info),
    "report": (_add_report, _cmd_report),
    "peers": (_add_peers, _cmd_peers),
}


def build_parser(commands: dict | None = None) -> argparse.ArgumentParser:
    """The argument parser of the ``celljepa`` command with ``commands`` (default :data:`COMMANDS`)."""
    parser = argparse.ArgumentParser(prog="celljepa", description="Perturbation response prediction with JEPA.")
    parser.add_argument("--version", action="version", version=f"celljepa {__version__}")
    _add_verbosity(parser, default=0)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add, _ in (COMMANDS if commands is None else commands).values():
        add(sub)
    for sp in sub.choices.values():  # -v / -q after the command too (not reset when absent there)
        _add_verbosity(sp, default=argparse.SUPPRESS)
    return parser


def _add_verbosity(p: argparse.ArgumentParser, *, default) -> None:
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
