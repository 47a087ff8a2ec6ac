"""Shared checks for tools that compare groups of cells in an obsm embedding."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from .._errors import InputError
from ..data._keys import require_obs_key, suggest


def embedding(adata: AnnData, obsm_key: str) -> np.ndarray:
    """``adata.obsm[obsm_key]`` as a dense float array, with an error naming the tool to run first."""
    if obsm_key not in adata.obsm:
        hint = (
            " Run `sc.pp.pca(adata)` first."
            if obsm_key == "X_pca"
            else (" Run `cj.tl.jepa_embed(adata)` first." if obsm_key == "X_jepa" else "")
        )
        raise InputError(f"adata.obsm['{obsm_key}'] does not exist.{suggest(obsm_key, adata.obsm.keys())}{hint}")
    x = adata.obsm[obsm_key]
    x = np.asarray(x.toarray() if hasattr(x, "toarray") else x)
    if x.ndim != 2 or x.shape[0] != adata.n_obs:
        raise InputError(f"adata.obsm['{obsm_key}'] must be a cells × dimensions array, got shape {x.shape}.")
    if not np.isfinite(x).all():
        raise InputError(f"adata.obsm['{obsm_key}'] has NaN/inf values.")
    return x


def group_labels(adata: AnnData, groupby: str) -> pd.Series:
    """The labels of ``adata.obs[groupby]`` as strings (error with close matches if missing)."""
    require_obs_key(adata.obs.columns, groupby, argument="groupby")
    labels = adata.obs[groupby]
    if labels.isna().any():
        raise InputError(f"obs['{groupby}'] has {int(labels.isna().sum())} cell(s) without a label.")
    return labels.astype(str)


def check_group(labels: pd.Series, name: str, groupby: str, argument: str = "control") -> None:
    """Error when ``name`` is not a label of ``groupby``."""
    values = set(labels.unique())
    if name not in values:
        raise InputError(f"{argument}='{name}' is not a value of obs['{groupby}'].{suggest(name, values)}")


def cells_by_group(x: np.ndarray, labels: pd.Series, groups: list[str], *, min_cells: int) -> dict[str, np.ndarray]:
    """Rows of ``x`` per group, refusing groups with fewer than ``min_cells`` cells."""
    codes = labels.to_numpy()
    out = {}
    for g in groups:
        rows = np.flatnonzero(codes == g)
        if len(rows) < min_cells:
            raise InputError(
                f"group '{g}' has {len(rows)} cell(s); at least {min_cells} are needed. Drop or merge small groups "
                f"(e.g. adata[adata.obs[...].map(adata.obs[...].value_counts()) >= {min_cells}])."
            )
        out[g] = x[rows]
    return out
