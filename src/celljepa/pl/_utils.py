"""Shared plotting helpers: one contract for every ``cj.pl`` function, as in scanpy.

Every function takes ``ax=`` (draw into these axes; only for a plot of one panel), ``show=`` (default: on an
interactive backend when nothing is saved), ``save=`` (a file; the format from its suffix; written
atomically) and ``return_fig=``. It returns ``None`` when the figure is shown, else the Figure with
``return_fig=True``, else the Axes (a list of Axes for a plot of several panels).
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .._errors import InputError
from .._io import write_atomic

#: What every ``cj.pl`` function returns: ``None`` when shown, the Figure with ``return_fig``, else the Axes
#: (a list of Axes for a plot of several panels).
PlotResult = Figure | Axes | list[Axes] | None

_NON_INTERACTIVE = {"agg", "pdf", "svg", "ps", "cairo", "template"}

#: Readable names of the benchmark's metric keys (``celljepa.bench.pooling.METRICS``, plus the E-distance over
#: the conditions with a detectable effect) and whether higher is better; docs/evaluation.md defines them.
METRIC_LABELS: dict[str, tuple[str, bool]] = {
    "edistance": ("E-distance to observed", False),
    "edistance_effect": ("E-distance to observed, conditions with an effect", False),
    "mse": ("MSE of the mean (evaluation space)", False),
    "cosine_distance": ("Cosine distance of the mean", False),
    "delta_pearson": ("Pearson Δ (change from control)", True),
    "delta_pearson_top20_de": ("Pearson Δ, top-20 DE genes", True),
    "top1": ("Retrieval top-1 accuracy", True),
    "mrr": ("Retrieval MRR (mean reciprocal rank)", True),
}
#: Readable names of the contract's obs columns, for axis labels and legend titles.
COLUMN_LABELS = {
    "perturbation_id": "perturbation",
    "context_id": "context",
    "condition": "condition",
    "target_gene": "target gene",
}


def metric_label(key: str, *, direction: bool = True, sep: str = " ", width: int | None = None) -> str:
    """A readable name of a metric key, with ``(lower/higher is better)`` after ``sep`` when ``direction``.

    ``width`` wraps the name onto lines of at most that many characters (panel titles).

    Examples
    --------
    >>> metric_label("edistance")
    'E-distance to observed (lower is better)'
    >>> metric_label("delta_pearson", direction=False)
    'Pearson Δ (change from control)'
    >>> metric_label("my_metric")
    'My metric'
    """
    if key not in METRIC_LABELS:
        text = str(key).replace("_", " ")
        return text[:1].upper() + text[1:]
    name, higher = METRIC_LABELS[key]
    name = textwrap.fill(name, width) if width else name
    return f"{name}{sep}({'higher' if higher else 'lower'} is better)" if direction else name


def split_label(split) -> str:
    """A readable split name: ``S1_unseen_perturbation`` → ``S1 (unseen perturbation)``."""
    code, _, rest = str(split).partition("_")
    return f"{code} ({rest.replace('_', ' ')})" if rest else code


def column_label(key) -> str:
    """A readable name of an obs column or index name (``perturbation_id`` → ``perturbation``)."""
    if key is None:
        return ""
    return COLUMN_LABELS.get(str(key), str(key).replace("_", " "))


def panels(
    ax: plt.Axes | None, nrows: int, ncols: int, figsize: tuple[float, float], what: str = "this plot"
) -> tuple[plt.Figure, np.ndarray, bool]:
    """``(figure, 2-D array of axes, created)``: new axes, or ``ax`` when the plot has one panel."""
    if ax is None:
        fig, axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False)
        return fig, axes, True
    if nrows * ncols != 1:
        raise InputError(
            f"ax= takes a plot of one panel; {what} draws {nrows * ncols}. Fix: drop ax=, or ask for one panel."
        )
    return ax.figure, np.array([[ax]], dtype=object), False


def finish(
    fig: plt.Figure, axes, *, show: bool | None, save: str | os.PathLike | None, return_fig: bool, created: bool = True
) -> PlotResult:
    """Lay out (a figure of our own), save (atomically), show; return what the ``cj.pl`` contract says."""
    if created:
        fig.tight_layout()
    if save is not None:
        fmt = Path(save).suffix.lstrip(".").lower() or None
        write_atomic(save, lambda tmp: fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight"))
    if show is None:
        show = save is None and plt.get_backend().lower() not in _NON_INTERACTIVE
    if show:
        plt.show()
        return None
    if return_fig:
        return fig
    axes = [a for a in np.asarray(axes, dtype=object).ravel() if a in fig.axes]
    return axes[0] if len(axes) == 1 else axes
