"""``cj.pl.verdict``: where the primary JEPA model beats or loses to its comparator (paired differences)."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .._errors import InputError
from ..eval.report import diff_cell
from ..eval.verdict import label
from ._utils import finish, panels

_COLORS = {
    "wins": "#55a868",
    "no detectable difference": "#8c8c8c",
    "loses": "#c44e52",
    "not claimable": "#8172b3",
    "undetermined": "#cccccc",
    "old protocol": "#dddddd",
    "protocol v2": "#dddddd",
    "superseded": "#eeeeee",
}
_METRICS = {"edistance": ("E-distance", False), "mse": ("MSE", False), "delta_pearson": ("Pearson-Δ", True)}


def _row(v: dict, metric: str) -> dict:
    """The comparison of one verdict on ``metric`` (the primary E-distance row, or a secondary one)."""
    if metric == "edistance":
        return {**v["edistance"], "outcome": v["edistance"].get("outcome", v.get("outcome"))}
    return ((v.get("secondary") or {}).get(metric) or {}).get("vs_comparator") or {}


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


def verdict(
    results,
    *,
    metrics: tuple[str, ...] = ("edistance", "delta_pearson"),
    title: str | None = None,
    legend: bool = True,
    ax: plt.Axes | None = None,
    show: bool | None = None,
    save: str | os.PathLike | None = None,
    return_fig: bool = False,
) -> Figure | Axes | list[Axes] | None:
    """Forest plot of the primary JEPA model minus its comparator, per dataset × split, with paired 95% CIs.

    The comparator is the non-JEPA method chosen on validation conditions; colours are each metric's verdict
    (wins / loses / no detectable difference / not claimable, see :mod:`celljepa.eval.verdict`).

    Parameters
    ----------
    results
        A benchmark folder, its ``metrics_combined.json`` (path or parsed), or one ``metrics.json`` dict
        with a ``verdict``.
    metrics
        Differences to draw, one panel each: ``"edistance"`` and ``"mse"`` (below 0: JEPA better) and
        ``"delta_pearson"`` (above 0: JEPA better).
    title
        Figure title.
    legend
        Draw the legend of the verdict colours (beside the last panel).
    ax
        Axes to draw into (with one metric).
    show, save, return_fig
        Show the figure / save it to this file (atomically) / return the Figure (see :mod:`celljepa.pl`).

    Returns
    -------
    ``None`` when shown; else the Figure with ``return_fig``, else the Axes (a list, one per metric); a row per
    dataset × split, coloured by the verdict.

    Examples
    --------
    >>> import celljepa as cj
    >>> fig = cj.pl.verdict("runs/demo", save="verdict.png", return_fig=True)  # doctest: +SKIP
    """
    table = _results(results)
    unknown = [m for m in metrics if m not in _METRICS]
    if unknown:
        raise InputError(f"metrics must be among {tuple(_METRICS)}, got {unknown}.")
    keys = list(table)
    y = np.arange(len(keys))[::-1]
    fig, axes, created = panels(
        ax, 1, len(metrics), (4.2 * len(metrics) + 1.6, 0.55 * len(keys) + 1.6), f"{len(metrics)} metrics"
    )
    for ax, metric in zip(axes[0], metrics, strict=True):
        for yi, key in zip(y, keys, strict=True):
            d = _row(table[key]["verdict"], metric)
            if not d or d.get("diff") is None or not np.isfinite(d["diff"]):
                continue
            ax.errorbar(
                d["diff"],
                yi,
                xerr=[[d["diff"] - d["ci_low"]], [d["ci_high"] - d["diff"]]],
                fmt="o",
                color=_COLORS.get(d.get("outcome"), "#cccccc"),
                capsize=3,
            )
        ax.axvline(0, color="0.3", linewidth=0.8)
        ax.xaxis.set_major_locator(plt.MaxNLocator(4))
        ax.tick_params(axis="x", labelsize=8)
        ax.set_yticks(y)
        ax.set_yticklabels(
            [f"{k} ({table[k]['verdict']['model']} vs {table[k]['verdict']['baseline']})" for k in keys]
            if ax is axes[0][0]
            else [],
            fontsize=8,
        )
        name, higher = _METRICS[metric]
        better = "JEPA better →" if higher else "← JEPA better"
        ax.set_xlabel(f"Δ {name}\n(JEPA − comparator)\n{better}", fontsize=8)
        ax.set_title(name, fontsize=9)
        if ax is axes[0][0]:
            ax.set_ylabel("dataset / split (JEPA model vs comparator)", fontsize=8)
    shown = {_row(t["verdict"], m).get("outcome") for t in table.values() for m in metrics}
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=c, label=o) for o, c in _COLORS.items() if o in shown]
    if legend:
        axes[0][-1].legend(
            handles=handles,
            fontsize=8,
            loc="upper left",
            bbox_to_anchor=(1.02, 1.0),
            frameon=False,
            title="verdict (each metric)",
            title_fontsize=8,
        )  # beside the panels: never over a CI
    (fig.suptitle if created else axes[0][0].set_title)(
        title or "Primary JEPA model vs comparator chosen on validation (hierarchical 95% bootstrap CIs)", fontsize=10
    )
    return finish(fig, axes, show=show, save=save, return_fig=return_fig, created=created)


def where_jepa_helps(
    verdicts,
    *,
    title: str | None = None,
    ax: plt.Axes | None = None,
    show: bool | None = None,
    save: str | os.PathLike | None = None,
    return_fig: bool = False,
) -> Figure | Axes | list[Axes] | None:
    """Forest plot of a consolidated report's verdict rows, with each row's CI and outcome written beside it.

    The figure of ``celljepa report`` (``figures/where_jepa_helps.png``): :func:`verdict` on the E-distance
    (primary JEPA model − comparator chosen on validation, paired 95% CI), one row per run × dataset ×
    split, the run named only where a dataset × split comes from several runs. Rows of the old protocol
    (no claim) are left out unless there is nothing else.

    Parameters
    ----------
    verdicts
        ``report["verdicts"]`` of :func:`celljepa.bench.consolidate.consolidate`, a ``report.json`` path,
        or its folder.
    title
        Figure title.
    ax
        Axes to draw into.
    show, save, return_fig
        Show the figure / save it to this file (atomically) / return the Figure (see :mod:`celljepa.pl`).

    Returns
    -------
    ``None`` when shown; else the Figure with ``return_fig``, else the Axes.

    Examples
    --------
    >>> import celljepa as cj
    >>> ax = cj.pl.where_jepa_helps("benchmarks/results/report", save="where.png")  # doctest: +SKIP
    """
    if isinstance(verdicts, (str, os.PathLike)):
        path = Path(verdicts)
        if path.is_dir():
            path = path / "report.json"
        if not path.is_file():
            raise InputError(f"report file '{path}' not found (a consolidated report's report.json or its folder).")
        verdicts = json.loads(path.read_text())["verdicts"]
    verdicts = list(verdicts)
    given = ax
    if not verdicts:
        raise InputError("no verdict rows to draw: the report has no run with a verdict.")
    # rows of the old protocol are no claim (and would set the scale): drawn only when nothing else is left
    verdicts = [v for v in verdicts if not v.get("old_protocol")] or verdicts
    seen: dict[str, int] = {}
    for v in verdicts:
        seen[f"{v['dataset_id']}/{v['split']}"] = seen.get(f"{v['dataset_id']}/{v['split']}", 0) + 1
    table = {}
    nan = float("nan")
    for v in verdicts:
        key = f"{v['dataset_id']}/{v['split']}"
        if seen[key] > 1:
            key = f"{key} [{v['run']}]"
        table[key] = {
            "dataset_id": v["dataset_id"],
            "split": v["split"],
            "verdict": {
                "model": v["model"],
                "baseline": v["baseline"],
                "outcome": v["outcome"],
                "n": v["n"],
                "edistance": {
                    **{
                        k: nan if v["edistance"][k] is None else v["edistance"][k]
                        for k in ("diff", "ci_low", "ci_high")
                    },
                    "outcome": v["outcome"],
                },
            },
        }
    with warnings.catch_warnings():  # verdict's narrow default size; widened below
        warnings.simplefilter("ignore", UserWarning)
        ax = verdict(
            table,
            metrics=("edistance",),
            legend=False,
            ax=ax,
            show=False,
            title=title
            or "Where JEPA helps: primary JEPA model − comparator chosen on validation, "
            "E-distance (hierarchical 95% bootstrap CI)",
        )
    created = given is None
    # the numbers beside each row (they name each outcome, so no legend): one dataset's rows can be far
    # smaller than another's
    fig = ax.figure
    right = ax.twinx()
    right.set_ylim(ax.get_ylim())
    right.set_yticks(range(len(verdicts) - 1, -1, -1))
    current = [not v.get("old_protocol") and not v.get("superseded_by") for v in verdicts]
    right.set_yticklabels(
        [
            f"{diff_cell(v['edistance'])} {label(v['edistance']) if ok else v['outcome']}, n = {v['n']}"
            for v, ok in zip(verdicts, current, strict=True)
        ],
        fontsize=8,
    )
    right.tick_params(length=0)
    right.set_ylabel("Δ E-distance [95% CI], verdict, conditions", fontsize=8)
    if created:
        fig.set_size_inches(11.0, fig.get_size_inches()[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return finish(fig, [ax], show=show, save=save, return_fig=return_fig, created=created)
