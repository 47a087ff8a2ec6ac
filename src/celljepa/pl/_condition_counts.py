"""``cj.pl.condition_counts``: cells per condition and context, with the validation threshold."""

from __future__ import annotations

import os

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .._errors import InputError
from ..data import contract as C
from ._utils import finish, panels


def condition_counts(
    adata: AnnData,
    *,
    min_cells: int | None = None,
    max_conditions: int = 60,
    ax: plt.Axes | None = None,
    show: bool | None = None,
    save: str | os.PathLike | None = None,
    return_fig: bool = False,
) -> Figure | Axes | list[Axes] | None:
    """Bar chart of cells per perturbation, stacked by context, with the ``min_cells`` line.

    The legend names each context's colour and the threshold line; the x-axis says when only the largest
    perturbations are shown.

    Parameters
    ----------
    adata
        Annotated data matrix with the contract columns.
    min_cells
        Threshold drawn as a dashed line (default: the one recorded at ingestion, else 10).
    max_conditions
        Show at most this many perturbations (the largest first; controls always shown).
    ax
        Axes to draw into; a new figure otherwise.
    show, save, return_fig
        Show the figure / save it to this file (atomically) / return the Figure (see :mod:`celljepa.pl`).

    Returns
    -------
    ``None`` when shown; else the Figure with ``return_fig``, else the Axes.

    Examples
    --------
    >>> import celljepa as cj
    >>> adata = cj.datasets.demo()
    >>> ax = cj.pl.condition_counts(adata, save="counts.png")
    """
    for col in (C.PERTURBATION_ID, C.CONTEXT_ID):
        if col not in adata.obs.columns:
            raise InputError(f"obs['{col}'] is missing; run `cj.pp.standardize` first.")
    if min_cells is None:
        min_cells = int(adata.uns.get("celljepa", {}).get("min_cells", C.DEFAULT_MIN_CELLS))
    table = pd.crosstab(adata.obs[C.PERTURBATION_ID].astype(str), adata.obs[C.CONTEXT_ID].astype(str))
    order = table.sum(axis=1).sort_values(ascending=False)
    keep = [C.CONTROL_ID] if C.CONTROL_ID in order.index else []
    keep += [p for p in order.index if p != C.CONTROL_ID][: max(0, max_conditions - len(keep))]
    table = table.loc[keep]
    fig, axes, created = panels(ax, 1, 1, (max(6.0, 0.22 * len(table) + 2), 4.0))
    ax = axes[0][0]
    bottom = np.zeros(len(table))
    cmap = plt.get_cmap("tab10" if table.shape[1] <= 10 else "tab20")
    for i, context in enumerate(table.columns):
        ax.bar(range(len(table)), table[context].to_numpy(), bottom=bottom, label=context, color=cmap(i % cmap.N))
        bottom += table[context].to_numpy()
    ax.axhline(
        min_cells, color="0.3", linestyle="--", linewidth=1, label=f"fewest cells a condition needs ({min_cells})"
    )
    ax.set_xticks(range(len(table)))
    ax.set_xticklabels(table.index, rotation=90, fontsize=7)
    ax.set_xlabel("perturbation" + (f" (the {len(table)} largest)" if len(order) > len(table) else ""))
    ax.set_ylabel("cells")
    ax.set_title(f"{adata.uns.get('dataset_id', 'dataset')}: cells per perturbation and context")
    ax.legend(title="context", fontsize=7, title_fontsize=8, frameon=False, ncol=2)
    return finish(fig, axes, show=show, save=save, return_fig=return_fig, created=created)
