"""Binomial thinning (expected depth, seeded, integer) and count recovery, on real counts."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from _realdata import SHARED_DATA, real_path

from celljepa._errors import InputError
from celljepa.data.counts import binomial_thin, recover_counts

CITEFUSE = SHARED_DATA / "multimodal" / "citefuse" / "mimitou2019_ctrl_vs_ctcl.h5ad"


@pytest.fixture(scope="module")
def citefuse_counts() -> sp.csr_matrix:
    return sp.csr_matrix(ad.read_h5ad(CITEFUSE).X)


@pytest.mark.parametrize("fraction", [0.5, 0.25, 0.1, 0.05])
def test_thinning_keeps_the_expected_share_of_reads(citefuse_counts, fraction):
    thin = binomial_thin(citefuse_counts, fraction, seed=3)
    total = citefuse_counts.sum()
    kept = thin.sum()
    # Binomial(total, f): the share is within 5 standard deviations of f
    sd = np.sqrt(fraction * (1 - fraction) / total)
    assert abs(kept / total - fraction) < 5 * sd
    # per cell too: the totals scale by f on average (cells with >= 500 reads)
    per_cell = np.asarray(thin.sum(1)).ravel() / np.asarray(citefuse_counts.sum(1)).ravel()
    deep = np.asarray(citefuse_counts.sum(1)).ravel() >= 500
    assert abs(np.median(per_cell[deep]) - fraction) < 0.02
    # integers, never above the original count, explicit zeros dropped
    assert np.all(thin.data == np.round(thin.data)) and np.all(thin.data > 0)
    assert (thin > citefuse_counts).nnz == 0


def test_thinning_is_seeded(citefuse_counts):
    a = binomial_thin(citefuse_counts, 0.25, seed=0)
    b = binomial_thin(citefuse_counts, 0.25, seed=0)
    c = binomial_thin(citefuse_counts, 0.25, seed=1)
    assert (a != b).nnz == 0
    assert (a != c).nnz > 0


def test_thinning_dense_matches_sparse_shape_and_depth():
    rng = np.random.default_rng(0)
    x = rng.poisson(5.0, size=(500, 40)).astype(np.float32)
    y = binomial_thin(x, 0.1, seed=0)
    assert y.dtype == x.dtype and y.shape == x.shape
    assert abs(y.sum() / x.sum() - 0.1) < 0.01
    assert np.array_equal(binomial_thin(x, 1.0), x)


def test_thinning_refuses_what_is_not_counts():
    with pytest.raises(InputError, match="fraction must be in"):
        binomial_thin(np.ones((3, 3)), 0.0)
    with pytest.raises(InputError, match="non-integer"):
        binomial_thin(np.full((3, 3), 0.5), 0.5)
    with pytest.raises(InputError, match="negative"):
        binomial_thin(-np.ones((3, 3)), 0.5)


def test_kang_counts_come_out_integer():
    a = ad.read_h5ad(real_path("scgen/valid.h5ad"))
    counts, report = recover_counts(a.X, where="kang")
    assert report["integer_share_min"] == 1.0 and report["cells"] == a.n_obs
    # log1p(counts * s_i) gives back X, with one size factor per cell
    x = sp.csr_matrix(a.X).toarray().astype(np.float64)
    c = counts.toarray().astype(np.float64)
    ratio = np.where(c > 0, np.expm1(x) / np.where(c > 0, c, 1), np.nan)
    spread = np.nanmax(ratio, axis=1) / np.nanmin(ratio, axis=1)
    assert np.all(spread < 1.001)
    assert np.array_equal(c > 0, x > 0)


def test_counts_not_recoverable_are_refused():
    a = ad.read_h5ad(real_path("perturbench/devel.h5ad"))
    with pytest.raises(InputError, match="counts are not recoverable"):
        recover_counts(a.X, where="devel X")


def test_binomial_split_halves_add_up_and_are_seeded(citefuse_counts):
    from celljepa.data.counts import binomial_split

    a, b = binomial_split(citefuse_counts, seed=4)
    assert ((a + b) != citefuse_counts).nnz == 0
    assert abs(a.sum() / citefuse_counts.sum() - 0.5) < 0.01 and b.min() >= 0
    a2, _ = binomial_split(citefuse_counts, seed=4)
    assert (a != a2).nnz == 0
    dense_a, dense_b = binomial_split(citefuse_counts[:50].toarray(), seed=1)
    assert np.array_equal(dense_a + dense_b, citefuse_counts[:50].toarray())
