"""``cj.pl.edistance``: heatmap of all-pairs E-distances, or bars of E-distances to a control."""

from __future__ import annotations

import os

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .._errors import InputError
from ._utils import column_label, finish, panels


def edistance(
    adata: AnnData | None = None,
    *,
    key: str = "edistance",
    distances: pd.DataFrame | pd.Series | None = None,
    cluster: bool = True,
    cmap: str = "viridis",
    title: str | None = None,
    ax: plt.Axes | None = None,
    show: bool | None = None,
    save: str | os.PathLike | None = None,
    return_fig: bool = False,
) -> Figure | Axes | list[Axes] | None:
    """Plot E-distances from :func:`celljepa.tl.edistance`.

    An all-pairs result is drawn as a heatmap (rows and columns ordered by hierarchical clustering
    when ``cluster``); a one-sided result as horizontal bars sorted by distance to the control. Any
    other DataFrame of E-distances (e.g. test conditions × methods) is drawn as a heatmap as given. Axis
    labels name the grouping (``perturbation_id`` reads "perturbation"); the colour bar is the heatmap's legend.

    Parameters
    ----------
    adata
        Annotated data matrix holding ``uns[key]`` (or ``None`` with ``distances`` given).
    key
        Key of the result in ``adata.uns``.
    distances
        A result DataFrame (all pairs) or Series (one-sided) instead of ``adata``.
    cluster
        Order the heatmap by average-linkage clustering of the distances.
    cmap
        Colour map of the heatmap.
    title
        Axes title (default: what is measured, e.g. "E-distance of each perturbation to the control").
    ax
        Axes to draw into.
    show, save, return_fig
        Show the figure / save it to this file (atomically) / return the Figure (see :mod:`celljepa.pl`).

    Returns
    -------
    ``None`` when shown; else the Figure with ``return_fig``, else the Axes.

    Examples
    --------
    >>> import celljepa as cj, scanpy as sc
    >>> adata = cj.datasets.demo(); sc.pp.pca(adata)
    >>> cj.tl.edistance(adata, "perturbation_id")
    >>> ax = cj.pl.edistance(adata, save="edistance.png")
    >>> ax.get_title()
    'E-distance between every pair of perturbations'
    """
    control = None
    if distances is None:
        if adata is None or key not in adata.uns:
            raise InputError(f"no E-distances in adata.uns['{key}']; run `cj.tl.edistance` first or pass distances=.")
        distances = adata.uns[key]["distances"]
        control = (adata.uns[key].get("params") or {}).get("control")
    if isinstance(distances, pd.DataFrame) and distances.shape[1] == 1 and distances.columns[0] == "edistance":
        distances = distances["edistance"]
    n = len(distances)
    size = (
        (max(5.0, 0.25 * n + 2), max(4.0, 0.25 * n + 1.5))
        if isinstance(distances, pd.DataFrame)
        else (6.0, max(3.0, 0.22 * n + 1))
    )
    fig, axes, created = panels(ax, 1, 1, size)
    ax = axes[0][0]
    if isinstance(distances, pd.Series):
        s = distances.sort_values()
        ax.barh(np.arange(len(s)), s.to_numpy(), color="#4c72b0")
        ax.set_yticks(np.arange(len(s)))
        ax.set_yticklabels(s.index, fontsize=7)
        ax.axvline(0, color="0.3", linewidth=0.8)
        what = column_label(s.index.name) or "condition"
        to = f"the control ({control})" if control not in (None, "control") else "the control"
        ax.set_xlabel(f"E-distance to {to}")
        ax.set_ylabel(what)
        default = f"E-distance of each {what} to the control"
    else:
        mat = distances
        if cluster and len(mat) > 2 and mat.shape[0] == mat.shape[1] and list(mat.index) == list(mat.columns):
            from scipy.cluster.hierarchy import leaves_list, linkage
            from scipy.spatial.distance import squareform

            sym = np.clip((mat.to_numpy() + mat.to_numpy().T) / 2, 0, None)
            np.fill_diagonal(sym, 0.0)
            order = leaves_list(linkage(squareform(sym, checks=False), method="average"))
            mat = mat.iloc[order, order]
        im = ax.imshow(mat.to_numpy(), cmap=cmap)
        ax.set_xticks(np.arange(mat.shape[1]))
        ax.set_yticks(np.arange(mat.shape[0]))
        ax.set_xticklabels(mat.columns, rotation=90, fontsize=7)
        ax.set_yticklabels(mat.index, fontsize=7)
        fig.colorbar(im, ax=ax, label="E-distance (0: same distribution)", shrink=0.8)
        rows, cols = column_label(mat.index.name) or "condition", column_label(mat.columns.name) or "condition"
        ax.set_xlabel(cols)
        ax.set_ylabel(rows)
        pairs = rows == cols and mat.shape[0] == mat.shape[1] and set(mat.index) == set(mat.columns)
        default = f"E-distance between every pair of {rows}s" if pairs else f"E-distance per {rows} and {cols}"
    ax.set_title(title or default)
    return finish(fig, axes, show=show, save=save, return_fig=return_fig, created=created)
