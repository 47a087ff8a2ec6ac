"""E-distance estimators against an independent formula, scPerturb and pertpy conventions; equalisation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import cdist

import celljepa as cj
from celljepa.eval import edistance_matrix, edistance_sets


def formula(x, y, *, squared=False, self_pairs=False):
    """The definition written out: 2·mean d(x,y) − mean d(x,x') − mean d(y,y')."""
    p = 2 if squared else 1
    dxy = cdist(x, y) ** p
    dxx = cdist(x, x) ** p
    dyy = cdist(y, y) ** p
    n, m = len(x), len(y)
    if self_pairs:
        wx, wy = dxx.sum() / n**2, dyy.sum() / m**2
    else:
        wx, wy = dxx.sum() / (n * (n - 1)), dyy.sum() / (m * (m - 1))
    return 2 * dxy.mean() - wx - wy


@pytest.fixture(scope="module")
def sets():
    rng = np.random.default_rng(0)
    return [rng.normal(size=(n, 7)) + shift for n, shift in ((40, 0.0), (25, 0.7), (60, -0.3), (2, 1.0))]


@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("self_pairs", [False, True])
def test_sets_match_the_formula(sets, squared, self_pairs):
    a, b = sets[:3], sets[1:]
    got = edistance_sets(a, b, equalize=False, squared=squared, include_self_pairs=self_pairs)
    want = [formula(x, y, squared=squared, self_pairs=self_pairs) for x, y in zip(a, b, strict=True)]
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_matrix_matches_the_formula(sets):
    got = edistance_matrix(sets, equalize=False)
    for i, x in enumerate(sets):
        for j, y in enumerate(sets):
            want = 0.0 if i == j else formula(x, y)
            assert got[i, j] == pytest.approx(want, abs=1e-10)


def test_equalisation_is_seeded_and_subsamples(sets):
    a, b = [sets[2]], [sets[0]]  # 60 vs 40 cells
    one = edistance_sets(a, b, cap=30, n_resamples=3, seed=1)
    assert one == pytest.approx(edistance_sets(a, b, cap=30, n_resamples=3, seed=1))
    assert one != pytest.approx(edistance_sets(a, b, cap=30, n_resamples=3, seed=2))
    # Reproduce the protocol by hand: n = min(60, 40, 30) = 30 cells from each set, per resample.
    manual = []
    for r in range(3):
        ia = np.sort(np.random.default_rng([1, r, 0, 0]).choice(60, 30, replace=False))
        ib = np.sort(np.random.default_rng([1, r, 0, 1]).choice(40, 30, replace=False))
        manual.append(formula(sets[2][ia], sets[0][ib]))
    assert one[0] == pytest.approx(np.mean(manual), rel=1e-10)
    # Equal sizes below the cap: equalisation changes nothing.
    same = [sets[0][:25]], [sets[1]]
    assert edistance_sets(*same) == pytest.approx(edistance_sets(*same, equalize=False))


def test_identical_predictions_get_identical_scores_with_pair_keys(sets):
    pred = sets[2]
    e = edistance_sets([pred, pred.copy()], [sets[0], sets[0]], cap=20, pair_keys=[0, 0])
    assert e[0] == e[1]


def test_scperturb_parity(k562):
    scperturb = pytest.importorskip("scperturb", reason="scperturb is part of the [test] extra")
    out = cj.tl.edistance(k562, "perturbation_id", equalize=False, squared=True, copy=True)
    ours = out.uns["edistance"]["distances"]
    theirs = scperturb.edist(
        k562,
        obs_key="perturbation_id",
        obsm_key="X_pca",
        dist="sqeuclidean",
        sample_correct=True,
        n_jobs=1,
        verbose=False,
    )
    theirs = theirs.loc[ours.index, ours.columns]
    # X_pca is float32, so agreement is to float32 precision of the summed distances.
    np.testing.assert_allclose(ours.to_numpy(), theirs.to_numpy(), rtol=1e-5, atol=1e-6)


def test_pertpy_convention_is_plain_distances_with_self_pairs(k562):
    kw = {"control": "control", "equalize": False, "include_self_pairs": True, "copy": True}
    out = cj.tl.edistance(k562, "perturbation_id", **kw)
    res = out.uns["edistance"]["distances"]["edistance"]
    x = k562.obsm["X_pca"]
    lab = k562.obs["perturbation_id"].astype(str).to_numpy()
    for g in ("KLF1", "SGK1+TBX3", "MIDN"):
        assert res[g] == pytest.approx(formula(x[lab == g], x[lab == "control"], self_pairs=True), rel=1e-6)
    assert res["control"] == 0.0


def test_tool_writes_uns_and_copy(k562):
    a = k562.copy()
    a.uns.pop("edistance", None)
    out = cj.tl.edistance(a, "perturbation_id", control="control", copy=True)
    assert "edistance" not in a.uns and out.uns["edistance"]["params"]["mode"] == "onesided"
    assert cj.tl.edistance(a, "perturbation_id", groups=["control", "KLF1", "MIDN"]) is None
    d = a.uns["edistance"]["distances"]
    assert isinstance(d, pd.DataFrame) and d.shape == (3, 3)
    assert np.allclose(d.to_numpy(), d.to_numpy().T) and (np.diag(d.to_numpy()) == 0).all()
    assert a.uns["edistance"]["params"]["use_rep"] == "X_pca"


def test_use_rep_and_the_deprecated_obsm_key(k562):
    a = k562.copy()
    cj.tl.edistance(a, "perturbation_id", control="control", use_rep="X_pca", key_added="new")
    with pytest.warns(FutureWarning, match="use_rep"):
        cj.tl.edistance(a, "perturbation_id", control="control", obsm_key="X_pca", key_added="old")
    pd.testing.assert_frame_equal(a.uns["new"]["distances"], a.uns["old"]["distances"])
    with pytest.warns(FutureWarning), pytest.raises(cj.InputError, match="disagree"):
        cj.tl.edistance(a, "perturbation_id", obsm_key="X_pca", use_rep="X_umap")


def test_bad_input_is_a_clear_error(k562):
    with pytest.raises(cj.InputError, match="groupby='perturbation_idd'.*Did you mean 'perturbation_id'"):
        cj.tl.edistance(k562, "perturbation_idd", control="control")
    with pytest.raises(cj.InputError, match=r"obsm\['X_umap'\] does not exist"):
        cj.tl.edistance(k562, "perturbation_id", use_rep="X_umap")
    a = k562.copy()
    a.obs["label"] = np.where(np.arange(a.n_obs) == 0, "lonely", "rest")
    with pytest.raises(cj.InputError, match="group 'lonely' has 1 cell"):
        cj.tl.edistance(a, "label")
    with pytest.raises(cj.InputError, match="control='ctrl'.*Did you mean 'control'"):
        cj.tl.edistance(k562, "perturbation_id", control="ctrl")
    rng = np.random.default_rng(0)
    with pytest.raises(cj.InputError, match="different feature dimensions"):
        edistance_sets([rng.normal(size=(5, 3))], [rng.normal(size=(5, 4))])
