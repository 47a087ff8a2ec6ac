"""``cj.pl.verdict``: where the primary JEPA model beats, ties with or loses to its comparator (paired differences)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from .._errors import InputError
from ._utils import finish

_COLORS = {"wins": "#55a868", "ties": "#8c8c8c", "loses": "#c44e52", "insufficient evidence": "#8172b3",
           "undetermined": "#cccccc", "old protocol": "#dddddd"}


def _results(results) -> dict:
    if isinstance(results, (str, os.PathLike)):
        path = Path(results)
        if path.is_dir():
            path = path / "metrics_combined.json"
        if not path.is_file():
            raise InputError(f"results file '{path}' not found (a benchmark's metrics_combined.json or its folder).")
        results = json.loads(path.read_text())
    if isinstance(results, dict) and "results" in results:
        results = results["results"]
    if isinstance(results, dict) and "verdict" in results:
        results = {f"{results.get('dataset_id', '')}/{results.get('split', '')}": results}
    if not isinstance(results, dict) or not any(isinstance(m, dict) and "verdict" in m for m in results.values()):
        raise InputError("no verdicts in these results: run the benchmark with its JEPA models (not --no-jepa).")
    return {k: m for k, m in results.items() if isinstance(m, dict) and "verdict" in m}


def verdict(results, *, metrics: tuple[str, ...] = ("edistance", "delta_pearson"), title: str | None = None,
            show: bool | None = None, save: str | os.PathLike | None = None):
    """Forest plot of the primary JEPA model minus its comparator, per dataset × split, with paired 95% CIs.

    The comparator is the non-JEPA method chosen on validation conditions; colours are the verdicts
    (wins / ties / loses / insufficient evidence, see :mod:`celljepa.eval.verdict`).

    Parameters
    ----------
    results
        A benchmark folder, its ``metrics_combined.json`` (path or parsed), or one ``metrics.json`` dict
        with a ``verdict``.
    metrics
        Differences to draw, one panel each: ``"edistance"`` (below 0: JEPA better) and
        ``"delta_pearson"`` (above 0: JEPA better).
    title
        Figure title.
    show, save
        Show the figure / write it to a file (the format from the suffix).

    Returns
    -------
    The matplotlib figure; a row per dataset × split, coloured by the verdict.

    Examples
    --------
    >>> import celljepa as cj
    >>> fig = cj.pl.verdict("runs/demo", save="verdict.png")  # doctest: +SKIP
    """
    table = _results(results)
    unknown = [m for m in metrics if m not in ("edistance", "delta_pearson")]
    if unknown:
        raise InputError(f"metrics must be among ('edistance', 'delta_pearson'), got {unknown}.")
    keys = list(table)
    y = np.arange(len(keys))[::-1]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics) + 1.6, 0.55 * len(keys) + 1.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for yi, key in zip(y, keys, strict=True):
            v = table[key]["verdict"]
            d = v[metric]
            ax.errorbar(d["diff"], yi, xerr=[[d["diff"] - d["ci_low"]], [d["ci_high"] - d["diff"]]], fmt="o",
                        color=_COLORS[v["outcome"]], capsize=3)
        ax.axvline(0, color="0.3", linewidth=0.8)
        ax.xaxis.set_major_locator(plt.MaxNLocator(4))
        ax.tick_params(axis="x", labelsize=8)
        ax.set_yticks(y)
        ax.set_yticklabels([f"{k} ({table[k]['verdict']['model']} vs {table[k]['verdict']['baseline']})"
                            for k in keys] if ax is axes[0][0] else [], fontsize=8)
        better = "← JEPA better" if metric == "edistance" else "JEPA better →"
        ax.set_xlabel(f"Δ {'E-distance' if metric == 'edistance' else 'Δ Pearson'}\n(JEPA − comparator)\n{better}",
                      fontsize=8)
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=c, label=o) for o, c in _COLORS.items()
               if any(t["verdict"]["outcome"] == o for t in table.values())]
    axes[0][-1].legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False,
                       title="verdict (E-distance)", title_fontsize=8)  # beside the panels: never over a CI
    fig.suptitle(title or "Primary JEPA model vs comparator chosen on validation (paired 95% bootstrap CIs)",
                 fontsize=10)
    finish(fig, show=show, save=save)
    return fig
