"""E-distance between sets of cells as evaluation.md defines it: equalised set sizes, seeded resamples."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .._errors import InputError
from ..kernels import edistance as _edistance_kernel

DEFAULT_CAP = 256
DEFAULT_RESAMPLES = 5


def _as_array(x, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise InputError(f"{name} must be a 2-D array (cells × features), got shape {arr.shape}.")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    return arr


def edistance_sets(
    sets_a: Sequence[np.ndarray],
    sets_b: Sequence[np.ndarray],
    *,
    equalize: bool = True,
    cap: int | None = DEFAULT_CAP,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    squared: bool = False,
    include_self_pairs: bool = False,
    pair_keys: Sequence[int] | None = None,
    backend: str | None = None,
) -> np.ndarray:
    """E-distance between ``sets_a[k]`` and ``sets_b[k]`` for every k, batched in one kernel call.

    ``E(X, Y) = 2·mean‖x−y‖ − mean‖x−x'‖ − mean‖y−y'‖`` with Euclidean distances and within-set
    means over distinct pairs (``n(n−1)``, the unbiased U-statistic). With ``equalize=True`` (the
    evaluation protocol) both sets of pair k are subsampled without replacement to
    ``n = min(n_a, n_b, cap)`` cells and the E-distance is averaged over ``n_resamples`` resamples
    with fixed seeds; ``equalize=False`` uses every cell once.

    ``squared=True`` (squared distances, self pairs excluded) reproduces scPerturb's ``edist``;
    ``include_self_pairs=True`` (plain distances, within-set means over ``n²``) reproduces
    pertpy 1.0 ``Distance("edistance")`` and cell-eval. Use them only for such parity.

    Parameters
    ----------
    sets_a, sets_b
        Equally long sequences of ``(n_k, d)`` arrays with the same ``d``.
    equalize, cap, n_resamples, seed
        Set-size equalisation (see above).
    squared, include_self_pairs
        Estimator options.
    pair_keys
        Integer per pair that seeds its subsampling (default: its position). Give pairs that share an
        observed set the same key (e.g. the condition index when several methods are scored), so
        every method is compared on the same subsampled observed and control cells.
    backend
        Kernel backend (``None``: ``cj.settings.kernel_backend``).

    Returns
    -------
    ``(K,)`` float64 array.

    Examples
    --------
    >>> import numpy as np
    >>> from celljepa.eval import edistance_sets
    >>> rng = np.random.default_rng(0)
    >>> a, b = rng.normal(size=(300, 5)), rng.normal(1.0, size=(200, 5))
    >>> edistance_sets([a], [b])[0] > 1.0
    np.True_
    """
    if len(sets_a) != len(sets_b):
        raise InputError(f"{len(sets_a)} predicted sets but {len(sets_b)} observed sets.")
    if len(sets_a) == 0:
        return np.zeros(0)
    arrays_a = [_as_array(a, f"set {k} (first)") for k, a in enumerate(sets_a)]
    arrays_b = [_as_array(b, f"set {k} (second)") for k, b in enumerate(sets_b)]
    dims = {a.shape[1] for a in arrays_a} | {b.shape[1] for b in arrays_b}
    if len(dims) != 1:
        raise InputError(f"sets have different feature dimensions {sorted(dims)}; score them in one space.")
    min_cells = 1 if include_self_pairs else 2
    for k, (a, b) in enumerate(zip(arrays_a, arrays_b, strict=True)):
        if min(len(a), len(b)) < min_cells:
            raise InputError(
                f"set pair {k} has {len(a)} and {len(b)} cells; the E-distance needs at least {min_cells} per set."
            )
    dtype = np.float64 if any(a.dtype == np.float64 for a in arrays_a + arrays_b) else np.float32
    rounds = n_resamples if equalize else 1
    if rounds < 1:
        raise InputError(f"n_resamples={n_resamples} must be at least 1.")
    if cap is not None and cap < min_cells:
        raise InputError(f"cap={cap} must be at least {min_cells}.")
    keys = list(range(len(arrays_a))) if pair_keys is None else [int(k) for k in pair_keys]
    if len(keys) != len(arrays_a):
        raise InputError(f"pair_keys has {len(keys)} entries for {len(arrays_a)} pairs.")
    total = np.zeros(len(arrays_a))
    for r in range(rounds):
        blocks, offsets = [], [0]
        for k, (a, b) in enumerate(zip(arrays_a, arrays_b, strict=True)):
            if equalize:
                n = min(len(a), len(b), cap if cap is not None else np.inf)
                n = int(n)
                rng_a = np.random.default_rng([seed, r, keys[k], 0])
                rng_b = np.random.default_rng([seed, r, keys[k], 1])
                a_sub = a[np.sort(rng_a.choice(len(a), n, replace=False))] if len(a) > n else a
                b_sub = b[np.sort(rng_b.choice(len(b), n, replace=False))] if len(b) > n else b
            else:
                a_sub, b_sub = a, b
            blocks += [a_sub, b_sub]
            offsets += [offsets[-1] + len(a_sub), offsets[-1] + len(a_sub) + len(b_sub)]
        x = torch.from_numpy(np.ascontiguousarray(np.concatenate(blocks).astype(dtype, copy=False)))
        k = len(arrays_a)
        pairs = torch.stack([torch.arange(0, 2 * k, 2), torch.arange(1, 2 * k, 2)], dim=1)
        e = _edistance_kernel(
            x,
            torch.tensor(offsets),
            pairs=pairs,
            squared=squared,
            include_self_pairs=include_self_pairs,
            backend=backend,
        )
        total += e.cpu().numpy()
    return total / rounds


def edistance_matrix(
    groups: Sequence[np.ndarray],
    *,
    equalize: bool = True,
    cap: int | None = DEFAULT_CAP,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    squared: bool = False,
    include_self_pairs: bool = False,
    backend: str | None = None,
) -> np.ndarray:
    """All-pairs E-distance matrix between groups of cells (zero diagonal).

    With ``equalize=True`` every group is subsampled to the same ``n = min(min_g n_g, cap)`` cells per
    resample, so all entries share one set size; ``equalize=False`` uses every cell.
    """
    arrays = [_as_array(g, f"group {i}") for i, g in enumerate(groups)]
    if len({a.shape[1] for a in arrays}) > 1:
        raise InputError("groups have different feature dimensions; score them in one space.")
    min_cells = 1 if include_self_pairs else 2
    small = [i for i, a in enumerate(arrays) if len(a) < min_cells]
    if small:
        raise InputError(f"group(s) {small[:10]} have fewer than {min_cells} cells.")
    dtype = np.float64 if any(a.dtype == np.float64 for a in arrays) else np.float32
    rounds = n_resamples if equalize else 1
    n = min(len(a) for a in arrays)
    if cap is not None:
        n = min(n, cap)
    total = np.zeros((len(arrays), len(arrays)))
    for r in range(rounds):
        blocks = []
        for i, a in enumerate(arrays):
            if equalize and len(a) > n:
                rng = np.random.default_rng([seed, r, i])
                a = a[np.sort(rng.choice(len(a), n, replace=False))]
            blocks.append(a)
        offsets = np.concatenate([[0], np.cumsum([len(b) for b in blocks])])
        x = torch.from_numpy(np.ascontiguousarray(np.concatenate(blocks).astype(dtype, copy=False)))
        e = _edistance_kernel(
            x, torch.from_numpy(offsets), squared=squared, include_self_pairs=include_self_pairs, backend=backend
        )
        total += e.cpu().numpy()
    return total / rounds
