"""The fold glue behind ``cj.tl.fit_transition``: fit a transition model on a dataset outside a benchmark."""

from __future__ import annotations

import numpy as np

from .._errors import InputError
from ..data import contract as C
from ..models.transition import JEPATransition, TransitionConfig
from .evaluate import EvalConfig, fold_encoder, prepare_fold

__all__ = ["all_cells_fold", "fit_on_fold"]


def fit_on_fold(
    adata,
    encoder,
    fold: dict,
    *,
    kind: str = "set",
    config: TransitionConfig | None = None,
    seed: int = 0,
    n_hvg: int | None = None,
    n_pcs: int | None = None,
    drug_metadata=None,
) -> JEPATransition:
    """Fit a transition model on the training and validation cells of ``fold`` with a trained ``encoder``.

    The evaluation space (HVGs + PCA) is fitted on the training cells, the encoder embeds the cells the
    fold lets the model see, and :class:`~celljepa.models.JEPATransition` trains with early stopping on the
    validation conditions. ``cj.tl.fit_transition`` is the user-facing form.
    """
    ecfg = EvalConfig(seed=seed, **{k: v for k, v in {"n_hvg": n_hvg, "n_pcs": n_pcs}.items() if v is not None})
    _, train, _ = prepare_fold(adata, fold, ecfg, require_test=False)
    train.encoder, train.embedding = fold_encoder(adata, train, fold, encoder)
    cfg = (config or TransitionConfig()).replace(seed=seed)
    return JEPATransition(kind, cfg, drug_metadata=drug_metadata).fit(train)


def all_cells_fold(adata, *, val_fraction: float, seed: int) -> dict:
    """A fold of every cell: a seeded ``val_fraction`` of the perturbations validate, the rest train."""
    obs = adata.obs
    is_ctrl = obs[C.IS_CONTROL].to_numpy(dtype=bool)
    perts = np.array(sorted(obs.loc[~is_ctrl, C.PERTURBATION_ID].astype(str).unique()))
    if perts.size < 2:
        raise InputError("fitting a transition model needs at least 2 perturbations (one for validation).")
    rng = np.random.default_rng([seed, 0xF17])
    n_val = max(1, int(round(val_fraction * perts.size)))
    val = set(rng.choice(perts, n_val, replace=False).tolist())
    pid = obs[C.PERTURBATION_ID].astype(str).to_numpy()
    is_val = ~is_ctrl & np.isin(pid, list(val))
    names = np.asarray(adata.obs_names, dtype=str)
    return {
        "dataset_id": str(adata.uns.get("dataset_id", "dataset")),
        "split_name": "all_cells",
        "fold": 0,
        "n_folds": 1,
        "seed": seed,
        "train_cells": names[~is_val].tolist(),
        "val_cells": names[is_val].tolist(),
        "test_cells": [],
        "train_groups": sorted(set(perts) - val),
        "val_groups": sorted(val),
        "test_groups": [],
    }
