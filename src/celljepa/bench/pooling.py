"""Pooling and the verdict: conditions over folds and seeds, the comparator chosen on validation, the claims.

The comparison is pre-registered (``docs/evaluation.md``, protocol v3): the primary model is named in the run
config; its comparator is the non-JEPA method (every baseline, the PCA twin, every peer) with the lowest
*out-of-sample* validation E-distance (each method scored on validation conditions it did not tune on,
:mod:`celljepa.bench.evaluate`). Test scores never choose a method. Every CI is a hierarchical bootstrap over
split seeds (or folds), model seeds and conditions (:func:`celljepa.eval.bootstrap.hierarchical_bootstrap`);
claims use the conditions with a detectable effect, and only rows with at least
:data:`~celljepa.eval.verdict.MIN_CONDITIONS` of them are in the claims family (:mod:`celljepa.eval.verdict`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._errors import InputError
from ..eval.bootstrap import HIERARCHICAL_RULE, N_HIERARCHICAL, SeedCube, hierarchical_bootstrap
from ..eval.effects import EFFECT_SE_Z
from ..eval.verdict import ALPHA, MIN_CONDITIONS, VERDICT_METRICS, claimable, holm_over, sign_flip_pvalue

__all__ = [
    "DEFAULT_PRIMARY",
    "FALLBACK_COMPARATOR",
    "METRICS",
    "MIN_COVERAGE",
    "NON_JEPA_ROLES",
    "PRIMARY",
    "choose_comparator",
    "method_roles",
    "paired_difference",
    "pool_conditions",
    "pooled_effects",
    "seed_summary",
    "summarize",
]

# Metric name -> True when larger is better.
METRICS: dict[str, bool] = {
    "edistance": False,
    "mse": False,
    "cosine_distance": False,
    "delta_pearson": True,
    "delta_pearson_top20_de": True,
    "top1": True,
    "mrr": True,
}
PRIMARY = "edistance"
#: The model a report's verdict is about, unless the run config names another.
DEFAULT_PRIMARY = "jepa_set"
#: Roles of the methods that compete to be the comparator.
NON_JEPA_ROLES = ("baseline", "pca_twin", "peer")
#: A method must cover at least this share of the validation conditions to be the comparator.
MIN_COVERAGE = 0.5
#: The comparator when no method has a validation score (no validation conditions): declared in advance.
FALLBACK_COMPARATOR = "mean_shift"
#: The claims family's rule, in words (stored with every verdict).
CLAIMS_RULE = (
    f"a (dataset, split) row is claimable when it has at least {MIN_CONDITIONS} test conditions with a "
    "detectable effect (E-test and split-half standard error; data only, known before any model is "
    "fitted); Holm runs over the claimable rows of one run, one family per verdict metric"
)
#: Columns of a per-seed frame that identify a score (the rest are metrics).
_KEYS = ("method", "condition", "split_seed", "fold", "model_seed")


def method_roles(per_condition: pd.DataFrame) -> dict[str, str]:
    """``{method: role}`` from a per-condition frame (older frames: from their is_baseline / is_control flags)."""
    first = per_condition.drop_duplicates("method").set_index("method")
    if "role" in first:
        return {m: str(r) for m, r in first["role"].items()}
    out = {}
    for m, r in first.iterrows():
        if bool(r.get("is_baseline", False)):
            out[m] = "baseline"
        elif bool(r.get("is_control", False)) or str(m).startswith("pca_"):
            out[m] = "pca_twin"
        else:
            out[m] = "jepa"
    return out


def choose_comparator(
    roles: dict[str, str],
    validation: pd.DataFrame | None,
    *,
    test_coverage: dict[str, float] | None = None,
    primary: str | None = None,
) -> dict:
    """The non-JEPA method with the lowest mean out-of-sample validation E-distance, and why.

    ``validation`` has one row per method × validation condition (× fold and split seed): the E-distance of
    the method's prediction of a validation condition that it did not tune on (NaN where it cannot predict
    it). Eligible: role ``baseline``, ``pca_twin`` or ``peer``, a validation score, and at least
    :data:`MIN_COVERAGE` of the validation conditions covered; a method's score is its mean over the
    conditions it covers. Without validation scores the comparator is :data:`FALLBACK_COMPARATOR` (declared
    in advance), never a test score. ``primary`` (a non-JEPA method named the primary model, e.g. a user
    model) is never its own comparator: it leaves the pool.

    Returns
    -------
    ``{"comparator", "reason", "rule", "validation": {method: {"edistance", "n", "coverage", "eligible", "why"}}}``
    """
    pool = [m for m, r in roles.items() if r in NON_JEPA_ROLES and m != primary]
    table: dict[str, dict] = {}
    # every validation unit (condition, per fold and split seed) any method was scored on: a method not run in a
    # fold has no row there and covers none of that fold's conditions
    units = [c for c in ("split_seed", "fold", "condition") if validation is not None and c in validation]
    n_units = len(validation[units].drop_duplicates()) if validation is not None and len(validation) else 0
    for m in roles:
        sel = validation[validation["method"] == m] if validation is not None and len(validation) else None
        e = sel["edistance"].to_numpy(dtype=float) if sel is not None else np.array([])
        e = e[np.isfinite(e)]
        coverage = (
            float(sel["covered"].astype(bool).sum()) / n_units
            if sel is not None and len(sel) and n_units
            else float("nan")
        )
        entry = {
            "edistance": float(e.mean()) if e.size else None,
            "n": int(e.size),
            "coverage": coverage if np.isfinite(coverage) else None,
            "role": roles[m],
            "test_coverage": (test_coverage or {}).get(m),
        }
        if sel is not None and "val_selection" in sel and len(sel):
            kinds = sel["val_selection"].dropna().astype(str)
            entry["selection"] = "; ".join(
                f"{k} ({n} of {len(sel)})" if len(kinds.unique()) > 1 else k for k, n in kinds.value_counts().items()
            )
        if roles[m] not in NON_JEPA_ROLES:
            entry.update(eligible=False, why="JEPA model (not a comparator)")
        elif m == primary:
            entry.update(eligible=False, why="the primary model (compared with the pool, not in it)")
        elif not e.size:
            entry.update(eligible=False, why="no validation score")
        elif coverage < MIN_COVERAGE:
            entry.update(
                eligible=False,
                why=f"covers {coverage:.0%} of the validation conditions (< "
                f"{MIN_COVERAGE:.0%}): not a baseline for this split",
            )
        else:
            entry.update(eligible=True, why="")
        table[m] = entry
    rule = (
        "lowest mean E-distance on validation conditions the method did not tune on (cross-fitted: tuned on "
        "one part of the validation conditions, scored on the other), among the non-JEPA methods (baselines, "
        f"PCA twin, peers) that cover at least {MIN_COVERAGE:.0%} of them"
    )
    eligible = [m for m in pool if table[m]["eligible"]]
    if eligible:
        best = min(eligible, key=lambda m: (table[m]["edistance"], pool.index(m)))
        reason = (
            f"lowest out-of-sample validation E-distance ({table[best]['edistance']:.4g} over "
            f"{table[best]['n']} validation conditions) of {len(eligible)} eligible non-JEPA methods"
        )
    elif FALLBACK_COMPARATOR in pool:
        best, reason = FALLBACK_COMPARATOR, (f"no validation scores: the pre-declared fallback {FALLBACK_COMPARATOR}")
    elif pool:
        best, reason = pool[0], "no validation scores: the first non-JEPA method"
    else:
        best, reason = None, "no non-JEPA method was scored"
    return {"comparator": best, "reason": reason, "rule": rule, "validation": table}


def _frame_by_method(per_condition: pd.DataFrame, methods: list[str]) -> dict[str, pd.DataFrame]:
    """One frame per method, every one indexed by all the conditions of ``per_condition`` (first-seen order).

    A method without a row for a condition (not run in that fold) gets a row of NaN metrics with ``covered``
    False: it is n/a there, counted against its coverage, never scored with another method's value.
    """
    conditions = pd.Index(list(dict.fromkeys(per_condition["condition"])), name="condition")
    out = {}
    for m in methods:
        frame = per_condition[per_condition["method"] == m].set_index("condition")
        if len(frame) != len(conditions) or not frame.index.equals(conditions):
            first = frame.iloc[0] if len(frame) else None
            frame = frame.reindex(conditions)
            if "covered" in frame:
                frame["covered"] = frame["covered"].astype("boolean").fillna(False).astype(bool)
            for col in ("method", "role", "is_baseline"):
                if col in frame and first is not None:
                    frame.loc[frame[col].isna(), col] = first[col]
        out[m] = frame
    return out


def _interval(cube: SeedCube, values: np.ndarray, conditions, *, n_boot: int, seed: int) -> dict:
    return hierarchical_bootstrap(values, cube.fold_index(conditions), n_boot=n_boot, seed=seed)


def _per_condition(values: np.ndarray) -> np.ndarray:
    """Each condition's mean over split seeds and model seeds (NaN where never scored)."""
    finite = np.isfinite(values)
    count = finite.sum(axis=(0, 1))
    return np.divide(
        np.where(finite, values, 0.0).sum(axis=(0, 1)), count, out=np.full(values.shape[2], np.nan), where=count > 0
    )


def paired_difference(
    cube: SeedCube, a: str, b: str, metric: str, conditions, *, n_boot: int, seed: int, with_p: bool = True
) -> dict:
    """``metric(a) − metric(b)``: the mean over conditions, its hierarchical CI and the sign-flip p-value."""
    d = cube.values(a, metric, conditions) - cube.values(b, metric, conditions)
    ci = _interval(cube, d, conditions, n_boot=n_boot, seed=seed)
    out = {
        "diff": ci["mean"],
        "ci_low": ci["ci_low"],
        "ci_high": ci["ci_high"],
        "n": ci["n"],
        "metric": metric,
        "higher_is_better": METRICS.get(metric, False),
    }
    if with_p:
        per = _per_condition(d)
        out["p"] = sign_flip_pvalue(per[np.isfinite(per)], seed=seed)
    return out


def summarize(
    per_condition: pd.DataFrame,
    validation: pd.DataFrame | None = None,
    *,
    per_seed: pd.DataFrame,
    primary: str = DEFAULT_PRIMARY,
    comparator: str | None = None,
    n_boot: int = N_HIERARCHICAL,
    seed: int = 0,
    min_conditions: int = MIN_CONDITIONS,
    alpha: float = ALPHA,
) -> dict:
    """Aggregate one dataset × split (one fold, or folds pooled over split seeds) into the metrics.json layout.

    Parameters
    ----------
    per_condition
        One row per method × condition: metrics averaged over model seeds (and split seeds), ``has_effect``,
        ``covered``, ``role``.
    validation
        Out-of-sample validation E-distances (one row per method × validation condition); chooses the
        comparator (:func:`choose_comparator`) unless ``comparator`` names it.
    per_seed
        One row per method × split seed × fold × model seed × condition (``model_seed`` NaN for methods without
        one): the units of the hierarchical bootstrap behind every CI.
    primary
        The pre-registered primary model; with it, the verdict: primary vs comparator and vs its PCA twin on
        the conditions with an effect, for every verdict metric (E-distance primary, MSE, Pearson-delta),
        labelled within this summary's own claims family (a run labels its rows together again,
        :func:`celljepa.eval.verdict.holm_over`).
    n_boot, seed
        Resamples of the hierarchical bootstrap and its seed.
    """
    methods = list(dict.fromkeys(per_condition["method"]))
    roles = method_roles(per_condition)
    wide = _frame_by_method(per_condition, methods)
    conditions = wide[methods[0]].index
    # the effect filter is data only: the same for every method that scored a condition
    first = per_condition.groupby("condition", sort=False).first().reindex(conditions)
    if "has_effect" in first:
        effect = first["has_effect"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    else:
        effect = np.ones(len(conditions), dtype=bool)
    effect_conds = list(conditions[effect])
    frame = per_seed.copy()
    for col, default in (("split_seed", 0), ("fold", 0)):
        if col not in frame:
            frame[col] = default
    cube = SeedCube.from_frame(frame, conditions)
    test_coverage = {m: float(wide[m]["covered"].astype(bool).mean()) for m in methods if "covered" in wide[m]}
    out = {
        "n_test_conditions": int(len(conditions)),
        "n_effect_conditions": int(effect.sum()),
        "conditions_without_effect": [str(c) for c in conditions[~effect]],
        "methods": {},
        "roles": roles,
        "coverage": test_coverage,
        "comparisons": {},
        "metric_higher_is_better": METRICS,
        "primary_metric": PRIMARY,
        "primary": primary,
        "ci_method": {
            "rule": HIERARCHICAL_RULE,
            "n_boot": int(n_boot),
            "seed": int(seed),
            "split_seeds": [int(s) for s in cube.split_seeds],
            "model_seeds": [int(s) for s in cube.model_seeds if np.isfinite(s)],
        },
    }
    for m in methods:
        stats = {}
        for k in METRICS:
            r = _interval(cube, cube.values(m, k), None, n_boot=n_boot, seed=seed)
            stats[k] = {key: r[key] for key in ("mean", "ci_low", "ci_high", "n")}
        r = _interval(cube, cube.values(m, PRIMARY, effect_conds), effect_conds, n_boot=n_boot, seed=seed)
        stats["edistance_effect"] = {key: r[key] for key in ("mean", "ci_low", "ci_high", "n")}
        out["methods"][m] = stats
    out["effect_filter"] = _effect_summary(first)
    choice = choose_comparator(roles, validation, test_coverage=test_coverage, primary=primary)
    if comparator is not None:
        if comparator not in methods:
            raise InputError(f"comparator {comparator!r} was not scored; methods: {methods}.")
        choice = {
            **choice,
            "comparator": comparator,
            "reason": choice["reason"]
            if comparator == choice["comparator"]
            else f"given by the caller ({choice['reason']} elsewhere)",
        }
    best = choice["comparator"]
    out["comparator"] = best
    out["comparator_choice"] = choice
    if best is None:
        return out
    for m in methods:
        if m != best:
            out["comparisons"][f"{m} vs {best}"] = {
                k: {
                    key: v
                    for key, v in paired_difference(
                        cube, m, best, k, None, n_boot=n_boot, seed=seed, with_p=False
                    ).items()
                    if key in ("diff", "ci_low", "ci_high", "n")
                }
                for k in METRICS
            }
    # the primary is a JEPA model, or a non-JEPA method the run named primary (a user model): compared with the
    # best of the rest of the pool; only a JEPA primary is also compared with its PCA twin
    if primary in methods and best != primary:
        out["verdict"] = _verdict(
            cube,
            wide,
            effect_conds,
            primary,
            best,
            roles,
            choice,
            n_boot=n_boot,
            seed=seed,
            n_without=int((~effect).sum()),
            min_conditions=min_conditions,
        )
        holm_over([out], alpha=alpha)
    elif any(r == "jepa" for r in roles.values()):
        out["verdict_note"] = (
            f"the pre-registered primary model {primary!r} was not scored (JEPA models: "
            f"{[m for m, r in roles.items() if r == 'jepa']}); no verdict"
        )
    return out


def _effect_summary(first: pd.DataFrame) -> dict:
    """How many conditions each part of the effect filter let through (data only, the same for every method)."""
    out = {"n_test": int(len(first))}
    if "etest_p_adj" in first:
        out["n_etest"] = int((first["etest_p_adj"] < 0.05).sum())
    if "clears_noise" in first:
        out["n_clears_noise"] = int(first["clears_noise"].astype(bool).sum())
    if "has_effect" in first:
        out["n_effect"] = int(first["has_effect"].astype(bool).sum())
    if "effect_se" in first:
        se = first["effect_se"].to_numpy(dtype=float)
        e = first["etest_edistance"].to_numpy(dtype=float) if "etest_edistance" in first else se * np.nan
        ok = np.isfinite(se) & np.isfinite(e) & (se > 0)
        out["effect_se_median"] = float(np.median(se[np.isfinite(se)])) if np.isfinite(se).any() else None
        out["effect_over_se_median"] = float(np.median(e[ok] / se[ok])) if ok.any() else None
    return out


def _verdict(
    cube: SeedCube,
    wide,
    conds,
    primary: str,
    comparator: str,
    roles,
    choice,
    *,
    n_boot: int,
    seed: int,
    n_without: int,
    min_conditions: int,
) -> dict:
    def mean(m):
        x = wide[m].loc[conds, PRIMARY].to_numpy(dtype=float) if len(conds) else np.array([])
        x = x[np.isfinite(x)]
        return float(x.mean()) if x.size else None

    twin = next((m for m, r in roles.items() if r == "pca_twin"), None) if roles.get(primary) == "jepa" else None
    scale = {m: abs(mean(m) or 1.0) for m in (comparator, twin) if m is not None}
    v = {
        "model": primary,
        "baseline": comparator,
        "chosen_on": "validation (out-of-sample)",
        "comparator_reason": choice["reason"],
        "conditions": "with a detectable effect (E-test and standard error)",
        "n": len(conds),
        "n_without_effect": n_without,
        "claimable": claimable(len(conds), min_conditions),
        "min_conditions": int(min_conditions),
        "claims_rule": CLAIMS_RULE,
        "means": {"model": mean(primary), "baseline": mean(comparator), "twin": mean(twin) if twin else None},
        "seed_means": {
            m: cube.seed_means(m, PRIMARY, conds) for m in dict.fromkeys([primary, comparator, twin]) if m is not None
        },
        "secondary": {},
    }

    def pair(other, metric):
        return paired_difference(cube, primary, other, metric, conds, n_boot=n_boot, seed=seed)

    for metric in VERDICT_METRICS:
        rows = {"vs_comparator": {**pair(comparator, metric), "scale": scale[comparator]}}
        if twin is not None:
            t = {**pair(twin, metric), "scale": scale[twin], "twin": twin}
            if metric == PRIMARY:
                t["twin_mean"] = v["means"]["twin"]
            if twin == comparator:
                t["same_as_comparator"] = True
            rows["vs_pca_twin"] = t
        if metric == PRIMARY:
            v["edistance"] = rows["vs_comparator"]
            if "vs_pca_twin" in rows:
                v["vs_pca_twin"] = rows["vs_pca_twin"]
        else:
            v["secondary"][metric] = rows
    return v


# ------------------------------------------------------------------------------------- pooling seeds

#: Per-condition columns that are the same for every fold and split seed a condition appears in.
KEEP_FIRST = (
    "role",
    "is_baseline",
    "context_id",
    "perturbation_id",
    "dose",
    "time_hours",
    "n_tokens",
    "n_cells_observed",
    "n_cells_predicted",
)


def pooled_effects(
    frame: pd.DataFrame, *, effect_alpha: float = 0.05, effect_se_z: float | None = None
) -> pd.DataFrame:
    """Whether each condition has an effect, over the folds and split seeds it was tested in (data only).

    ``frame`` has one row per condition and fold (``condition``, ``etest_p_adj``, ``etest_edistance``,
    ``effect_se``). A condition *has an effect* when the median of its adjusted E-test p-values is below
    ``effect_alpha`` and its mean E-distance to the controls exceeds ``effect_se_z`` (default
    :data:`~celljepa.eval.effects.EFFECT_SE_Z`) times its mean standard error. Returns one row per condition.
    """
    z = EFFECT_SE_Z if effect_se_z is None else effect_se_z
    groups = frame.groupby("condition", sort=False)
    out = pd.DataFrame({"etest_p_adj": groups["etest_p_adj"].median()})
    for col in ("etest_edistance", "effect_se"):
        if col in frame:
            out[col] = groups[col].mean()
    out["has_effect"] = out["etest_p_adj"] < effect_alpha
    if "effect_se" in out:
        out["clears_noise"] = (out["etest_edistance"] > z * out["effect_se"]).fillna(False)
        out["has_effect"] &= out["clears_noise"]
    return out


def pool_conditions(
    frames: list[pd.DataFrame], *, effect_alpha: float = 0.05, effect_se_z: float | None = None
) -> pd.DataFrame:
    """One row per method × condition over several folds and split seeds (a condition's mean over them).

    Each frame is a fold's ``per_condition`` with ``split_seed`` and ``fold`` columns. A condition tested
    under several split seeds gets the mean of its metrics and its effect flags from :func:`pooled_effects`;
    ``covered`` is the share of its folds where the method predicted it.
    """
    frame = pd.concat(frames, ignore_index=True)
    groups = frame.groupby(["method", "condition"], sort=False, dropna=False)
    keep = [c for c in KEEP_FIRST if c in frame]
    out = groups[keep].first()
    numeric = [c for c in list(METRICS) + ["rank", "edistance_sd_seeds"] if c in frame]
    out = out.join(groups[numeric].mean())
    if "covered" in frame:
        out["covered"] = groups["covered"].mean()
    if "etest_p_adj" in frame:
        first = frame[frame["method"] == frame["method"].iloc[0]]  # the effect columns are the same for every method
        effects = pooled_effects(first, effect_alpha=effect_alpha, effect_se_z=effect_se_z)
        out = out.join(effects, on="condition")
    if "n_model_seeds" in frame:
        out["n_model_seeds"] = groups["n_model_seeds"].max()
    if "split_seed" in frame:
        out["n_split_seeds"] = groups["split_seed"].nunique()
    return out.reset_index()


def seed_summary(
    per_seed: pd.DataFrame, metrics: dict, effect_conditions, *, n_boot: int = N_HIERARCHICAL, seed: int = 0
) -> dict:
    """Every split seed's own verdict differences, and every method's mean per model seed, beside a pooled verdict.

    ``per_seed`` holds the pooled run's per-seed rows (``split_seed``, ``fold``, ``model_seed``); the
    comparator and twin are the pooled ones. Each split seed's CI is the hierarchical bootstrap within it (folds,
    model seeds, conditions). Returns ``{"split_seeds": {seed: {...}}, "model_seeds": {method: {...}}}``.
    """
    out: dict = {"split_seeds": {}, "model_seeds": {}}
    v = metrics.get("verdict")
    conds = list(effect_conditions)
    for s, part in per_seed.groupby("split_seed", sort=True):
        cube = SeedCube.from_frame(part, conds)
        entry = {
            "n": int(np.isfinite(_per_condition(cube.values(metrics["comparator"], PRIMARY))).sum())
            if metrics.get("comparator")
            else 0,
            "means": {m: _mean(cube.values(m, PRIMARY)) for m in metrics["methods"]},
        }
        if v:
            entry["vs_comparator"] = paired_difference(
                cube, v["model"], v["baseline"], PRIMARY, None, n_boot=n_boot, seed=seed
            )
            twin = v.get("vs_pca_twin")
            if twin:
                entry["vs_pca_twin"] = paired_difference(
                    cube, v["model"], twin["twin"], PRIMARY, None, n_boot=n_boot, seed=seed
                )
        out["split_seeds"][int(s)] = entry
    seeded = per_seed[per_seed["model_seed"].notna()]
    for method, sel in seeded.groupby("method", sort=False):
        by_seed = sel.groupby("model_seed")["edistance"].mean()
        out["model_seeds"][method] = {
            "per_seed": {int(k): float(x) for k, x in by_seed.items()},
            "sd": float(by_seed.std(ddof=1)) if len(by_seed) > 1 else None,
        }
    return out


def _mean(values: np.ndarray) -> float | None:
    per = _per_condition(values)
    per = per[np.isfinite(per)]
    return float(per.mean()) if per.size else None
