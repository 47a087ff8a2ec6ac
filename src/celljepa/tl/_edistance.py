"""``cj.tl.edistance``: E-distance between groups of cells, all pairs or against a control."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from .._errors import InputError, renamed_argument
from .._logging import log_step
from ..eval.edistance import DEFAULT_CAP, DEFAULT_RESAMPLES, edistance_matrix, edistance_sets
from ._groups import cells_by_group, check_group, embedding, group_labels


def representation(adata: AnnData, use_rep: str) -> np.ndarray:
    """The cells × dimensions matrix named by ``use_rep``: an ``obsm`` key, or ``"X"`` for ``adata.X``."""
    if use_rep != "X":
        return embedding(adata, use_rep)
    x = adata.X
    x = np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float64)
    if not np.isfinite(x).all():
        raise InputError("adata.X has NaN/inf values; use_rep='X' needs finite values.")
    return x


def edistance(
    adata: AnnData,
    groupby: str,
    *,
    use_rep: str = "X_pca",
    control: str | None = None,
    groups: list[str] | None = None,
    equalize: bool = True,
    cap: int | None = DEFAULT_CAP,
    n_resamples: int = DEFAULT_RESAMPLES,
    squared: bool = False,
    include_self_pairs: bool = False,
    seed: int = 0,
    key_added: str = "edistance",
    backend: str | None = None,
    copy: bool = False,
    obsm_key: str | None = None,
) -> AnnData | None:
    """E-distance between groups of cells in an embedding.

    ``E(X, Y) = 2·mean‖x−y‖ − mean‖x−x'‖ − mean‖y−y'‖`` with Euclidean distances; within-group means
    over distinct pairs (the unbiased U-statistic). By default set sizes are equalised by sampling
    (one-sided: ``min(n_group, n_control, cap)`` per pair; all pairs: ``min(smallest group, cap)``)
    and averaged over ``n_resamples`` seeded resamples, as celljepa's evaluation protocol does.
    ``equalize=False`` uses every cell. ``squared=True`` (with ``equalize=False``) reproduces
    scPerturb's ``edist``; ``equalize=False, include_self_pairs=True`` reproduces pertpy's
    ``Distance("edistance")`` and cell-eval (see ``docs/pertpy.md``). Computed by
    :func:`celljepa.kernels.edistance` tile by tile, never through an N × N matrix.

    Parameters
    ----------
    adata
        Annotated data matrix with an embedding in ``obsm``.
    groupby
        obs column defining the groups (e.g. ``"perturbation_id"``).
    use_rep
        Representation to measure in: an ``obsm`` key (``"X_pca"``, ``"X_jepa"``, ...) or ``"X"``.
    control
        A group of ``groupby``: compute every group against it (one-sided) instead of all pairs.
    groups
        Restrict to these groups (default: all).
    equalize, cap, n_resamples, seed
        Set-size equalisation (see above).
    squared, include_self_pairs
        Estimator variants, for parity with other tools only.
    key_added
        Key in ``adata.uns`` (:func:`celljepa.pl.edistance` reads ``"edistance"`` by default).
    backend
        Kernel backend (``None``: ``cj.settings.kernel_backend``).
    copy
        Return a modified copy of ``adata`` instead of writing into it.
    obsm_key
        Deprecated alias of ``use_rep`` (emits a FutureWarning).

    Returns
    -------
    Returns ``None`` (or the modified copy when ``copy=True``) and sets

    ``adata.uns[key_added]["distances"]``
        All pairs: a groups × groups DataFrame; one-sided (``control`` given): a DataFrame indexed by
        group with one column ``edistance`` (the control included, at 0).
    ``adata.uns[key_added]["params"]``
        The arguments, and ``mode`` (``"all_pairs"`` or ``"onesided"``).

    Examples
    --------
    >>> import celljepa as cj, scanpy as sc
    >>> adata = cj.datasets.demo()
    >>> sc.pp.pca(adata)
    >>> cj.tl.edistance(adata, "perturbation_id", control="control")
    >>> d = adata.uns["edistance"]["distances"]["edistance"]
    >>> d.sort_values(ascending=False).head()
    """
    use_rep = renamed_argument("cj.tl.edistance", "obsm_key", obsm_key, "use_rep", use_rep, "X_pca")
    adata = adata.copy() if copy else adata
    with log_step("edistance") as written:
        x = representation(adata, use_rep)
        labels = group_labels(adata, groupby)
        names = list(groups) if groups is not None else sorted(labels.unique())
        for g in names:
            check_group(labels, g, groupby, argument="groups")
        min_cells = 1 if include_self_pairs else 2
        params = {
            "groupby": groupby,
            "use_rep": use_rep,
            "equalize": equalize,
            "cap": cap if cap else 0,
            "n_resamples": n_resamples,
            "squared": squared,
            "include_self_pairs": include_self_pairs,
            "seed": seed,
            "mode": "all_pairs" if control is None else "onesided",
        }
        if control is not None:
            check_group(labels, control, groupby)
            params["control"] = control
            others = [g for g in names if g != control]
            sets = cells_by_group(x, labels, others + [control], min_cells=min_cells)
            values = edistance_sets(
                [sets[g] for g in others],
                [sets[control]] * len(others),
                equalize=equalize,
                cap=cap,
                n_resamples=n_resamples,
                seed=seed,
                squared=squared,
                include_self_pairs=include_self_pairs,
                backend=backend,
            )
            result = pd.Series(np.append(values, 0.0), index=others + [control], name="edistance")
            result.index.name = groupby
            stored = result.to_frame()
        else:
            sets = cells_by_group(x, labels, names, min_cells=min_cells)
            mat = edistance_matrix(
                [sets[g] for g in names],
                equalize=equalize,
                cap=cap,
                n_resamples=n_resamples,
                seed=seed,
                squared=squared,
                include_self_pairs=include_self_pairs,
                backend=backend,
            )
            stored = pd.DataFrame(mat, index=pd.Index(names, name=groupby), columns=pd.Index(names, name=groupby))
        adata.uns[key_added] = {"params": params, "distances": stored}
        written.append(f"uns['{key_added}']")
    return adata if copy else None
