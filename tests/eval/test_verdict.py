"""The claim rule: exact sign-flip test, Holm, the n-guard, the effect filter, the comparator chosen on validation."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

from celljepa.bench.evaluate import choose_comparator, pool_conditions, summarize
from celljepa.eval.effects import condition_effects, split_half_noise
from celljepa.eval.verdict import (
    apply_holm,
    enumerated_sign_flip_hits,
    exact_sign_flip_hits,
    holm_over,
    outcome,
    paired_comparison,
    sign_flip_pvalue,
)


def _brute_force(d):
    d = np.asarray(d, dtype=float)
    obs = abs(d.mean())
    hits = sum(abs((np.array(s) * d).mean()) >= obs - 1e-12 for s in itertools.product([1, -1], repeat=d.size))
    return hits / 2 ** d.size


@pytest.mark.parametrize("d", [[0.3, -0.1, 0.2, 0.05, 0.4], [1.0, 2.0, 3.0], [-0.2, -0.2, 0.2, -0.5, -0.1, -0.3, 0.0],
                               [0.1] * 8])
def test_exact_sign_flip_equals_brute_force(d):
    assert sign_flip_pvalue(d) == pytest.approx(_brute_force(d), abs=1e-12)


@pytest.mark.parametrize("n", [1, 2, 5, 9, 14, 17])
def test_meet_in_the_middle_count_equals_every_pattern_enumerated(n):
    rng = np.random.default_rng(n)
    # continuous values, values rounded to one decimal (many tied sums) and all-equal values
    for d in (rng.normal(0.1, 1.0, n), np.round(rng.normal(0.0, 1.0, n), 1), np.full(n, 0.3)):
        # thresholds sit 1e-9 below a possible tie, as in sign_flip_pvalue: sums equal up to rounding count
        for t in (abs(d.sum()) - 1e-9, 0.5 * abs(d.sum()) - 1e-9, abs(d).sum() + 1.0):
            assert exact_sign_flip_hits(d, t) == enumerated_sign_flip_hits(d, t)
    assert exact_sign_flip_hits(np.ones(n), 0.0) == 2 ** n


def test_sign_flip_hand_computed_and_edge_cases():
    # [1, 2, 3]: |sum| = 6 only for the two all-same-sign patterns of 8
    assert sign_flip_pvalue([1.0, 2.0, 3.0]) == 0.25
    # ten positive differences: 2 / 1024
    assert sign_flip_pvalue(np.ones(10)) == pytest.approx(2 / 1024)
    assert sign_flip_pvalue([]) == 1.0 and sign_flip_pvalue([0.0, 0.0, 0.0]) == 1.0
    assert sign_flip_pvalue([np.nan, 1.0, 2.0, 3.0]) == 0.25


def test_monte_carlo_sign_flip_agrees_with_the_exact_test():
    rng = np.random.default_rng(3)
    d = rng.normal(0.15, 1.0, 22)
    exact = sign_flip_pvalue(d, exact_max_n=22)
    mc = sign_flip_pvalue(d, exact_max_n=20, n_permutations=40_000, seed=1)
    assert exact != mc and mc == pytest.approx(exact, abs=0.01)
    assert sign_flip_pvalue(d, exact_max_n=20, n_permutations=40_000, seed=1) == mc  # seeded


def test_the_n_guard_and_the_holm_correction_decide_the_word():
    win = {"diff": -0.3, "ci_low": -0.5, "ci_high": -0.1, "p": 0.001}
    assert outcome({**win, "n": 9}) == "insufficient evidence"
    assert outcome({**win, "n": 10}) == "wins"
    assert outcome({**win, "n": 10, "diff": 0.3, "ci_low": 0.1, "ci_high": 0.5}) == "loses"
    assert outcome({**win, "n": 12, "ci_high": 0.05}) == "ties"  # CI includes 0
    assert outcome({**win, "n": 12}, p_adjusted=0.06) == "ties"  # significant alone, not after correction
    assert outcome({"diff": 1e-9, "ci_low": -1e-9, "ci_high": 1e-9, "n": 30, "p": 0.001}) == "ties"  # rounding
    assert outcome({"diff": float("nan"), "ci_low": 0, "ci_high": 0, "n": 0}) == "undetermined"
    rows = [{**win, "n": 20, "p": p} for p in (0.01, 0.02, 0.04)]
    apply_holm(rows)
    np.testing.assert_allclose([r["p_holm"] for r in rows], multipletests([0.01, 0.02, 0.04], method="holm")[1])
    assert [r["outcome"] for r in rows] == ["wins", "wins", "wins"]
    rows = [{**win, "n": 20, "p": p} for p in (0.01, 0.03, 0.04, 0.04)]
    apply_holm(rows)  # raw p < 0.05 everywhere, yet only the first survives Holm (0.04, 0.09, 0.09, 0.09)
    assert [r["outcome"] for r in rows] == ["wins", "ties", "ties", "ties"] and rows[0]["family_size"] == 4


def test_paired_comparison_is_the_bootstrap_plus_the_sign_flip_p():
    a = np.arange(12) * 0.1
    b = a + 0.05
    c = paired_comparison(a, b, n_boot=200)
    assert c["diff"] == pytest.approx(-0.05) and c["n"] == 12 and c["p"] == pytest.approx(2 / 4096)


METRICS = ("mse", "cosine_distance", "delta_pearson", "delta_pearson_top20_de", "top1", "mrr")


def _frame(scores: dict[str, list[float]], roles: dict[str, str], *, has_effect=None, covered=None) -> pd.DataFrame:
    rows = []
    for m, values in scores.items():
        for i, v in enumerate(values):
            rows.append({"method": m, "role": roles[m], "condition": f"c{i}", "edistance": v,
                         "has_effect": True if has_effect is None else has_effect[i],
                         "covered": True if covered is None else covered.get(m, True)})
    frame = pd.DataFrame(rows)
    for k in METRICS:
        frame[k] = 0.5
    return frame


ROLES = {"mean_shift": "baseline", "ridge": "baseline", "pca_set": "pca_twin", "jepa_set": "jepa",
         "jepa_prototype": "jepa", "linear_go": "baseline"}


def test_the_comparator_is_chosen_on_validation_even_when_another_method_is_better_on_test():
    n = 14
    test = {"mean_shift": [1.0] * n, "ridge": [0.5] * n, "pca_set": [0.8] * n, "jepa_set": [0.7] * n,
            "jepa_prototype": [0.1] * n}
    val = _frame({"mean_shift": [0.3] * 5, "ridge": [0.6] * 5, "pca_set": [0.9] * 5, "jepa_set": [0.1] * 5,
                  "jepa_prototype": [0.05] * 5}, ROLES)
    m = summarize(_frame(test, ROLES), val, n_boot=200)
    # ridge is best on test, but mean_shift is best on validation; JEPA models never compete
    assert m["comparator"] == "mean_shift" and "validation" in m["comparator_choice"]["reason"]
    assert not m["comparator_choice"]["validation"]["jepa_set"]["eligible"]
    v = m["verdict"]
    # the pre-registered primary, not the better JEPA model on test (jepa_prototype)
    assert v["model"] == "jepa_set" and v["baseline"] == "mean_shift" and v["outcome"] == "wins"
    assert v["vs_pca_twin"]["twin"] == "pca_set" and v["vs_pca_twin"]["outcome"] == "wins"
    assert v["edistance"]["family_size"] == 2
    other = summarize(_frame(test, ROLES), val, primary="jepa_prototype", n_boot=200)
    assert other["verdict"]["model"] == "jepa_prototype"
    # with too few conditions the same differences are not a claim
    few = summarize(_frame({k: x[:9] for k, x in test.items()}, ROLES), val, n_boot=200)
    assert few["verdict"]["outcome"] == "insufficient evidence" and few["verdict"]["n"] == 9


def test_low_coverage_and_jepa_methods_cannot_be_the_comparator():
    val = _frame({"mean_shift": [0.5] * 4, "linear_go": [0.1] * 4, "jepa_set": [0.0] * 4}, ROLES,
                 covered={"linear_go": False})
    choice = choose_comparator({m: ROLES[m] for m in ("mean_shift", "linear_go", "jepa_set")}, val)
    assert choice["comparator"] == "mean_shift"
    assert choice["validation"]["linear_go"]["why"].startswith("covers 0%")
    none = choose_comparator({"mean_shift": "baseline", "jepa_set": "jepa"}, None)
    assert none["comparator"] == "mean_shift" and none["reason"].startswith("no validation scores")


def test_conditions_without_an_effect_stay_out_of_the_verdict():
    n = 16
    effect = [True] * 11 + [False] * 5
    test = {"mean_shift": [1.0] * 11 + [0.0] * 5, "pca_set": [1.0] * n, "jepa_set": [0.5] * 11 + [5.0] * 5}
    val = _frame({k: [0.2] for k in test}, ROLES)
    m = summarize(_frame(test, ROLES, has_effect=effect), val, n_boot=200)
    assert m["n_effect_conditions"] == 11 and m["conditions_without_effect"] == [f"c{i}" for i in range(11, 16)]
    assert m["verdict"]["n"] == 11 and m["verdict"]["n_without_effect"] == 5
    assert m["verdict"]["edistance"]["diff"] == pytest.approx(-0.5) and m["verdict"]["outcome"] == "wins"
    # over all conditions the JEPA model would be worse: the table shows both
    assert m["methods"]["jepa_set"]["edistance"]["mean"] > m["methods"]["mean_shift"]["edistance"]["mean"]
    assert m["methods"]["jepa_set"]["edistance_effect"]["mean"] == pytest.approx(0.5)


def test_a_report_corrects_over_all_its_rows():
    n = 12
    rng = np.random.default_rng(0)
    metrics = []
    for shift in (-0.05, -0.05, -0.05):
        test = {"mean_shift": list(1 + rng.normal(0, 0.05, n)), "pca_set": list(np.ones(n))}
        test["jepa_set"] = list(np.array(test["mean_shift"]) + shift + rng.normal(0, 0.08, n))
        metrics.append(summarize(_frame(test, ROLES), _frame({k: [0.3] for k in test}, ROLES), n_boot=200))
    ps = [r["p"] for m in metrics for r in (m["verdict"]["edistance"], m["verdict"]["vs_pca_twin"])]
    assert holm_over(metrics) == 6
    adjusted = [r["p_holm"] for m in metrics for r in (m["verdict"]["edistance"], m["verdict"]["vs_pca_twin"])]
    np.testing.assert_allclose(adjusted, multipletests(ps, method="holm")[1])
    for m in metrics:
        assert m["verdict"]["outcome"] == outcome(m["verdict"]["edistance"], p_adjusted=m["verdict"]["edistance"][
            "p_holm"], scale=m["verdict"]["edistance"]["scale"])


def test_pooling_averages_a_condition_over_split_seeds():
    a = _frame({"mean_shift": [1.0, 2.0], "jepa_set": [0.5, 1.0]}, ROLES)
    b = _frame({"mean_shift": [3.0, 4.0], "jepa_set": [1.5, 2.0]}, ROLES)
    for f, s, p in ((a, 0, 0.01), (b, 1, 0.2)):
        f["split_seed"], f["fold"], f["etest_p_adj"] = s, 0, p
    pooled = pool_conditions([a, b])
    row = pooled[(pooled["method"] == "mean_shift") & (pooled["condition"] == "c0")].iloc[0]
    assert row["edistance"] == 2.0 and row["n_split_seeds"] == 2
    assert row["etest_p_adj"] == pytest.approx(0.105) and not row["has_effect"]  # the median p decides


def test_split_half_noise_and_the_etest_on_real_cells(k562):
    x = np.asarray(k562.obsm["X_pca"])
    ctrl = x[k562.obs["is_control"].to_numpy(bool)]
    pids = k562.obs["perturbation_id"].astype(str).to_numpy()
    big = "CEBPE+RUNX1T1"  # a strong response of the Norman screen (100 cells)
    pert = x[pids == big]
    assert len(pert) == 100
    rng = np.random.default_rng(0)
    null = ctrl[rng.permutation(len(ctrl))[:60]]  # control cells posing as a condition: no effect
    noise = split_half_noise([pert, null])
    assert np.all(np.abs(noise) < 0.5)
    res = condition_effects(["real", "null"], [pert, null], ["k562", "k562"], {"k562": ctrl}, n_permutations=500)
    print(f"K562 condition {big}: E-test p_adj {res.loc['real', 'etest_p_adj']:.4f}; "
          f"controls as a condition: {res.loc['null', 'etest_p_adj']:.3f}; noise floors {noise.round(4)}")
    assert res.loc["real", "has_effect"] and not res.loc["null", "has_effect"]
    assert res.loc["real", "etest_edistance"] > 5 * abs(noise[0])
