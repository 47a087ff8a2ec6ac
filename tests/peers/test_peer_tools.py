"""Smoke tests of the real peer tools on tiny real folds: each runs when its environment is installed.

``celljepa peers install NAME`` (or an extra installed beside celljepa) makes a peer available; without it the
test skips and says how to install it. ``.ci/run`` installs the peers CI's disk has room for and requires
them (``CELLJEPA_REQUIRE_PEERS=gears,scgen,...`` or ``all``). Each test trains the
peer for a few epochs or steps (the benchmarks use its settings scaled to the data), on training + validation
conditions as the benchmark's refit does, predicts the test conditions of one fold, and checks what a user
relies on: every condition it claims to cover gets one finite predicted cell per start cell, those cells moved
away from the controls, the fit is recorded (cells, its own validation, epochs or steps, best one, loss
curves, the scaling rule), and the conditions it cannot predict are n/a and say why.
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
    # GEARS's graph spans every GO gene either way; 5 neighbours instead of 20 make its GNN 3x cheaper
    "gears": ("norman2019", "S3_unseen_combo", 3, "all", {"epochs": 1, "num_similar_genes_go_graph": 5}),
    "cpa": ("norman2019", "S3_unseen_combo", 3, "some", {"max_epochs": 5}),
    "state": ("kang2018", "S2_unseen_context", 7, "all", {"max_steps": 20, "val_freq": 10}),
}
UNIT = {"scgen": "epoch", "gears": "epoch", "cpa": "epoch", "state": "step"}


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


@pytest.mark.extended
@pytest.mark.parametrize("name", list(CASES))
def test_peer_trains_and_predicts_a_real_fold(name, ingested, tmp_path):
    _available(name)
    dataset, split, n_folds, must_cover, settings = CASES[name]
    adata, (space, train, test) = _fold(dataset, split, n_folds, ingested)
    conds = [c for c, _ in test]
    model = PeerModel(name, seed=0, params=settings, threads=1, workdir=tmp_path / name).fit(train, refit=True)
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
        assert preds[cond] is None and cond not in model.native_  # n/a: no stand-in answer
    params = model.params()
    assert params["fit_s"] > 0 and params["seed"] == 0 and params["version"]
    assert settings.items() <= dict(_flat(params["params"])).items()  # the settings it ran with, recorded
    # the record of the fit: its cells, its own validation, how long it trained and which epoch or step it kept
    unit = UNIT[name]
    assert params["fitted_on"] == "training + validation conditions"
    assert params["n_conditions_fit"] == len(train.fitting_conditions(True))
    assert 0 < params["n_cells_used"] <= params["n_cells_fit"]
    trained, most, best = params[f"{unit}s_trained"], params[f"max_{unit}s"], params[f"best_{unit}"]
    assert 0 < trained <= most and (best is None or 1 <= best <= trained)
    if unit == "step" and best is not None:
        assert best % 10 == 0  # validated every val_freq steps: the kept weights are a validated step's
    assert params["train_loss_last"] and params["val_loss_last"]
    assert params["validation"]["how"] and params["scaling"]["rule"]
    root = tmp_path / name / "trainval_seed0"
    assert (root / "result.json").is_file() and (root / "runner.log").is_file()
    if name == "gears":
        whole = params["inputs"]["go_graph"]
        assert whole["genes"] > 18_000  # the graph's edges are chosen among every gene with GO terms
        # GEARS gets the part of it that its one GO layer reads for the perturbed genes (exactly: see _gograph)
        assert params["go_graph"]["genes"] == whole["receptive_field"]["genes"] < whole["genes"]
        fitted = {frozenset(t.split(":", 1)[-1] for t in c.tokens) for c, _ in train.fitting_conditions(True)}
        held = {frozenset(g for g in p.split("+") if g != "ctrl") for p in params["validation"]["perturbations"]}
        assert held and held <= fitted  # its validation perturbations are drawn from what it fits on


@pytest.mark.extended
def test_scgen_is_seeded_and_refits_on_validation_conditions(ingested, tmp_path):
    """Same seed, same predictions; the fit on training conditions and the refit see different cells."""
    _available("scgen")
    adata, (space, train, test) = _fold("kang2018", "S2_unseen_context", 7, ingested)
    val, conds = [c for c, _ in train.val_conditions], [c for c, _ in test]
    settings = {"max_epochs": 2}
    model = PeerModel("scgen", seed=4, params=settings, threads=1)
    model.fit(train, refit=False).predict_many(val)
    first = model.params()
    again = model.fit(train, refit=True).predict_many(conds)
    second = model.params()
    assert first["fitted_on"] == "training conditions" and second["fitted_on"] == "training + validation conditions"
    assert second["n_cells_fit"] - first["n_cells_fit"] == sum(len(r) for _, r in train.val_conditions)
    twin = PeerModel("scgen", seed=4, params=settings, threads=1).fit(train, refit=True).predict_many(conds)
    for cond in conds:
        np.testing.assert_allclose(twin[cond], again[cond], rtol=1e-5, atol=1e-5)
