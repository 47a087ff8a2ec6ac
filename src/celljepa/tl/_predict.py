"""``cj.tl.predict_perturbation``: predicted cells of a condition as a new AnnData, next to observed ones."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from .._errors import InputError
from ..data import contract as C
from ..data._keys import suggest
from ._layer import with_layer_as_x

__all__ = ["predict_perturbation"]


def _tokens_for(adata: AnnData, perturbation: str) -> tuple[str, tuple[str, ...]]:
    """(perturbation_id, tokens) from a perturbation_id of ``adata`` or a token string like ``gene:KLF1``."""
    obs = adata.obs
    hit = obs.loc[obs[C.PERTURBATION_ID].astype(str) == perturbation, C.PERTURBATION_TOKENS]
    if len(hit):
        return perturbation, tuple(C.split_tokens(str(hit.iloc[0])))
    tokens = C.split_tokens(perturbation)
    if tokens and all(":" in t for t in tokens):
        return C.COMBO_SEP.join(C.token_name(t) for t in tokens), tuple(tokens)
    known = sorted(obs[C.PERTURBATION_ID].astype(str).unique())
    hint = suggest(perturbation, known)
    raise InputError(
        f"perturbation {perturbation!r} is neither a perturbation_id of adata{hint} "
        "nor perturbation tokens. Fix: pass an id from adata.obs['perturbation_id'] or tokens such as "
        "'gene:KLF1' or 'gene:CBL|gene:CNN1' (kind:name, '|' between the tokens of a combination)."
    )


def predict_perturbation(
    adata: AnnData,
    model,
    *,
    perturbation: str,
    context: str,
    n_cells: int | None = None,
    dose: float | None = None,
    time_hours: float | None = None,
    seed: int = 0,
    layer: str | None = None,
) -> AnnData:
    """Predict the cells of ``perturbation`` in ``context`` from that context's control cells.

    The control cells of ``context`` in ``adata`` are embedded with the model's JEPA encoder, mapped by
    the transition model, and decoded to the model's evaluation space and to its genes.

    Parameters
    ----------
    adata
        Log-normalised cells with the contract columns (``cj.pp.standardize`` / ``celljepa ingest``);
        its control cells of ``context`` are the starting states.
    model
        A fitted :class:`~celljepa.models.transition.JEPATransition` (from
        :func:`~celljepa.tl.fit_transition`, the harness, or
        ``JEPATransition.load(run_dir / "models" / "jepa_set")``).
    perturbation
        A ``perturbation_id`` of ``adata`` or perturbation tokens (``"gene:KLF1"``,
        ``"gene:CBL|gene:CNN1"``); perturbations never seen in training are allowed.
    context
        A ``context_id`` with control cells in ``adata``.
    n_cells
        Number of predicted cells (default: one per control cell; otherwise control cells are sampled,
        with replacement when more are asked than exist).
    dose, time_hours
        Optional dose and time of the condition.
    seed
        Seed of the control-cell sample.
    layer
        Read the control cells' log-normalised expression from ``adata.layers[layer]`` instead of ``adata.X``.

    Returns
    -------
    AnnData of predicted cells: ``X`` the decoded log-expression of the evaluation space's genes (HVGs),
    ``obsm["X_jepa"]`` the predicted embeddings, ``obsm["X_eval"]`` the evaluation-space coordinates,
    ``obs`` the contract columns (``is_control`` False), ``is_predicted`` True and ``source_cell`` (the
    control cell each prediction starts from), ``uns["predict_perturbation"]`` the call's parameters.

    Examples
    --------
    >>> import anndata as ad, scanpy as sc                                           # doctest: +SKIP
    >>> pred = cj.tl.predict_perturbation(adata, model, perturbation="gene:KLF1", context="K562")  # doctest: +SKIP
    >>> keep = adata.obs["perturbation_id"].isin(["KLF1", "control"])                  # doctest: +SKIP
    >>> observed = adata[keep, pred.var_names].copy()                               # doctest: +SKIP
    >>> both = ad.concat({"observed": observed, "predicted": pred}, label="origin")   # doctest: +SKIP
    >>> sc.pp.pca(both); sc.pl.pca(both, color="origin")                               # doctest: +SKIP
    """
    from ..models.base import Condition

    if not isinstance(adata, AnnData):
        raise InputError(f"adata must be an AnnData, got {type(adata).__name__}.")
    adata = with_layer_as_x(adata, layer)
    for col in (C.IS_CONTROL, C.CONTEXT_ID, C.PERTURBATION_ID, C.PERTURBATION_TOKENS):
        if col not in adata.obs:
            raise InputError(f"adata.obs has no column {col!r}. Fix: run cj.pp.standardize (or celljepa ingest) first.")
    model._require_fit()
    if getattr(model, "encoder_", None) is None or getattr(model, "space_", None) is None:
        raise InputError(
            "the model has no JEPA encoder or evaluation space attached. Fix: fit it with "
            "cj.tl.fit_transition(...) or load it with JEPATransition.load(folder)."
        )
    contexts = adata.obs[C.CONTEXT_ID].astype(str).to_numpy()
    ctrl = np.flatnonzero(adata.obs[C.IS_CONTROL].to_numpy(dtype=bool) & (contexts == str(context)))
    if ctrl.size == 0:
        known = sorted(set(contexts[adata.obs[C.IS_CONTROL].to_numpy(dtype=bool)]))
        raise InputError(
            f"context {context!r} has no control cells in adata{suggest(str(context), known)}; contexts "
            f"with controls: {known[:10]}."
        )
    if n_cells is not None:
        if int(n_cells) < 1:
            raise InputError(f"n_cells must be >= 1, got {n_cells}.")
        rng = np.random.default_rng(seed)
        ctrl = rng.choice(ctrl, int(n_cells), replace=int(n_cells) > ctrl.size)
    pid, tokens = _tokens_for(adata, str(perturbation))
    cond = Condition(
        str(context),
        pid,
        tokens,
        float("nan") if dose is None else float(dose),
        float("nan") if time_hours is None else float(time_hours),
    )
    cells = adata[ctrl]
    z = model.encoder_.get_latent_representation(cells)
    e = model.space_.transform(cells)
    pz, pe = model.predict_cells(cond, z, e)
    x = model.space_.inverse_transform(pe).astype(np.float32)
    source = np.asarray(adata.obs_names[ctrl], dtype=str)
    obs = pd.DataFrame(
        {
            C.PERTURBATION_ID: pid,
            C.IS_CONTROL: False,
            C.CONTEXT_ID: str(context),
            C.PERTURBATION_TOKENS: C.TOKEN_SEP.join(tokens),
            C.DOSE: cond.dose,
            C.TIME_HOURS: cond.time_hours,
            "is_predicted": True,
            "source_cell": source,
        },
        index=pd.Index([f"pred_{i}_{s}" for i, s in enumerate(source)], dtype=str),
    )
    out = AnnData(X=x, obs=obs, var=pd.DataFrame(index=pd.Index(np.asarray(model.space_.genes, dtype=str))))
    out.obsm["X_jepa"] = pz.astype(np.float32)
    out.obsm["X_eval"] = pe.astype(np.float32)
    out.uns["predict_perturbation"] = {
        "model": model.name,
        "kind": model.kind,
        "perturbation": pid,
        "tokens": list(tokens),
        "context": str(context),
        "n_cells": int(len(ctrl)),
        "seed": int(seed),
        "unseen_tokens": [t for t in tokens if t not in model.vocab_],
    }
    return out
