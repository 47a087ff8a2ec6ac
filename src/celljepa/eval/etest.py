"""Permutation E-test: +1-corrected p-values, Holm–Sidak and BH adjustment, an automatic permutation count."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from statsmodels.stats.multitest import multipletests
from tqdm.auto import tqdm

from .._errors import InputError


def auto_permutations(n_tests: int, alpha: float = 0.05, *, minimum: int = 1000) -> int:
    """Permutations needed so that the smallest attainable adjusted p-value can fall below ``alpha``.

    With ``R`` permutations the smallest p-value is ``1 / (1 + R)``; after Holm–Sidak over ``m``
    tests it becomes ``1 − (1 − 1/(1+R))^m``. We take twice the ``R`` that makes this equal ``alpha``
    (so significance is reachable with margin), and at least ``minimum``.
    """
    m = max(1, int(n_tests))
    p_needed = 1.0 - (1.0 - alpha) ** (1.0 / m)
    return max(minimum, int(math.ceil(2.0 / p_needed)))


def _pairwise(x: np.ndarray) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    return torch.cdist(t, t, compute_mode="donot_use_mm_for_euclid_dist").numpy()


def _edistance_from_labels(d: np.ndarray, labels: np.ndarray, n_a: int) -> np.ndarray:
    """E-distance (distinct pairs) for each row of a 0/1 label matrix (1 = set A) over one distance matrix."""
    a = labels.astype(np.float64)
    b = 1.0 - a
    da = a @ d
    s_aa = (da * a).sum(axis=1)
    s_ab = (da * b).sum(axis=1)
    s_bb = ((b @ d) * b).sum(axis=1)
    n_b = labels.shape[1] - n_a
    return 2.0 * s_ab / (n_a * n_b) - s_aa / (n_a * (n_a - 1)) - s_bb / (n_b * (n_b - 1))


def etest_groups(
    groups: dict[str, np.ndarray],
    control: np.ndarray,
    *,
    n_permutations: int | str = "auto",
    cap: int | None = 256,
    alpha: float = 0.05,
    seed: int = 0,
    batch: int = 256,
    progress: bool = True,
) -> pd.DataFrame:
    """E-test of every group against the control cells.

    For each group the cells of the group and of the control are pooled (each subsampled to at most
    ``cap`` cells, seeded), the E-distance (distinct pairs) is computed for the true labels and for
    ``n_permutations`` random relabellings, and ``p = (1 + #(null ≥ observed)) / (1 + R)``.
    p-values are adjusted over groups with Holm–Sidak and Benjamini–Hochberg.

    Returns
    -------
    DataFrame indexed by group with ``edistance``, ``pvalue``, ``pvalue_adj_holm_sidak``,
    ``pvalue_adj_bh``, ``significant`` (Holm–Sidak < ``alpha``), ``n_cells``, ``n_control``,
    ``n_permutations``.
    """
    if not groups:
        raise InputError("no groups to test.")
    control = np.asarray(control, dtype=np.float64)
    if len(control) < 2:
        raise InputError(f"the control has {len(control)} cell(s); the E-test needs at least 2.")
    names = list(groups)
    R = auto_permutations(len(names), alpha) if n_permutations == "auto" else int(n_permutations)
    if R < 1:
        raise InputError(f"n_permutations={n_permutations} must be a positive integer or 'auto'.")
    rows = []
    for gi, name in enumerate(tqdm(names, desc="E-test", disable=not progress, leave=False)):
        x = np.asarray(groups[name], dtype=np.float64)
        if len(x) < 2:
            raise InputError(f"group '{name}' has {len(x)} cell(s); the E-test needs at least 2 per group.")
        if x.shape[1] != control.shape[1]:
            raise InputError(f"group '{name}' has {x.shape[1]} features but the control has {control.shape[1]}.")
        rng = np.random.default_rng([seed, gi])
        if cap is not None and len(x) > cap:
            x = x[np.sort(rng.choice(len(x), cap, replace=False))]
        c = control
        if cap is not None and len(c) > cap:
            c = c[np.sort(rng.choice(len(c), cap, replace=False))]
        pooled = np.concatenate([x, c])
        d = _pairwise(pooled)
        n_a, m = len(x), len(pooled)
        observed = _edistance_from_labels(d, np.concatenate([np.ones(n_a), np.zeros(m - n_a)])[None, :], n_a)[0]
        exceed = 0
        done = 0
        while done < R:
            k = min(batch, R - done)
            perm = np.argsort(rng.random((k, m)), axis=1)
            labels = (perm < n_a).astype(np.float64)
            null = _edistance_from_labels(d, labels, n_a)
            exceed += int((null >= observed - 1e-12).sum())
            done += k
        rows.append(
            {
                "group": name,
                "edistance": float(observed),
                "pvalue": (1 + exceed) / (1 + R),
                "n_cells": int(len(groups[name])),
                "n_control": int(len(control)),
                "n_permutations": R,
            }
        )
    out = pd.DataFrame(rows).set_index("group")
    with np.errstate(divide="ignore"):  # p = 1 makes Holm–Sidak take log(0); its result (1) is right
        out["pvalue_adj_holm_sidak"] = multipletests(out["pvalue"].to_numpy(), method="holm-sidak")[1]
    out["pvalue_adj_bh"] = multipletests(out["pvalue"].to_numpy(), method="fdr_bh")[1]
    out["significant"] = out["pvalue_adj_holm_sidak"] < alpha
    return out
