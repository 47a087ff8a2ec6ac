"""Shared plotting helpers: saving and showing like scanpy."""

from __future__ import annotations

import os

import matplotlib.pyplot as plt


def finish(fig: plt.Figure, *, show: bool | None, save: str | os.PathLike | None) -> None:
    """Save the figure when asked; show it when ``show`` (default: interactive backends without save)."""
    fig.tight_layout()
    if save is not None:
        fig.savefig(save, dpi=150, bbox_inches="tight")
    if show is None:
        show = save is None and plt.get_backend().lower() not in {"agg", "pdf", "svg", "ps", "cairo", "template"}
    if show:
        plt.show()
