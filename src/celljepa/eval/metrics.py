"""Mean-level metrics, delta Pearson and retrieval, per condition."""

from __future__ import annotations

import numpy as np

TOP_DE = 20


def mse(pred_mean: np.ndarray, obs_mean: np.ndarray) -> float:
    """Mean squared error between the predicted and observed mean."""
    return float(np.mean((np.asarray(pred_mean) - np.asarray(obs_mean)) ** 2))


def cosine_distance(pred_mean: np.ndarray, obs_mean: np.ndarray) -> float:
    """``1 − cos`` between the predicted and observed mean (NaN when either is zero)."""
    p, o = np.asarray(pred_mean, dtype=float), np.asarray(obs_mean, dtype=float)
    denom = np.linalg.norm(p) * np.linalg.norm(o)
    return float(1.0 - p @ o / denom) if denom > 0 else float("nan")


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; NaN when either vector is constant."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def delta_pearson(pred_mean, obs_mean, control_mean) -> float:
    """Pearson correlation of predicted vs observed delta (mean minus the context's control mean)."""
    c = np.asarray(control_mean, dtype=float)
    return pearson(np.asarray(pred_mean) - c, np.asarray(obs_mean) - c)


def top_de_indices(obs_mean, control_mean, k: int = TOP_DE) -> np.ndarray:
    """Indices of the ``k`` genes with the largest |observed mean − control mean| (ties by index)."""
    delta = np.abs(np.asarray(obs_mean, dtype=float) - np.asarray(control_mean, dtype=float))
    k = min(k, delta.size)
    return np.sort(np.argsort(-delta, kind="stable")[:k])


def delta_pearson_top_de(pred_mean, obs_mean, control_mean, k: int = TOP_DE) -> float:
    """Delta Pearson restricted to the top-``k`` DE genes of the observed condition."""
    idx = top_de_indices(obs_mean, control_mean, k)
    c = np.asarray(control_mean, dtype=float)[idx]
    return pearson(np.asarray(pred_mean)[idx] - c, np.asarray(obs_mean)[idx] - c)


def retrieval_ranks(pred_means: np.ndarray, obs_means: np.ndarray, truth=None) -> np.ndarray:
    """Rank (1 = best) of each prediction's true observed mean among all observed means.

    Prediction ``k`` is compared by Euclidean distance with every observed mean; its true condition is
    ``truth[k]`` (default ``k``: one prediction per observed condition, in order); ties count against the
    prediction (rank = 1 + number of other conditions at a distance ≤ the true one).
    """
    p, o = np.asarray(pred_means, dtype=float), np.asarray(obs_means, dtype=float)
    t = np.arange(len(p)) if truth is None else np.asarray(truth, dtype=int)
    d = np.sqrt(np.maximum(((p[:, None, :] - o[None, :, :]) ** 2).sum(-1), 0.0))
    true = d[np.arange(len(p)), t][:, None]
    others = d <= true
    others[np.arange(len(p)), t] = False
    return 1 + others.sum(axis=1)
