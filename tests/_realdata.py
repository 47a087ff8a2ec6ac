"""Helpers for tests on the real datasets in ../shared/data (importable as ``_realdata``)."""

from __future__ import annotations

import warnings
from pathlib import Path

import anndata as ad
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
PERTURBATION = SHARED_DATA / "perturbation"

# The four real datasets and how `celljepa ingest` reads each (CLI arguments after SOURCE).
REAL_DATASETS = {
    "perturbench_devel": ("perturbench/devel.h5ad", []),
    "norman_gears": ("scx/norman_subset.h5ad", ["--min-cells", "1"]),
    "kang2018": (
        "scgen/valid.h5ad",
        [
            "--format",
            "generic",
            "--perturbation-key",
            "condition",
            "--control-values",
            "control",
            "--context-key",
            "cell_type",
            "--cell-type-key",
            "cell_type",
            "--perturbation-kind",
            "cytokine",
        ],
    ),
    "papalexi2021": (
        "sceptre/papalexi2021_sceptre_lowmoi_example_data.h5ad",
        [
            "--format",
            "generic",
            "--perturbation-key",
            "grna_target",
            "--control-values",
            "non-targeting",
            "--context-value",
            "THP-1",
            "--batch-key",
            "bio_rep",
        ],
    ),
}


def real_path(relative: str) -> Path:
    path = PERTURBATION / relative
    if not path.exists():
        pytest.fail(f"real dataset {path} is missing: the tests expect ../shared/data beside the repository")
    return path


def read_quiet(path) -> ad.AnnData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ad.read_h5ad(path)
