"""Claims between two methods: the claims family, sign-flip permutation test, Holm correction, the labels.

A (dataset, split) row can carry a claim only when it has at least :data:`MIN_CONDITIONS` test conditions with
a detectable effect. That count depends on the data, the split and the method-independent effect filter
alone, so the **claims family** is known before any model is fitted. Holm correction runs over the claimable
rows of one run (primary vs comparator, and primary vs the PCA twin), one family per verdict metric, so merging
reports never changes a verdict. Labels (evaluation protocol v3):

* ``wins`` / ``loses``: the Holm-adjusted two-sided sign-flip p-value is below ``alpha`` and the 95% CI of the
  difference lies on the same side of 0;
* ``no detectable difference``: otherwise (the row says when the unadjusted CI excludes 0). Nothing is called
  a tie: equality would need an equivalence test;
* ``not claimable``: fewer than :data:`MIN_CONDITIONS` conditions with an effect; reported descriptively.

This module holds that rule once; benchmark reports, sweeps and holdout runs all call it.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping

import numpy as np
from statsmodels.stats.multitest import multipletests

from .bootstrap import N_BOOTSTRAP, paired_bootstrap_diff

__all__ = [
    "ALPHA",
    "MIN_CONDITIONS",
    "OUTCOMES",
    "VERDICT_METRICS",
    "apply_holm",
    "claimable",
    "enumerated_sign_flip_hits",
    "exact_sign_flip_hits",
    "family_rows",
    "holm",
    "holm_over",
    "label",
    "outcome",
    "paired_comparison",
    "sign_flip_pvalue",
]

#: Fewest conditions with an effect a row needs to be in the claims family.
MIN_CONDITIONS = 10
#: Family-wise error rate of the claims of one run (per verdict metric).
ALPHA = 0.05
#: Differences whose CI lies within this (relative to the reference's mean) are rounding, not a result.
ROUNDING_ATOL = 1e-6
#: Exact enumeration of all 2^n sign patterns up to this n; Monte-Carlo beyond.
EXACT_MAX_N = 20
#: Random sign patterns of the Monte-Carlo test.
N_PERMUTATIONS = 100_000
OUTCOMES = ("wins", "loses", "no detectable difference", "not claimable", "undetermined")
#: The verdict metrics, each with its own Holm family: name -> True when larger is better. E-distance is the
#: pre-registered primary metric; MSE and Pearson-delta (cell-eval's definitions, in the evaluation space)
#: get verdict columns with the same statistics.
VERDICT_METRICS: dict[str, bool] = {"edistance": False, "mse": False, "delta_pearson": True}


def sign_flip_pvalue(
    diffs, *, exact_max_n: int = EXACT_MAX_N, n_permutations: int = N_PERMUTATIONS, seed: int = 0
) -> float:
    """Two-sided sign-flip permutation p-value of ``mean(diffs) = 0`` (paired differences over conditions).

    Under the null hypothesis each paired difference is symmetric around 0, so flipping its sign
    leaves the distribution unchanged. With ``n ≤ exact_max_n`` every one of the ``2^n`` sign
    patterns is enumerated and ``p = #{|mean(s·d)| ≥ |mean(d)|} / 2^n`` (exact; the identity pattern
    counts, so ``p ≥ 2^-n``). Beyond that ``n_permutations`` random patterns (seeded) give the
    Monte-Carlo estimate ``p = (1 + #{...}) / (1 + n_permutations)``. NaN values are dropped; no
    condition, or differences that are all zero, give ``p = 1``.

    Examples
    --------
    >>> sign_flip_pvalue([1.0, 2.0, 3.0])          # only the two all-same-sign patterns reach 6
    0.25
    >>> sign_flip_pvalue([0.0, 0.0])
    1.0
    """
    d = np.asarray(diffs, dtype=np.float64).ravel()
    d = d[np.isfinite(d)]
    n = d.size
    if n == 0 or not np.any(d != 0):
        return 1.0
    observed = abs(d.sum())
    # compare sums (same ordering as means) with a tolerance for floating-point ties
    tol = 1e-9 * max(1.0, float(np.abs(d).sum()))
    if n <= exact_max_n:
        return exact_sign_flip_hits(d, observed - tol) / 2**n
    rng = np.random.default_rng([seed, 0x5F1])
    hits = 0
    done = 0
    while done < n_permutations:
        k = min(4096, n_permutations - done)
        signs = rng.integers(0, 2, size=(k, n), dtype=np.int8).astype(np.float64) * 2.0 - 1.0
        hits += int(np.count_nonzero(np.abs(signs @ d) >= observed - tol))
        done += k
    return (1 + hits) / (1 + n_permutations)


def _half_sums(d: np.ndarray) -> np.ndarray:
    """The ``2^len(d)`` sums ``Σ ±d_i`` over every sign pattern of ``d``."""
    sums = np.zeros(1)
    for v in d:
        sums = np.concatenate([sums + v, sums - v])
    return sums


def exact_sign_flip_hits(d: np.ndarray, threshold: float) -> int:
    """How many of the ``2^n`` sign patterns ``s`` give ``|Σ s_i d_i| ≥ threshold`` (exact count).

    Meet in the middle: the sums of the two halves of ``d`` are enumerated (``2^(n/2)`` each) and, for each
    sum of the first half, the sums of the second half that reach the threshold are counted in the sorted
    second half, so the work is ``O(2^(n/2) · n)`` instead of the ``O(2^n · n)`` of enumerating every
    pattern (:func:`enumerated_sign_flip_hits`, the reference).
    """
    d = np.asarray(d, dtype=np.float64)
    if threshold <= 0:
        return 2**d.size
    h = d.size // 2
    first, second = _half_sums(d[:h]), np.sort(_half_sums(d[h:]))
    # s1 + s2 >= t  <=>  s2 >= t - s1;   s1 + s2 <= -t  <=>  s2 <= -t - s1 (disjoint since t > 0)
    above = second.size - np.searchsorted(second, threshold - first, side="left")
    below = np.searchsorted(second, -threshold - first, side="right")
    return int(above.sum() + below.sum())


def enumerated_sign_flip_hits(d: np.ndarray, threshold: float) -> int:
    """Reference of :func:`exact_sign_flip_hits`: every one of the ``2^n`` patterns, in chunks."""
    d = np.asarray(d, dtype=np.float64)
    n = d.size
    total, hits = 2**n, 0
    chunk = 1 << min(n, 16)
    bits = np.arange(n, dtype=np.int64)
    total_sum = d.sum()
    for start in range(0, total, chunk):
        masks = np.arange(start, min(start + chunk, total), dtype=np.int64)
        flipped = ((masks[:, None] >> bits) & 1).astype(np.float64)  # 1 where the sign flips
        hits += int(np.count_nonzero(np.abs(total_sum - 2.0 * (flipped @ d)) >= threshold))
    return hits


def paired_comparison(a, b, *, n_boot: int = N_BOOTSTRAP, seed: int = 0) -> dict:
    """Mean of ``a − b`` over conditions, its paired bootstrap 95% CI and the sign-flip p-value.

    Conditions where either value is NaN are dropped. Returns ``{"diff", "ci_low", "ci_high", "n", "p"}``.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    out = paired_bootstrap_diff(a, b, n_boot=n_boot, seed=seed)
    keep = np.isfinite(a) & np.isfinite(b)
    out["p"] = sign_flip_pvalue(a[keep] - b[keep], seed=seed)
    return out


def holm(pvalues: Iterable[float]) -> np.ndarray:
    """Holm-adjusted p-values (``statsmodels`` ``multipletests(method="holm")``); NaN stays NaN."""
    p = np.asarray(list(pvalues), dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return out


def claimable(n_effect: int, min_conditions: int = MIN_CONDITIONS) -> bool:
    """Whether a (dataset, split) row with ``n_effect`` conditions with an effect belongs to the claims family.

    Examples
    --------
    >>> claimable(24), claimable(7)
    (True, False)
    """
    return int(n_effect) >= int(min_conditions)


def outcome(
    comp: MutableMapping,
    *,
    p_adjusted: float | None = None,
    claimable_row: bool = True,
    higher_is_better: bool = False,
    scale: float = 1.0,
    alpha: float = ALPHA,
) -> str:
    """The label of one comparison ``A − B``: wins, loses, no detectable difference, not claimable or undetermined.

    Parameters
    ----------
    comp
        ``{"diff", "ci_low", "ci_high", "n"}`` and ``"p"`` (see :func:`paired_comparison`).
    p_adjusted
        The Holm-adjusted p-value of this row within its run's claims family (default: ``comp["p"]``, a family
        of one).
    claimable_row
        Whether the row is in the claims family (:func:`claimable`); otherwise ``"not claimable"``.
    higher_is_better
        The metric's direction (E-distance and MSE: lower is better; Pearson-delta: higher).
    scale
        Magnitude of the reference's metric; a CI within ``ROUNDING_ATOL · max(scale, 1)`` of 0 (identical
        predictions up to rounding) is no detectable difference.

    Examples
    --------
    >>> outcome({"diff": -0.3, "ci_low": -0.5, "ci_high": -0.1, "n": 25, "p": 0.001})
    'wins'
    >>> outcome({"diff": 0.3, "ci_low": 0.1, "ci_high": 0.5, "n": 25, "p": 0.001}, p_adjusted=0.2)
    'no detectable difference'
    >>> outcome({"diff": -0.3, "ci_low": -0.5, "ci_high": -0.1, "n": 7, "p": 0.01}, claimable_row=False)
    'not claimable'
    """
    n = int(comp.get("n") or 0)
    diff = comp.get("diff")
    if n == 0 or diff is None or not np.isfinite(diff):
        return "undetermined"
    if not claimable_row:
        return "not claimable"
    low, high = comp["ci_low"], comp["ci_high"]
    if max(abs(low), abs(high)) <= ROUNDING_ATOL * max(abs(scale), 1.0):
        return "no detectable difference"
    p = comp.get("p") if p_adjusted is None else p_adjusted
    significant = p is not None and np.isfinite(p) and p < alpha
    better_side = (low > 0) if higher_is_better else (high < 0)
    worse_side = (high < 0) if higher_is_better else (low > 0)
    if better_side and significant:
        return "wins"
    if worse_side and significant:
        return "loses"
    return "no detectable difference"


def label(row: MutableMapping) -> str:
    """The label of a comparison row in words, with the qualifier its outcome needs.

    ``not claimable (n = 7)``; ``no detectable difference (the unadjusted CI excludes 0)``; ``wins``.

    Examples
    --------
    >>> label({"outcome": "not claimable", "n": 7})
    'not claimable (n = 7)'
    >>> label({"outcome": "no detectable difference", "ci_low": 0.06, "ci_high": 0.38})
    'no detectable difference (the unadjusted CI excludes 0)'
    """
    o = row.get("outcome") or "undetermined"
    if o == "not claimable":
        return f"not claimable (n = {row.get('n', 0)})"
    if (
        o == "no detectable difference"
        and row.get("ci_low") is not None
        and row.get("ci_high") is not None
        and (row["ci_low"] > 0 or row["ci_high"] < 0)
    ):
        return "no detectable difference (the unadjusted CI excludes 0)"
    return o


def apply_holm(rows: list[MutableMapping], *, alpha: float = ALPHA) -> None:
    """Holm-correct the ``"p"`` of the rows of one claims family and set ``p_holm``, ``outcome``, ``family_size``.

    Each row is a comparison dict (:func:`paired_comparison`) with optional ``"scale"`` and
    ``"higher_is_better"``; rows passed here are claimable by definition.
    """
    adjusted = holm([r.get("p", np.nan) for r in rows])
    for r, p in zip(rows, adjusted, strict=True):
        r["p_holm"] = float(p) if np.isfinite(p) else None
        r["outcome"] = outcome(
            r,
            p_adjusted=r["p_holm"],
            scale=r.get("scale", 1.0),
            higher_is_better=bool(r.get("higher_is_better", False)),
            alpha=alpha,
        )
        r["family_size"] = len(rows)


def _verdict_comparisons(v: MutableMapping, metric: str) -> list[MutableMapping]:
    """The comparison rows of one verdict on ``metric``: vs the comparator, and vs the PCA twin unless it is it."""
    if metric == "edistance":
        rows = [v["edistance"]]
        twin = v.get("vs_pca_twin")
    else:
        sec = (v.get("secondary") or {}).get(metric) or {}
        rows = [sec["vs_comparator"]] if sec.get("vs_comparator") else []
        twin = sec.get("vs_pca_twin")
    if twin and not twin.get("same_as_comparator"):
        rows.append(twin)
    return rows


def family_rows(metrics_list: Iterable[MutableMapping], metric: str = "edistance") -> list[MutableMapping]:
    """The claims family of one run on ``metric``: the comparison rows of every claimable verdict."""
    return [
        r
        for m in metrics_list
        if m.get("verdict") and m["verdict"].get("claimable")
        for r in _verdict_comparisons(m["verdict"], metric)
    ]


def holm_over(metrics_list: Iterable[MutableMapping], *, alpha: float = ALPHA) -> dict[str, int]:
    """Label every verdict of one run: Holm over its claimable rows, one family per verdict metric.

    Rows of a verdict that is not claimable get ``"not claimable"`` (no adjusted p-value). A verdict's
    ``outcome`` is that of its primary-metric row against the comparator. Call it once per run: a report that
    merges runs copies their labels and never corrects again. Returns ``{metric: family size}``.
    """
    metrics_list = [m for m in metrics_list if m.get("verdict")]
    sizes = {}
    for metric in VERDICT_METRICS:
        apply_holm(family_rows(metrics_list, metric), alpha=alpha)
        sizes[metric] = len(family_rows(metrics_list, metric))
        for m in metrics_list:
            v = m["verdict"]
            rows = _verdict_comparisons(v, metric)
            if not v.get("claimable"):
                for r in rows:
                    r.update(
                        p_holm=None,
                        family_size=0,
                        outcome="undetermined" if outcome(r) == "undetermined" else "not claimable",
                    )
            twin = (
                v.get("vs_pca_twin")
                if metric == "edistance"
                else ((v.get("secondary") or {}).get(metric) or {}).get("vs_pca_twin")
            )
            if twin and twin.get("same_as_comparator") and rows:
                twin.update({k: rows[0].get(k) for k in ("p_holm", "outcome", "family_size")})
    for m in metrics_list:
        m["verdict"]["outcome"] = m["verdict"]["edistance"]["outcome"]
        m["verdict"]["family_sizes"] = sizes
    return sizes
