"""Predictions as AnnData, and parity of the benchmark's per-condition metrics with cell-eval's.

On a real fold (Norman 2019 demo, ``S1_unseen_perturbation`` fold 0, every applicable baseline): the
benchmark's own numbers and predicted sets come from :func:`celljepa.bench.evaluate.score_fold` with
``keep_predictions=True``; the predictions are written with :func:`celljepa.eval.predictions.write_predictions`,
cut with ``cell_eval_inputs`` and scored by cell-eval.
``docs/cell-eval.md`` is the table of what agrees and why the rest differs.
"""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from celljepa._errors import InputError
from celljepa.data import contract as C
from celljepa.eval import metrics as M
from celljepa.eval.edistance import edistance_sets
from celljepa.eval.predictions import (
    CONTROL_LABEL,
    EVAL_KEY,
    PERT_COL,
    cell_eval_inputs,
    predictions_anndata,
    write_predictions,
)
from celljepa.eval.space import EvaluationSpace

# --------------------------------------------------------------------------------------------- the fold


@pytest.fixture(scope="module")
def fold_predictions(tmp_path_factory):
    """One fold scored by the benchmark with its predictions kept, and those predictions as a file."""
    from celljepa.bench import evaluate as E
    from celljepa.bench.run import demo_datasets
    from celljepa.splits import make_split_folds

    adata = demo_datasets()["norman2019"]
    fold = make_split_folds(adata.obs, "S1_unseen_perturbation", dataset_id="norman2019")[0]
    result = E.score_fold(adata, fold, keep_predictions=True)  # every applicable baseline
    config = E.EvalConfig()
    _, train, test = E.prepare_fold(adata, fold, config)
    space, pred = result.space, result.predictions

    gene_idx = space.gene_indices(adata.var_names)

    def genes(rows):
        return np.asarray(adata[np.sort(rows)].X[:, gene_idx].toarray(), dtype=np.float64)

    is_ctrl = adata.obs[C.IS_CONTROL].to_numpy(dtype=bool)
    ctx_col = adata.obs[C.CONTEXT_ID].astype(str).to_numpy()
    contexts = sorted({c.context_id for c, _ in test})
    observed = {c.key: genes(r) for c, r in test}
    controls = {ctx: genes(np.flatnonzero(is_ctrl & (ctx_col == ctx))) for ctx in contexts}
    methods = sorted(set(pred.obs["method"].astype(str)) - {"observed"})
    method_col, cond_col = pred.obs["method"].astype(str).to_numpy(), pred.obs["condition"].astype(str).to_numpy()
    preds = {
        (m, None, c): pred.obsm[EVAL_KEY][(method_col == m) & (cond_col == c.key)] for m in methods for c, _ in test
    }
    path = write_predictions(tmp_path_factory.mktemp("fold") / "predictions.h5ad", pred)
    return {
        "adata": adata,
        "space": space,
        "train": train,
        "test": test,
        "result": result,
        "per": result.per_seed,
        "config": config,
        "preds": preds,
        "observed": observed,
        "controls": controls,
        "pred": pred,
        "path": path,
        "methods": methods,
        "outdir": tmp_path_factory.mktemp("cell-eval"),
    }


def _our_gene_means(f, cond_key: str, method: str):
    """_score_test's gene-space means of one condition: predicted (its reconstruction), observed, control."""
    space, train = f["space"], f["train"]
    cond = next(c for c, _ in f["test"] if c.key == cond_key)
    pm = f["preds"][(method, None, cond)].mean(axis=0)
    cz = train.control_mean(cond.context_id)
    ctrl_genes = f["controls"][cond.context_id].mean(axis=0)
    pred_genes = space.inverse_transform(pm) - space.inverse_transform(cz) + ctrl_genes
    return pred_genes, f["observed"][cond_key].mean(axis=0), ctrl_genes


def test_kept_predictions_are_what_was_scored(fold_predictions):
    """The predicted sets in predictions.h5ad give back score_fold's per-condition numbers exactly."""
    f, config = fold_predictions, fold_predictions["config"]
    test = f["test"]
    assert {m for m, _, _ in f["preds"]} == set(f["per"]["method"]) and all(len(x) for x in f["preds"].values())
    index = {c: i for i, (c, _) in enumerate(test)}
    obs_z = {c: f["space"].transform(f["observed"][c.key]) for c, _ in test}
    keys = list(f["preds"])
    e = edistance_sets(
        [f["preds"][k] for k in keys],
        [obs_z[k[2]] for k in keys],
        cap=config.cap,
        n_resamples=config.n_resamples,
        seed=config.seed,
        pair_keys=[index[k[2]] for k in keys],
    )
    per = f["per"].set_index(["method", "condition"])
    for (method, _, cond), value in zip(keys, e, strict=True):
        row = per.loc[(method, cond.key)]
        np.testing.assert_allclose(value, row["edistance"], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(
            M.mse(f["preds"][(method, None, cond)].mean(0), obs_z[cond].mean(0)), row["mse"], rtol=1e-10, atol=1e-12
        )


# ------------------------------------------------------------------------------- layout (no cell-eval)


def test_predictions_layout_and_round_trip(fold_predictions):
    f = fold_predictions
    pred, space = f["pred"], f["space"]
    n_obs = sum(len(x) for x in f["observed"].values())
    n_ctrl = sum(len(x) for x in f["controls"].values())
    n_pred = sum(len(x) for x in f["preds"].values())
    assert pred.shape == (n_obs + n_ctrl + n_pred, len(space.genes))
    assert list(pred.var_names) == list(space.genes)
    assert pred.obs_names.is_unique
    for col in ("method", "role", "condition", "context_id", "perturbation_id", PERT_COL, "gene_space"):
        assert isinstance(pred.obs[col].dtype, pd.CategoricalDtype), col
    assert pred.obs["is_control"].dtype == bool and pred.obs["model_seed"].isna().all()
    obs = pred.obs
    real = obs["method"] == "observed"
    assert (obs.loc[real, "gene_space"] == "observed").all() and (obs.loc[~real, "gene_space"] == "reconstructed").all()
    assert set(obs.loc[obs["is_control"], PERT_COL]) == {CONTROL_LABEL}
    assert (
        obs.loc[~obs["is_control"], PERT_COL].astype(str) == obs.loc[~obs["is_control"], "perturbation_id"].astype(str)
    ).all()
    assert set(obs.loc[~real, "method"]) == set(f["methods"])
    assert pred.uns["pert_col"] == PERT_COL and pred.uns["control_label"] == CONTROL_LABEL
    assert pred.uns["space"] == space.describe()

    # obsm: observed cells projected with the space, predicted cells as predicted
    sel = ((obs["method"] == "observed") & (obs["condition"] == next(iter(f["observed"])))).to_numpy()
    np.testing.assert_allclose(pred.obsm[EVAL_KEY][sel], space.transform(next(iter(f["observed"].values()))))
    ctx = next(iter(f["controls"]))
    ctrl_z = pred.obsm[EVAL_KEY][(obs["is_control"]).to_numpy()]
    np.testing.assert_allclose(ctrl_z.mean(axis=0), f["train"].control_mean(ctx), atol=1e-10)

    # reconstruction = the formula, cell by cell; its mean = _score_test's gene-space prediction
    for (method, _, cond), z in f["preds"].items():
        rows = ((obs["method"] == method) & (obs["condition"] == cond.key)).to_numpy()
        np.testing.assert_array_equal(pred.obsm[EVAL_KEY][rows], z)
        x = np.asarray(pred.X[rows], dtype=np.float64)
        ctrl = f["controls"][cond.context_id]
        expect = ctrl.mean(0) + (z - space.transform(ctrl).mean(0)) @ space.components
        np.testing.assert_allclose(x, expect, atol=1e-5)
        pred_genes, obs_genes, ctrl_genes = _our_gene_means(f, cond.key, method)
        np.testing.assert_allclose(x.mean(axis=0), pred_genes, atol=1e-5)

    back = ad.read_h5ad(f["path"])
    np.testing.assert_array_equal(back.X, pred.X)
    np.testing.assert_array_equal(back.obsm[EVAL_KEY], pred.obsm[EVAL_KEY])
    pd.testing.assert_frame_equal(back.obs, pred.obs)
    assert back.uns["space"] == pred.uns["space"] and back.uns["pert_col"] == PERT_COL


def _tiny():
    rng = np.random.default_rng(0)
    space = EvaluationSpace(
        genes=np.array(["g0", "g1", "g2", "g3"], dtype=object),
        mean=np.full(4, 1.5),
        components=np.linalg.qr(rng.normal(size=(4, 2)))[0].T,
    )
    ctrl = {"a": rng.uniform(1, 2, (5, 4)), "b": rng.uniform(1, 2, (6, 4))}
    observed = {"a|P": rng.uniform(1, 2, (3, 4)), "b|P": rng.uniform(1, 2, (4, 4))}
    conditions = {
        "a|P": {"context_id": "a", "perturbation_id": "P"},
        "b|P": {"context_id": "b", "perturbation_id": "P"},
    }
    predicted = {("m", s, c): space.transform(ctrl[c[0]]) + s for s in (0, 1) for c in observed}
    return space, ctrl, observed, conditions, predicted


def test_native_predictions_and_bad_input():
    space, ctrl, observed, conditions, predicted = _tiny()
    native_x = np.full((2, 4), 1.0)
    pred = predictions_anndata(
        space,
        observed=observed,
        controls=ctrl,
        predicted=predicted,
        conditions=conditions,
        roles={"m": "jepa", "peer": "peer"},
        native={("peer", None, "a|P"): native_x},
    )
    peer = (pred.obs["method"] == "peer").to_numpy()
    assert (pred.obs.loc[peer, "gene_space"] == "native").all()
    np.testing.assert_allclose(pred.X[peer], native_x)
    np.testing.assert_allclose(pred.obsm[EVAL_KEY][peer], space.transform(native_x))
    assert sorted(pred.obs.loc[pred.obs["method"] == "m", "model_seed"].unique()) == [0.0, 1.0]

    kw = dict(observed=observed, controls=ctrl, predicted=predicted, conditions=conditions)
    with pytest.raises(InputError, match="no role"):
        predictions_anndata(space, **kw, roles={})
    with pytest.raises(InputError, match="no control cells"):
        predictions_anndata(space, **{**kw, "controls": {"a": ctrl["a"]}}, roles={"m": "jepa"})
    with pytest.raises(InputError, match="does not describe"):
        predictions_anndata(space, **{**kw, "conditions": {"a|P": conditions["a|P"]}}, roles={"m": "jepa"})
    with pytest.raises(InputError, match=r"cells × 2"):
        predictions_anndata(space, **{**kw, "predicted": {("m", 0, "a|P"): np.zeros((3, 3))}}, roles={"m": "jepa"})
    with pytest.raises(InputError, match="reserved"):
        predictions_anndata(
            space, **{**kw, "predicted": {("observed", 0, "a|P"): np.zeros((3, 2))}}, roles={"observed": "x"}
        )
    with pytest.raises(InputError, match=r"\.h5ad"):
        write_predictions("predictions.csv", pred)

    with pytest.raises(InputError, match="no predicted cells"):
        cell_eval_inputs(pred, "nope")
    with pytest.raises(InputError, match="model seeds"):
        cell_eval_inputs(pred, "m")
    with pytest.raises(InputError, match="contexts"):
        cell_eval_inputs(pred, "m", model_seed=1)
    with pytest.raises(InputError, match="no model seed"):
        cell_eval_inputs(pred, "m", model_seed=7, context_id="a")
    p, r = cell_eval_inputs(pred, "m", model_seed=1, context_id="b", clip_negative=False)
    assert sorted(set(r.obs[PERT_COL])) == sorted(set(p.obs[PERT_COL])) == sorted([CONTROL_LABEL, "P"])
    assert (r.obs["context_id"] == "b").all() and (p.obs["model_seed"].dropna() == 1).all()
    assert p.uns["cell_eval"]["pred_controls"] == "reconstructed"
    ctrl_p = p.X[p.obs["is_control"].to_numpy()]
    np.testing.assert_allclose(ctrl_p.mean(axis=0), ctrl["b"].mean(axis=0), atol=1e-5)  # same mean, own space
    p, r = cell_eval_inputs(pred, "peer")
    assert p.uns["cell_eval"]["pred_controls"] == "observed"
    np.testing.assert_array_equal(p.X[p.obs["is_control"].to_numpy()], r.X[r.obs["is_control"].to_numpy()])


def test_cell_eval_labels_keep_doses_apart():
    space, ctrl, observed, conditions, predicted = _tiny()
    observed = {"a|P|dose=1": observed["a|P"], "a|P|dose=10": observed["b|P"]}
    conditions = {k: {"context_id": "a", "perturbation_id": "P"} for k in observed}
    predicted = {("m", None, k): space.transform(ctrl["a"]) for k in observed}
    pred = predictions_anndata(
        space,
        observed=observed,
        controls={"a": ctrl["a"]},
        predicted=predicted,
        conditions=conditions,
        roles={"m": "baseline"},
    )
    p, r = cell_eval_inputs(pred, "m")
    assert (
        sorted(set(r.obs[PERT_COL])) == sorted(set(p.obs[PERT_COL])) == sorted([CONTROL_LABEL, "P|dose=1", "P|dose=10"])
    )
    assert p.uns["cell_eval"]["n_clipped"] == 0  # uniform(1, 2) data stay positive


# ------------------------------------------------------------------------------------- cell-eval parity


@pytest.fixture(scope="module")
def cell_eval_pairs(fold_predictions):
    pytest.importorskip("cell_eval", reason="cell-eval is not installed (pip install cell-eval==0.8.2)")
    from cell_eval._types import PerturbationAnndataPair

    logging.getLogger("cell_eval").setLevel(logging.WARNING)
    pred = ad.read_h5ad(fold_predictions["path"])
    pairs = {}
    for method in fold_predictions["methods"]:
        p, r = cell_eval_inputs(pred, method, clip_negative=False)  # exact reconstruction: metric functions
        pairs[method] = PerturbationAnndataPair(real=r, pred=p, pert_col=PERT_COL, control_pert=CONTROL_LABEL)
    return pairs


def _by_condition(f, method: str, values: dict) -> pd.Series:
    """cell-eval's {perturbation: value} as a Series on our condition keys (one context here)."""
    ctx = next(iter(f["controls"]))
    return pd.Series({f"{ctx}|{k}": float(v) for k, v in values.items()}).sort_index()


def _ours(f, method: str, col: str) -> pd.Series:
    per = f["per"]
    return per[per["method"] == method].set_index("condition")[col].astype(float).sort_index()


def test_evaluation_space_metrics_match(fold_predictions, cell_eval_pairs):
    """cell-eval on obsm['X_eval']: pearson_delta = delta_pearson, mse = mse, discrimination_l2 = rank."""
    from cell_eval.metrics import discrimination_score, mse, pearson_delta

    f = fold_predictions
    diffs = {"delta_pearson": 0.0, "mse": 0.0, "rank": 0.0}
    for method, pair in cell_eval_pairs.items():
        n = len(pair.perts)
        got = {
            "delta_pearson": _by_condition(f, method, pearson_delta(pair, embed_key=EVAL_KEY)),
            "mse": _by_condition(f, method, mse(pair, embed_key=EVAL_KEY)),
            # normalised rank 1 − (rank − 1)/N of the true perturbation, by L2 distance of mean effects
            "rank": 1 + n * (1 - _by_condition(f, method, discrimination_score(pair, metric="l2", embed_key=EVAL_KEY))),
        }
        for col, series in got.items():
            ours = _ours(f, method, col)
            assert list(series.index) == list(ours.index)
            ok = np.isfinite(ours.to_numpy())
            for cond in ours.index[~ok]:  # a prediction of no change: ours is undefined, cell-eval's may
                assert not np.isfinite(series[cond]) or _eval_delta(pair, cond) < 1e-9, (method, col, cond)
            assert np.isfinite(series.to_numpy()[ok]).all(), (method, col)  # correlate summation-order noise
            diffs[col] = max(
                diffs[col], float(np.max(np.abs(series.to_numpy()[ok] - ours.to_numpy()[ok]), initial=0.0))
            )
    print("max |cell-eval − celljepa| in the evaluation space:", diffs)
    assert diffs["delta_pearson"] < 1e-9 and diffs["mse"] < 1e-9 and diffs["rank"] < 1e-9


def _eval_delta(pair, cond: str) -> float:
    """Largest |predicted mean − control mean| of the pair in the evaluation space."""
    z = np.asarray(pair.pred.obsm[EVAL_KEY], dtype=np.float64)
    labels = pair.pred.obs[PERT_COL].astype(str).to_numpy()
    return float(np.abs(z[labels == cond.split("|", 1)[1]].mean(0) - z[labels == CONTROL_LABEL].mean(0)).max())


def _pred_delta(pair, cond: str) -> float:
    """Largest |predicted mean − control mean| over the pair's genes (cell-eval's predicted Δ)."""
    x = np.asarray(pair.pred.X, dtype=np.float64)
    labels = pair.pred.obs[PERT_COL].astype(str).to_numpy()
    return float(np.abs(x[labels == cond.split("|", 1)[1]].mean(0) - x[labels == CONTROL_LABEL].mean(0)).max())


def test_gene_space_metrics_match(fold_predictions, cell_eval_pairs):
    """cell-eval on X (the HVGs): pearson_delta, mse, mae of the reconstructed means; top-20 Pearson-Δ."""
    from cell_eval._types import PerturbationAnndataPair
    from cell_eval.metrics import mae, mse, pearson_delta

    f = fold_predictions
    space = f["space"]
    diffs = {
        "pearson_delta_all_genes": 0.0,
        "delta_pearson_top20_de": 0.0,
        "mse_genes": 0.0,
        "mae_genes": 0.0,
        "mse_genes_decomposition": 0.0,
    }
    for method, pair in cell_eval_pairs.items():
        pd_genes = _by_condition(f, method, pearson_delta(pair))
        mse_genes = _by_condition(f, method, mse(pair))
        mae_genes = _by_condition(f, method, mae(pair))
        ours_mse = _ours(f, method, "mse")
        for cond in pd_genes.index:
            pred_genes, obs_genes, ctrl_genes = _our_gene_means(f, cond, method)
            ours_pd = M.delta_pearson(pred_genes, obs_genes, ctrl_genes)
            if np.isfinite(ours_pd):
                diffs["pearson_delta_all_genes"] = max(diffs["pearson_delta_all_genes"], abs(pd_genes[cond] - ours_pd))
            else:  # a prediction of no change: ours is undefined, cell-eval correlates float32 rounding noise
                assert _pred_delta(pair, cond) < 1e-5
            diffs["mse_genes"] = max(diffs["mse_genes"], abs(mse_genes[cond] - M.mse(pred_genes, obs_genes)))
            diffs["mae_genes"] = max(diffs["mae_genes"], abs(mae_genes[cond] - np.mean(np.abs(pred_genes - obs_genes))))
            # why gene-space MSE is not ours: G·mse_genes = k·mse_eval + |residual of the observed Δ off the PCs|²
            delta = obs_genes - ctrl_genes
            resid = delta - (delta @ space.components.T) @ space.components
            expect = (space.n_pcs * ours_mse[cond] + resid @ resid) / len(space.genes)
            diffs["mse_genes_decomposition"] = max(
                diffs["mse_genes_decomposition"], abs(mse_genes[cond] - expect) / expect
            )
        # our top-20 DE Pearson-Δ is cell-eval's pearson_delta on the condition's 20 genes of largest |Δ|
        real, pred = pair.real, pair.pred
        for cond, value in _ours(f, method, "delta_pearson_top20_de").items():
            _, obs_genes, ctrl_genes = _our_gene_means(f, cond, method)
            genes = M.top_de_indices(obs_genes, ctrl_genes)
            pert = cond.split("|", 1)[1]
            keep_r = real.obs[PERT_COL].isin([pert, CONTROL_LABEL]).to_numpy()
            keep_p = pred.obs[PERT_COL].isin([pert, CONTROL_LABEL]).to_numpy()
            sub = PerturbationAnndataPair(
                real=real[keep_r, genes].copy(),
                pred=pred[keep_p, genes].copy(),
                pert_col=PERT_COL,
                control_pert=CONTROL_LABEL,
            )
            got = pearson_delta(sub)[pert]
            if np.isfinite(value):
                diffs["delta_pearson_top20_de"] = max(diffs["delta_pearson_top20_de"], abs(got - value))
            else:  # no change on these genes: ours is undefined, cell-eval correlates rounding noise
                assert _pred_delta(sub, cond) < 1e-5
    print("max |cell-eval − celljepa| in gene space:", diffs)
    assert diffs["pearson_delta_all_genes"] < 1e-5 and diffs["delta_pearson_top20_de"] < 1e-5
    assert diffs["mse_genes"] < 1e-6 and diffs["mae_genes"] < 1e-6 and diffs["mse_genes_decomposition"] < 1e-4


def test_pearson_edistance_is_our_estimator_with_self_pairs(fold_predictions, cell_eval_pairs):
    """cell-eval's pearson_edistance: Pearson over perturbations of E(pred, control) vs E(real, control).

    Its E-distance is ours with every cell and self pairs in the within-set means (``include_self_pairs``);
    it compares each set with the control cells, where the benchmark's ``edistance`` compares predicted
    with observed cells (subsampled to 256 cells, 5 resamples, self pairs excluded).
    """
    from cell_eval.metrics._anndata import edistance

    checked = []
    for method, pair in cell_eval_pairs.items():
        zr, zp = pair.real.obsm[EVAL_KEY], pair.pred.obsm[EVAL_KEY]
        ctrl_r = zr[pair.pert_mask_real[CONTROL_LABEL]]
        ctrl_p = zp[pair.pert_mask_pred[CONTROL_LABEL]]
        real = edistance_sets(
            [zr[pair.pert_mask_real[p]] for p in pair.perts],
            [ctrl_r] * len(pair.perts),
            equalize=False,
            include_self_pairs=True,
        )
        pred = edistance_sets(
            [zp[pair.pert_mask_pred[p]] for p in pair.perts],
            [ctrl_p] * len(pair.perts),
            equalize=False,
            include_self_pairs=True,
        )
        with np.errstate(all="ignore"):
            got = edistance(pair, embed_key=EVAL_KEY)
        if np.ptp(pred) < 1e-9:  # one shift for every condition (no_change, mean_shift): undefined
            assert not np.isfinite(got)
            continue
        assert got == pytest.approx(np.corrcoef(real, pred)[0, 1], abs=1e-6)
        checked.append(method)
    print("pearson_edistance reproduced for", checked)
    assert checked


def test_metrics_evaluator_on_the_written_file(fold_predictions):
    """cell-eval's own evaluator on predictions.h5ad: where and why its numbers move away from ours."""
    pytest.importorskip("cell_eval", reason="cell-eval is not installed (pip install cell-eval==0.8.2)")
    from cell_eval import MetricsEvaluator

    logging.getLogger("cell_eval").setLevel(logging.WARNING)
    f = fold_predictions
    pred = ad.read_h5ad(f["path"])

    def evaluate(method, **kw):
        p, r = cell_eval_inputs(pred, method, **kw)
        ev = MetricsEvaluator(
            p,
            r,
            pert_col=PERT_COL,
            control_pert=CONTROL_LABEL,
            num_threads=1,
            outdir=str(f["outdir"] / f"{method}-{len(kw)}"),
        )
        results, _ = ev.compute(profile="minimal", write_csv=False)
        return p, results.to_pandas().set_index("perturbation")

    # clipping at 0 (cell-eval refuses negative log-expression) is the only gap in gene-space Pearson-Δ:
    # cell-eval's value is our delta_pearson of the clipped means
    method = "ridge"
    p, res = evaluate(method)
    assert p.uns["cell_eval"]["n_clipped"] > 0
    ctrl = p.obs["is_control"].to_numpy()
    ctx = next(iter(f["controls"]))
    worst_clip, worst_unclipped = 0.0, 0.0
    for pert, got in res["pearson_delta"].items():
        cells = (p.obs[PERT_COL] == pert).to_numpy()
        # cell-eval: Pearson of (clipped prediction − clipped control reconstruction) vs (observed − control)
        clipped = M.pearson(
            p.X[cells].mean(0) - p.X[ctrl].mean(0), f["observed"][f"{ctx}|{pert}"].mean(0) - f["controls"][ctx].mean(0)
        )
        worst_clip = max(worst_clip, abs(got - clipped))
        pred_genes, obs_genes, ctrl_genes = _our_gene_means(f, f"{ctx}|{pert}", method)
        worst_unclipped = max(worst_unclipped, abs(got - M.delta_pearson(pred_genes, obs_genes, ctrl_genes)))
    print(f"pearson_delta, clipped inputs: |Δ| vs clipped means {worst_clip:.2e}, vs unclipped {worst_unclipped:.3f}")
    assert worst_clip < 1e-5

    # DE metrics run pdex on cells: with the observed control cells as the prediction's reference, a
    # no-change prediction (reconstructed, low-rank cells) gets hundreds of "DE" genes; with matched
    # (reconstructed) controls it gets none.
    _, matched = evaluate("no_change")
    _, unmatched = evaluate("no_change", pred_controls="observed")
    assert (matched["de_nsig_counts_pred"] == 0).all()
    assert (unmatched["de_nsig_counts_pred"] > 50).all()
    assert (matched["de_nsig_counts_real"] == unmatched["de_nsig_counts_real"]).all()
    # overlap_at_N ranks cell-eval's significant genes (FDR < 0.05), N = their count, not our top 20
    assert (matched["de_nsig_counts_real"] < 20).all()
