"""The hierarchical bootstrap behind every reported CI, checked against cases whose variance is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from celljepa.eval.bootstrap import SeedCube, bootstrap_ci, hierarchical_bootstrap, point_estimate


def _sd(r: dict) -> float:
    return (r["ci_high"] - r["ci_low"]) / (2 * 1.959964)


def test_model_seed_spread_widens_the_interval_as_it_should():
    """One fold, M model seeds × N conditions: value = b_seed + e_condition.

    The mean over conditions and seeds has variance σ_b²/M + σ_e²/N. A bootstrap over conditions alone sees
    σ_e²/N only (too narrow); the hierarchical one sees both.
    """
    rng = np.random.default_rng(1)
    m, n, sb, se = 20, 300, 0.5, 1.0
    truth = np.sqrt(sb**2 / m + se**2 / n)
    hier, cond_only, covered = [], [], 0
    for k in range(30):
        v = (rng.normal(0, sb, m)[:, None] + rng.normal(0, se, n)[None, :])[None]
        r = hierarchical_bootstrap(v, np.zeros((1, n), dtype=int), n_boot=2000, seed=k)
        hier.append(_sd(r))
        cond_only.append(_sd(bootstrap_ci(v[0].mean(axis=0), n_boot=2000, seed=k)))
        covered += r["ci_low"] <= 0.0 <= r["ci_high"]
    assert 0.85 * truth < np.mean(hier) < 1.15 * truth
    assert np.mean(cond_only) < 0.55 * truth  # the seed spread is invisible to a conditions-only bootstrap
    assert covered >= 26  # ~95% coverage of the true mean (0) over 30 draws


def test_split_seed_spread_is_resampled_with_conditions_crossed():
    """S split seeds × N conditions crossed: value = a_split + e_condition; variance σ_a²/S + σ_e²/N."""
    rng = np.random.default_rng(2)
    s, m, n, sa, se = 30, 2, 200, 0.3, 1.0
    truth = np.sqrt(sa**2 / s + se**2 / n)
    sds = []
    for k in range(12):
        v = rng.normal(0, sa, s)[:, None] + rng.normal(0, se, n)[None, :]
        v = np.repeat(v[:, None, :], m, axis=1)
        folds = rng.integers(0, 5, size=(s, n))
        sds.append(_sd(hierarchical_bootstrap(v, folds, n_boot=2000, seed=k)))
    assert 0.85 * truth < np.mean(sds) < 1.15 * truth


def test_model_seeds_are_drawn_per_fold():
    """With one split seed and many folds, a fold's model of one seed is shared by its conditions only."""
    rng = np.random.default_rng(3)
    k, m, per, sb, se = 40, 3, 5, 0.6, 0.3
    n = k * per
    folds = np.repeat(np.arange(k), per)[None, :]
    sds, truths = [], np.sqrt(sb**2 / (k * m) + se**2 / n)
    for rep in range(12):
        fit = rng.normal(0, sb, (k, m))  # a (fold, model seed) model's error, shared by the fold's conditions
        v = (fit[folds[0]].T + rng.normal(0, se, n)[None, :])[None]
        sds.append(_sd(hierarchical_bootstrap(v, folds, n_boot=1000, seed=rep)))
    # folds at the top, then seeds and conditions within them: conservative by at most the lower levels' share
    assert truths * 0.85 < np.mean(sds) < truths * 1.6


def test_point_estimate_missing_values_and_layout():
    v = np.array([[[1.0, 2.0, np.nan], [3.0, 4.0, np.nan]]])  # 1 split seed, 2 model seeds, 3 conditions
    mean, n = point_estimate(v)
    assert mean == pytest.approx((2.0 + 3.0) / 2) and n == 2  # a condition never scored is left out
    r = hierarchical_bootstrap(v, np.zeros((1, 3), dtype=int), n_boot=500)
    assert r["n"] == 2 and r["n_model_seeds"] == 2 and r["method"] == "hierarchical"
    assert hierarchical_bootstrap(v, np.zeros((1, 3), dtype=int), n_boot=500) == r  # seeded
    with pytest.raises(ValueError, match="split seeds, model seeds, conditions"):
        hierarchical_bootstrap(v[0], np.zeros((1, 3)))
    assert np.isnan(hierarchical_bootstrap(np.full((1, 1, 2), np.nan), np.zeros((1, 2), int))["mean"])


def test_seed_cube_from_a_long_frame():
    rows = []
    for s in (0, 1):
        for c in ("a", "b"):
            fold = {"a": 0, "b": 1}[c] if s == 0 else 0
            rows.append(
                {
                    "method": "ridge",
                    "condition": c,
                    "split_seed": s,
                    "fold": fold,
                    "model_seed": np.nan,
                    "edistance": 1.0 + s,
                }
            )
            for m in (0, 1, 2):
                rows.append(
                    {
                        "method": "jepa_set",
                        "condition": c,
                        "split_seed": s,
                        "fold": fold,
                        "model_seed": m,
                        "edistance": 10 * s + m,
                    }
                )
    cube = SeedCube.from_frame(pd.DataFrame(rows))
    v = cube.values("jepa_set", "edistance")
    assert v.shape == (2, 3, 2) and v[1, 2, 0] == 12.0
    r = cube.values("ridge", "edistance")
    assert (r[0] == 1.0).all() and (r[1] == 2.0).all()  # a seed-free method repeats along the seed axis
    assert cube.folds.tolist() == [[0, 1], [0, 0]]
    assert cube.seed_means("jepa_set", "edistance") == {0: 5.0, 1: 6.0, 2: 7.0}
    assert cube.seed_means("ridge", "edistance") == {"all": 1.5}
