"""Bootstrap confidence intervals over conditions and paired bootstrap differences (seeded)."""

from __future__ import annotations

import numpy as np

N_BOOTSTRAP = 1000


def _mean_with_ci(v: np.ndarray, n_boot: int, ci: float, seed: int) -> tuple[float, float, float]:
    """Mean of ``v`` and the percentile CI of its mean over ``n_boot`` resamples with replacement."""
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    idx = np.random.default_rng(seed).integers(0, v.size, size=(n_boot, v.size))
    alpha = (1.0 - ci) / 2.0
    low, high = np.quantile(v[idx].mean(axis=1), [alpha, 1.0 - alpha])
    return float(v.mean()), float(low), float(high)


def bootstrap_ci(values, *, n_boot: int = N_BOOTSTRAP, ci: float = 0.95, seed: int = 0) -> dict:
    """Mean over conditions with a percentile bootstrap CI (resampling conditions with replacement).

    NaN values (a metric undefined for a condition) are dropped first. Returns
    ``{"mean", "ci_low", "ci_high", "n"}``.

    Examples
    --------
    >>> bootstrap_ci([1.0, 2.0, 3.0, 4.0])["mean"]
    2.5
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    mean, low, high = _mean_with_ci(v, n_boot, ci, seed)
    return {"mean": mean, "ci_low": low, "ci_high": high, "n": int(v.size)}


def paired_bootstrap_diff(a, b, *, n_boot: int = N_BOOTSTRAP, ci: float = 0.95, seed: int = 0) -> dict:
    """Mean of ``a − b`` over conditions with a paired bootstrap CI (same resampled conditions for both).

    Conditions where either value is NaN are dropped. A claim "A beats B" needs the CI to exclude 0.
    Returns ``{"diff", "ci_low", "ci_high", "n"}``.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired values need equal shapes, got {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    d = a[keep] - b[keep]
    diff, low, high = _mean_with_ci(d, n_boot, ci, seed)
    return {"diff": diff, "ci_low": low, "ci_high": high, "n": int(d.size)}
