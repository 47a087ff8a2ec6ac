"""Training commands: ``pretrain`` (the JEPA encoder) and ``train-transition`` (the transition models of a fold)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._figures import fold_figures
from ._options import add_overwrite, add_progress, add_split_file, csv_list, flat_override, override
from ._parser import EXIT_INTERRUPTED, EXIT_OK, Subcommands


def add_pretrain(sub: Subcommands) -> None:
    """The ``pretrain`` command."""
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
    add_split_file(p, required=False, help="split JSON (celljepa splits): train on its training cells only")
    p.add_argument("--out", required=True, type=Path, help="run folder, e.g. runs/<run_id>")
    p.add_argument("--fast-dev", action="store_true", help="a 20-step smoke run of every stage")
    p.add_argument("--backed", action="store_true", help="stream cells from disk in chunks (data.chunk_size)")
    p.add_argument("--seed", type=int, help="override train.seed")
    p.add_argument("--device", help="override train.device (auto, cpu, cuda, cuda:N)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        type=override,
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config key, e.g. --set train.ema=off --set mask.kind=random (repeatable)",
    )
    p.add_argument("--restart", action="store_true", help="discard the folder's checkpoints and start over")
    add_progress(p)


def pretrain_overrides(args: argparse.Namespace) -> dict:
    """``{section: {key: value}}`` of ``--set``, ``--seed`` and ``--device``."""
    overrides: dict = {}
    for section, key, value in args.overrides:
        overrides.setdefault(section, {})[key] = value
    if args.seed is not None:
        overrides.setdefault("train", {})["seed"] = args.seed
    if args.device is not None:
        overrides.setdefault("train", {})["device"] = args.device
    return overrides


def run_pretrain(args: argparse.Namespace) -> int:
    """``celljepa pretrain``: prints the collapse diagnostics and the kNN table (75: stopped, resumable)."""
    from ..bench.pretrain import knn_summary, pretrain
    from ..train.checkpoint import TrainingInterrupted
    from ..train.distributed import distributed_session

    overrides = pretrain_overrides(args)
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


def add_train_transition(sub: Subcommands) -> None:
    """The ``train-transition`` command."""
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
    add_split_file(p, required=True, help="split JSON of one fold (celljepa splits)")
    p.add_argument("--config", type=Path, help="transition config YAML (configs/transition/default.yaml)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        type=flat_override,
        default=[],
        metavar="KEY=VALUE",
        help="override one transition setting, e.g. --set loss_space=jepa (repeatable)",
    )
    p.add_argument(
        "--kinds", type=csv_list, default=["prototype", "set"], help="models to train (default prototype,set)"
    )
    p.add_argument("--drug-metadata", type=Path, help="drug targets/pathways table for drug: tokens")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--allow-unsplit-encoder",
        action="store_true",
        help="accept an encoder pretrained without this split (it has seen the test cells, unlabelled)",
    )
    p.add_argument("--out", required=True, type=Path, help="run folder, e.g. runs/<run_id>")
    add_overwrite(p)


def run_train_transition(args: argparse.Namespace) -> int:
    """``celljepa train-transition``: prints the report's path and the verdict sentence."""
    from ..bench.run import train_transition
    from ..data.readers import read_source
    from ..eval.report import verdict_sentence
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
            figure_maker=fold_figures,
            overwrite=args.overwrite,
        )
    if result is None:  # a rank other than 0 of a distributed run: rank 0 reports
        return EXIT_OK
    m = result.metrics
    print(args.out / "report.md")
    print(verdict_sentence(f"{m['dataset_id']} {m['split']} fold {m['fold']}", m))
    return EXIT_OK


COMMANDS = {
    "pretrain": (add_pretrain, run_pretrain),
    "train-transition": (add_train_transition, run_train_transition),
}
