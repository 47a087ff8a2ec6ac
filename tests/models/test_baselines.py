"""Baselines on data with known shifts: each recovers what it should, all return shifted control cells."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from celljepa.models.base import Condition, TrainData, conditions_of
from celljepa.models.baselines import Additive, LinearGWP, MeanShift, NoChange, RidgeShift, default_baselines

K = 4
SHIFTS = {"A": np.array([2.0, 0, 0, 0]), "B": np.array([0, 1.0, 0, 0]), "C": np.array([0, 0, -1.0, 0]),
          "D": np.array([0, 0, 0, 3.0])}
CONTEXT = {"c1": np.zeros(K), "c2": np.array([0.5, 0.5, 0, 0])}


def make_train(perts_train, perts_val, rng=None):
    rng = rng or np.random.default_rng(0)
    rows, z = [], []
    for ctx, base in CONTEXT.items():
        for _ in range(50):
            rows.append((ctx, "control", "control:CTRL", True))
            z.append(base + rng.normal(0, 0.1, K))
        for p in perts_train + perts_val:
            names = p.split("+")
            for _ in range(30):
                rows.append((ctx, p, "|".join(f"gene:{n}" for n in sorted(names)), False))
                z.append(base + sum(SHIFTS[n] for n in names) + rng.normal(0, 0.1, K))
    obs = pd.DataFrame(rows, columns=["context_id", "perturbation_id", "perturbation_tokens", "is_control"])
    obs["dose"] = np.nan
    obs["time_hours"] = np.nan
    z = np.array(z)
    conds = conditions_of(obs)
    tr = [(c, r) for c, r in conds if c.perturbation_id in perts_train]
    va = [(c, r) for c, r in conds if c.perturbation_id in perts_val]
    emb = {"A": np.array([1.0, 0, 0, 0]), "B": np.array([0, 1.0, 0, 0]), "C": np.array([0, 0, 1.0, 0]),
           "D": np.array([0, 0, 0, 1.0])}
    return TrainData(z=z, obs=obs, train_conditions=tr, val_conditions=va, gene_embedding=emb)


def cond(ctx, pert):
    return Condition(ctx, pert, tuple(f"gene:{n}" for n in sorted(pert.split("+"))))


def test_no_change_returns_the_context_controls():
    train = make_train(["A", "B"], ["C"])
    pred = NoChange().fit(train).predict(cond("c2", "D"))
    np.testing.assert_array_equal(pred, train.control_cells("c2"))


def test_mean_shift_seen_and_unseen():
    train = make_train(["A", "B"], ["C"])
    ms = MeanShift().fit(train)
    seen = ms.predict(cond("c1", "A")).mean(0) - train.control_mean("c1")
    np.testing.assert_allclose(seen, SHIFTS["A"], atol=0.05)
    unseen = ms.predict(cond("c1", "D")).mean(0) - train.control_mean("c1")
    np.testing.assert_allclose(unseen, (SHIFTS["A"] + SHIFTS["B"] + SHIFTS["C"]) / 3, atol=0.05)
    assert ms.predict(cond("c1", "D")).shape == train.control_cells("c1").shape


def test_additive_sums_single_shifts():
    train = make_train(["A", "B", "C"], ["D"])
    pred = Additive().fit(train).predict(cond("c2", "A+B")).mean(0) - train.control_mean("c2")
    np.testing.assert_allclose(pred, SHIFTS["A"] + SHIFTS["B"], atol=0.05)


def test_ridge_is_tuned_on_validation_and_learns_tokens():
    train = make_train(["A", "B", "C", "A+C"], ["B+C", "A+B"])
    ridge = RidgeShift().fit(train)
    assert ridge.params()["alpha"] in ridge.alphas and ridge.params()["feature_set"].startswith("tokens")
    # Unseen combination B+A: an additive model in token features recovers it.
    pred = ridge.predict(cond("c1", "A+B")).mean(0) - train.control_mean("c1")
    np.testing.assert_allclose(pred, SHIFTS["A"] + SHIFTS["B"], atol=0.3)
    assert ridge.val_mse_ < 0.1


def test_linear_gwp_generalises_through_gene_embeddings():
    train = make_train(["A", "B", "C"], ["A+B"])
    lin = LinearGWP().fit(train)
    assert lin.params()["gene_embedding_coverage"] == 1.0
    # D is unseen; its embedding is orthogonal to A-C, so the model predicts the average shift (b).
    pred_d = lin.predict(cond("c1", "D")).mean(0) - train.control_mean("c1")
    np.testing.assert_allclose(pred_d, lin._b, atol=1e-9)
    # A seen single is reproduced by G W P.
    pred_a = lin.predict(cond("c1", "A")).mean(0) - train.control_mean("c1")
    assert np.linalg.norm(pred_a - SHIFTS["A"]) < np.linalg.norm(lin._b - SHIFTS["A"])


def test_default_baselines_depend_on_the_split():
    names = [m.name for m in default_baselines(combos=True, gene_perturbations=True)]
    assert names == ["no_change", "mean_shift", "ridge", "additive", "linear_gwp"]
    assert [m.name for m in default_baselines(combos=False, gene_perturbations=False)] == [
        "no_change", "mean_shift", "ridge"]


def test_missing_context_controls():
    train = make_train(["A"], ["B"])
    with pytest.raises(KeyError, match="no control cells for context 'c9'"):
        NoChange().fit(train).predict(cond("c9", "A"))
