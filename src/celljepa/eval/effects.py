"""Per-condition effect checks: the split-half noise floor and the E-test of observed vs control cells.

A test condition whose observed cells cannot be told from its context's control cells carries no signal
for a comparison of predictors: every method that predicts "little change" scores near the noise
floor there. Such conditions are reported apart and kept out of the primary verdict.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from statsmodels.stats.multitest import multipletests

from .edistance import DEFAULT_CAP, DEFAULT_RESAMPLES, edistance_sets
from .etest import etest_groups

__all__ = ["condition_effects", "split_half_noise"]

#: Conditions need this many observed cells for a split-half estimate (two halves of at least 2).
MIN_SPLIT_HALF_CELLS = 4


def split_half_noise(observed: Sequence[np.ndarray], *, cap: int | None = DEFAULT_CAP,
                     n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> np.ndarray:
    """E-distance between two random halves of each set of observed cells (the noise floor).

    For each set, ``n_resamples`` seeded random splits into halves of ``⌊n/2⌋`` cells; the E-distance of
    each split (evaluation protocol estimator, halves capped at ``cap``) is averaged. Two samples of the
    same cells have expected E-distance 0, so the spread of these values over conditions shows how far
    from 0 a score can fall by sampling alone. NaN for sets with fewer than 4 cells.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> noise = split_half_noise([rng.normal(size=(200, 5))])
    >>> bool(abs(noise[0]) < 0.1)
    True
    """
    out = np.full(len(observed), np.nan)
    halves_a, halves_b, owner = [], [], []
    for k, x in enumerate(observed):
        x = np.asarray(x, dtype=np.float64)
        half = len(x) // 2
        if len(x) < MIN_SPLIT_HALF_CELLS:
            continue
        rng = np.random.default_rng([seed, k, 0x4A1F])
        for _ in range(n_resamples):
            perm = rng.permutation(len(x))
            halves_a.append(x[perm[:half]])
            halves_b.append(x[perm[half:2 * half]])
            owner.append(k)
    if not owner:
        return out
    e = edistance_sets(halves_a, halves_b, cap=cap, n_resamples=1, seed=seed)
    owner = np.asarray(owner)
    for k in np.unique(owner):
        out[k] = float(np.mean(e[owner == k]))
    return out


def condition_effects(keys: Sequence[str], observed: Sequence[np.ndarray], contexts: Sequence[str],
                      controls: dict[str, np.ndarray], *, cap: int | None = DEFAULT_CAP,
                      n_resamples: int = DEFAULT_RESAMPLES, n_permutations: int = 1000, alpha: float = 0.05,
                      seed: int = 0) -> pd.DataFrame:
    """Noise floor and E-test (observed vs the context's control cells) of every condition.

    Parameters
    ----------
    keys
        Condition keys (the index of the result).
    observed
        Observed cells of each condition (evaluation-space coordinates).
    contexts
        Each condition's context; ``controls[context]`` holds its control cells.
    cap, n_resamples
        Set-size cap and halvings of the noise floor (and the E-test's cap).
    n_permutations, alpha
        Permutations of the E-test; a condition *has an effect* when its Holm–Sidak adjusted p-value (over
        the conditions given) is below ``alpha``.

    Returns
    -------
    DataFrame indexed by condition key with ``noise_floor``, ``etest_edistance``, ``etest_p``,
    ``etest_p_adj`` and ``has_effect``.
    """
    keys = list(keys)
    noise = split_half_noise(observed, cap=cap, n_resamples=n_resamples, seed=seed)
    rows = {}
    for ctx in sorted(set(contexts)):
        idx = [i for i, c in enumerate(contexts) if c == ctx and len(observed[i]) >= 2]
        if not idx or len(controls[ctx]) < 2:
            continue
        res = etest_groups({keys[i]: observed[i] for i in idx}, controls[ctx], n_permutations=n_permutations,
                           cap=cap, alpha=alpha, seed=seed, progress=False)
        for key, r in res.iterrows():
            rows[key] = (float(r["edistance"]), float(r["pvalue"]))
    out = pd.DataFrame(index=pd.Index(keys, name="condition"))
    out["noise_floor"] = noise
    out["etest_edistance"] = [rows.get(k, (np.nan, np.nan))[0] for k in keys]
    out["etest_p"] = [rows.get(k, (np.nan, np.nan))[1] for k in keys]
    p = out["etest_p"].to_numpy()
    adj = np.full(len(keys), np.nan)
    ok = np.isfinite(p)
    if ok.any():
        with np.errstate(divide="ignore"):  # p = 1 makes Holm–Sidak take log(0); its result (1) is right
            adj[ok] = multipletests(p[ok], method="holm-sidak")[1]
    out["etest_p_adj"] = adj
    out["has_effect"] = np.isfinite(adj) & (adj < alpha)
    return out
