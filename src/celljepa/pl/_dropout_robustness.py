"""``cj.pl.dropout_robustness``: an embedding's score against sequencing depth, per dataset and representation."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .._errors import InputError
from ._utils import finish, panels

_NAMES = {"jepa": "JEPA", "pca": "PCA (50 PCs)", "scvi": "scVI"}
_MODES = {"transfer": ("-", "fitted at full depth"), "refit": ("--", "refitted on thinned cells")}


def dropout_robustness(
    scores: pd.DataFrame | str | os.PathLike,
    *,
    metric: str = "bio_conservation",
    ax: plt.Axes | None = None,
    show: bool | None = None,
    save: str | os.PathLike | None = None,
    return_fig: bool = False,
) -> Figure | Axes | list[Axes] | None:
    """Score against the share of reads kept: one panel per dataset, one colour per representation.

    Solid lines: the model fitted at full depth embeds the thinned cells; dashed: refitted on them. Points are
    means over seeds, bars the smallest and largest seed.

    Parameters
    ----------
    scores
        The per-task scores of the embedding benchmark (:func:`celljepa.bench.embedding.scores_frame`), or the
        path of its ``scores.csv``.
    metric
        The score to plot (a column: ``bio_conservation``, ``nmi``, ``clisi``, ...).
    ax
        Axes to draw into (only when the scores hold one dataset).
    show, save, return_fig
        Show the figure / save it to this file (atomically) / return the Figure (see :mod:`celljepa.pl`).

    Returns
    -------
    ``None`` when shown; else the Figure with ``return_fig``, else the Axes (a list for several datasets).

    Examples
    --------
    >>> import celljepa as cj
    >>> ax = cj.pl.dropout_robustness("benchmarks/results/embeddings/scores.csv", show=False)  # doctest: +SKIP
    """
    frame = pd.read_csv(scores) if isinstance(scores, (str, os.PathLike, Path)) else scores
    needed = {"dataset", "method", "mode", "depth", "seed", metric}
    missing = sorted(needed - set(frame.columns))
    if missing:
        raise InputError(f"scores lack the column(s) {missing}; pass the embedding benchmark's scores.csv.")
    frame = frame[frame[metric].notna()]
    datasets = sorted(frame.loc[frame["mode"] != "full", "dataset"].unique())
    if not datasets:
        raise InputError("no thinned scores to plot: the benchmark ran no depth on a dataset with counts and labels.")
    fig, axes, created = panels(ax, 1, len(datasets), (4.2 * len(datasets), 3.6), "dropout_robustness")
    colours = {m: plt.get_cmap("tab10")(i) for i, m in enumerate(sorted(frame["method"].unique()))}
    for ax_, dataset in zip(axes[0], datasets, strict=True):
        sub = frame[frame["dataset"] == dataset]
        for method, colour in colours.items():
            full = sub[(sub["method"] == method) & (sub["mode"] == "full")]
            for mode, (style, _) in _MODES.items():
                part = pd.concat([full, sub[(sub["method"] == method) & (sub["mode"] == mode)]])
                if part.empty or (part["mode"] == mode).sum() == 0:
                    continue
                g = part.groupby("depth")[metric]
                depth = np.asarray(g.mean().index, dtype=float)
                mean, lo, hi = g.mean().to_numpy(), g.min().to_numpy(), g.max().to_numpy()
                ax_.errorbar(
                    depth * 100,
                    mean,
                    yerr=[mean - lo, hi - mean],
                    color=colour,
                    linestyle=style,
                    marker="o",
                    markersize=3,
                    capsize=2,
                    linewidth=1.2,
                )
        ax_.set_xscale("log")
        ax_.set_xticks([5, 10, 25, 50, 100])
        ax_.set_xticklabels(["5", "10", "25", "50", "100"])
        ax_.set_xlabel("reads kept (%)")
        ax_.set_ylabel(metric.replace("_", " ") + " (higher is better)")
        ax_.set_title(dataset)
    handles = [plt.Line2D([], [], color=c, marker="o", label=_NAMES.get(m, m)) for m, c in colours.items()]
    handles += [plt.Line2D([], [], color="0.3", linestyle=s, label=text) for s, text in _MODES.values()]
    axes[0][-1].legend(handles=handles, fontsize=7, loc="lower right")
    if created:
        fig.suptitle("Dropout robustness: counts thinned binomially\n(mean over seeds; bars: seed range)")
    return finish(fig, axes, show=show, save=save, return_fig=return_fig, created=created)
