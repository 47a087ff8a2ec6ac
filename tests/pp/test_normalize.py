"""cj.pp.normalize: scanpy library-size + log1p from counts; no double normalisation; bad values."""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp
from _realdata import read_quiet, real_path

import celljepa as cj


@pytest.fixture(scope="module")
def papalexi():
    return read_quiet(real_path("sceptre/papalexi2021_sceptre_lowmoi_example_data.h5ad"))


def test_counts_are_kept_and_x_matches_scanpy(papalexi):
    a = papalexi[:2000].copy()
    ref = a.copy()
    ref.X = ref.X.astype(np.float32)
    sc.pp.normalize_total(ref, target_sum=1e4)
    sc.pp.log1p(ref)
    cj.pp.normalize(a)
    np.testing.assert_array_equal(a.layers["counts"].toarray(), papalexi[:2000].X.toarray())
    np.testing.assert_allclose(a.X.toarray(), ref.X.toarray(), rtol=1e-6)
    assert a.uns["preprocess"]["normalized_here"]
    assert a.uns["preprocess_version"] == "lognorm-v1"


def test_already_log_normalised_is_not_normalised_twice(caplog):
    kang = read_quiet(real_path("scgen/valid.h5ad"))
    before = kang.X.copy()
    logger = logging.getLogger("celljepa")
    logger.addHandler(caplog.handler)
    try:
        cj.pp.normalize(kang)
    finally:
        logger.removeHandler(caplog.handler)
    assert (kang.X != before).nnz == 0
    assert "counts" not in kang.layers
    assert kang.uns["preprocess"]["x_state_detected"] == "log1p"
    assert any("already log-normalised" in r.getMessage() for r in caplog.records)


def test_layer_names_the_counts_layer_and_counts_layer_is_a_deprecated_alias(papalexi):
    a = papalexi[:200].copy()
    assert cj.pp.normalize(a, layer="raw") is None
    assert "raw" in a.layers and "counts" not in a.layers and a.uns["preprocess"]["counts_layer"] == "raw"
    b = papalexi[:200].copy()
    with pytest.warns(FutureWarning, match="layer='raw'"):
        cj.pp.normalize(b, counts_layer="raw")
    np.testing.assert_array_equal(a.X.toarray(), b.X.toarray())
    with pytest.warns(FutureWarning), pytest.raises(cj.InputError, match="disagree"):
        cj.pp.normalize(papalexi[:10].copy(), counts_layer="raw", layer="other")


def test_declared_state_wins_over_detection(papalexi):
    a = papalexi[:100].copy()
    cj.pp.normalize(a, assume="log1p")
    assert "counts" not in a.layers and a.uns["preprocess"]["x_state_detected"] == "counts"


@pytest.mark.parametrize(
    ("values", "match"),
    [
        (np.array([[1.0, np.nan]]), "NaN/inf"),
        (np.array([[1.0, -2.0]]), "negative values"),
        (np.array([[100.5, 3.2]]), "not log-transformed"),
    ],
)
def test_bad_values_are_clear_errors(values, match):
    a = ad.AnnData(sp.csr_matrix(np.vstack([values, values])))
    with pytest.raises(cj.InputError, match=match):
        cj.pp.normalize(a)


def test_negative_counts_layer_is_rejected():
    a = ad.AnnData(np.array([[0.5, 1.2]], dtype=np.float32))
    a.layers["counts"] = np.array([[1, -1]])
    with pytest.raises(cj.InputError, match="negative count"):
        cj.pp.normalize(a)
