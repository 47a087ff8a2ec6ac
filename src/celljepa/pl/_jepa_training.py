"""``cj.pl.jepa_training``: loss and collapse curves of JEPA pretraining runs."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from anndata import AnnData

from .._errors import InputError
from ._utils import finish
from ._utils import panels as make_panels

PANELS = (
    ("loss", "loss (train)", "linear"),
    ("effective_rank_fraction", "effective rank / dims", "linear"),
    ("std_min", "min per-dim std", "log"),
    ("mean_cosine", "mean pairwise cosine", "linear"),
)


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
):
    """Loss and collapse curves of one or several pretraining runs.

    Panels: training loss (dotted: the fixed evaluation batch), effective rank as a share of the
    embedding size (the 25% collapse line dashed), the smallest per-dimension std (log scale, the
    1e-3 line dashed) and the mean pairwise cosine similarity of embeddings.

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
        Figure title.
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
    panels += [(m, m, "linear") for m in (metrics or ()) if m not in {p[0] for p in PANELS}]
    if not panels:
        raise InputError("no metrics to plot.")
    fig, axes, created = make_panels(ax, 1, len(panels), (3.6 * len(panels), 3.2), f"{len(panels)} metrics")
    colors = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    for i, (label, table) in enumerate(tables.items()):
        color = colors[i % len(colors)]
        train = table[table["split"] != "eval"]
        evals = table[table["split"] == "eval"]
        for ax, (key, name, scale) in zip(axes[0], panels, strict=True):
            if key in train:
                ax.plot(train["step"], train[key], color=color, lw=1.2, label=label)
            if key in evals and len(evals):
                ax.plot(evals["step"], evals[key], color=color, lw=1.0, ls=":", marker="o", ms=2.5)
            ax.set_yscale(scale)
            ax.set_xlabel("step")
            ax.set_title(name, fontsize=10)
    for ax, (key, _, _) in zip(axes[0], panels, strict=True):
        if key == "effective_rank_fraction":
            ax.axhline(0.25, color="grey", ls="--", lw=0.8)
            ax.set_ylim(0, 1.05)
        elif key == "std_min":
            ax.axhline(1e-3, color="grey", ls="--", lw=0.8)
    if len(tables) > 1 or any(label is not None for label in tables):
        axes[0][0].legend(fontsize=8, frameon=False)
    if title:
        (fig.suptitle if created else axes[0][0].set_title)(title)
    return finish(fig, axes, show=show, save=save, return_fig=return_fig, created=created)
