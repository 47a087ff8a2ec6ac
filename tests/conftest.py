"""Shared fixtures: the real datasets in ../shared/data and ingested copies of them."""

from __future__ import annotations

from pathlib import Path

import pytest
from _realdata import REAL_DATASETS, SHARED_DATA, real_path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.fail(f"{SHARED_DATA} is missing: the tests expect ../shared/data beside the repository")
    return SHARED_DATA


@pytest.fixture(scope="session")
def demo_processed():
    import celljepa as cj

    return cj.datasets.demo()


@pytest.fixture
def demo(demo_processed):
    return demo_processed.copy()


@pytest.fixture(scope="session")
def ingested(tmp_path_factory) -> dict[str, Path]:
    """Every real dataset ingested once through the CLI; maps dataset id -> processed .h5ad."""
    from celljepa.cli import main

    out = tmp_path_factory.mktemp("processed")
    paths = {}
    for dataset_id, (relative, extra) in REAL_DATASETS.items():
        code = main(["ingest", str(real_path(relative)), "--dataset-id", dataset_id, "--out", str(out), *extra])
        assert code == 0, f"ingest of {dataset_id} failed"
        paths[dataset_id] = out / dataset_id / "lognorm-v1.h5ad"
    return paths


@pytest.fixture(scope="module")
def k562(demo_processed):
    """The demo's K562 cells (Norman 2019) with a 20-component PCA in obsm['X_pca']."""
    import scanpy as sc

    adata = demo_processed[demo_processed.obs["context_id"] == "k562"].copy()
    sc.pp.pca(adata, n_comps=20, random_state=0)
    return adata
