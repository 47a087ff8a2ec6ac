"""JEPA transition models inside the harness on the real demo studies, and cj.tl.predict_perturbation."""

from __future__ import annotations

import numpy as np
import pytest

import celljepa as cj
from celljepa._errors import InputError
from celljepa.bench import demo_datasets
from celljepa.bench.evaluate import EvalConfig, prepare_fold, score_fold
from celljepa.models.transition import JEPATransition, TransitionConfig
from celljepa.splits import make_split_folds
from celljepa.tl import fit_transition
from celljepa.train.config import load_config

SMALL = {
    "train": {"max_steps": 30, "batch_size": 64, "log_every": 10},
    "model": {"n_hidden": 32, "predictor_hidden": 32, "n_latent": 16},
}
QUICK = TransitionConfig(max_steps=40, eval_every=10, set_size=32)


@pytest.fixture(scope="module")
def norman():
    return demo_datasets()["norman2019"]


@pytest.fixture(scope="module")
def s1_fold(norman):
    return make_split_folds(norman.obs, "S1_unseen_perturbation", dataset_id="norman2019", n_folds=5, seed=0)[0]


@pytest.fixture(scope="module")
def scored(norman, s1_fold):
    return score_fold(norman, s1_fold, jepa=load_config(overrides=SMALL), transition=QUICK, pca_twin=True)


def test_jepa_models_are_scored_like_baselines(scored, s1_fold, norman):
    m, per = scored.metrics, scored.per_condition
    assert {"jepa_prototype", "jepa_set", "pca_set"} <= set(m["methods"])
    assert m["roles"][m["comparator"]] in ("baseline", "pca_twin") and m["roles"]["jepa_set"] == "jepa"
    assert set(per.groupby("method")["condition"].apply(frozenset).map(len)) == {m["n_test_conditions"]}
    assert "jepa_set vs " + m["comparator"] in m["comparisons"]
    v = m["verdict"]
    assert v["vs_pca_twin"]["twin"] == "pca_set" and v["vs_pca_twin"]["n"] == m["n_effect_conditions"]
    # the pre-registered primary model, never the better of the two JEPA models on test
    assert v["model"] == "jepa_set" and v["baseline"] == m["comparator"]
    e = v["edistance"]
    assert e["n"] == m["n_effect_conditions"] and 0 < e["p"] <= 1
    assert e["p_holm"] is None if e["n"] < 10 else e["p_holm"] >= e["p"]
    if e["n"] < 10:
        assert v["outcome"] in ("not claimable", "undetermined")
    else:
        assert (v["outcome"] == "wins") == (e["ci_high"] < 0 and e["p_holm"] < 0.05)
        assert (v["outcome"] == "loses") == (e["ci_low"] > 0 and e["p_holm"] < 0.05)
    diag = m["embedding_space"]["edistance_mean"]
    assert set(diag) == {"no_change", "jepa_prototype", "jepa_set"} and all(np.isfinite(list(diag.values())))
    # predicted sets are the test contexts' controls mapped one by one
    n_ctrl = int(norman.obs["is_control"].sum())
    assert set(per.loc[per["method"] == "jepa_set", "n_cells_predicted"]) == {n_ctrl}


def test_the_fold_encoder_never_sees_test_perturbed_cells(scored, s1_fold, norman):
    enc = scored.encoder
    info = scored.params["jepa_encoder"]
    assert info["steps"] == 30 and info["dims"] == 16 and np.isfinite(info["effective_rank"])
    test_perturbed = set(s1_fold["test_cells"]) - set(norman.obs_names[norman.obs["is_control"].to_numpy(bool)])
    seen = len(set(s1_fold["train_cells"]) | set(s1_fold["val_cells"]) | (set(s1_fold["test_cells"]) - test_perturbed))
    assert enc.train_info_["n_train_cells"] == seen
    assert seen + len(test_perturbed) == norman.n_obs and len(test_perturbed) > 0


@pytest.mark.parametrize("transductive", [False, True])
def test_held_out_context_controls_are_inputs_only_unless_transductive(transductive):
    import dataclasses

    sciplex = demo_datasets()["sciplex_gxe"]
    fold = make_split_folds(sciplex.obs, "S2_unseen_context", dataset_id="sciplex_gxe", n_folds=3, seed=0)[0]
    cfg = EvalConfig(transductive=transductive)
    result = score_fold(sciplex, fold, config=cfg, jepa=load_config(overrides=SMALL), transition=QUICK, pca_twin=True)
    held_ctrl = set(fold["test_cells"]) & set(sciplex.obs_names[sciplex.obs["is_control"].to_numpy(bool)])
    assert held_ctrl  # the held-out cell line's controls: where its predictions start
    fitted = len(fold["train_cells"]) + len(fold["val_cells"])
    assert result.encoder.train_info_["n_train_cells"] == fitted + (len(held_ctrl) if transductive else 0)
    assert result.metrics["transductive"] is transductive
    _, train, test = prepare_fold(sciplex, fold, cfg)
    names = sciplex.obs_names[train.positions]
    held = np.isin(names, list(held_ctrl))
    if transductive:
        assert train.fit_rows is None and train.fit_mask().all()
    else:
        assert not train.fit_mask()[held].any() and train.fit_mask()[~held].all()
    # every prediction of a held-out context still starts from its controls
    ctx = {c.context_id for c, _ in test}
    assert all(train.control_rows(x).size > 0 for x in ctx)
    # the transition decoder is fitted on the fittable rows only: opening them up changes its fit
    one_step = TransitionConfig(max_steps=1, eval_every=1)
    w = [
        JEPATransition("set", one_step, space="pca").fit(dataclasses.replace(train, fit_rows=rows))._W
        for rows in (train.fit_rows, None)
    ]
    assert (transductive and train.fit_rows is None) or not np.allclose(w[0].numpy(), w[1].numpy())


def test_predict_perturbation_returns_cells_ready_for_scanpy(norman):
    import anndata as ad
    import scanpy as sc

    jepa = cj.models.CellJEPA(norman, config=load_config(overrides=SMALL)).train(progress=False)
    model = fit_transition(norman, jepa, config=QUICK, n_hvg=200, n_pcs=20)
    assert model.space_.n_pcs == 20 and len(model.space_.genes) == 200
    pred = cj.tl.predict_perturbation(
        norman, model, perturbation="gene:KLF1|gene:NEW_GENE", context="k562", n_cells=150
    )
    assert pred.shape == (150, 200) and pred.obsm["X_jepa"].shape == (150, 16)
    assert pred.obsm["X_eval"].shape == (150, 20) and np.isfinite(pred.X).all()
    assert pred.obs["is_predicted"].all() and not pred.obs["is_control"].any()
    assert pred.uns["predict_perturbation"]["unseen_tokens"] == ["gene:NEW_GENE"]
    np.testing.assert_allclose(model.space_.transform(pred.X.astype(np.float64)), pred.obsm["X_eval"], atol=1e-3)
    observed = norman[norman.obs["is_control"].to_numpy(bool), pred.var_names].copy()
    both = ad.concat({"observed": observed, "predicted": pred}, label="origin")
    sc.pp.pca(both, n_comps=5)
    assert both.obsm["X_pca"].shape == (observed.n_obs + 150, 5)
    # an id of the data resolves to its tokens; the same seed gives the same cells
    pid = str(norman.obs.loc[~norman.obs["is_control"].to_numpy(bool), "perturbation_id"].iloc[0])
    a = cj.tl.predict_perturbation(norman, model, perturbation=pid, context="k562", seed=1, n_cells=20)
    b = cj.tl.predict_perturbation(norman, model, perturbation=pid, context="k562", seed=1, n_cells=20)
    np.testing.assert_array_equal(a.X, b.X)
    with pytest.raises(InputError, match="no control cells.*k562"):
        cj.tl.predict_perturbation(norman, model, perturbation=pid, context="K652")
    with pytest.raises(InputError, match="neither a perturbation_id"):
        cj.tl.predict_perturbation(norman, model, perturbation="KLF1_typo", context="k562")


def test_transition_needs_test_free_training_data(norman, s1_fold):
    space, train, test = prepare_fold(norman, s1_fold, EvalConfig())
    test_rows = {int(p) for _, rows in test for p in rows}
    assert not test_rows & set(train.positions.tolist())
    with pytest.raises(InputError, match="needs JEPA embeddings"):
        JEPATransition("set").fit(train)
