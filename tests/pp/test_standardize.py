"""cj.pp.standardize: tokens, combos, controls, kinds, dose/time parsing, and its errors."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import celljepa as cj


def _adata(labels, **cols) -> ad.AnnData:
    obs = pd.DataFrame({"label": labels, **cols}, index=[f"c{i}" for i in range(len(labels))])
    return ad.AnnData(np.ones((len(labels), 3), dtype=np.float32), obs=obs, var=pd.DataFrame(index=["G1", "G2", "G3"]))


def test_combos_are_sorted_and_controls_dropped_from_combos():
    a = _adata(["ctrl", "B+A", "A+B", "A+ctrl", "ctrl+B"])
    cj.pp.standardize(a, perturbation_key="label", control_values="ctrl", combo_sep="+")
    assert a.obs["perturbation_id"].tolist() == ["control", "A+B", "A+B", "A", "B"]
    expected = ["control:CTRL", "gene:A|gene:B", "gene:A|gene:B", "gene:A", "gene:B"]
    assert a.obs["perturbation_tokens"].tolist() == expected
    assert a.obs["is_control"].tolist() == [True, False, False, False, False]
    assert a.obs["is_control"].dtype == bool
    assert (a.obs["context_id"] == "default").all()
    assert np.isnan(a.obs["dose"]).all() and a.obs["dose"].dtype == np.float64


def test_kind_key_maps_public_perturbation_types():
    a = _adata(["control", "KLF1", "dexamethasone"], ptype=["CRISPRa", "CRISPRa", "drug"])
    cj.pp.standardize(a, perturbation_key="label", control_values=["control"], kind_key="ptype")
    assert a.obs["perturbation_tokens"].tolist() == ["control:CTRL", "gene:KLF1", "drug:dexamethasone"]


def test_unknown_perturbation_type_is_a_clear_error():
    a = _adata(["control", "X"], ptype=["CRISPR", "teleportation"])
    with pytest.raises(cj.InputError, match="perturbation type 'teleportation'"):
        cj.pp.standardize(a, perturbation_key="label", control_values="control", kind_key="ptype")


def test_dose_and_time_parsing():
    a = _adata(["control", "d1", "d1", "d1"], dose=["0", "10", "1+1", None], t=["24h", "30min", "2d", 6])
    cj.pp.standardize(
        a, perturbation_key="label", control_values="control", dose_key="dose", time_key="t", perturbation_kind="drug"
    )
    np.testing.assert_allclose(a.obs["dose"].to_numpy(), [0.0, 10.0, 1.0, np.nan])
    np.testing.assert_allclose(a.obs["time_hours"].to_numpy(), [24.0, 0.5, 48.0, 6.0])
    assert a.obs["dose_raw"].tolist()[:2] == ["0", "10"]  # the source column is kept


def test_misspelled_key_suggests_the_close_column():
    a = _adata(["control", "A"], cell_line=["K562", "K562"])
    with pytest.raises(cj.InputError, match="context_key='cellline'.*Did you mean 'cell_line'"):
        cj.pp.standardize(a, perturbation_key="label", control_values="control", context_key="cellline")


def test_absent_control_value_names_the_column_and_close_value():
    a = _adata(["control", "A"])
    with pytest.raises(cj.InputError, match=r"control value\(s\) \['contrl'\].*Did you mean 'control'"):
        cj.pp.standardize(a, perturbation_key="label", control_values="contrl")


def test_control_flag_disagreeing_with_labels_is_an_error():
    a = _adata(["ctrl", "A", "ctrl"], control=[1, 1, 1])
    with pytest.raises(cj.InputError, match="flagged as control"):
        cj.pp.standardize(a, perturbation_key="label", control_values="ctrl", control_key="control")


def test_missing_labels_and_contexts_are_errors():
    a = _adata(["control", None, "A"])
    with pytest.raises(cj.InputError, match="without a perturbation label"):
        cj.pp.standardize(a, perturbation_key="label", control_values="control")
    b = _adata(["control", "A"], ctx=["x", None])
    with pytest.raises(cj.InputError, match="without a context"):
        cj.pp.standardize(b, perturbation_key="label", control_values="control", context_key="ctx")


def test_copy_leaves_the_input_untouched():
    a = _adata(["control", "A"])
    out = cj.pp.standardize(a, perturbation_key="label", control_values="control", copy=True)
    assert "perturbation_id" not in a.obs and "perturbation_id" in out.obs


def test_dataset_id_with_slash_is_rejected():
    a = _adata(["control", "A"])
    with pytest.raises(cj.InputError, match="dataset_id"):
        cj.pp.standardize(a, perturbation_key="label", control_values="control", dataset_id="a/b")


def test_standardize_is_idempotent_on_the_demo():
    raw = cj.datasets.demo(preprocessed=False)
    kw = dict(perturbation_key="perturbation", control_values="control", context_key="cell_type", combo_sep="+")
    first = cj.pp.standardize(raw, copy=True, **kw)
    second = cj.pp.standardize(first, copy=True, **kw)
    cols = ["perturbation_id", "is_control", "context_id", "perturbation_tokens"]
    pd.testing.assert_frame_equal(first.obs[cols], second.obs[cols])
    assert "perturbation_id_raw" not in second.obs
