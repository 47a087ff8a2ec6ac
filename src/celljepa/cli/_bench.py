"""Benchmark commands: ``eval-baselines``, ``benchmark``, ``holdout``, ``sweep``, ``report``.

Each maps its arguments onto the workflows of :mod:`celljepa.bench` (the run's settings through
:func:`~celljepa.cli._options.run_config`, i.e. :meth:`celljepa.bench.config.RunConfig.from_options`) and prints
what they wrote. ``benchmark_inputs`` and ``holdout_inputs`` are shared with ``celljepa slurm``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .._errors import InputError
from ._figures import combined_figures, fold_figures, report_figure
from ._options import (
    add_backed,
    add_data,
    add_jepa_args,
    add_model_args,
    add_overwrite,
    add_progress,
    add_protocol_args,
    add_split_args,
    add_task_args,
    at_least_one,
    csv_list,
    peer_override,
    peer_seeds_arg,
    plan_arg,
    run_config,
)
from ._parser import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, Subcommands

# -------------------------------------------------------------------------------------------- eval-baselines


def add_eval_baselines(sub: Subcommands) -> None:
    """The ``eval-baselines`` command."""
    p = sub.add_parser(
        "eval-baselines",
        help="score the baselines on one split fold and write a run folder",
        description="Fit the evaluation space (HVGs + PCA on training cells), fit and tune every applicable "
        "baseline, score them on the fold's test conditions, and write config.json, metrics.json, "
        "per_condition.csv, split.json, eval_space.npz, figures/ and report.md into OUT.",
    )
    p.add_argument("h5ad", type=Path, help="a processed .h5ad (celljepa ingest)")
    add_split_args(p)
    p.add_argument("--fold", type=int, required=True, help="the fold to score (0 .. --folds - 1)")
    p.add_argument("--n-hvg", type=int, default=2000)
    p.add_argument("--n-pcs", type=int, default=50)
    p.add_argument("--out", required=True, type=Path, help="run folder, e.g. runs/<run_id>")
    add_overwrite(p)
    add_backed(p)


def run_eval_baselines(args: argparse.Namespace) -> int:
    """``celljepa eval-baselines``: prints the report's path and the comparator."""
    from ..bench import EvalConfig, eval_baselines
    from ..data.readers import read_source

    adata = read_source(args.h5ad, backed=args.backed)  # args.split is checked by the parser (split_name)
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
        figure_maker=fold_figures,
        overwrite=args.overwrite,
    )
    m = result.metrics
    print(
        f"{args.out / 'report.md'}: {m['n_test_conditions']} test conditions, comparator {m['comparator']} "
        f"(chosen on validation; test E-distance {m['methods'][m['comparator']]['edistance']['mean']:.3f})"
    )
    return EXIT_OK


# ------------------------------------------------------------------------------------------------ benchmark


def add_benchmark(sub: Subcommands) -> None:
    """The ``benchmark`` command."""
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
    add_data(p, default_demo=True)
    p.add_argument(
        "--splits",
        type=plan_arg,
        help="the splits of the --data files, SPLIT[:FOLDS],... (default S1_unseen_perturbation:5; the "
        "demo keeps its own)",
    )
    add_protocol_args(p)
    p.add_argument("--out", required=True, type=Path)
    add_overwrite(p)
    add_progress(p)
    p.add_argument("--no-jepa", action="store_true", help="baselines only (no JEPA pretraining, no transition models)")
    p.add_argument("--jepa", action="store_true", help=argparse.SUPPRESS)  # JEPA is part of the default benchmark
    p.add_argument(
        "--jepa-knn",
        action="store_true",
        help="also pretrain one encoder on all cells of each dataset and report kNN accuracy vs PCA",
    )
    p.add_argument("--max-folds", type=at_least_one, help="score only the first K folds of each split (quick runs)")
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
        type=peer_override,
        metavar="PEER.KEY=VALUE",
        dest="peer_overrides",
        help="override a peer's published setting, e.g. gears.epochs=5 (repeatable)",
    )
    p.add_argument(
        "--peer-seeds",
        type=peer_seeds_arg,
        default={},
        metavar="N|PEER=N,...",
        help="train peers with the first N model seeds only where their compute does not fit (default: "
        "every model seed, like every trained method), e.g. state=1 or 1; stated in the report",
    )
    add_model_args(p)
    p.add_argument(
        "--final",
        action="store_true",
        help="a final verdict: refuse a dirty checkout, and freeze the commit and a digest of the full "
        "configuration in OUT/final.json before the first fold (run from a clone installed with "
        "`pip install -e .`)",
    )
    p.add_argument(
        "--held-out-datasets",
        type=csv_list,
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
    add_backed(p)
    add_task_args(p, what="fold tasks (index, dataset, split, split seed, fold, state, folder)")
    add_jepa_args(p)


def run_tasks(command: str, args: argparse.Namespace, call):
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


def benchmark_inputs(args: argparse.Namespace):
    """``(datasets, plan, run)`` of ``celljepa benchmark``'s arguments; every setting is checked first."""
    from ..bench import DEMO_PLAN
    from ..bench.run import load_data_args

    items = args.data or ["demo"]
    if args.splits and items == ["demo"]:
        raise InputError("--splits is for --data files (the demo has a fixed plan).")
    run = run_config(args, jepa=not args.no_jepa)
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


def run_benchmark(args: argparse.Namespace) -> int:
    """``celljepa benchmark``: prints the report's path (``--list``: the fold tasks; ``--task``: their states)."""
    from .._io import write_h5ad_atomic
    from ..bench import DEMO_PLAN, benchmark
    from ..data import processed_path

    datasets, plan, run = benchmark_inputs(args)
    jepa_knn = None
    if args.jepa_knn:
        from ..train.config import load_config

        jepa_knn = load_config(args.jepa_config, overrides={"train": {"seed": run.model_seeds[0]}})
    if args.list:
        from ..bench.run import task_status

        rows = task_status(
            datasets,
            plan,
            out=args.out,
            run=run,
            max_folds=args.max_folds,
            predictions=args.predictions,
            reuse=args.reuse,
        )
        for r in rows:
            print(
                f"{r['index']}\t{r['dataset']}\t{r['split']}\tsplit_seed{r['split_seed']}\tfold{r['fold']}\t"
                f"{r['state']}\t{r['folder']}"
            )
        return EXIT_OK
    code, _ = run_tasks(
        "benchmark",
        args,
        lambda: benchmark(
            datasets,
            plan,
            out=args.out,
            run=run,
            figure_maker=fold_figures,
            combined_figure_maker=combined_figures,
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


# -------------------------------------------------------------------------------------------------- holdout


def add_holdout(sub: Subcommands) -> None:
    """The ``holdout`` command."""
    p = sub.add_parser(
        "holdout",
        help="cross-dataset holdout (S4): pretrain on the other datasets, evaluate on the held-out one",
        description="Map every dataset onto one feature set, pretrain a CellJEPA encoder on all datasets but "
        "--holdout, and on the held-out dataset compare (a) kNN accuracy of its labels on that encoder's "
        "embedding, on a JEPA pretrained on it alone and on its own PCA, and (b) the transition models "
        "on its own splits with the encoder from elsewhere versus its own, beside the tuned baselines. "
        "Writes OUT/holdout.json, holdout.md and feature_set.txt (celljepa report merges them).",
    )
    add_data(p)
    p.add_argument("--holdout", required=True, help="the dataset held out")
    p.add_argument(
        "--splits",
        type=plan_arg,
        default={"S1_unseen_perturbation": 3},
        help="the held-out dataset's own splits, SPLIT[:FOLDS],... (default S1_unseen_perturbation:3)",
    )
    p.add_argument("--max-folds", type=at_least_one, help="score only the first K folds of each split")
    p.add_argument(
        "--feature-set",
        default="foundation-v1",
        help="gene list (stored id, file, intersection, union_hvg); default foundation-v1",
    )
    add_jepa_args(p)
    add_protocol_args(p)
    p.add_argument("--out", required=True, type=Path)
    add_overwrite(p)
    add_progress(p)
    add_task_args(p, what="tasks (the encoders first, then the folds)")


def holdout_inputs(args: argparse.Namespace):
    """``(datasets, run)`` of ``celljepa holdout``'s arguments; every setting is checked first."""
    from ..bench.run import load_data_args

    run = run_config(args)
    datasets = load_data_args(args.data)
    if args.holdout not in datasets:
        raise InputError(f"--holdout {args.holdout!r} is not one of the --data datasets {list(datasets)}.")
    return datasets, run


def run_holdout(args: argparse.Namespace) -> int:
    """``celljepa holdout``: prints the summary (``--list``: the tasks; ``--task``: their states)."""
    from ..bench.holdout import holdout_markdown, holdout_run, holdout_tasks

    datasets, run = holdout_inputs(args)
    common = dict(out=args.out, run=run, feature_set=args.feature_set, splits=args.splits, max_folds=args.max_folds)
    if args.list:
        for i, (kind, label, folder) in enumerate(holdout_tasks(datasets, args.holdout, **common)):
            done = (folder / ("inputs.json" if kind == "encoder" else "fold.json")).is_file()
            print(f"{i}\t{kind}\t{label}\t{'done' if done else 'to do'}\t{folder}")
        return EXIT_OK
    code, result = run_tasks(
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


# ---------------------------------------------------------------------------------------------------- sweep


def add_sweep(sub: Subcommands) -> None:
    """The ``sweep`` command."""
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
    add_progress(p)


def run_sweep(args: argparse.Namespace) -> int:
    """``celljepa sweep``: exit 1 when tasks are missing (except with ``--task``)."""
    from ..bench.sweep import collect_sweep, load_grid, load_sweep_datasets, parse_data_args, run_sweep_task

    grid = load_grid(args.grid, parse_data_args(args.data))
    if args.list:
        for i, (ablation, seed, fold) in enumerate(grid.tasks):
            where = grid.task_dir(args.out, ablation, seed, fold)
            print(f"{i}\t{ablation}\tseed{seed}" + ("" if fold is None else f"\tfold{fold}") + f"\t{where}")
        return EXIT_OK
    if not args.collect:
        indices = [args.task] if args.task is not None else range(len(grid.tasks))
        datasets = load_sweep_datasets(grid)
        for i in indices:
            run_sweep_task(grid, i, args.out, progress=not args.no_progress, datasets=datasets)
    result = collect_sweep(grid, args.out)
    print(f"{args.out / 'ablation.md'}: {result['finished']}/{result['tasks']} tasks finished")
    for m in result["missing"]:
        print(f"missing: task {m['index']} ({m['ablation']}, seed {m['seed']}): {m['state']}, {m['folder']}")
    return EXIT_OK if args.task is not None or not result["missing"] else EXIT_ERROR


# --------------------------------------------------------------------------------------------------- report


def add_report(sub: Subcommands) -> None:
    """The ``report`` command."""
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


def run_report(args: argparse.Namespace) -> int:
    """``celljepa report``: prints the report's path and the verdict counts."""
    from ..bench.consolidate import consolidate
    from ..eval.verdict import OUTCOMES

    report = consolidate(args.runs, args.out, title=args.title, figure_maker=report_figure)
    outcomes = [v["outcome"] for v in report["verdicts"]]
    counts = ", ".join(
        f"{outcomes.count(o)} {o}" for o in (*OUTCOMES, "old protocol", "protocol v2", "superseded") if o in outcomes
    )
    print(
        f"{args.out / 'report.md'}: {len(report['runs'])} run(s), {len(outcomes)} verdict row(s)"
        + (f" ({counts})" if counts else "")
    )
    return EXIT_OK


COMMANDS = {
    "eval-baselines": (add_eval_baselines, run_eval_baselines),
    "benchmark": (add_benchmark, run_benchmark),
    "sweep": (add_sweep, run_sweep),
    "holdout": (add_holdout, run_holdout),
    "report": (add_report, run_report),
}
