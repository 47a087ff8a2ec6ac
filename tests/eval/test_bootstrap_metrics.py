"""Bootstrap CIs, paired differences, and the per-condition metrics."""

from __future__ import annotations

import numpy as np
import pytest

from celljepa.eval import bootstrap_ci, delta_pearson, delta_pearson_top_de, paired_bootstrap_diff, retrieval_ranks
from celljepa.eval.metrics import cosine_distance, top_de_indices


def test_bootstrap_ci_is_seeded_and_brackets_the_mean():
    v = np.random.default_rng(0).normal(1.0, 1.0, size=50)
    a = bootstrap_ci(v, seed=3)
    assert a == bootstrap_ci(v, seed=3) and a != bootstrap_ci(v, seed=4)
    assert a["ci_low"] < a["mean"] < a["ci_high"] and a["n"] == 50
    assert a["ci_high"] - a["ci_low"] == pytest.approx(2 * 1.96 / np.sqrt(50), rel=0.3)
    assert bootstrap_ci([np.nan, 1.0, 3.0])["n"] == 2


def test_paired_difference():
    rng = np.random.default_rng(0)
    base = rng.normal(size=40)
    same = paired_bootstrap_diff(base, base)
    assert same["diff"] == 0 and same["ci_low"] == 0 and same["ci_high"] == 0
    better = paired_bootstrap_diff(base - 0.5 + rng.normal(0, 0.05, 40), base)
    assert better["ci_high"] < 0
    # Pairing matters: a shift far smaller than the spread is still resolved.
    assert paired_bootstrap_diff(base + 0.01, base)["ci_low"] > 0


def test_delta_metrics():
    ctrl = np.zeros(5)
    obs = np.array([1.0, 2.0, 0.0, -1.0, 0.5])
    assert delta_pearson(2 * obs, obs, ctrl) == pytest.approx(1.0)
    assert delta_pearson(-obs, obs, ctrl) == pytest.approx(-1.0)
    assert np.isnan(delta_pearson(ctrl, obs, ctrl))
    assert list(top_de_indices(obs, ctrl, k=2)) == [0, 1]
    genes = np.arange(100.0)
    pred = genes.copy()
    pred[:80] = 0.0  # only the 20 largest changes are right
    assert delta_pearson_top_de(pred, genes, np.zeros(100)) == pytest.approx(1.0)
    assert cosine_distance(obs, obs) == pytest.approx(0.0, abs=1e-12)


def test_retrieval_ranks_with_ties_counted_against():
    obs = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 5.0]])
    assert list(retrieval_ranks(obs, obs)) == [1, 1, 1]
    pred = np.array([[1.0, 0.0], [1.0, 0.0], [0.5, 0.0]])
    assert list(retrieval_ranks(pred, obs)) == [2, 1, 3]
