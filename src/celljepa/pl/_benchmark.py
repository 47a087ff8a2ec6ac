"""``cj.pl.benchmark``: each method's mean metric with its 95% bootstrap CI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .._errors import InputError
from ._utils import finish, panels

_LABELS = {
    "edistance": "E-distance ↓",
    "mse": "MSE of mean ↓",
    "cosine_distance": "cosine distance ↓",
    "delta_pearson": "Δ Pearson ↑",
    "delta_pearson_top20_de": "Δ Pearson, top-20 DE ↑",
    "top1": "retrieval top-1 ↑",
    "mrr": "retrieval MRR ↑",
}


def _table(metrics) -> pd.DataFrame:
    if isinstance(metrics, (str, os.PathLike)):
        path = Path(metrics)
        if not path.exists():
            raise InputError(f"metrics file '{path}' not found.")
        metrics = json.loads(path.read_text())
    if isinstance(metrics, pd.DataFrame):
        need = {"method", "metric", "mean", "ci_low", "ci_high"}
        if not need <= set(metrics.columns):
            raise InputError(f"the DataFrame needs columns {sorted(need)}.")
        return metrics
    if isinstance(metrics, dict) and "methods" in metrics:
        rows = [{"method": m, "metric": k, **v} for m, d in metrics["methods"].items() for k, v in d.items()]
        return pd.DataFrame(rows)
    raise InputError(
        "pass a metrics.json path, its parsed dict, or a DataFrame with method/metric/mean/ci_low/ci_high."
    )


def benchmark(
    metrics,
    *,
    metrics_to_show: list[str] | None = None,
    highlight: str | None = None,
    title: str | None = None,
    ncols: int = 4,
    ax: plt.Axes | None = None,
    show: bool | None = None,
    save: str | os.PathLike | None = None,
    return_fig: bool = False,
):
    """Bar chart per metric: each method's mean over test conditions with its 95% bootstrap CI.

    Parameters
    ----------
    metrics
        Path of a ``metrics.json``, its parsed dict (evaluation.md layout), or a long DataFrame with
        columns ``method, metric, mean, ci_low, ci_high``.
    metrics_to_show
        Metrics to draw (default: all present).
    highlight
        Method drawn in a contrasting colour (default: the comparator when recorded).
    title
        Figure title (default: dataset, split and fold when known).
    ncols
        Panels per row.
    ax
        Axes to draw into (with one metric to show).
    show, save, return_fig
        Show the figure / save it to this file (atomically) / return the Figure (see :mod:`celljepa.pl`).

    Returns
    -------
    ``None`` when shown; else the Figure with ``return_fig``, else the Axes (a list, one per metric; one bar
    per method).

    Examples
    --------
    >>> import celljepa as cj
    >>> fig = cj.pl.benchmark("runs/demo/norman2019/S1_unseen_perturbation/fold0/metrics.json",
    ...                       save="bars.png", return_fig=True)  # doctest: +SKIP
    """
    raw = metrics
    table = _table(metrics)
    if isinstance(raw, (str, os.PathLike)):
        raw = json.loads(Path(raw).read_text())
    shown = metrics_to_show or list(dict.fromkeys(table["metric"]))
    missing = [m for m in shown if m not in set(table["metric"])]
    if missing:
        raise InputError(f"metric(s) {missing} are not in the results; available: {sorted(set(table['metric']))}.")
    if highlight is None and isinstance(raw, dict):
        highlight = raw.get("comparator", raw.get("best_baseline"))
    methods = list(dict.fromkeys(table["method"]))
    ncols = min(ncols, len(shown))
    nrows = int(np.ceil(len(shown) / ncols))
    fig, axes, created = panels(ax, nrows, ncols, (3.2 * ncols, 2.8 * nrows + 0.4), f"{len(shown)} metrics")
    for ax in axes.ravel()[len(shown) :]:
        ax.remove()
    for ax, metric in zip(axes.ravel(), shown, strict=False):
        sub = table[table["metric"] == metric].set_index("method").reindex(methods)
        means = sub["mean"].to_numpy(dtype=float)
        low = np.clip(means - sub["ci_low"].to_numpy(dtype=float), 0, None)
        high = np.clip(sub["ci_high"].to_numpy(dtype=float) - means, 0, None)
        colors = ["#dd8452" if m == highlight else "#4c72b0" for m in methods]
        ax.bar(
            np.arange(len(methods)),
            np.nan_to_num(means),
            yerr=np.nan_to_num(np.vstack([low, high])),
            color=colors,
            capsize=3,
        )
        ax.set_xticks(np.arange(len(methods)))
        ax.set_xticklabels(methods, rotation=45, ha="right", fontsize=8)
        ax.set_title(_LABELS.get(metric, metric), fontsize=9)
        ax.axhline(0, color="0.3", linewidth=0.6)
    if title is None and isinstance(raw, dict) and "dataset_id" in raw:
        title = f"{raw['dataset_id']} · {raw.get('split', '')} · fold {raw.get('fold', '')} (95% bootstrap CIs)"
    if title:
        (fig.suptitle if created else axes[0][0].set_title)(title, fontsize=10)
    return finish(fig, axes, show=show, save=save, return_fig=return_fig, created=created)
