"""Out-of-sample validation scores (protocol v3): a method is scored on validation conditions it did not tune on.

The constructed case: every condition's shift is a common shift plus a large idiosyncratic part, so the
validation conditions' own average fits them better than anything learned from training conditions, *in
sample*. A baseline that tunes its shift on the validation conditions wins the old rule (tuned and scored on
the same validation conditions) and loses the cross-fitted one, which also picks the method that is better on
the test conditions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from celljepa.bench.evaluate import (
    CROSS_FITTED,
    UNTUNED,
    EvalConfig,
    _fit_and_predict,
    _score_validation,
    tunes_on_validation,
    validation_parts,
)
from celljepa.bench.pooling import choose_comparator
from celljepa.eval.edistance import edistance_sets
from celljepa.models.base import Condition, TrainData, conditions_of
from celljepa.models.baselines import MeanShift, ShiftModel

K = 3


def _data(seed: int, n_train: int = 30, n_val: int = 4, n_test: int = 30):
    """One context; condition shift = common + idiosyncratic (sd 1), 40 cells each with sd 0.2."""
    rng = np.random.default_rng(seed)
    common = np.array([1.0, -0.5, 0.3])
    rows, z = [], []
    for _ in range(200):
        rows.append(("k", "control", "control:CTRL", True))
        z.append(rng.normal(0, 0.2, K))
    names = [f"P{i}" for i in range(n_train + n_val + n_test)]
    for p in names:
        shift = common + rng.normal(0, 1.0, K)
        for _ in range(40):
            rows.append(("k", p, f"gene:{p}", False))
            z.append(shift + rng.normal(0, 0.2, K))
    obs = pd.DataFrame(rows, columns=["context_id", "perturbation_id", "perturbation_tokens", "is_control"])
    obs["dose"], obs["time_hours"] = np.nan, np.nan
    conds = {c.perturbation_id: (c, r) for c, r in conditions_of(obs)}
    split = [names[:n_train], names[n_train : n_train + n_val], names[n_train + n_val :]]
    tr, va, te = ([conds[p] for p in part] for part in split)
    return TrainData(z=np.array(z), obs=obs, train_conditions=tr, val_conditions=va), te


class OverTuned(ShiftModel):
    """Tunes its shift on the validation conditions: their average shift whenever it fits them better."""

    name = "over_tuned"

    def fit(self, train: TrainData, *, refit: bool = True) -> OverTuned:
        self._train = train
        learned = np.mean([train.shift(c, r) for c, r in train.train_conditions], axis=0)
        self.shift_ = learned
        if train.val_conditions:
            tuned = np.mean([train.shift(c, r) for c, r in train.val_conditions], axis=0)
            err = {
                k: np.mean([np.sum((train.shift(c, r) - s) ** 2) for c, r in train.val_conditions])
                for k, s in (("learned", learned), ("tuned", tuned))
            }
            self.shift_ = tuned if err["tuned"] < err["learned"] else learned
        return self

    def predict_shift(self, condition: Condition) -> np.ndarray:
        return self.shift_


def _validation_scores(train, test, methods, *, cross_fitted: bool, seed: int) -> pd.DataFrame:
    cfg = EvalConfig(seed=seed)
    val = list(train.val_conditions)
    parts = validation_parts(val, seed=seed, fold=0) if cross_fitted else [val]
    preds, covers, roles = {}, {}, {}
    for m in methods:
        if cross_fitted:
            _, vp, cov, _ = _fit_and_predict(m, train, test, parts, {c for c, _ in val})
        else:  # the old rule: tuned on every validation condition, scored on the same ones
            m.fit(train, refit=False)
            vp, cov = m.predict_many([c for c, _ in val]), {c: True for c, _ in val}
        preds.update({(m.name, None, c): x for c, x in vp.items()})
        covers.update({(m.name, c): v for c, v in cov.items()})
        roles[m.name] = m.role
    return _score_validation(train, val, preds, covers, roles, cfg)


def _test_score(train, test, method) -> float:
    method.fit(train, refit=True)
    preds = [method.predict(c) for c, _ in test]
    return float(np.mean(edistance_sets(preds, [train.z[r] for _, r in test], seed=0)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_old_rule_picks_the_over_tuned_baseline_and_v3_does_not(seed):
    train, test = _data(seed)
    roles = {"mean_shift": "baseline", "over_tuned": "baseline"}
    old = choose_comparator(
        roles, _validation_scores(train, test, [MeanShift(), OverTuned()], cross_fitted=False, seed=seed)
    )
    new = choose_comparator(
        roles, _validation_scores(train, test, [MeanShift(), OverTuned()], cross_fitted=True, seed=seed)
    )
    assert old["comparator"] == "over_tuned"  # it fits the validation conditions it was tuned on
    assert new["comparator"] == "mean_shift"
    assert new["validation"]["over_tuned"]["edistance"] > old["validation"]["over_tuned"]["edistance"]
    # the mean shift tunes nothing: the same score under both rules
    assert new["validation"]["mean_shift"]["edistance"] == pytest.approx(old["validation"]["mean_shift"]["edistance"])
    # and v3's choice is the better method on the test conditions
    assert _test_score(train, test, MeanShift()) < _test_score(train, test, OverTuned())


def test_cross_fitting_predicts_each_part_from_the_other():
    train, test = _data(0, n_val=5)
    val = list(train.val_conditions)
    parts = validation_parts(val, seed=3, fold=1)
    assert sorted(len(p) for p in parts) == [2, 3]
    assert validation_parts(val, seed=3, fold=1) == parts  # deterministic
    assert validation_parts(val[::-1], seed=3, fold=1) == parts  # the order conditions come in does not matter
    model = OverTuned()
    _, vp, _, fits = _fit_and_predict(model, train, test, parts, {c for c, _ in val})
    for k, part in enumerate(parts):
        other = np.mean([train.shift(c, r) for j, p in enumerate(parts) if j != k for c, r in p], axis=0)
        for c, _ in part:  # predicted from the other part's shift (or the training shift): never from itself
            shift = vp[c].mean(axis=0) - train.control_mean("k")
            learned = np.mean([train.shift(c2, r) for c2, r in train.train_conditions], axis=0)
            assert np.allclose(shift, other) or np.allclose(shift, learned)
            own = np.mean([train.shift(c2, r) for c2, r in part], axis=0)
            assert not np.allclose(shift, own)
    assert len(fits) == 2 and tunes_on_validation(model) and not tunes_on_validation(MeanShift())
    assert "cross-fitted" in CROSS_FITTED and "tunes nothing" in UNTUNED
    # the test predictions come from the method tuned on every validation condition
    assert np.allclose(model.shift_, np.mean([train.shift(c, r) for c, r in val], axis=0)) or np.allclose(
        model.shift_, np.mean([train.shift(c, r) for c, r in train.train_conditions], axis=0)
    )


def test_a_single_validation_condition_is_scored_untuned():
    train, test = _data(1, n_val=1)
    val = list(train.val_conditions)
    parts = validation_parts(val, seed=0, fold=0)
    assert parts == [val]
    model = OverTuned()
    _, vp, _, _ = _fit_and_predict(model, train, test, parts, {c for c, _ in val})
    learned = np.mean([train.shift(c, r) for c, r in train.train_conditions], axis=0)
    np.testing.assert_allclose(vp[val[0][0]].mean(axis=0) - train.control_mean("k"), learned, atol=1e-9)


def test_every_fold_of_norman_s1g_scores_the_same_baseline_pool():
    """The pool is read from the fold's whole data: ``additive`` runs in every S1g fold, pairs tested or not."""
    from celljepa.bench.evaluate import _applicable
    from celljepa.bench.run import demo_datasets
    from celljepa.data.contract import S1G
    from celljepa.models.baselines import default_baselines
    from celljepa.splits import make_split_folds

    obs = demo_datasets()["norman2019"].obs.copy()
    pools, pairs_tested = [], []
    for fold in make_split_folds(obs, S1G, dataset_id="norman2019", n_folds=3, seed=0):
        parts = {r: conditions_of(obs.loc[list(fold[f"{r}_cells"])]) for r in ("train", "val", "test")}
        pairs_tested.append(any(c.is_combo for c, _ in parts["test"]))
        pools.append(
            [
                m.name
                for m in default_baselines(**_applicable(parts["train"] + parts["val"] + parts["test"], contexts=False))
            ]
        )
    assert not all(pairs_tested), "the check needs a fold whose test conditions hold no pair"
    assert all(p == pools[0] for p in pools) and "additive" in pools[0]


def test_a_method_missing_from_a_fold_is_uncovered_there_not_a_crash_and_not_a_lower_mean():
    """Pooling folds where a method did not run: its conditions there are n/a, its coverage counts them."""
    from celljepa.bench.pooling import METRICS, summarize

    rng = np.random.default_rng(0)
    rows, val, seeds = [], [], []
    for fold in range(2):
        for i in range(12):
            cond = f"k|P{fold}_{i}"
            for m, role, e in (
                ("no_change", "baseline", 1.0),
                ("mean_shift", "baseline", 0.8),
                ("sparse", "baseline", 0.1),
                ("jepa_set", "jepa", 0.7),
                ("pca_set", "pca_twin", 0.75),
            ):
                if m == "sparse" and fold == 1:
                    continue  # not run in fold 1
                x = e + rng.normal(0, 0.05)
                base = {"method": m, "role": role, "condition": cond, "covered": True, "has_effect": True}
                base |= {k: 0.5 for k in METRICS} | {"edistance": x, "mse": x}
                rows.append(base)
                seeds.append(base | {"split_seed": 0, "fold": fold, "model_seed": 0 if role != "baseline" else np.nan})
            for m, e in (("no_change", 1.0), ("mean_shift", 0.8), ("sparse", 0.05), ("pca_set", 0.7)):
                if m == "sparse" and fold == 1:
                    continue
                val.append(
                    {
                        "method": m,
                        "condition": f"k|V{fold}_{i}",
                        "split_seed": 0,
                        "fold": fold,
                        "edistance": e,
                        "covered": True,
                    }
                )
    out = summarize(pd.DataFrame(rows), pd.DataFrame(val), per_seed=pd.DataFrame(seeds), n_boot=200)
    choice = out["comparator_choice"]["validation"]["sparse"]
    assert choice["coverage"] == pytest.approx(0.5)  # 12 of the 24 validation conditions
    assert out["coverage"]["sparse"] == pytest.approx(0.5)
    assert out["n_test_conditions"] == 24 and out["verdict"]["n"] == 24
    # covering half the conditions is eligible by the rule (>= 50 %), so it is chosen on its lower mean; its
    # verdict pairs only the conditions it predicted
    assert out["comparator"] == "sparse"
    assert out["verdict"]["edistance"]["n"] == 12
