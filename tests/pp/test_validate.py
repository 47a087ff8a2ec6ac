"""cj.pp.validate: every rule, all violations at once, strict and non-strict modes."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import celljepa as cj


def _rules(adata, **kw):
    return sorted({v.rule for v in cj.pp.validate(adata, strict=False, **kw)})


def test_demo_is_valid(demo):
    assert cj.pp.validate(demo) is None
    assert cj.pp.validate(demo, strict=False) == []


def test_each_rule_is_detected(demo):
    a = demo.copy()
    x = a.X.copy()
    x.data[0] = np.nan
    a.X = x
    a.var_names = ["DUP"] * 2 + list(a.var_names[2:])
    a.obs["dose"] = a.obs["dose"].astype(str)
    del a.uns["created_at"]
    rules = _rules(a)
    assert {"finite_values", "unique_var_names", "column_type", "provenance"} <= set(rules)


def test_error_lists_every_violation_with_its_fix(demo):
    a = demo.copy()
    del a.obs["perturbation_tokens"]
    a.var_names = ["G"] * a.n_vars
    with pytest.raises(cj.ContractError) as info:
        cj.pp.validate(a)
    err = info.value
    assert len(err.violations) == 2
    text = str(err)
    assert "obs['perturbation_tokens']" in text and "var_names" in text and "Fix:" in text


def test_context_without_controls(demo):
    a = demo.copy()
    a.obs.loc[a.obs["context_id"] == "A172", "is_control"] = False
    rules = _rules(a)
    assert "controls_per_context" in rules and "control_consistency" in rules


def test_control_label_left_among_perturbations(demo):
    a = demo.copy()
    a.obs["perturbation_id"] = a.obs["perturbation_id"].astype(str)
    a.obs["perturbation_tokens"] = a.obs["perturbation_tokens"].astype(str)
    a.obs.loc[a.obs["context_id"] == "A172", "is_control"] = False
    mask = (a.obs["context_id"] == "A172") & (a.obs["perturbation_id"] == "control")
    a.obs.loc[mask, "perturbation_tokens"] = "gene:non-targeting"
    a.obs.loc[mask, "perturbation_id"] = "non-targeting"
    v = [x for x in cj.pp.validate(a, strict=False) if x.rule == "control_label_as_perturbation"]
    assert v and "non-targeting" in v[0].message


def test_min_cells_threshold_is_configurable(demo):
    # The smallest condition of the demo is PLK4 in A172, with 46 cells.
    too_small = [v for v in cj.pp.validate(demo, strict=False, min_cells=47) if v.rule == "min_cells_per_condition"]
    assert len(too_small) == 1 and "A172 / PLK4" in too_small[0].message and "1 condition(s)" in too_small[0].message
    assert "min_cells_per_condition" not in _rules(demo, min_cells=46)


def test_negative_and_fractional_counts(demo):
    a = demo.copy()
    counts = sp.csr_matrix(np.rint(np.expm1(a.X.toarray())))
    counts.data[0] = -3
    a.layers["counts"] = counts
    assert "counts" in _rules(a)
    counts.data[0] = 0.5
    a.layers["counts"] = counts
    assert "counts" in _rules(a)


def test_only_controls_is_a_violation(demo):
    a = demo[demo.obs["is_control"].to_numpy()].copy()
    assert "has_perturbations" in _rules(a)


def test_wrong_types(demo):
    a = demo.copy()
    a.obs["is_control"] = a.obs["is_control"].astype(int)
    a.obs["perturbation_id"] = np.arange(a.n_obs)
    assert _rules(a).count("column_type") == 1
    assert len([v for v in cj.pp.validate(a, strict=False) if v.rule == "column_type"]) == 2
