"""A real fold's predictions (Norman 2019 demo, S1 fold 0, baselines only), scored once for the plot tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def fold_predictions():
    """``(FoldResult, adata)`` of one real fold with every baseline's predictions kept (a few seconds)."""
    from celljepa.bench import demo_datasets, score_fold
    from celljepa.splits import make_split_folds

    adata = demo_datasets()["norman2019"]
    fold = make_split_folds(adata.obs, "S1_unseen_perturbation", dataset_id="norman2019")[0]
    return score_fold(adata, fold, keep_predictions=True), adata
