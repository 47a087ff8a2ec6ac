"""Claims between two methods: paired bootstrap CI, sign-flip permutation test, Holm correction, the n-guard.

A claim "A beats B" on the primary metric (E-distance, lower is better) needs all of

* the paired 95% bootstrap CI of ``metric(A) − metric(B)`` over conditions below 0,
* a two-sided sign-flip permutation p-value of the mean difference below ``alpha`` after Holm
  correction over the verdict rows of the report, and
* at least :data:`MIN_CONDITIONS` conditions.

Fewer conditions give ``"insufficient evidence"``, never a win or a loss (a percentile bootstrap over
three values has ten distinct resamples). This module holds that rule once; reports, sweeps and
holdout runs all call it.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping

import numpy as np
from statsmodels.stats.multitest import multipletests

from .bootstrap import N_BOOTSTRAP, paired_bootstrap_diff

__all__ = ["ALPHA", "MIN_CONDITIONS", "OUTCOMES", "apply_holm", "enumerated_sign_flip_hits", "exact_sign_flip_hits",
           "holm", "holm_over", "outcome", "paired_comparison", "sign_flip_pvalue", "verdict_rows"]

#: Fewest conditions a "wins" or "loses" can rest on.
MIN_CONDITIONS = 10
#: Family-wise error rate of the verdict rows of one report.
ALPHA = 0.05
#: Differences whose CI lies within this (relative to the reference's mean) are rounding, not a result.
ROUNDING_ATOL = 1e-6
#: Exact enumeration of all 2^n sign patterns up to this n; Monte-Carlo beyond.
EXACT_MAX_N = 20
#: Random sign patterns of the Monte-Carlo test.
N_PERMUTATIONS = 100_000
OUTCOMES = ("wins", "ties", "loses", "insufficient evidence", "undetermined")


def sign_flip_pvalue(diffs, *, exact_max_n: int = EXACT_MAX_N, n_permutations: int = N_PERMUTATIONS,
                     seed: int = 0) -> float:
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
        return exact_sign_flip_hits(d, observed - tol) / 2 ** n
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
        return 2 ** d.size
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
    total, hits = 2 ** n, 0
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


def outcome(comp: MutableMapping, *, p_adjusted: float | None = None, scale: float = 1.0,
            min_conditions: int = MIN_CONDITIONS, alpha: float = ALPHA) -> str:
    """The verdict word for one comparison ``A − B`` (lower is better): wins, loses, ties or insufficient evidence.

    Parameters
    ----------
    comp
        ``{"diff", "ci_low", "ci_high", "n"}`` and ``"p"`` (see :func:`paired_comparison`).
    p_adjusted
        The Holm-adjusted p-value of this row within its report (default: ``comp["p"]``, a family of one).
    scale
        Magnitude of the reference's metric; a CI within ``ROUNDING_ATOL · max(scale, 1)`` of 0 is a tie
        (identical predictions up to rounding).

    Examples
    --------
    >>> outcome({"diff": -0.3, "ci_low": -0.5, "ci_high": -0.1, "n": 25, "p": 0.001})
    'wins'
    >>> outcome({"diff": -0.3, "ci_low": -0.5, "ci_high": -0.1, "n": 7, "p": 0.01})
    'insufficient evidence'
    """
    n = int(comp.get("n") or 0)
    diff = comp.get("diff")
    if n == 0 or diff is None or not np.isfinite(diff):
        return "undetermined"
    if n < min_conditions:
        return "insufficient evidence"
    low, high = comp["ci_low"], comp["ci_high"]
    if max(abs(low), abs(high)) <= ROUNDING_ATOL * max(abs(scale), 1.0):
        return "ties"
    p = comp.get("p") if p_adjusted is None else p_adjusted
    significant = p is not None and np.isfinite(p) and p < alpha
    if high < 0 and significant:
        return "wins"
    if low > 0 and significant:
        return "loses"
    return "ties"


def apply_holm(rows: list[MutableMapping], *, min_conditions: int = MIN_CONDITIONS, alpha: float = ALPHA) -> None:
    """Holm-correct the ``"p"`` of every row (one report's verdict rows) and set ``p_holm`` and ``outcome``.

    Each row is a comparison dict (:func:`paired_comparison`) with an optional ``"scale"``.
    """
    adjusted = holm([r.get("p", np.nan) for r in rows])
    for r, p in zip(rows, adjusted, strict=True):
        r["p_holm"] = float(p) if np.isfinite(p) else None
        r["outcome"] = outcome(r, p_adjusted=r["p_holm"], scale=r.get("scale", 1.0),
                               min_conditions=min_conditions, alpha=alpha)
        r["family_size"] = len(rows)


def verdict_rows(metrics: MutableMapping) -> list[MutableMapping]:
    """The comparisons of one ``metrics`` dict that belong to the Holm family: primary vs comparator and vs twin.

    The twin row is left out when the twin *is* the comparator (the same comparison twice).
    """
    v = metrics.get("verdict")
    if not v:
        return []
    rows = [v["edistance"]]
    twin = v.get("vs_pca_twin")
    if twin and not twin.get("same_as_comparator"):
        rows.append(twin)
    return rows


def holm_over(metrics_list: Iterable[MutableMapping], *, min_conditions: int = MIN_CONDITIONS,
              alpha: float = ALPHA) -> int:
    """Holm-correct the verdict rows of many ``metrics`` dicts as one family (one report) and set outcomes.

    Returns the family size. Each verdict's ``outcome`` becomes that of its primary-vs-comparator row.
    """
    metrics_list = [m for m in metrics_list if m.get("verdict")]
    rows = [r for m in metrics_list for r in verdict_rows(m)]
    apply_holm(rows, min_conditions=min_conditions, alpha=alpha)
    for m in metrics_list:
        v = m["verdict"]
        v["outcome"] = v["edistance"]["outcome"]
        twin = v.get("vs_pca_twin")
        if twin and twin.get("same_as_comparator"):
            for key in ("p_holm", "outcome", "family_size"):
                twin[key] = v["edistance"][key]
    return len(rows)
