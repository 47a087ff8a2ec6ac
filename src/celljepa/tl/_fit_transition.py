"""``cj.tl.fit_transition``: a transition model fitted on a dataset's perturbations, ready to predict."""

from __future__ import annotations

from anndata import AnnData

from ..bench.fit import all_cells_fold, fit_on_fold
from ._layer import with_layer_as_x

__all__ = ["fit_transition"]


def fit_transition(
    adata: AnnData,
    encoder,
    *,
    kind: str = "set",
    config=None,
    fold: dict | None = None,
    val_fraction: float = 0.15,
    seed: int = 0,
    n_hvg: int | None = None,
    n_pcs: int | None = None,
    drug_metadata=None,
    layer: str | None = None,
):
    """Fit a transition model on ``adata`` with a trained CellJEPA ``encoder``.

    Without ``fold`` every perturbation is used for training except a seeded ``val_fraction`` of
    perturbations held out for early stopping and the decoder's alpha; with ``fold`` (a split dict of
    ``celljepa splits`` / :func:`~celljepa.tl.make_splits`) its training and validation cells are used.
    The evaluation space (HVGs + PCA) is fitted on the training cells. ``adata`` is not modified.

    Parameters
    ----------
    adata
        Log-normalised cells with the contract columns, control cells included.
    encoder
        A trained :class:`~celljepa.models.CellJEPA`.
    kind
        ``"set"`` (a per-cell map trained with the E-distance set loss) or ``"prototype"`` (set means).
    config
        A :class:`~celljepa.models.TransitionConfig` (default settings when ``None``: an ensemble of three
        networks; ``TransitionConfig(ensemble=1)`` trains one, in a third of the time); its seed is ``seed``.
    fold
        A split fold to train and validate on, instead of all cells.
    val_fraction
        Without ``fold``: the share of perturbations that validate.
    seed
        Seed of the validation draw, the evaluation space and the model.
    n_hvg, n_pcs
        Size of the evaluation space (default: the benchmark's).
    drug_metadata
        Targets / pathways of ``drug:`` tokens (see :mod:`celljepa.data.drugs`).
    layer
        Read the log-normalised expression from ``adata.layers[layer]`` instead of ``adata.X``.

    Returns
    -------
    A fitted :class:`~celljepa.models.JEPATransition`, for :func:`~celljepa.tl.predict_perturbation` or
    ``model.save(folder)``.

    Examples
    --------
    >>> import celljepa as cj                                                         # doctest: +SKIP
    >>> adata = cj.bench.demo_datasets()["norman2019"]                                # doctest: +SKIP
    >>> jepa = cj.models.CellJEPA(adata).train(max_steps=300)                         # doctest: +SKIP
    >>> model = cj.tl.fit_transition(adata, jepa)                                     # doctest: +SKIP
    >>> pred = cj.tl.predict_perturbation(adata, model, perturbation="gene:KLF1", context="K562")  # doctest: +SKIP
    """
    adata = with_layer_as_x(adata, layer)
    if fold is None:
        fold = all_cells_fold(adata, val_fraction=val_fraction, seed=seed)
    return fit_on_fold(
        adata, encoder, fold, kind=kind, config=config, seed=seed, n_hvg=n_hvg, n_pcs=n_pcs, drug_metadata=drug_metadata
    )
