"""cj.tl.make_splits writes fold roles into obs and the group lists into uns, scanpy style."""

from __future__ import annotations

import pytest

import celljepa as cj
from celljepa.splits import make_split_folds


def test_make_splits_writes_roles_and_groups(demo):
    out = cj.tl.make_splits(demo, "S1_unseen_perturbation", n_folds=5, seed=0)
    assert out is None
    record = demo.uns["splits"]["S1_unseen_perturbation"]
    assert record["n_folds"] == 5 and record["pilot"] is False
    folds = make_split_folds(demo.obs, "S1_unseen_perturbation", dataset_id="perturbench_devel", n_folds=5, seed=0)
    for fold in folds:
        roles = demo.obs[f"S1_unseen_perturbation_fold{fold['fold']}"]
        assert (roles == "test").sum() == len(fold["test_cells"])
        assert (roles == "train").sum() == len(fold["train_cells"])
        assert record["folds"][str(fold["fold"])]["test_groups"] == fold["test_groups"]
        assert (roles[demo.obs["is_control"]] == "train").all()


def test_copy_and_key_added(demo):
    out = cj.tl.make_splits(demo, "S2_unseen_context", n_folds=4, seed=1, key_added="ctx", copy=True)
    assert "splits" not in demo.uns and "ctx" in out.uns["splits"]
    assert "ctx_fold3" in out.obs


def test_needs_standardize_first():
    raw = cj.datasets.demo(preprocessed=False)
    with pytest.raises(cj.InputError, match="cj.pp.standardize"):
        cj.tl.make_splits(raw)
