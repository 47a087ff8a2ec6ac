"""Baselines on data with known shifts: each recovers what it should, all return shifted control cells."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from celljepa.models.base import Condition, TrainData, conditions_of
from celljepa.models.baselines import Additive, LinearGWP, MeanShift, NoChange, RidgeShift, default_baselines

K = 4
SHIFTS = {
    "A": np.array([2.0, 0, 0, 0]),
    "B": np.array([0, 1.0, 0, 0]),
    "C": np.array([0, 0, -1.0, 0]),
    "D": np.array([0, 0, 0, 3.0]),
}
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
    emb = {
        "A": np.array([1.0, 0, 0, 0]),
        "B": np.array([0, 1.0, 0, 0]),
        "C": np.array([0, 0, 1.0, 0]),
        "D": np.array([0, 0, 0, 1.0]),
    }
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
    assert names == [
        "no_change",
        "mean_shift",
        "ridge",
        "shift_scale",
        "additive",
        "target_shift",
        "linear_gwp",
        "linear_go",
    ]
    assert [m.name for m in default_baselines(combos=False, gene_perturbations=False)] == [
        "no_change",
        "mean_shift",
        "ridge",
        "shift_scale",
    ]
    assert [m.name for m in default_baselines(combos=False, gene_perturbations=False, contexts=True)][4:] == [
        "context_ridge",
        "cell_linear",
        "nearest_context",
        "context_shift_scale",
    ]


def test_missing_context_controls():
    train = make_train(["A"], ["B"])
    with pytest.raises(KeyError, match="no control cells for context 'c9'"):
        NoChange().fit(train).predict(cond("c9", "A"))


# ----------------------------------------------------------------------------- context-aware and spread models

from celljepa.eval.edistance import edistance_sets  # noqa: E402
from celljepa.models.baselines import (  # noqa: E402
    CellLinear,
    ContextRidge,
    ContextShiftScale,
    LinearGO,
    NearestContext,
    ShiftScale,
)

KC = 6  # evaluation-space dimensions of the context examples


def make_contexts(n_contexts=10, *, per_cell=False, spread=1.0, seed=0, n_val=2, n_test=1, cell_sd=0.3, b_scale=1.0):
    """Contexts whose control means differ; the perturbation's shift is a linear function of the context.

    ``shift(μ) = a + B μ``; with ``per_cell`` every cell moves by ``a + B x`` (its own state), so the
    perturbed cloud is ``(I + B)``-transformed; ``spread`` scales the perturbed cells around their mean.
    Returns (TrainData, test conditions with their observed cells).
    """
    rng = np.random.default_rng(seed)
    a = np.array([1.0, -0.5, 0, 0, 0.3, 0])
    b = np.zeros((KC, KC))
    b[0, 1], b[2, 0], b[1, 2] = 0.8 * b_scale, -0.6 * b_scale, 0.5 * b_scale
    rows, z, observed = [], [], {}
    names = [f"ct{i}" for i in range(n_contexts)]
    for i, ctx in enumerate(names):
        mu = rng.normal(0, 2.0, KC)
        ctrl = mu + rng.normal(0, cell_sd, (80, KC))
        shift_cells = a + (ctrl @ b.T if per_cell else mu @ b.T)
        pert = ctrl + shift_cells + rng.normal(0, 0.05, (80, KC))
        pert = pert.mean(0) + spread * (pert - pert.mean(0))
        for x in ctrl:
            rows.append((ctx, "control", "control:CTRL", True))
            z.append(x)
        if i >= n_contexts - n_test:
            observed[ctx] = pert  # test context: its perturbed cells are never in TrainData
            continue
        for x in pert:
            rows.append((ctx, "stim", "cytokine:stim", False))
            z.append(x)
    obs = pd.DataFrame(rows, columns=["context_id", "perturbation_id", "perturbation_tokens", "is_control"])
    obs["dose"], obs["time_hours"] = np.nan, np.nan
    z = np.array(z)
    conds = conditions_of(obs)
    val_ctx = set(names[n_contexts - n_test - n_val : n_contexts - n_test])
    tr = [(c, r) for c, r in conds if c.context_id not in val_ctx]
    va = [(c, r) for c, r in conds if c.context_id in val_ctx]
    train = TrainData(z=z, obs=obs, train_conditions=tr, val_conditions=va)
    tests = [(Condition(ctx, "stim", ("cytokine:stim",)), x) for ctx, x in observed.items()]
    return train, tests


def _mean_error(model, train, tests):
    return float(np.mean([np.linalg.norm(model.predict(c).mean(0) - x.mean(0)) for c, x in tests]))


def _edist(model, tests):
    return float(np.mean(edistance_sets([model.predict(c) for c, _ in tests], [x for _, x in tests], seed=0)))


def test_context_ridge_recovers_a_context_dependent_shift_that_mean_shift_cannot():
    train, tests = make_contexts(12, n_test=2)
    ridge = ContextRidge().fit(train)
    ms = MeanShift().fit(train)
    err_ridge, err_ms = _mean_error(ridge, train, tests), _mean_error(ms, train, tests)
    assert err_ridge < 0.25 * err_ms and err_ridge < 0.5, (err_ridge, err_ms)
    assert ridge.params()["feature_set"] in ContextRidge.feature_sets and ridge.alpha_ in ridge.alphas
    # the test contexts were never fitted: a fit without them predicts the same
    assert all(c.context_id not in {x.context_id for x, _ in train.train_conditions} for c, _ in tests)


def test_cell_linear_moves_every_cell_by_its_own_shift():
    train, tests = make_contexts(12, per_cell=True, n_test=2, cell_sd=1.0, b_scale=2.5)
    cell, ctx = CellLinear().fit(train), ContextRidge().fit(train)
    # same mean map, but only the per-cell form reproduces the transformed cloud
    e_cell, e_ctx = _edist(cell, tests), _edist(ctx, tests)
    assert e_ctx > 0.05 and e_cell < 0.5 * e_ctx, (e_cell, e_ctx)
    cells = train.control_cells(tests[0][0].context_id)
    pred = cell.predict(tests[0][0])
    assert pred.shape == cells.shape and not np.allclose(pred - cells, (pred - cells).mean(0))


def test_nearest_context_takes_the_shift_of_the_most_similar_context():
    rng = np.random.default_rng(1)
    rows, z = [], []
    centres = {"a1": 0.0, "a2": 0.3, "b1": 10.0, "b2": 10.4, "a3": 0.1}  # two families of contexts
    shifts = {"a": np.array([3.0, 0, 0]), "b": np.array([0, -3.0, 0])}
    for ctx, c in centres.items():
        for _ in range(40):
            rows.append((ctx, "control", "control:CTRL", True))
            z.append(np.array([c, 0, 0]) + rng.normal(0, 0.1, 3))
        if ctx != "a3":
            for _ in range(40):
                rows.append((ctx, "p", "gene:P", False))
                z.append(np.array([c, 0, 0]) + shifts[ctx[0]] + rng.normal(0, 0.1, 3))
    obs = pd.DataFrame(rows, columns=["context_id", "perturbation_id", "perturbation_tokens", "is_control"])
    obs["dose"], obs["time_hours"] = np.nan, np.nan
    conds = conditions_of(obs)
    train = TrainData(
        z=np.array(z),
        obs=obs,
        train_conditions=[x for x in conds if x[0].context_id != "b2"],
        val_conditions=[x for x in conds if x[0].context_id == "b2"],
    )
    model = NearestContext().fit(train)
    assert model.k_ == 1  # on validation, the nearest context (b1 for b2) beats averaging across families
    pred = model.predict(Condition("a3", "p", ("gene:P",))).mean(0) - train.control_mean("a3")
    np.testing.assert_allclose(pred, shifts["a"], atol=0.1)
    assert np.linalg.norm(MeanShift().fit(train).predict_shift(Condition("a3", "p", ("gene:P",))) - shifts["a"]) > 1


def test_shift_scale_matches_the_perturbed_spread():
    train, tests = make_contexts(8, spread=2.5, n_test=2)
    ss, ms = ShiftScale().fit(train), MeanShift().fit(train)
    assert ss.spread_weight_ > 0.5  # chosen on validation: the spread of perturbed cells is larger
    c, x = tests[0]
    ratio = ss.predict(c).std(0).mean() / train.control_cells(c.context_id).std(0).mean()
    assert ratio > 1.8
    np.testing.assert_allclose(ss.predict(c).mean(0), ms.predict(c).mean(0), atol=1e-9)  # same mean
    assert _edist(ss, tests) < _edist(ms, tests)
    # its context-aware form has both: the context's own shift and the spread
    css = ContextShiftScale().fit(train)
    assert _edist(css, tests) < _edist(ss, tests) and css.spread_weight_ > 0.5


def test_a_refit_uses_the_validation_conditions_only_when_asked():
    train = make_train(["A", "B"], ["C"])
    only_train = MeanShift().fit(train, refit=False)
    both = MeanShift().fit(train)
    assert "C" not in only_train._shifts and "C" in both._shifts
    np.testing.assert_allclose(only_train._global, (SHIFTS["A"] + SHIFTS["B"]) / 2, atol=0.05)


def test_linear_go_has_an_embedding_for_genes_outside_the_data():
    from celljepa.data.go import go_gene_embedding

    go = go_gene_embedding(64)
    genes = ["RPL3", "RPL4", "RPS6", "GATA1", "KLF1", "TAL1", "CDK1", "CCNB1", "PLK1"]
    assert all(go.vector(g) is not None for g in genes)
    rng = np.random.default_rng(0)
    w = rng.normal(0, 1.0, (K, 64))
    rows, z = [], []
    for _ in range(60):
        rows.append(("c", "control", "control:CTRL", True))
        z.append(rng.normal(0, 0.1, K))
    for g in genes:
        for _ in range(30):
            rows.append(("c", g, f"gene:{g}", False))
            z.append(w @ go.vector(g) + rng.normal(0, 0.1, K))
    obs = pd.DataFrame(rows, columns=["context_id", "perturbation_id", "perturbation_tokens", "is_control"])
    obs["dose"], obs["time_hours"] = np.nan, np.nan
    conds = conditions_of(obs)
    test = {"RPL4", "KLF1", "PLK1"}  # one of each functional family, never trained on
    train = TrainData(
        z=np.array(z),
        obs=obs,
        train_conditions=[x for x in conds if x[0].perturbation_id not in test | {"RPS6", "TAL1", "CCNB1"}],
        val_conditions=[x for x in conds if x[0].perturbation_id in {"RPS6", "TAL1", "CCNB1"}],
    )
    lin, ms = LinearGO().fit(train), MeanShift().fit(train)
    errs = {
        name: np.mean(
            [np.linalg.norm(m.predict_shift(Condition("c", g, (f"gene:{g}",))) - w @ go.vector(g)) for g in test]
        )
        for name, m in (("go", lin), ("ms", ms))
    }
    assert errs["go"] < 0.7 * errs["ms"], errs
    assert lin.covers(Condition("c", "KLF1", ("gene:KLF1",)))
    assert not lin.covers(Condition("c", "X", ("gene:NOT_A_GENE_123",)))
    assert not lin.covers(Condition("c", "d", ("drug:dexamethasone",)))
    # the PCA-loading form covers only genes that are dimensions of the space
    assert not LinearGWP().fit(make_train(["A", "B"], ["C"])).covers(Condition("c1", "KLF1", ("gene:KLF1",)))


def test_large_control_sets_are_sampled_once_for_every_method():
    """Above MAX_SET_CELLS control cells, predictions start from one seeded sample (bounded memory at scale);
    the control mean still uses every control cell."""
    import pandas as pd

    from celljepa.models.base import MAX_SET_CELLS, TrainData

    rng = np.random.default_rng(0)
    n = MAX_SET_CELLS + 3000
    obs = pd.DataFrame({"is_control": np.r_[np.ones(n, bool), np.zeros(10, bool)], "context_id": ["a"] * (n + 10)})
    z = rng.normal(size=(n + 10, 4))
    train = TrainData(z=z, obs=obs, train_conditions=[], val_conditions=[])
    cells = train.control_cells("a")
    assert cells.shape == (MAX_SET_CELLS, 4)
    np.testing.assert_array_equal(cells, train.control_cells("a"))  # the same sample every call
    rows = {tuple(r) for r in z[:n]}
    assert all(tuple(r) in rows for r in cells)  # control cells only
    np.testing.assert_allclose(train.control_mean("a"), z[:n].mean(axis=0))
    small = TrainData(
        z=z[n - 50 :], obs=obs.iloc[n - 50 :].reset_index(drop=True), train_conditions=[], val_conditions=[]
    )
    np.testing.assert_array_equal(small.control_cells("a"), z[n - 50 : n])  # small sets: every cell, in order
