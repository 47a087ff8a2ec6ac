"""Smoke tests of the real peer tools on tiny real folds: each runs when its environment is installed.

``celljepa peers install NAME`` (or an extra installed beside celljepa) makes a peer available; without it the
test skips and says how to install it. ``.ci/run`` installs the peers CI's disk has room for and requires
them (``CELLJEPA_REQUIRE_PEERS=gears,scgen,...`` or ``all``). Each test trains the
peer for a few epochs or steps (the benchmarks use the published settings), predicts the test conditions of
one fold, and checks what a user relies on: every condition it claims to cover gets one finite predicted cell
per start cell, those cells moved away from the controls, the compute time and settings are recorded, and the
conditions it cannot predict say why.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from celljepa.bench.evaluate import EvalConfig, prepare_fold
from celljepa.bench.run import demo_datasets
from celljepa.peers import PeerModel, peer_status
from celljepa.splits import make_split_folds

# peer: (dataset, split, folds, the fold's conditions it must cover, few-epoch settings)
CASES = {
    "scgen": ("kang2018", "S2_unseen_context", 7, "all", {"max_epochs": 5}),
    "gears": ("norman2019", "S3_unseen_combo", 3, "all", {"epochs": 1}),
    "cpa": ("norman2019", "S3_unseen_combo", 3, "some", {"max_epochs": 5}),
    "state": ("kang2018", "S2_unseen_context", 7, "all", {"max_steps": 20}),
}


def _flat(d: dict):
    """Every (key, value) of a nested settings dict (CPA groups its settings by model, plan and training)."""
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flat(v)
        else:
            yield k, v


def _available(name: str):
    status = peer_status(name)
    if not status["available"]:
        why = f"peer {name} not available here: {status['reason']}"
        # .ci/run names the peers it installed (those the disk has room for): there a missing one is a failure
        required = os.environ.get("CELLJEPA_REQUIRE_PEERS", "").replace(" ", "").split(",")
        if name in required or "all" in required:
            pytest.fail(why)
        pytest.skip(why)


def _fold(dataset: str, split: str, n_folds: int, ingested):
    import anndata as ad

    adata = demo_datasets()[dataset] if dataset == "norman2019" else ad.read_h5ad(ingested[dataset])
    fold = make_split_folds(adata.obs, split, dataset_id=dataset, n_folds=n_folds)[0]
    return adata, prepare_fold(adata, fold, EvalConfig())


@pytest.mark.parametrize("name", list(CASES))
def test_peer_trains_and_predicts_a_real_fold(name, ingested, tmp_path):
    _available(name)
    dataset, split, n_folds, must_cover, settings = CASES[name]
    adata, (space, train, test) = _fold(dataset, split, n_folds, ingested)
    conds = [c for c, _ in test]
    model = PeerModel(name, seed=0, params=settings, threads=1, workdir=tmp_path / name).fit(train)
    preds = model.predict_many(conds)
    covered = [c for c in conds if model.covers(c)]
    assert covered if must_cover == "some" else covered == conds, model.not_covered_
    for cond in covered:
        start = train.control_cells(cond.context_id)
        assert preds[cond].shape == start.shape and np.isfinite(preds[cond]).all()
        assert np.abs(preds[cond].mean(0) - start.mean(0)).max() > 1e-3  # the peer predicted a change
        assert model.native_[cond].shape == (len(start), len(space.genes))
    for cond in set(conds) - set(covered):
        assert model.not_covered_[cond.key]
        np.testing.assert_array_equal(preds[cond], train.control_cells(cond.context_id))
    params = model.params()
    assert params["fit_s"] > 0 and params["seed"] == 0 and params["version"]
    assert settings.items() <= dict(_flat(params["params"])).items()  # the settings it ran with, recorded
    assert (tmp_path / name / "result.json").is_file() and (tmp_path / name / "runner.log").is_file()
