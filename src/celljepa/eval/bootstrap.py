"""Bootstrap confidence intervals: over conditions, and hierarchical over split seeds, model seeds and conditions.

Every CI of a benchmark report comes from :func:`hierarchical_bootstrap` (evaluation protocol v3): a
condition's score in a fold comes from a model fitted once per model seed and shared by every condition of
that fold, and each split seed draws other folds, so resampling conditions alone ignores two sources of
variance. :func:`bootstrap_ci` and :func:`paired_bootstrap_diff` (conditions only) remain for single lists of
values (sweep screens, diagnostics).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

#: Resamples of a conditions-only bootstrap.
N_BOOTSTRAP = 1000
#: Resamples of the hierarchical bootstrap behind every reported CI (evaluation protocol v3).
N_HIERARCHICAL = 10_000
#: Resamples drawn at once (bounds the memory of one chunk: ``chunk × conditions × model seeds`` doubles).
_CHUNK = 1000
#: How the CIs of a report were computed (recorded in its JSON).
HIERARCHICAL_RULE = (
    "hierarchical percentile bootstrap: split seeds (or, with one split seed, folds), then model "
    "seeds within each fold, then conditions; a condition's score is its mean over the drawn seeds"
)


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

    Conditions where either value is NaN are dropped. Returns ``{"diff", "ci_low", "ci_high", "n"}``.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired values need equal shapes, got {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    d = a[keep] - b[keep]
    diff, low, high = _mean_with_ci(d, n_boot, ci, seed)
    return {"diff": diff, "ci_low": low, "ci_high": high, "n": int(d.size)}


# ------------------------------------------------------------------------------------- hierarchical


def _seed_weights(rng: np.random.Generator, shape: tuple[int, ...], m: int) -> np.ndarray:
    """Multinomial counts of ``m`` model seeds drawn with replacement, for every index of ``shape``."""
    return rng.multinomial(m, np.full(m, 1.0 / m), size=shape).astype(np.float64)


def _seed_average(weights: np.ndarray, values: np.ndarray, finite: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``Σ_m w·v`` and ``Σ_m w·1[finite]`` with weights ``(..., M)`` and values ``(M, N)``: ``(..., N)`` each."""
    return weights @ values, weights @ finite


def _crossed(values: np.ndarray, folds: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Resampled means with split seeds at the top: conditions are crossed with split seeds.

    ``values (S, M, N)``, ``folds (S, N)`` (fold of condition n under split seed s, −1 when absent). Per
    resample: S split seeds drawn with replacement; for each drawn split seed and each of its folds, M model
    seeds drawn with replacement (a fold's models are fitted once per model seed); N conditions drawn with
    replacement once (a condition keeps its scores under every split seed). A condition's score is its mean
    over the drawn (split seed, model seed) values; the statistic is the mean over the drawn conditions.
    """
    s_n, m_n, c_n = values.shape
    finite = np.isfinite(values)
    vals = np.where(finite, values, 0.0)
    fin = finite.astype(np.float64)
    n_folds = int(folds.max()) + 1 if folds.size else 1
    fold_idx = np.where(folds < 0, 0, folds)
    out = np.empty(n_boot)
    for start in range(0, n_boot, _CHUNK):
        b = min(_CHUNK, n_boot - start)
        top = rng.integers(0, s_n, size=(b, s_n))
        seeds = _seed_weights(rng, (b, s_n, n_folds), m_n)  # (b, slot, fold, M)
        num = np.zeros((b, c_n))
        den = np.zeros((b, c_n))
        for j in range(s_n):
            for s in range(s_n):
                hit = top[:, j] == s
                if not hit.any():
                    continue
                w = seeds[hit, j][:, fold_idx[s], :]  # (h, N, M): the model-seed weights of each condition's fold
                num[hit] += np.einsum("hnm,mn->hn", w, vals[s])
                den[hit] += np.einsum("hnm,mn->hn", w, fin[s])
        cond_w = rng.multinomial(c_n, np.full(c_n, 1.0 / c_n), size=b).astype(np.float64)
        ok = den > 0
        score = np.divide(num, den, out=np.zeros_like(num), where=ok)
        total = (cond_w * ok).sum(axis=1)
        out[start : start + b] = np.divide((cond_w * score).sum(axis=1), total, out=np.full(b, np.nan), where=total > 0)
    return out


def _nested(values: np.ndarray, folds: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Resampled means with folds at the top (one split seed): conditions are nested in folds.

    ``values (1, M, N)``, ``folds (1, N)``. Per resample: K folds drawn with replacement; within each drawn
    fold, M model seeds and the fold's conditions drawn with replacement. The statistic is the mean over every
    drawn condition of its mean over the drawn model seeds.
    """
    _, m_n, _ = values.shape
    fold_of = folds[0]
    ids = [f for f in np.unique(fold_of) if f >= 0]
    k_n = len(ids)
    out = np.empty(n_boot)
    for start in range(0, n_boot, _CHUNK):
        b = min(_CHUNK, n_boot - start)
        top = rng.integers(0, k_n, size=(b, k_n))
        seeds = _seed_weights(rng, (b, k_n), m_n)  # (b, slot, M)
        num = np.zeros(b)
        den = np.zeros(b)
        for i, f in enumerate(ids):
            cols = np.flatnonzero(fold_of == f)
            v = values[0][:, cols]
            finite = np.isfinite(v)
            s_num, s_den = _seed_average(seeds, np.where(finite, v, 0.0), finite.astype(np.float64))  # (b, K, n_f)
            ok = s_den > 0
            score = np.divide(s_num, s_den, out=np.zeros_like(s_num), where=ok)
            cond_w = rng.multinomial(len(cols), np.full(len(cols), 1.0 / len(cols)), size=(b, k_n))
            hit = (top == i)[:, :, None]  # the slots that drew fold f
            num += (hit * cond_w * score).sum(axis=(1, 2))
            den += (hit * cond_w * ok).sum(axis=(1, 2))
        out[start : start + b] = np.divide(num, den, out=np.full(b, np.nan), where=den > 0)
    return out


def point_estimate(values: np.ndarray) -> tuple[float, int]:
    """Mean over conditions of each condition's mean over split seeds and model seeds, and the conditions counted."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    per = np.divide(
        np.where(finite, values, 0.0).sum(axis=(0, 1)),
        finite.sum(axis=(0, 1)),
        out=np.full(values.shape[2], np.nan),
        where=finite.sum(axis=(0, 1)) > 0,
    )
    ok = np.isfinite(per)
    return (float(per[ok].mean()) if ok.any() else float("nan")), int(ok.sum())


def hierarchical_bootstrap(values, folds, *, n_boot: int = N_HIERARCHICAL, ci: float = 0.95, seed: int = 0) -> dict:
    """Mean over conditions with a hierarchical percentile bootstrap CI.

    Parameters
    ----------
    values
        ``(S, M, N)``: the metric (or a paired difference) of ``N`` conditions under ``S`` split seeds and ``M``
        model seeds; NaN where a condition was not scored (absent under a split seed, or a method that cannot
        predict it). A method without model seeds repeats its value along ``M``.
    folds
        ``(S, N)`` integer fold of each condition under each split seed (−1 where absent): a fold's model of one
        seed is shared by its conditions.
    n_boot, ci, seed
        Resamples (default 10,000), coverage and the generator's seed.

    Returns
    -------
    ``{"mean", "ci_low", "ci_high", "n", "n_split_seeds", "n_model_seeds", "n_boot", "method"}``: the point
    estimate is the mean over conditions of their mean over split seeds and model seeds; the CI resamples split
    seeds (with one split seed: folds), model seeds within each fold, and conditions (:data:`HIERARCHICAL_RULE`).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> v = rng.normal(size=(1, 3, 40)) + rng.normal(size=(1, 3, 1))      # 3 model seeds, 40 conditions, 1 fold
    >>> r = hierarchical_bootstrap(v, np.zeros((1, 40), dtype=int), n_boot=2000)
    >>> r["n"], r["ci_low"] < r["mean"] < r["ci_high"]
    (40, True)
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 3:
        raise ValueError(f"values must be (split seeds, model seeds, conditions), got shape {v.shape}")
    f = np.asarray(folds, dtype=np.int64)
    if f.shape != (v.shape[0], v.shape[2]):
        raise ValueError(f"folds must be (split seeds, conditions) = {(v.shape[0], v.shape[2])}, got {f.shape}")
    f = np.where(np.isfinite(v).any(axis=1), f, -1)
    keep = (f >= 0).any(axis=0)
    v, f = v[:, :, keep], f[:, keep]
    mean, n = point_estimate(v)
    out = {
        "mean": mean,
        "ci_low": float("nan"),
        "ci_high": float("nan"),
        "n": n,
        "n_split_seeds": int(v.shape[0]),
        "n_model_seeds": int(v.shape[1]),
        "n_boot": int(n_boot),
        "method": "hierarchical",
    }
    if n == 0:
        return out
    rng = np.random.default_rng([seed, 0x4B1E])
    stats = _crossed(v, f, n_boot, rng) if v.shape[0] > 1 else _nested(v, f, n_boot, rng)
    stats = stats[np.isfinite(stats)]
    alpha = (1.0 - ci) / 2.0
    out["ci_low"], out["ci_high"] = (float(x) for x in np.quantile(stats, [alpha, 1.0 - alpha]))
    return out


@dataclass
class SeedCube:
    """Per-(split seed, model seed, condition) scores of every method of one dataset × split, for the bootstrap.

    Built once from a long frame (one row per method × split seed × fold × model seed × condition; a method
    without model seeds has NaN there and is repeated along the model-seed axis), it hands
    :func:`hierarchical_bootstrap` the array of any method or paired difference.

    Attributes
    ----------
    conditions
        The condition keys, in the order of the last axis.
    split_seeds, model_seeds
        The axes' labels.
    folds
        ``(S, N)`` fold index of each condition under each split seed (−1 where absent).
    """

    frame: pd.DataFrame
    conditions: pd.Index
    split_seeds: list
    model_seeds: list
    folds: np.ndarray

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, conditions: Sequence[str] | None = None) -> SeedCube:
        """From a frame with ``method, condition, split_seed, fold, model_seed`` and metric columns."""
        missing = [c for c in ("method", "condition", "split_seed", "fold", "model_seed") if c not in frame]
        if missing:
            raise ValueError(f"per-seed frame lacks column(s) {missing}")
        frame = frame.copy()
        conds = pd.Index(list(dict.fromkeys(frame["condition"])) if conditions is None else list(conditions))
        splits = sorted(pd.unique(frame["split_seed"]).tolist())
        seeds = sorted(pd.unique(frame["model_seed"].dropna()).tolist()) or [np.nan]
        folds = np.full((len(splits), len(conds)), -1, dtype=np.int64)
        first = frame.drop_duplicates(["split_seed", "condition"])
        s_idx = pd.Index(splits).get_indexer(first["split_seed"])
        c_idx = conds.get_indexer(first["condition"])
        ok = c_idx >= 0
        fold_codes = pd.factorize(first["fold"].astype(str))[0]
        folds[s_idx[ok], c_idx[ok]] = fold_codes[ok]
        frame["_s"] = pd.Index(splits).get_indexer(frame["split_seed"])
        frame["_c"] = conds.get_indexer(frame["condition"])
        frame["_m"] = pd.Index(seeds).get_indexer(frame["model_seed"]) if seeds != [np.nan] else -1
        frame = frame[frame["_c"] >= 0]
        return cls(frame=frame, conditions=conds, split_seeds=splits, model_seeds=seeds, folds=folds)

    def values(self, method: str, metric: str, conditions: Sequence[str] | None = None) -> np.ndarray:
        """``(S, M, N)`` scores of ``method`` on ``metric`` (NaN where not scored)."""
        sel = self.frame[self.frame["method"] == method]
        out = np.full((len(self.split_seeds), len(self.model_seeds), len(self.conditions)), np.nan)
        if len(sel):
            x = sel[metric].to_numpy(dtype=np.float64)
            s_i, m_i, c_i = sel["_s"].to_numpy(), sel["_m"].to_numpy(), sel["_c"].to_numpy()
            seeded = m_i >= 0
            if seeded.any():
                out[s_i[seeded], m_i[seeded], c_i[seeded]] = x[seeded]
            if (~seeded).any():  # a method without model seeds: the same value for every model seed
                out[s_i[~seeded], :, c_i[~seeded]] = x[~seeded, None]
        return out if conditions is None else out[:, :, self.conditions.get_indexer(list(conditions))]

    def fold_index(self, conditions: Sequence[str] | None = None) -> np.ndarray:
        """``(S, N)`` fold index of the (selected) conditions."""
        return self.folds if conditions is None else self.folds[:, self.conditions.get_indexer(list(conditions))]

    def seed_means(self, method: str, metric: str, conditions: Sequence[str] | None = None) -> dict:
        """Mean of ``method`` per model seed over the (selected) conditions and split seeds: ``{seed: mean}``."""
        v = self.values(method, metric, conditions)
        seeded = bool((self.frame.loc[self.frame["method"] == method, "_m"] >= 0).any())
        if not seeded:  # a method without model seeds: one value
            x = v[:, 0, :]
            x = x[np.isfinite(x)]
            return {"all": float(x.mean())} if x.size else {}
        out = {}
        for i, s in enumerate(self.model_seeds):
            x = v[:, i, :]
            x = x[np.isfinite(x)]
            if x.size:
                out[int(s)] = float(x.mean())
        return out
