"""``cj.pl.predicted_vs_observed``: one method's predicted cells beside the observed ones and their controls."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import scipy.sparse as sp
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .._errors import InputError
from ..data._keys import suggest
from ..eval.predictions import EVAL_KEY, OBSERVED
from ._utils import finish, panels

#: Colours of the three sets: the context's control cells, the observed cells, the predicted cells.
COLORS = {"control": "#8c8c8c", "observed": "#4c72b0", "predicted": "#dd8452"}
_NEEDED = ("method", "condition", "context_id", "perturbation_id", "is_control")


def _read(pred) -> AnnData:
    if isinstance(pred, (str, os.PathLike)):
        path = Path(pred)
        if path.is_dir():
            path = path / "predictions.h5ad"
        if not path.is_file():
            raise InputError(
                f"'{path}' not found: pass the predictions.h5ad a fold writes with --predictions (or its folder)."
            )
        import anndata as ad

        pred = ad.read_h5ad(path)
    if not isinstance(pred, AnnData):
        raise InputError(f"pred must be a predictions AnnData or its .h5ad path, got {type(pred).__name__}.")
    missing = [c for c in _NEEDED if c not in pred.obs]
    if missing:
        raise InputError(
            f"pred is not a predictions AnnData (obs lacks {missing}); pass the predictions.h5ad a fold writes with "
            "--predictions, or FoldResult.predictions of score_fold(..., keep_predictions=True)."
        )
    return pred


def _choose_condition(condition: str, observed_conditions: dict[str, str]) -> str:
    """The condition key ``condition`` names: a key (``context|perturbation``) or a perturbation id of one key."""
    if condition in observed_conditions:
        return condition
    by_pid = [k for k, pid in observed_conditions.items() if pid == condition]
    if len(by_pid) == 1:
        return by_pid[0]
    if len(by_pid) > 1:
        raise InputError(
            f"condition={condition!r} is a perturbation of {len(by_pid)} test conditions {sorted(by_pid)}; "
            "name one by its key (context|perturbation)."
        )
    names = sorted(observed_conditions) + sorted(set(observed_conditions.values()))
    shown = ", ".join(repr(c) for c in sorted(observed_conditions)[:20])
    more = " ..." if len(observed_conditions) > 20 else ""
    raise InputError(
        f"condition={condition!r} is not a test condition of these predictions.{suggest(condition, names)} "
        f"Conditions: {shown}{more}."
    )


def _dense(x) -> np.ndarray:
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)


def predicted_vs_observed(
    pred: AnnData | str | os.PathLike,
    condition: str,
    method: str = "ridge",
    *,
    genes: list[str] | int | None = None,
    basis: str = EVAL_KEY,
    components: tuple[int, int] = (1, 2),
    model_seed: int | None = None,
    title: str | None = None,
    ax: plt.Axes | None = None,
    show: bool | None = None,
    save: str | os.PathLike | None = None,
    return_fig: bool = False,
) -> Figure | Axes | list[Axes] | None:
    """One condition's predicted cells beside its observed cells and the context's control cells.

    Two views of the same three sets, from a fold's predictions (``predictions.h5ad``):

    - ``genes=None``: a scatter in the evaluation space (the first two PCs of ``obsm["X_eval"]``, where the
      benchmark's E-distance is computed), one colour per set, each set's mean as a large dot;
    - ``genes=[...]`` (or a number ``n``: the ``n`` genes whose observed mean moves furthest from the control
      mean): per gene, the log-expression of every cell of the three sets as jittered points, each set's
      mean as a bar. A method that predicts in the evaluation space has its cells mapped back to genes
      (``control mean + (z − control z mean)·PCs``, "reconstructed" in the legend), so its values may fall
      below 0.

    Parameters
    ----------
    pred
        The predictions AnnData of one fold: ``predictions.h5ad`` written by ``celljepa benchmark
        --predictions`` (its path, or its folder), or ``FoldResult.predictions`` of
        ``score_fold(..., keep_predictions=True)`` (layout: :func:`celljepa.eval.predictions.predictions_anndata`).
    condition
        The test condition: its key (``"k562|KLF1"``) or, when it names one test condition, its perturbation id.
    method
        The predicting method (any method of the fold: a baseline, a JEPA model, a peer).
    genes
        ``None``: the scatter in ``basis``; a list of gene names, or a number of genes, for the per-gene view.
    basis
        ``obsm`` key of the scatter (default ``"X_eval"``, the evaluation space).
    components
        The two dimensions of ``basis`` to draw, counted from 1 (default PC1 and PC2).
    model_seed
        The model seed, for a method trained with several.
    title
        Axes title (default: the method, the perturbation and its context).
    ax
        Axes to draw into; a new figure otherwise.
    show, save, return_fig
        Show the figure / save it to this file (atomically) / return the Figure (see :mod:`celljepa.pl`).

    Returns
    -------
    ``None`` when shown; else the Figure with ``return_fig``, else the Axes. In the scatter, one collection per
    set (controls, observed, predicted, in that order) holding every cell of the set.

    Examples
    --------
    >>> import celljepa as cj
    >>> from celljepa.bench import demo_datasets, score_fold
    >>> from celljepa.splits import make_split_folds
    >>> adata = demo_datasets()["norman2019"]
    >>> fold = make_split_folds(adata.obs, "S1_unseen_perturbation", dataset_id="norman2019")[0]
    >>> pred = score_fold(adata, fold, keep_predictions=True).predictions
    >>> ax = cj.pl.predicted_vs_observed(pred, "k562|KLF1", method="ridge", show=False)
    >>> ax = cj.pl.predicted_vs_observed(pred, "KLF1", method="mean_shift", genes=8, show=False)
    >>> cj.pl.predicted_vs_observed("runs/demo/norman2019/S1_unseen_perturbation/fold0",  # doctest: +SKIP
    ...                             "k562|KLF1", genes=["KLF1", "HBG1"], save="klf1.png")
    """
    pred = _read(pred)
    obs = pred.obs
    method_col = obs["method"].astype(str).to_numpy()
    cond_col = obs["condition"].astype(str).to_numpy()
    is_control = obs["is_control"].to_numpy(dtype=bool)
    observed = method_col == OBSERVED
    methods = sorted(set(method_col) - {OBSERVED})
    if method not in methods:
        raise InputError(
            f"method={method!r} has no predicted cells in these predictions.{suggest(method, methods)} "
            f"Methods: {', '.join(repr(m) for m in methods) or '(none)'}."
        )
    test = observed & ~is_control
    pids = obs["perturbation_id"].astype(str).to_numpy()
    key = _choose_condition(str(condition), dict(zip(cond_col[test], pids[test], strict=True)))
    is_method = method_col == method
    sel_pred = is_method & (cond_col == key)
    if not sel_pred.any():
        predicted = sorted(set(cond_col[is_method]))
        raise InputError(
            f"method {method!r} has no prediction for {key!r} (it cannot predict that condition); "
            f"conditions it predicts: {predicted[:20]}{' ...' if len(predicted) > 20 else ''}."
        )
    seeds = obs["model_seed"].to_numpy(dtype=float) if "model_seed" in obs else np.full(len(obs), np.nan)
    method_seeds = sorted({float(s) for s in seeds[sel_pred] if np.isfinite(s)})
    if model_seed is None and len(method_seeds) > 1:
        raise InputError(
            f"method {method!r} has {len(method_seeds)} model seeds {[int(s) for s in method_seeds]}; "
            "choose one with model_seed=."
        )
    if model_seed is not None:
        if float(model_seed) not in method_seeds:
            raise InputError(
                f"method {method!r} has no model seed {model_seed!r}; seeds: "
                f"{[int(s) for s in method_seeds] or 'none (a deterministic method)'}."
            )
        sel_pred &= seeds == float(model_seed)
    sel_obs = test & (cond_col == key)
    ctx = str(obs["context_id"].astype(str).to_numpy()[sel_obs][0])
    pid = str(pids[sel_obs][0])
    sel_ctrl = observed & is_control & (obs["context_id"].astype(str).to_numpy() == ctx)
    if not sel_ctrl.any():
        raise InputError(f"context {ctx!r} has no control cells in these predictions.")
    gene_space = set(obs["gene_space"].astype(str).to_numpy()[sel_pred]) if "gene_space" in obs else set()
    seed_text = f", model seed {int(model_seed)}" if model_seed is not None else ""
    sets = {
        "control": (sel_ctrl, f"control cells of {ctx}"),
        "observed": (sel_obs, f"observed {pid}"),
        "predicted": (sel_pred, f"predicted by {method}{seed_text}"),
    }

    if genes is None:
        fig, axes, created = panels(ax, 1, 1, (7.6, 4.8))
        ax = axes[0][0]
        _scatter(ax, pred, sets, basis, components)
    else:
        names = _genes(pred, genes, sel_obs, sel_ctrl)
        fig, axes, created = panels(ax, 1, 1, (max(4.5, 0.9 * len(names) + 1.5) + 4.5, 4.6))
        ax = axes[0][0]
        _strips(ax, pred, sets, names, reconstructed=gene_space == {"reconstructed"})
        if not isinstance(genes, (str, list, tuple)) and not hasattr(genes, "__iter__"):
            ax.set_xlabel(f"gene (the {len(names)} whose observed mean moves furthest from the control mean)")
    ax.set_title(title or f"{method} vs observed: {pid} in {ctx}", fontsize=10)
    return finish(fig, axes, show=show, save=save, return_fig=return_fig, created=created)


def _legend(ax: plt.Axes, sets: dict, counts: dict, mean_marker: dict, note: str = "") -> None:
    """The three sets (dots big enough to see their colour) and the mean marker, beside the axes."""
    handles = [
        Line2D(
            [], [], marker="o", linestyle="", markersize=6, color=COLORS[name],
            label=f"{text} (n = {counts[name]}{note if name == 'predicted' else ''})",
        )
        for name, (_, text) in sets.items()
    ]  # fmt: skip
    handles.append(Line2D([], [], color="black", linestyle="", label="mean of each set", **mean_marker))
    ax.legend(handles=handles, fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1.0))


def _scatter(ax: plt.Axes, pred: AnnData, sets: dict, basis: str, components: tuple[int, int]) -> None:
    if basis not in pred.obsm:
        keys = list(pred.obsm)
        raise InputError(f"basis={basis!r} is not in pred.obsm.{suggest(basis, keys)} obsm keys: {keys or '(none)'}.")
    z = np.asarray(pred.obsm[basis])
    dims = [int(c) - 1 for c in components]
    if len(dims) != 2 or min(dims) < 0 or max(dims) >= z.shape[1]:
        raise InputError(
            f"components must be two dimensions of {basis!r} between 1 and {z.shape[1]}, got {components}."
        )
    mean_marker = {"marker": "o", "markersize": 11, "markeredgecolor": "black", "markeredgewidth": 1.2}
    for name, (rows, text) in sets.items():
        xy = z[rows][:, dims]
        ax.scatter(
            xy[:, 0],
            xy[:, 1],
            s=9,
            alpha=0.35 if name == "control" else 0.55,
            color=COLORS[name],
            linewidths=0,
            label=f"{text} (n = {len(xy)})",
            rasterized=len(xy) > 5000,
        )
    for name, (rows, _) in sets.items():  # the means on top of every cell
        m = z[rows][:, dims].mean(axis=0)
        ax.plot([m[0]], [m[1]], color=COLORS[name], linestyle="", zorder=5, **mean_marker)
    space = "evaluation space, PC" if basis == EVAL_KEY else f"{basis}, dim "
    ax.set_xlabel(f"{space}{dims[0] + 1}")
    ax.set_ylabel(f"{space}{dims[1] + 1}")
    counts = {name: int(rows.sum()) for name, (rows, _) in sets.items()}
    _legend(ax, sets, counts, {**mean_marker, "markerfacecolor": "white"})


def _genes(pred: AnnData, genes, sel_obs: np.ndarray, sel_ctrl: np.ndarray) -> list[str]:
    var = [str(g) for g in pred.var_names]
    if isinstance(genes, (int, np.integer)) and not isinstance(genes, bool):
        if genes < 1:
            raise InputError(f"genes={genes} names no gene; give a number of genes ≥ 1 or a list of names.")
        delta = _dense(pred.X[sel_obs]).mean(axis=0) - _dense(pred.X[sel_ctrl]).mean(axis=0)
        order = np.argsort(-np.abs(delta), kind="stable")[: int(genes)]
        return [var[i] for i in order]
    names = [genes] if isinstance(genes, str) else [str(g) for g in genes]
    if not names:
        raise InputError("genes=[] names no gene; give gene names, a number of genes, or None for the scatter.")
    index = set(var)
    for g in names:
        if g not in index:
            raise InputError(f"gene {g!r} is not a gene of the evaluation space ({len(var)} genes).{suggest(g, var)}")
    return names


def _strips(ax: plt.Axes, pred: AnnData, sets: dict, names: list[str], *, reconstructed: bool) -> None:
    idx = [list(map(str, pred.var_names)).index(g) for g in names] if names else []
    rng = np.random.default_rng(0)  # the jitter only: the same figure every time
    offsets = {"control": -0.27, "observed": 0.0, "predicted": 0.27}
    mean_marker = {"marker": "_", "markersize": 16, "markeredgewidth": 2.4}
    for name, (rows, text) in sets.items():
        x = _dense(pred.X[rows][:, idx])
        n = x.shape[0]
        pos = np.repeat(np.arange(len(names)), n) + offsets[name] + rng.uniform(-0.09, 0.09, n * len(names))
        note = ", reconstructed from the evaluation space" if reconstructed and name == "predicted" else ""
        label = f"{text} (n = {n}{note})"
        ax.scatter(pos, x.T.ravel(), s=5, alpha=0.35, color=COLORS[name], linewidths=0, label=label)
        ax.plot(
            np.arange(len(names)) + offsets[name],
            x.mean(axis=0),
            color=COLORS[name],
            linestyle="",
            zorder=5,
            markeredgecolor=COLORS[name],
            **mean_marker,
        )
    ax.set_xticks(np.arange(len(names)))
    ax.set_xticklabels(names, rotation=45 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center")
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_xlabel("gene")
    ax.set_ylabel("log-expression")
    counts = {name: int(rows.sum()) for name, (rows, _) in sets.items()}
    _legend(ax, sets, counts, mean_marker, ", reconstructed from the evaluation space" if reconstructed else "")
