"""Collapse diagnostics and kNN accuracy, on shapes whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from celljepa import InputError
from celljepa.eval.embedding import collapse_diagnostics, is_collapsed, knn_accuracy, knn_table


def test_isotropic_embedding_is_full_rank():
    z = np.random.default_rng(0).normal(size=(5000, 32))
    d = collapse_diagnostics(z)
    assert d["effective_rank_fraction"] > 0.95
    assert abs(d["mean_cosine"]) < 0.01
    assert 0.95 < d["std_min"] <= d["std_mean"] < 1.05
    assert not is_collapsed(d)


def test_rank_one_and_constant_embeddings_are_collapsed():
    rng = np.random.default_rng(0)
    line = rng.normal(size=(1000, 1)) @ rng.normal(size=(1, 32)) + 5.0
    d = collapse_diagnostics(line)
    assert d["effective_rank"] < 1.5 and d["mean_cosine"] > 0.9
    assert is_collapsed(d)
    const = np.ones((100, 8)) + 1e-6 * rng.normal(size=(100, 8))
    d = collapse_diagnostics(const)
    assert d["std_min"] < 1e-3 and d["mean_cosine"] > 0.999 and is_collapsed(d)


def test_effective_rank_matches_formula():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(400, 6)) * np.array([5, 4, 3, 2, 1, 0.5])
    s = np.linalg.svd(z - z.mean(0), compute_uv=False)
    p = s / s.sum()
    assert collapse_diagnostics(z)["effective_rank"] == pytest.approx(np.exp(-(p * np.log(p)).sum()))


def test_nonfinite_embedding_counts_as_collapsed():
    z = np.ones((10, 4))
    z[0, 0] = np.nan
    assert is_collapsed(collapse_diagnostics(z))


def test_knn_accuracy_separable_random_and_small_classes():
    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(0, 1, (150, 4)), rng.normal(6, 1, (150, 4)), rng.normal(0, 1, (3, 4))]
    y = ["a"] * 150 + ["b"] * 150 + ["tiny"] * 3
    r = knn_accuracy(x, y, k=15, n_folds=5)
    assert r["accuracy"] == 1.0 and r["n_classes"] == 2 and r["n_dropped"] == 3
    noise = knn_accuracy(rng.normal(size=(300, 4)), rng.integers(0, 2, 300).astype(str))
    assert 0.3 < noise["accuracy"] < 0.7
    with pytest.raises(InputError, match="at least 2 classes"):
        knn_accuracy(x[:150], y[:150])


def test_knn_table_skips_missing_labels():
    import pandas as pd

    rng = np.random.default_rng(0)
    obs = pd.DataFrame({"cell_type": ["a", "b"] * 50})
    t = knn_table({"e": rng.normal(size=(100, 3))}, obs, ["cell_type", "perturbation_id"])
    assert "accuracy" in t["cell_type"]["e"]
    assert "obs has no column 'perturbation_id'" in t["perturbation_id"]["skipped"]


def test_split_half_retrieval_ranks_own_half_and_fails_when_collapsed():
    from celljepa.eval.embedding import split_half_retrieval

    rng = np.random.default_rng(0)
    cells = rng.normal(size=(400, 16))
    noisy = split_half_retrieval(cells + 0.2 * rng.normal(size=cells.shape), cells + 0.2 * rng.normal(size=cells.shape))
    assert noisy["top1"] > 0.95 and noisy["median_rank"] == 1
    very_noisy = split_half_retrieval(
        cells + 3 * rng.normal(size=cells.shape), cells + 3 * rng.normal(size=cells.shape)
    )
    assert very_noisy["top1"] < noisy["top1"] and very_noisy["median_rank"] > 1
    collapsed = np.tile(rng.normal(size=(1, 16)), (400, 1)) + 1e-9 * rng.normal(size=(400, 16))
    flat = split_half_retrieval(collapsed, collapsed[rng.permutation(400)])
    assert flat["top1"] < 0.05
    euclid = split_half_retrieval(cells, cells + 0.01, metric="euclidean")
    assert euclid["top1"] == 1.0 and euclid["n_cells"] == 400
    with pytest.raises(InputError, match="same cells"):
        split_half_retrieval(cells, cells[:10])
