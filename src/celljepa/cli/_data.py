"""Data commands: ``ingest``, ``validate``, ``splits``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .._errors import ContractError
from ._options import add_split_args, csv_list
from ._parser import EXIT_ERROR, EXIT_OK, Subcommands


def add_ingest(sub: Subcommands) -> None:
    """The ``ingest`` command."""
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
    p.add_argument(
        "--control-values", type=csv_list, help="comma-separated control label(s), e.g. control,non-targeting"
    )
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


def run_ingest(args: argparse.Namespace) -> int:
    """``celljepa ingest``: prints the path written."""
    from ..data import ingest
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


def add_validate(sub: Subcommands) -> None:
    """The ``validate`` command."""
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


def run_validate(args: argparse.Namespace) -> int:
    """``celljepa validate``: exit 0 and a summary, or 1 and every violation."""
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


def add_splits(sub: Subcommands) -> None:
    """The ``splits`` command."""
    from ..data.contract import SPLIT_NAMES

    p = sub.add_parser(
        "splits",
        help="write deterministic OOD split files (one JSON per fold)",
        description="Write OUT/<dataset_id>.<split>.seed<S>.fold<F>.json for every fold. "
        f"Splits: {', '.join(SPLIT_NAMES)}. Same inputs and seed give byte-identical files.",
    )
    p.add_argument("h5ad", type=Path)
    add_split_args(p)
    p.add_argument("--out", required=True, type=Path)


def run_splits(args: argparse.Namespace) -> int:
    """``celljepa splits``: prints the paths written."""
    import anndata as ad

    from .._io import check_readable_h5ad
    from ..splits import make_split_folds, write_split_files

    split = args.split  # checked by the parser (split_name)
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


COMMANDS = {
    "ingest": (add_ingest, run_ingest),
    "validate": (add_validate, run_validate),
    "splits": (add_splits, run_splits),
}
