"""cell-eval pairs as files: ``cell-eval run -ap <method>/pred.h5ad -ar real.h5ad`` with no other option.

On a real fold (Norman 2019 demo, ``S1_unseen_perturbation`` fold 0, baselines only) the pairs are written by
:func:`celljepa.eval.predictions.write_cell_eval_pairs` and the real ``cell-eval`` command line is run on one
method's pair; its numbers are compared with the benchmark's per-condition numbers. ``docs/cell-eval.md``
gives the measured differences and why they exist (gene space vs evaluation space, clipping at 0).
"""

from __future__ import annotations

import shutil
import subprocess
import time

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from celljepa._errors import InputError
from celljepa.eval import metrics as M
from celljepa.eval.predictions import (
    CELL_EVAL_DIR,
    CONTROL_LABEL,
    EVAL_KEY,
    PERT_COL,
    export_cell_eval,
    predictions_anndata,
    write_cell_eval_pairs,
    write_predictions,
)
from celljepa.eval.space import EvaluationSpace

METHOD = "ridge"
# measured on this fold (docs/cell-eval.md): cell-eval's gene-space Pearson-Δ of clipped cells vs the benchmark's
# delta_pearson (evaluation space, unclipped): 0.085 for ridge on this fold (0.075 of it from clipping)
PEARSON_DELTA_TOL = 0.1


@pytest.fixture(scope="module")
def fold_pairs(tmp_path_factory):
    from celljepa.bench import demo_datasets, score_fold
    from celljepa.splits import make_split_folds

    adata = demo_datasets()["norman2019"]
    fold = make_split_folds(adata.obs, "S1_unseen_perturbation", dataset_id="norman2019")[0]
    result = score_fold(adata, fold, keep_predictions=True)  # the applicable baselines
    folder = tmp_path_factory.mktemp("fold") / CELL_EVAL_DIR
    written = write_cell_eval_pairs(result.predictions, folder)
    return {"result": result, "folder": folder, "written": written, "per": result.per_condition}


def test_layout(fold_pairs):
    f = fold_pairs
    folder, pred = f["folder"], f["result"].predictions
    methods = sorted(set(pred.obs["method"].astype(str)) - {"observed"})
    expect = {"README.txt", "real.h5ad"} | {f"{m}/pred.h5ad" for m in methods}
    assert {p.relative_to(folder).as_posix() for p in f["written"]} == expect
    assert f["written"][-1].name == "README.txt"
    readme = (folder / "README.txt").read_text()
    for m in methods:
        assert f"cell-eval run -ap {m}/pred.h5ad -ar real.h5ad" in readme
    assert "CLIPPED AT 0" in readme

    real = ad.read_h5ad(folder / "real.h5ad")
    conds = set(pred.obs.loc[(pred.obs["method"] == "observed") & ~pred.obs["is_control"], "condition"].astype(str))
    assert set(real.obs["condition"].astype(str)[~real.obs["is_control"]]) == conds
    assert (real.obs.loc[real.obs["is_control"], PERT_COL] == CONTROL_LABEL).all()
    for m in methods:
        p = ad.read_h5ad(folder / m / "pred.h5ad")
        assert list(p.var_names) == list(real.var_names)
        assert float(np.min(p.X)) >= 0.0  # cell-eval refuses negative log-expression
        assert sorted(set(p.obs[PERT_COL].astype(str))) == sorted(set(real.obs[PERT_COL].astype(str)))
        assert p.uns["cell_eval"]["clip_negative"] and p.uns["cell_eval"]["pred_controls"] == "reconstructed"
        assert EVAL_KEY in p.obsm and EVAL_KEY in real.obsm
    assert ad.read_h5ad(folder / METHOD / "pred.h5ad").uns["cell_eval"]["n_clipped"] > 0


def _ours(per: pd.DataFrame, method: str) -> pd.DataFrame:
    return per[per["method"] == method].set_index("condition")


@pytest.mark.extended
def test_cell_eval_cli_reads_the_pair(fold_pairs):
    """The real `cell-eval run` on one pair with no option; its numbers against the benchmark's."""
    exe = shutil.which("cell-eval")
    if exe is None:
        pytest.skip("the cell-eval executable is not installed (pip install 'celljepa[celleval]')")
    folder = fold_pairs["folder"]
    t0 = time.perf_counter()
    done = subprocess.run(
        [exe, "run", "-ap", f"{METHOD}/pred.h5ad", "-ar", "real.h5ad"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    print(f"cell-eval run: {time.perf_counter() - t0:.1f} s")
    results = folder / "cell-eval-outdir" / "results.csv"
    assert results.is_file() and (folder / "cell-eval-outdir" / "agg_results.csv").is_file()
    res = pd.read_csv(results).set_index("perturbation")

    ours = _ours(fold_pairs["per"], METHOD)
    p, r = ad.read_h5ad(folder / METHOD / "pred.h5ad"), ad.read_h5ad(folder / "real.h5ad")
    ctx = str(p.obs["context_id"].iloc[0])
    assert sorted(f"{ctx}|{k}" for k in res.index) == sorted(ours.index)
    px, rx = np.asarray(p.X, dtype=np.float64), np.asarray(r.X, dtype=np.float64)
    pc, rc = p.obs["is_control"].to_numpy(bool), r.obs["is_control"].to_numpy(bool)
    worst = {"vs delta_pearson": 0.0, "vs clipped means": 0.0, "mse vs clipped means": 0.0}
    for pert, row in res.iterrows():
        mine = ours.loc[f"{ctx}|{pert}"]
        cells_p = (p.obs[PERT_COL].astype(str) == pert).to_numpy()
        cells_r = (r.obs[PERT_COL].astype(str) == pert).to_numpy()
        # cell-eval's Pearson-Δ is ours on the clipped gene-space means: the only gap is space and clipping
        clipped = M.pearson(px[cells_p].mean(0) - px[pc].mean(0), rx[cells_r].mean(0) - rx[rc].mean(0))
        worst["vs clipped means"] = max(worst["vs clipped means"], abs(row["pearson_delta"] - clipped))
        worst["mse vs clipped means"] = max(
            worst["mse vs clipped means"], abs(row["mse"] - M.mse(px[cells_p].mean(0), rx[cells_r].mean(0)))
        )
        if np.isfinite(mine["delta_pearson"]):
            gap = abs(row["pearson_delta"] - mine["delta_pearson"])
            worst["vs delta_pearson"] = max(worst["vs delta_pearson"], gap)
    print(f"cell-eval CLI ({METHOD}) vs celljepa, max |Δ|:", worst)
    assert worst["vs clipped means"] < 1e-5 and worst["mse vs clipped means"] < 1e-6
    assert worst["vs delta_pearson"] < PEARSON_DELTA_TOL


def test_python_route_on_the_files_agrees_exactly(fold_pairs):
    """cell-eval's metric functions on the written files with embed_key='X_eval' give the benchmark's numbers."""
    pytest.importorskip("cell_eval", reason="cell-eval is not installed (pip install 'celljepa[celleval]')")
    from cell_eval._types import PerturbationAnndataPair
    from cell_eval.metrics import discrimination_score, mse, pearson_delta

    folder = fold_pairs["folder"]
    pair = PerturbationAnndataPair(
        real=ad.read_h5ad(folder / "real.h5ad"),
        pred=ad.read_h5ad(folder / METHOD / "pred.h5ad"),
        pert_col=PERT_COL,
        control_pert=CONTROL_LABEL,
    )
    ours = _ours(fold_pairs["per"], METHOD)
    ctx = str(pair.pred.obs["context_id"].iloc[0])
    n = len(pair.perts)
    got = {
        "delta_pearson": pearson_delta(pair, embed_key=EVAL_KEY),
        "mse": mse(pair, embed_key=EVAL_KEY),
        "rank": {k: 1 + n * (1 - v) for k, v in discrimination_score(pair, metric="l2", embed_key=EVAL_KEY).items()},
    }
    for col, values in got.items():
        for pert, value in values.items():
            assert value == pytest.approx(ours.loc[f"{ctx}|{pert}", col], abs=1e-9), (col, pert)


def test_export_from_a_finished_run(fold_pairs, tmp_path):
    pred = fold_pairs["result"].predictions
    one = pred[pred.obs["method"].astype(str).isin(["observed", METHOD]).to_numpy()].copy()  # a smaller file
    path = write_predictions(tmp_path / "predictions.h5ad", one)
    out = tmp_path / "exported"
    written = export_cell_eval(path, out)
    assert [p.relative_to(out).as_posix() for p in written] == [f"{METHOD}/pred.h5ad", "real.h5ad", "README.txt"]
    assert all(p.is_file() for p in written)
    a = ad.read_h5ad(out / METHOD / "pred.h5ad")
    b = ad.read_h5ad(fold_pairs["folder"] / METHOD / "pred.h5ad")
    np.testing.assert_array_equal(a.X, b.X)
    pd.testing.assert_frame_equal(a.obs, b.obs)
    np.testing.assert_array_equal(ad.read_h5ad(out / "real.h5ad").X, ad.read_h5ad(fold_pairs["folder"] / "real.h5ad").X)
    assert export_cell_eval(path, out)[-1] == out / "README.txt"  # an earlier export is replaced

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.json").write_text("{}")
    with pytest.raises(InputError, match="not an earlier cell-eval export"):
        export_cell_eval(path, tmp_path / "run")
    with pytest.raises(InputError, match="not a predictions .h5ad"):
        export_cell_eval(tmp_path / "missing.h5ad", tmp_path / "x")


def test_layout_with_contexts_seeds_and_partial_methods(tmp_path):
    """Several contexts: one set of pairs per context; several model seeds: one pair per seed (not pooled)."""
    rng = np.random.default_rng(0)
    space = EvaluationSpace(
        genes=np.array(["g0", "g1", "g2", "g3"], dtype=object),
        mean=np.full(4, 1.5),
        components=np.linalg.qr(rng.normal(size=(4, 2)))[0].T,
    )
    ctrl = {"a": rng.uniform(1, 2, (5, 4)), "b": rng.uniform(1, 2, (6, 4))}
    observed = {k: rng.uniform(1, 2, (3, 4)) for k in ("a|P", "a|Q", "b|P")}
    conditions = {k: {"context_id": k[0], "perturbation_id": k[2]} for k in observed}
    predicted = {("jepa", s, c): space.transform(ctrl[c[0]]) + s for s in (0, 1) for c in observed}
    predicted[("partial", None, "a|P")] = space.transform(ctrl["a"])
    pred = predictions_anndata(
        space,
        observed=observed,
        controls=ctrl,
        predicted=predicted,
        conditions=conditions,
        roles={"jepa": "jepa", "partial": "baseline"},
    )
    written = write_cell_eval_pairs(pred, tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == [
        "README.txt",
        "a/jepa/seed0/pred.h5ad",
        "a/jepa/seed1/pred.h5ad",
        "a/partial/pred.h5ad",
        "a/partial/real.h5ad",  # predicts P only: cell-eval needs the same perturbations on both sides
        "a/real.h5ad",
        "b/jepa/seed0/pred.h5ad",
        "b/jepa/seed1/pred.h5ad",
        "b/real.h5ad",
    ]
    seed1 = ad.read_h5ad(tmp_path / "a/jepa/seed1/pred.h5ad")
    assert set(seed1.obs["model_seed"].dropna()) == {1.0} and set(seed1.obs["context_id"]) == {"a"}
    assert set(ad.read_h5ad(tmp_path / "a/partial/real.h5ad").obs[PERT_COL]) == {"P", CONTROL_LABEL}
    readme = (tmp_path / "README.txt").read_text()
    assert "cell-eval run -ap a/jepa/seed1/pred.h5ad -ar a/real.h5ad" in readme
    assert "cell-eval run -ap a/partial/pred.h5ad -ar a/partial/real.h5ad" in readme

    with pytest.raises(InputError, match="predictions AnnData"):
        write_cell_eval_pairs(ad.AnnData(np.zeros((2, 2))), tmp_path / "x")
