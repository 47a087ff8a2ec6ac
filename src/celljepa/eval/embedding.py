"""Embedding quality: collapse diagnostics and kNN label accuracy against a PCA of the same genes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .._errors import InputError

__all__ = ["collapse_diagnostics", "is_collapsed", "knn_accuracy", "knn_table", "split_half_retrieval"]

# An embedding counts as collapsed below these (see docs/jepa.md).
MIN_RANK_FRACTION = 0.25
MIN_STD = 1e-3


def collapse_diagnostics(z, *, max_cells: int | None = 20_000, seed: int = 0) -> dict[str, float]:
    """Collapse diagnostics of an embedding ``z`` (cells × dims).

    Returns
    -------
    dict with

    ``std_mean``, ``std_min``
        Mean and smallest per-dimension standard deviation.
    ``effective_rank``
        ``exp(H(p))`` with ``p`` the singular values of the centred embedding divided by their sum
        (RankMe; equals the dimension for an isotropic embedding, 1 for a line).
    ``effective_rank_fraction``
        ``effective_rank / dims``.
    ``mean_cosine``
        Mean cosine similarity between distinct cells (1 when every cell maps to one direction).
    ``n_cells``, ``dims``
        Cells used (a seeded subsample above ``max_cells``) and embedding size.

    Examples
    --------
    >>> import numpy as np
    >>> from celljepa.eval.embedding import collapse_diagnostics
    >>> d = collapse_diagnostics(np.random.default_rng(0).normal(size=(2000, 16)))
    >>> round(d["effective_rank_fraction"], 1), round(d["mean_cosine"], 2)
    (1.0, 0.0)
    """
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] < 2:
        raise InputError(f"z must be a (cells, dims) array with at least 2 cells, got shape {z.shape}.")
    if not np.isfinite(z).all():
        return {
            "std_mean": float("nan"),
            "std_min": float("nan"),
            "effective_rank": float("nan"),
            "effective_rank_fraction": float("nan"),
            "mean_cosine": float("nan"),
            "n_cells": int(z.shape[0]),
            "dims": int(z.shape[1]),
        }
    if max_cells is not None and z.shape[0] > max_cells:
        z = z[np.sort(np.random.default_rng(seed).choice(z.shape[0], max_cells, replace=False))]
    n, d = z.shape
    std = z.std(axis=0, ddof=1)
    s = np.linalg.svd(z - z.mean(0), compute_uv=False)
    total = s.sum()
    if total > 0:
        p = s / total
        p = p[p > 0]
        erank = float(np.exp(-(p * np.log(p)).sum()))
    else:
        erank = 0.0
    norms = np.linalg.norm(z, axis=1)
    u = z / np.where(norms > 0, norms, 1.0)[:, None]
    colsum = u.sum(0)
    mean_cos = float((colsum @ colsum - (u * u).sum()) / (n * (n - 1)))
    return {
        "std_mean": float(std.mean()),
        "std_min": float(std.min()),
        "effective_rank": erank,
        "effective_rank_fraction": erank / d,
        "mean_cosine": mean_cos,
        "n_cells": int(n),
        "dims": int(d),
    }


def is_collapsed(diagnostics: dict) -> bool:
    """Whether diagnostics show collapse: effective rank below 25% of the dimension, or a dim with std < 1e-3."""
    frac, std_min = diagnostics["effective_rank_fraction"], diagnostics["std_min"]
    return not (np.isfinite(frac) and np.isfinite(std_min)) or frac < MIN_RANK_FRACTION or std_min < MIN_STD


def knn_accuracy(
    x, labels, *, k: int = 15, n_folds: int = 5, seed: int = 0, max_cells: int | None = 20_000
) -> dict[str, float]:
    """Stratified ``n_folds``-fold accuracy of a ``k``-nearest-neighbour classifier (Euclidean) on ``x``.

    Classes with fewer than ``n_folds`` cells are dropped (reported in ``n_dropped``). Above
    ``max_cells`` a seeded, stratified subsample is used.

    Returns
    -------
    dict with ``accuracy`` (mean over folds), ``accuracy_sd`` (sd over folds), ``balanced_accuracy``,
    ``n_cells``, ``n_classes``, ``n_dropped`` and ``chance`` (share of the most frequent class).

    Examples
    --------
    >>> import numpy as np
    >>> from celljepa.eval.embedding import knn_accuracy
    >>> rng = np.random.default_rng(0)
    >>> x = np.r_[rng.normal(0, 1, (100, 5)), rng.normal(5, 1, (100, 5))]
    >>> knn_accuracy(x, ["a"] * 100 + ["b"] * 100)["accuracy"]
    1.0
    """
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.neighbors import KNeighborsClassifier

    x = np.asarray(x, dtype=np.float64)
    y = pd.Series(np.asarray(labels)).astype(str).to_numpy()
    if x.ndim != 2 or x.shape[0] != y.shape[0]:
        raise InputError(f"x must be (cells, dims) with one label per cell; got {x.shape} and {y.shape[0]} labels.")
    values, counts = np.unique(y, return_counts=True)
    keep_classes = values[counts >= n_folds]
    keep = np.isin(y, keep_classes)
    n_dropped = int((~keep).sum())
    x, y = x[keep], y[keep]
    if keep_classes.size < 2:
        raise InputError(
            f"kNN accuracy needs at least 2 classes with >= {n_folds} cells each; got {keep_classes.size}."
        )
    if max_cells is not None and x.shape[0] > max_cells:
        from sklearn.model_selection import train_test_split

        idx, _ = train_test_split(np.arange(x.shape[0]), train_size=max_cells, stratify=y, random_state=seed)
        idx = np.sort(idx)
        x, y = x[idx], y[idx]
    accs, baccs = [], []
    for train, test in StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(x, y):
        clf = KNeighborsClassifier(n_neighbors=min(k, len(train))).fit(x[train], y[train])
        pred = clf.predict(x[test])
        accs.append(float((pred == y[test]).mean()))
        baccs.append(float(balanced_accuracy_score(y[test], pred)))
    _, c = np.unique(y, return_counts=True)
    return {
        "accuracy": float(np.mean(accs)),
        "accuracy_sd": float(np.std(accs, ddof=1)),
        "balanced_accuracy": float(np.mean(baccs)),
        "n_cells": int(x.shape[0]),
        "n_classes": int(c.size),
        "n_dropped": n_dropped,
        "chance": float(c.max() / c.sum()),
    }


def knn_table(
    embeddings: dict[str, np.ndarray],
    obs: pd.DataFrame,
    labels: Sequence[str],
    *,
    k: int = 15,
    n_folds: int = 5,
    seed: int = 0,
    max_cells: int | None = 20_000,
) -> dict[str, dict]:
    """KNN accuracy of every label column in ``obs`` on every embedding: ``{label: {embedding: result}}``.

    Label columns that are missing or have fewer than 2 usable classes are reported as
    ``{"skipped": reason}`` instead of failing.
    """
    table: dict[str, dict] = {}
    for label in labels:
        if label not in obs.columns:
            table[label] = {"skipped": f"obs has no column {label!r}"}
            continue
        try:
            table[label] = {
                name: knn_accuracy(x, obs[label].to_numpy(), k=k, n_folds=n_folds, seed=seed, max_cells=max_cells)
                for name, x in embeddings.items()
            }
        except InputError as err:
            table[label] = {"skipped": str(err)}
    return table


def split_half_retrieval(z_a, z_b, *, metric: str = "cosine") -> dict[str, float]:
    """Label-free robustness: the share of cells whose half-depth embedding finds its own other half.

    ``z_a[i]`` and ``z_b[i]`` embed the two halves of cell ``i``'s reads
    (:func:`celljepa.data.counts.binomial_split`). For each ``i``, the cells of ``z_b`` are ranked by their
    distance to ``z_a[i]``; a representation that keeps what identifies a cell and drops the sampling noise ranks
    the cell's own other half first. A collapsed embedding cannot: every half looks alike. Distances are
    cosine (default) or Euclidean, on centred embeddings.

    Returns
    -------
    dict with ``top1`` (share of cells whose other half ranks first), ``top10``, ``mean_reciprocal_rank``,
    ``median_rank`` (1 is best) and ``n_cells``; chance level is ``1 / n_cells`` for ``top1``.

    Examples
    --------
    >>> import numpy as np
    >>> from celljepa.eval.embedding import split_half_retrieval
    >>> rng = np.random.default_rng(0)
    >>> cells = rng.normal(size=(300, 20))
    >>> r = split_half_retrieval(cells + 0.1 * rng.normal(size=cells.shape), cells + 0.1 * rng.normal(size=cells.shape))
    >>> r["top1"]
    1.0
    """
    a = np.asarray(z_a, dtype=np.float64)
    b = np.asarray(z_b, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape or a.shape[0] < 2:
        raise InputError(f"z_a and z_b must embed the same cells (cells, dims); got {a.shape} and {b.shape}.")
    if metric not in ("cosine", "euclidean"):
        raise InputError(f"metric must be 'cosine' or 'euclidean', got {metric!r}.")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return {
            "top1": float("nan"),
            "top10": float("nan"),
            "mean_reciprocal_rank": float("nan"),
            "median_rank": float("nan"),
            "n_cells": int(a.shape[0]),
        }
    centre = np.vstack([a, b]).mean(0)
    a, b = a - centre, b - centre
    n = a.shape[0]
    ranks = np.empty(n, dtype=np.int64)
    chunk = 2048
    if metric == "cosine":
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        if metric == "cosine":
            d = -(a[start:stop] @ b.T)
        else:
            d = (a[start:stop] ** 2).sum(1)[:, None] - 2 * a[start:stop] @ b.T + (b**2).sum(1)[None, :]
        own = d[np.arange(stop - start), np.arange(start, stop)]
        # rank 1 + the cells strictly closer than the own half (ties count in the cell's favour)
        ranks[start:stop] = 1 + (d < own[:, None]).sum(1)
    return {
        "top1": float((ranks == 1).mean()),
        "top10": float((ranks <= 10).mean()),
        "mean_reciprocal_rank": float((1.0 / ranks).mean()),
        "median_rank": float(np.median(ranks)),
        "n_cells": int(n),
    }
