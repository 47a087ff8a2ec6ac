"""E-test: strong perturbations of the demo are significant, controls against controls are not."""

from __future__ import annotations

import numpy as np
import pytest

import celljepa as cj
from celljepa.eval import auto_permutations, etest_groups


def test_strong_perturbations_significant_after_correction(k562):
    a = k562.copy()
    assert cj.tl.etest(a, "perturbation_id", "control", progress=False) is None
    res = a.uns["etest"]["results"]
    assert res["n_permutations"].iloc[0] == auto_permutations(len(res))
    cj.tl.edistance(a, "perturbation_id", control="control")
    strong = a.uns["edistance"]["distances"]["edistance"].drop("control").nlargest(5)
    assert res.loc[strong.index, "significant"].all()
    assert (res.loc[strong.index, "pvalue_adj_holm_sidak"] < 0.05).all()
    # The weakest effects are not all called: the test is not a tautology.
    assert not res["significant"].all()
    assert (res["pvalue"] >= 1 / (1 + res["n_permutations"])).all()


def test_controls_against_controls_are_not_significant(k562):
    ctrl = k562[k562.obs["is_control"].to_numpy()].copy()
    rng = np.random.default_rng(0)
    # Four random splits of the real control cells into halves: none may come out significant.
    for rep in range(4):
        half = rng.permutation(ctrl.n_obs) < ctrl.n_obs // 2
        ctrl.obs["half"] = np.where(half, "A", "B")
        res = cj.tl.etest(ctrl, "half", "B", n_permutations=500, seed=rep, progress=False, copy=True).uns["etest"][
            "results"
        ]
        assert not res.loc["A", "significant"]
        assert res.loc["A", "pvalue"] > 0.05


def test_pvalue_is_plus_one_corrected():
    rng = np.random.default_rng(1)
    far = {"far": rng.normal(10.0, 1.0, size=(20, 3))}
    res = etest_groups(far, rng.normal(size=(20, 3)), n_permutations=9, progress=False)
    assert res.loc["far", "pvalue"] == pytest.approx(1 / 10)


@pytest.mark.parametrize("m", [1, 5, 33, 200])
def test_auto_permutations_can_reach_alpha(m):
    r = auto_permutations(m)
    p_min = 1 / (1 + r)
    assert 1 - (1 - p_min) ** m < 0.05


def test_etest_use_rep_copy_and_deprecated_obsm_key(k562):
    a = k562.copy()
    kw = {"groups": ["KLF1"], "n_permutations": 19, "progress": False}
    out = cj.tl.etest(a, "perturbation_id", "control", use_rep="X_pca", copy=True, **kw)
    assert isinstance(out, type(a)) and "etest" not in a.uns
    with pytest.warns(FutureWarning, match="use_rep"):
        old = cj.tl.etest(a, "perturbation_id", "control", obsm_key="X_pca", copy=True, **kw)
    assert old.uns["etest"]["results"].equals(out.uns["etest"]["results"])
    assert out.uns["etest"]["params"]["use_rep"] == "X_pca"


def test_etest_errors(k562):
    with pytest.raises(cj.InputError, match="control='contrl'"):
        cj.tl.etest(k562, "perturbation_id", "contrl")
    a = k562.copy()
    del a.obsm["X_pca"]
    with pytest.raises(cj.InputError, match="sc.pp.pca"):
        cj.tl.etest(a, "perturbation_id", "control")
