"""Shared plotting helpers: one contract for every ``cj.pl`` function, as in scanpy.

Every function takes ``ax=`` (draw into these axes; only for a plot of one panel), ``show=`` (default: on an
interactive backend when nothing is saved), ``save=`` (a file; the format from its suffix; written
atomically) and ``return_fig=``. It returns ``None`` when the figure is shown, else the Figure with
``return_fig=True``, else the Axes (a list of Axes for a plot of several panels).
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from .._errors import InputError
from .._io import write_atomic

_NON_INTERACTIVE = {"agg", "pdf", "svg", "ps", "cairo", "template"}


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
):
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
