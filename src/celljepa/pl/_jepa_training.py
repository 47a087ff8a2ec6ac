"""``cj.pl.jepa_training``: loss and collapse curves of JEPA pretraining runs."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .._errors import InputError
from ..eval.embedding import MIN_RANK_FRACTION, MIN_STD
from ._utils import finish
from ._utils import panels as make_panels

#: ``(record key, panel title, y-axis label, y scale)`` of the default panels.
PANELS = (
    ("loss", "Training loss", "loss", "linear"),
    ("effective_rank_fraction", "Effective rank (share of dims)", "effective rank / embedding dims", "linear"),
    ("std_min", "Smallest per-dimension std", "min std over dims (log scale)", "log"),
    ("mean_cosine", "Mean pairwise cosine similarity", "mean cosine between cells", "linear"),
)
#: ``{record key: (value, legend label)}``: the collapse thresholds of :func:`celljepa.eval.embedding.is_collapsed`.
THRESHOLDS = {
    "effective_rank_fraction": (
        MIN_RANK_FRACTION,
        f"collapse threshold (rank < {MIN_RANK_FRACTION:.0%} of dims)",
    ),
    "std_min": (MIN_STD, f"collapse threshold (min std < {MIN_STD:g})"),
}


def _records(run, key: str = "jepa") -> pd.DataFrame:
    """Metrics records of an AnnData, a run folder, a metrics.jsonl file, a CellJEPA model or a list of dicts."""
    if isinstance(run, AnnData):
        if key not in run.uns or "history" not in run.uns[key]:
            raise InputError(f"adata.uns[{key!r}]['history'] is missing; run cj.tl.jepa_embed(adata) first.")
        records = pd.DataFrame(run.uns[key]["history"]).to_dict("records")
    elif hasattr(run, "history_"):
        records = run.history_
    elif isinstance(run, (str, os.PathLike)):
        path = Path(run)
        path = path / "metrics.jsonl" if path.is_dir() else path
        if not path.is_file():
            raise InputError(
                f"{path} does not exist; pass a run folder (celljepa pretrain --out), its metrics.jsonl "
                "or a trained CellJEPA model."
            )
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    elif isinstance(run, list):
        records = run
    else:
        raise InputError(
            f"cannot read training metrics from a {type(run).__name__}; pass a run folder, a "
            "metrics.jsonl path, a CellJEPA model or a list of records."
        )
    if not records:
        raise InputError("the run has no metrics records yet (train it first).")
    table = pd.DataFrame.from_records(records)
    if "split" not in table:
        table["split"] = None
    return table


def jepa_training(
    run,
    *,
    key: str = "jepa",
    metrics: tuple[str, ...] | None = None,
    title: str | None = None,
    ax: plt.Axes | None = None,
    show: bool | None = None,
    save: str | os.PathLike | None = None,
    return_fig: bool = False,
) -> Figure | Axes | list[Axes] | None:
    """Loss and collapse curves of one or several pretraining runs.

    Panels: training loss (solid: training batches; dotted with points: the fixed evaluation batch), effective
    rank as a share of the embedding size (the 25% collapse threshold dashed), the smallest per-dimension std
    (log scale, the 1e-3 collapse threshold dashed) and the mean pairwise cosine similarity of embeddings.
    Every panel has a title and a y-axis label; the thresholds are in their panel's legend, the line styles
    (and the runs, when several) in the first panel's.

    Parameters
    ----------
    run
        An AnnData after :func:`celljepa.tl.jepa_embed`, a run folder (``celljepa pretrain --out``), its
        ``metrics.jsonl``, a trained :class:`~celljepa.models.CellJEPA`, or a mapping ``{label: run}`` to
        overlay runs (ablations).
    key
        For an AnnData: the ``uns`` key :func:`~celljepa.tl.jepa_embed` wrote (``key_added``, default ``"jepa"``).
    metrics
        Record keys to plot (default: the four panels above).
    title
        Figure title (default: "JEPA pretraining: loss and collapse diagnostics").
    ax
        Axes to draw into (with one metric).
    show, save, return_fig
        Show the figure / save it to this file (atomically) / return the Figure (see :mod:`celljepa.pl`).

    Returns
    -------
    ``None`` when shown; else the Figure with ``return_fig``, else the Axes (a list, one per panel).

    Examples
    --------
    >>> import celljepa as cj
    >>> model = cj.models.CellJEPA(cj.datasets.demo(), n_latent=16, mask="random")
    >>> _ = model.train(max_steps=20, progress=False)
    >>> fig = cj.pl.jepa_training(model, show=False, return_fig=True)
    """
    runs = dict(run) if isinstance(run, Mapping) else {None: run}
    tables = {label: _records(r, key) for label, r in runs.items()}
    panels = [p for p in PANELS if metrics is None or p[0] in metrics]
    panels += [
        (m, m.replace("_", " ").capitalize(), m.replace("_", " "), "linear")
        for m in (metrics or ())
        if m not in {p[0] for p in PANELS}
    ]
    if not panels:
        raise InputError("no metrics to plot.")
    fig, axes, created = make_panels(ax, 1, len(panels), (3.6 * len(panels), 3.2), f"{len(panels)} metrics")
    colors = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    has_eval = False
    for i, (label, table) in enumerate(tables.items()):
        color = colors[i % len(colors)]
        train = table[table["split"] != "eval"]
        evals = table[table["split"] == "eval"]
        for ax, (key, name, ylabel, scale) in zip(axes[0], panels, strict=True):
            if key in train:
                ax.plot(train["step"], train[key], color=color, lw=1.2, label=label)
            if key in evals and len(evals):
                has_eval = True
                ax.plot(evals["step"], evals[key], color=color, lw=1.0, ls=":", marker="o", ms=2.5)
            ax.set_yscale(scale)
            ax.set_xlabel("training step")
            ax.set_ylabel(ylabel)
            ax.set_title(name, fontsize=10)
    # the first panel's legend says which line is what (the runs by colour when several, the batches by style);
    # a panel with a collapse threshold names it in its own legend
    styles = [
        Line2D([], [], color=colors[i % len(colors)], lw=1.2, label=str(label))
        for i, label in enumerate(tables)
        if len(tables) > 1 or label is not None
    ]
    if has_eval:
        styles += [
            Line2D([], [], color="0.3", lw=1.2, label="training batches"),
            Line2D([], [], color="0.3", lw=1.0, ls=":", marker="o", ms=2.5, label="fixed evaluation batch"),
        ]
    for i, (ax, (key, _, _, _)) in enumerate(zip(axes[0], panels, strict=True)):
        handles = list(styles) if i == 0 else []
        if key in THRESHOLDS:
            value, text = THRESHOLDS[key]
            handles.append(ax.axhline(value, color="grey", ls="--", lw=0.8, label=text))
        if key == "effective_rank_fraction":
            ax.set_ylim(0, 1.05)
        if handles:
            ax.legend(handles=handles, fontsize=7, frameon=False, loc="best")
    title = title or "JEPA pretraining: loss and collapse diagnostics"
    (fig.suptitle if created else axes[0][0].set_title)(title)
    return finish(fig, axes, show=show, save=save, return_fig=return_fig, created=created)
