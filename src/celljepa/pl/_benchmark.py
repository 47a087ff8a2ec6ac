"""``cj.pl.benchmark``: each method's mean metric with its 95% bootstrap CI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from .._errors import InputError
from ._utils import finish, metric_label, panels, split_label

_BAR = "#4c72b0"
_HIGHLIGHT = "#dd8452"


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
) -> Figure | Axes | list[Axes] | None:
    """Bar chart per metric: each method's mean over test conditions with its 95% bootstrap CI.

    Each panel is titled by the metric's name and whether lower or higher is better (``edistance`` reads
    "E-distance to observed (lower is better)"); the legend names the highlighted method (the comparator
    chosen on validation conditions, when the results record one) and the error bars.

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
    >>> axes = cj.pl.benchmark(
    ...     {"methods": {"no_change": {"edistance": {"mean": 0.9, "ci_low": 0.8, "ci_high": 1.0}},
    ...                  "ridge": {"edistance": {"mean": 0.4, "ci_low": 0.3, "ci_high": 0.5}}},
    ...      "comparator": "ridge"}, show=False)
    >>> axes.get_title().splitlines()
    ['E-distance to observed', '(lower is better)']
    """
    raw = metrics
    table = _table(metrics)
    if isinstance(raw, (str, os.PathLike)):
        raw = json.loads(Path(raw).read_text())
    shown = metrics_to_show or list(dict.fromkeys(table["metric"]))
    missing = [m for m in shown if m not in set(table["metric"])]
    if missing:
        raise InputError(f"metric(s) {missing} are not in the results; available: {sorted(set(table['metric']))}.")
    highlight_label = f"{highlight} (highlighted)"
    if highlight is None and isinstance(raw, dict):
        if raw.get("comparator"):
            highlight = raw["comparator"]
            highlight_label = f"{highlight}: comparator (best non-JEPA method on validation)"
        elif raw.get("best_baseline"):
            highlight = raw["best_baseline"]
            highlight_label = f"{highlight}: best baseline"
    methods = list(dict.fromkeys(table["method"]))
    ncols = min(ncols, len(shown))
    nrows = int(np.ceil(len(shown) / ncols))
    fig, axes, created = panels(ax, nrows, ncols, (3.2 * ncols + 2.8, 2.8 * nrows + 0.6), f"{len(shown)} metrics")
    for ax in axes.ravel()[len(shown) :]:
        ax.remove()
    for i, (ax, metric) in enumerate(zip(axes.ravel(), shown, strict=False)):
        sub = table[table["metric"] == metric].set_index("method").reindex(methods)
        means = sub["mean"].to_numpy(dtype=float)
        low = np.clip(means - sub["ci_low"].to_numpy(dtype=float), 0, None)
        high = np.clip(sub["ci_high"].to_numpy(dtype=float) - means, 0, None)
        colors = [_HIGHLIGHT if m == highlight else _BAR for m in methods]
        ax.bar(
            np.arange(len(methods)),
            np.nan_to_num(means),
            yerr=np.nan_to_num(np.vstack([low, high])),
            color=colors,
            capsize=3,
        )
        ax.set_xticks(np.arange(len(methods)))
        ax.set_xticklabels(methods, rotation=45, ha="right", fontsize=8)
        ax.set_title(metric_label(metric, sep="\n", width=30), fontsize=9)
        ax.axhline(0, color="0.3", linewidth=0.6)
        if i % ncols == 0:
            ax.set_ylabel("mean over test conditions", fontsize=8)
        if i + ncols >= len(shown):  # the lowest panel of its column
            ax.set_xlabel("method", fontsize=8)
    handles = [Patch(color=_BAR, label="other methods" if highlight in methods else "mean of each method")]
    if highlight in methods:
        handles.insert(0, Patch(color=_HIGHLIGHT, label=highlight_label))
    handles.append(Line2D([], [], color="black", marker="_", markersize=8, linestyle="-", label="95% bootstrap CI"))
    axes.ravel()[min(ncols, len(shown)) - 1].legend(
        handles=handles, fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1.0)
    )  # beside the first row of panels, never over a bar
    if title is None and isinstance(raw, dict) and "dataset_id" in raw:
        fold = f" · fold {raw['fold']}" if raw.get("fold") is not None else ""
        title = f"{raw['dataset_id']} · {split_label(raw.get('split', ''))}{fold}: methods on the test conditions"
    if title is None:
        title = "Methods on the test conditions (95% bootstrap CIs)"
    if title:
        (fig.suptitle if created else axes[0][0].set_title)(title, fontsize=10)
    return finish(fig, axes, show=show, save=save, return_fig=return_fig, created=created)
