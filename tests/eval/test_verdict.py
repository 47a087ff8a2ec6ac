"""The claim rule: exact sign-flip test, the claims family, Holm per run, the labels, the effect filter, the comparator
chosen on validation."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

from celljepa.bench.pooling import choose_comparator, pool_conditions, summarize
from celljepa.eval.effects import condition_effects, edistance_se
from celljepa.eval.verdict import (
    OUTCOMES,
    apply_holm,
    claimable,
    enumerated_sign_flip_hits,
    exact_sign_flip_hits,
    holm_over,
    label,
    outcome,
    paired_comparison,
    sign_flip_pvalue,
)


def _brute_force(d):
    d = np.asarray(d, dtype=float)
    obs = abs(d.mean())
    hits = sum(abs((np.array(s) * d).mean()) >= obs - 1e-12 for s in itertools.product([1, -1], repeat=d.size))
    return hits / 2**d.size


@pytest.mark.parametrize(
    "d", [[0.3, -0.1, 0.2, 0.05, 0.4], [1.0, 2.0, 3.0], [-0.2, -0.2, 0.2, -0.5, -0.1, -0.3, 0.0], [0.1] * 8]
)
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
    assert exact_sign_flip_hits(np.ones(n), 0.0) == 2**n


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


def test_the_labels_say_what_the_statistics_show():
    win = {"diff": -0.3, "ci_low": -0.5, "ci_high": -0.1, "p": 0.001, "n": 12}
    assert outcome(win) == "wins"
    assert outcome({**win, "diff": 0.3, "ci_low": 0.1, "ci_high": 0.5}) == "loses"
    # not claimable: the row is not in the claims family, whatever its numbers
    assert outcome({**win, "n": 9}, claimable_row=False) == "not claimable"
    assert label({**win, "n": 9, "outcome": "not claimable"}) == "not claimable (n = 9)"
    # the CI includes 0, or the p-value does not survive Holm: no detectable difference, never a tie
    assert outcome({**win, "ci_high": 0.05}) == "no detectable difference"
    lost = {**win, "diff": 0.223, "ci_low": 0.06, "ci_high": 0.383}
    assert outcome(lost, p_adjusted=0.12) == "no detectable difference"
    assert (
        label({**lost, "outcome": "no detectable difference"})
        == "no detectable difference (the unadjusted CI excludes 0)"
    )
    assert (
        outcome({"diff": 1e-9, "ci_low": -1e-9, "ci_high": 1e-9, "n": 30, "p": 0.001}) == "no detectable difference"
    )  # identical up to rounding
    assert outcome({"diff": float("nan"), "ci_low": 0, "ci_high": 0, "n": 0}) == "undetermined"
    # a metric where higher is better (Pearson-delta): a CI above 0 wins
    assert outcome({**win, "diff": 0.2, "ci_low": 0.1, "ci_high": 0.3}, higher_is_better=True) == "wins"
    assert outcome(win, higher_is_better=True) == "loses"
    assert "ties" not in OUTCOMES and "insufficient evidence" not in OUTCOMES
    rows = [{**win, "n": 20, "p": p} for p in (0.01, 0.02, 0.04)]
    apply_holm(rows)
    np.testing.assert_allclose([r["p_holm"] for r in rows], multipletests([0.01, 0.02, 0.04], method="holm")[1])
    assert [r["outcome"] for r in rows] == ["wins", "wins", "wins"]
    rows = [{**win, "n": 20, "p": p} for p in (0.01, 0.03, 0.04, 0.04)]
    apply_holm(rows)  # raw p < 0.05 everywhere, yet only the first survives Holm (0.04, 0.09, 0.09, 0.09)
    assert [r["outcome"] for r in rows] == ["wins"] + ["no detectable difference"] * 3
    assert rows[0]["family_size"] == 4


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
            rows.append(
                {
                    "method": m,
                    "role": roles[m],
                    "condition": f"c{i}",
                    "edistance": v,
                    "has_effect": True if has_effect is None else has_effect[i],
                    "covered": True if covered is None else covered.get(m, True),
                }
            )
    frame = pd.DataFrame(rows)
    for k in METRICS:
        frame[k] = 0.5
    frame["model_seed"], frame["split_seed"], frame["fold"] = np.nan, 0, 0
    return frame


def _summ(frame, val=None, **kw):
    return summarize(frame, val, per_seed=frame, n_boot=kw.pop("n_boot", 500), **kw)


ROLES = {
    "mean_shift": "baseline",
    "ridge": "baseline",
    "pca_set": "pca_twin",
    "jepa_set": "jepa",
    "jepa_prototype": "jepa",
    "linear_go": "baseline",
}


def test_the_comparator_is_chosen_on_validation_even_when_another_method_is_better_on_test():
    n = 14
    test = {
        "mean_shift": [1.0] * n,
        "ridge": [0.5] * n,
        "pca_set": [0.8] * n,
        "jepa_set": [0.7] * n,
        "jepa_prototype": [0.1] * n,
    }
    val = _frame(
        {
            "mean_shift": [0.3] * 5,
            "ridge": [0.6] * 5,
            "pca_set": [0.9] * 5,
            "jepa_set": [0.1] * 5,
            "jepa_prototype": [0.05] * 5,
        },
        ROLES,
    )
    m = _summ(_frame(test, ROLES), val)
    # ridge is best on test, but mean_shift is best on validation; JEPA models never compete
    assert m["comparator"] == "mean_shift" and "validation" in m["comparator_choice"]["reason"]
    assert not m["comparator_choice"]["validation"]["jepa_set"]["eligible"]
    v = m["verdict"]
    # the pre-registered primary, not the better JEPA model on test (jepa_prototype)
    assert v["model"] == "jepa_set" and v["baseline"] == "mean_shift" and v["outcome"] == "wins"
    assert v["vs_pca_twin"]["twin"] == "pca_set" and v["vs_pca_twin"]["outcome"] == "wins"
    assert v["edistance"]["family_size"] == 2 and v["claimable"]
    other = _summ(_frame(test, ROLES), val, primary="jepa_prototype")
    assert other["verdict"]["model"] == "jepa_prototype"
    # with too few conditions the same differences are not a claim
    few = _summ(_frame({k: x[:9] for k, x in test.items()}, ROLES), val)
    assert few["verdict"]["outcome"] == "not claimable" and few["verdict"]["n"] == 9
    assert few["verdict"]["edistance"]["p_holm"] is None and not few["verdict"]["claimable"]


def test_low_coverage_and_jepa_methods_cannot_be_the_comparator():
    val = _frame(
        {"mean_shift": [0.5] * 4, "linear_go": [0.1] * 4, "jepa_set": [0.0] * 4}, ROLES, covered={"linear_go": False}
    )
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
    m = _summ(_frame(test, ROLES, has_effect=effect), val)
    assert m["n_effect_conditions"] == 11 and m["conditions_without_effect"] == [f"c{i}" for i in range(11, 16)]
    assert m["verdict"]["n"] == 11 and m["verdict"]["n_without_effect"] == 5
    assert m["verdict"]["edistance"]["diff"] == pytest.approx(-0.5) and m["verdict"]["outcome"] == "wins"
    # over all conditions the JEPA model would be worse: the table shows both
    assert m["methods"]["jepa_set"]["edistance"]["mean"] > m["methods"]["mean_shift"]["edistance"]["mean"]
    assert m["methods"]["jepa_set"]["edistance_effect"]["mean"] == pytest.approx(0.5)


def _run_rows(shifts, n, seed):
    rng = np.random.default_rng(seed)
    metrics = []
    for shift in shifts:
        test = {"mean_shift": list(1 + rng.normal(0, 0.05, n)), "pca_set": list(np.ones(n))}
        test["jepa_set"] = list(np.array(test["mean_shift"]) + shift + rng.normal(0, 0.08, n))
        metrics.append(_summ(_frame(test, ROLES), _frame({k: [0.3] for k in test}, ROLES)))
    return metrics


def test_holm_runs_over_the_claimable_rows_of_one_run_per_metric():
    metrics = _run_rows((-0.05, -0.05, -0.05), 12, 0) + _run_rows((-0.3,), 7, 1)  # the last row: n = 7
    ps = [r["p"] for m in metrics[:3] for r in (m["verdict"]["edistance"], m["verdict"]["vs_pca_twin"])]
    sizes = holm_over(metrics)
    assert sizes == {"edistance": 6, "mse": 6, "delta_pearson": 6}  # the n = 7 row does not dilute the others
    adjusted = [r["p_holm"] for m in metrics[:3] for r in (m["verdict"]["edistance"], m["verdict"]["vs_pca_twin"])]
    np.testing.assert_allclose(adjusted, multipletests(ps, method="holm")[1])
    for m in metrics[:3]:
        e = m["verdict"]["edistance"]
        assert m["verdict"]["outcome"] == outcome(e, p_adjusted=e["p_holm"], scale=e["scale"])
    small = metrics[3]["verdict"]
    assert small["outcome"] == "not claimable" and small["edistance"]["p_holm"] is None
    assert small["vs_pca_twin"]["outcome"] == "not claimable" and not claimable(small["n"])
    # every secondary metric is labelled in its own family, with its own direction
    for m in metrics[:3]:
        for metric in ("mse", "delta_pearson"):
            row = m["verdict"]["secondary"][metric]["vs_comparator"]
            assert row["family_size"] == 6 and row["higher_is_better"] == (metric == "delta_pearson")


def test_merging_an_unrelated_run_leaves_every_verdict_unchanged(tmp_path):
    """A run's labels are its own: a report never corrects again (the whole path in tests/bench/test_consolidate)."""
    import copy

    one = _run_rows((-0.05, -0.08), 12, 3)
    holm_over(one)
    before = copy.deepcopy([m["verdict"] for m in one])
    other = _run_rows((-0.02, 0.0, 0.01), 15, 4)
    holm_over(other)  # another run labels its own rows
    assert [m["verdict"] for m in one] == before


def test_pooling_averages_a_condition_over_split_seeds():
    a = _frame({"mean_shift": [1.0, 2.0], "jepa_set": [0.5, 1.0]}, ROLES)
    b = _frame({"mean_shift": [3.0, 4.0], "jepa_set": [1.5, 2.0]}, ROLES)
    for f, s, p in ((a, 0, 0.01), (b, 1, 0.2)):
        f["split_seed"], f["fold"], f["etest_p_adj"] = s, 0, p
    for f in (a, b):
        f["etest_edistance"], f["effect_se"] = 1.0, 0.1
    pooled = pool_conditions([a, b])
    row = pooled[(pooled["method"] == "mean_shift") & (pooled["condition"] == "c0")].iloc[0]
    assert row["edistance"] == 2.0 and row["n_split_seeds"] == 2
    assert row["etest_p_adj"] == pytest.approx(0.105) and not row["has_effect"]  # the median p decides
    b["etest_p_adj"] = 0.01
    assert pool_conditions([a, b])["has_effect"].all()
    b["effect_se"] = 0.9  # mean standard error 0.5: the E-distance 1.0 no longer clears 2 standard errors
    pooled = pool_conditions([a, b])
    assert not pooled["has_effect"].any() and not pooled["clears_noise"].any()


def test_the_standard_error_and_the_etest_on_real_cells(k562):
    x = np.asarray(k562.obsm["X_pca"])
    ctrl = x[k562.obs["is_control"].to_numpy(bool)]
    pids = k562.obs["perturbation_id"].astype(str).to_numpy()
    big = "CEBPE+RUNX1T1"  # a strong response of the Norman screen (100 cells)
    pert = x[pids == big]
    assert len(pert) == 100
    rng = np.random.default_rng(0)
    null = ctrl[rng.permutation(len(ctrl))[:60]]  # control cells posing as a condition: no effect
    res = condition_effects(["real", "null"], [pert, null], ["k562", "k562"], {"k562": ctrl}, n_permutations=500)
    real = res.loc["real"]
    print(
        f"K562 condition {big}: E-test p_adj {real['etest_p_adj']:.4f}, E {real['etest_edistance']:.3f} ± "
        f"{real['effect_se']:.3f}; controls as a condition: p_adj {res.loc['null', 'etest_p_adj']:.3f}"
    )
    assert res.loc["real", "has_effect"] and res.loc["real", "clears_noise"] and not res.loc["null", "has_effect"]
    assert res.loc["real", "etest_edistance"] > 2 * res.loc["real", "effect_se"] > 0


def test_the_split_half_standard_error_matches_the_spread_of_independent_estimates():
    """The standard error from halves of one sample estimates the spread of the E-distance over fresh samples."""
    from celljepa.eval.edistance import edistance_sets

    rng = np.random.default_rng(5)
    draw = lambda n, mu: rng.normal(mu, 1.0, (n, 4))  # noqa: E731
    fresh = edistance_sets(
        [draw(120, 0.4) for _ in range(60)], [draw(240, 0.0) for _ in range(60)], cap=None, n_resamples=1, seed=0
    )
    truth = float(np.std(fresh, ddof=1))
    se = edistance_se([draw(120, 0.4) for _ in range(20)], [draw(240, 0.0) for _ in range(20)], cap=None, n_halvings=20)
    assert 0.6 * truth < float(np.median(se)) < 1.6 * truth
