"""Per-condition effect checks: the E-test of observed vs control cells, and the standard error of that E-distance.

A test condition whose observed cells cannot be told from its context's control cells carries no signal
for a comparison of predictors: every method that predicts "little change" scores near 0 there. Such
conditions are reported apart and kept out of the verdict. A condition *has an effect* when (1) its E-test
against the context's controls is significant after Holm–Sidak correction over the fold's conditions and
(2) its E-distance to the controls clears its own sampling noise: it exceeds :data:`EFFECT_SE_Z` standard
errors (:func:`edistance_se`, from split halves). Both depend on the data alone, never on a method.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from statsmodels.stats.multitest import multipletests

from .edistance import DEFAULT_CAP, edistance_sets
from .etest import etest_groups

__all__ = ["EFFECT_SE_Z", "condition_effects", "edistance_se"]

#: Conditions need this many observed cells for a split-half standard error (two halves of at least 2).
MIN_SPLIT_HALF_CELLS = 4
#: An effect's E-distance to its controls must exceed this many of its standard errors.
EFFECT_SE_Z = 2.0
#: Random halvings behind each standard error.
N_HALVINGS = 10


def edistance_se(
    observed: Sequence[np.ndarray],
    controls: Sequence[np.ndarray],
    *,
    cap: int | None = DEFAULT_CAP,
    n_halvings: int = N_HALVINGS,
    seed: int = 0,
) -> np.ndarray:
    """Standard error of each observed set's E-distance to its control cells, from split halves.

    For each condition, ``n_halvings`` seeded draws of half of the observed cells and half of the control cells
    (each capped at ``cap``); the E-distance of each pair of halves is computed with the evaluation protocol's
    estimator. An E-distance of two sets of half the size has about twice the variance (its variance falls as
    ``1/n`` in both set sizes), so the standard error at full size is the standard deviation over halvings
    divided by √2. NaN for sets with fewer than :data:`MIN_SPLIT_HALF_CELLS` cells.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> se = edistance_se([rng.normal(1.0, 1.0, (200, 5))], [rng.normal(size=(400, 5))])
    >>> bool(0 < se[0] < 0.5)
    True
    """
    out = np.full(len(observed), np.nan)
    a_sets, b_sets, owner = [], [], []
    for k, (x, c) in enumerate(zip(observed, controls, strict=True)):
        x, c = np.asarray(x, dtype=np.float64), np.asarray(c, dtype=np.float64)
        if len(x) < MIN_SPLIT_HALF_CELLS or len(c) < MIN_SPLIT_HALF_CELLS:
            continue
        rng = np.random.default_rng([seed, k, 0x5E1F])
        hx, hc = len(x) // 2, len(c) // 2
        if cap is not None:
            hx, hc = min(hx, cap), min(hc, cap)
        for _ in range(n_halvings):
            a_sets.append(x[rng.choice(len(x), hx, replace=False)])
            b_sets.append(c[rng.choice(len(c), hc, replace=False)])
            owner.append(k)
    if not owner:
        return out
    e = edistance_sets(a_sets, b_sets, cap=cap, n_resamples=1, seed=seed)
    owner = np.asarray(owner)
    for k in np.unique(owner):
        out[k] = float(np.std(e[owner == k], ddof=1) / np.sqrt(2.0))
    return out


def condition_effects(
    keys: Sequence[str],
    observed: Sequence[np.ndarray],
    contexts: Sequence[str],
    controls: dict[str, np.ndarray],
    *,
    cap: int | None = DEFAULT_CAP,
    n_permutations: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> pd.DataFrame:
    """E-test and standard error of the E-distance (observed vs the context's control cells) of every condition.

    Parameters
    ----------
    keys
        Condition keys (the index of the result).
    observed
        Observed cells of each condition (evaluation-space coordinates).
    contexts
        Each condition's context; ``controls[context]`` holds its control cells.
    cap
        Set-size cap of the E-test and of the split halves.
    n_permutations, alpha
        Permutations of the E-test and the level of its Holm–Sidak adjusted p-value (over the conditions given).

    Returns
    -------
    DataFrame indexed by condition key with ``etest_edistance``, ``etest_p``, ``etest_p_adj``, ``effect_se``
    (:func:`edistance_se`), ``clears_noise`` (``etest_edistance > EFFECT_SE_Z · effect_se``) and
    ``has_effect`` (adjusted p below ``alpha`` and clears its noise).
    """
    keys = list(keys)
    se = edistance_se(observed, [controls[c] for c in contexts], cap=cap, seed=seed)
    rows = {}
    for ctx in sorted(set(contexts)):
        idx = [i for i, c in enumerate(contexts) if c == ctx and len(observed[i]) >= 2]
        if not idx or len(controls[ctx]) < 2:
            continue
        res = etest_groups(
            {keys[i]: observed[i] for i in idx},
            controls[ctx],
            n_permutations=n_permutations,
            cap=cap,
            alpha=alpha,
            seed=seed,
            progress=False,
        )
        for key, r in res.iterrows():
            rows[key] = (float(r["edistance"]), float(r["pvalue"]))
    out = pd.DataFrame(index=pd.Index(keys, name="condition"))
    out["etest_edistance"] = [rows.get(k, (np.nan, np.nan))[0] for k in keys]
    out["etest_p"] = [rows.get(k, (np.nan, np.nan))[1] for k in keys]
    p = out["etest_p"].to_numpy()
    adj = np.full(len(keys), np.nan)
    ok = np.isfinite(p)
    if ok.any():
        with np.errstate(divide="ignore"):  # p = 1 makes Holm–Sidak take log(0); its result (1) is right
            adj[ok] = multipletests(p[ok], method="holm-sidak")[1]
    out["etest_p_adj"] = adj
    out["effect_se"] = se
    e = out["etest_edistance"].to_numpy()
    out["clears_noise"] = np.isfinite(e) & np.isfinite(se) & (e > EFFECT_SE_Z * np.nan_to_num(se, nan=np.inf))
    out["has_effect"] = np.isfinite(adj) & (adj < alpha) & out["clears_noise"].to_numpy()
    return out
