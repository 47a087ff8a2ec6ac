"""``cj.tl.jepa_embed``: JEPA cell embeddings into ``adata.obsm``, scanpy-style."""

from __future__ import annotations

import time
from datetime import timedelta

from anndata import AnnData

from .._errors import InputError
from .._logging import logger
from ..data._normalize import require_log_expression

__all__ = ["jepa_embed"]


def jepa_embed(
    adata: AnnData,
    model=None,
    *,
    key_added: str | None = None,
    copy: bool = False,
    layer: str | None = None,
    n_latent: int | None = None,
    config=None,
    max_steps: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    seed: int | None = None,
    device: str | None = None,
    progress: bool = True,
    **model_kwargs,
) -> AnnData | None:
    """Embed cells with a JEPA encoder: train one (or use ``model``) and store ``obsm["X_jepa"]``.

    Parameters
    ----------
    adata
        Cells × genes with log-normalised expression in ``X`` (or ``layer``).
    model
        A trained :class:`celljepa.models.CellJEPA` (its genes are matched to ``adata`` by name); if
        ``None`` a new model is trained on ``adata`` with ``config`` and the arguments below.
    key_added
        ``obsm`` key (default ``"X_jepa"``); the parameters and diagnostics go to ``uns[key_added or "jepa"]``.
    copy
        Return a copy instead of writing into ``adata``.
    layer, n_latent, config, max_steps, batch_size, lr, seed, device
        Training settings when ``model`` is ``None`` (see :class:`~celljepa.models.CellJEPA` and
        :class:`~celljepa.train.config.JEPAConfig`; defaults come from the config).
    progress
        Show progress bars.
    **model_kwargs
        Passed to :class:`~celljepa.models.CellJEPA` (``mask``, ``mask_ratio``, ``gene_sets``, ...).

    Returns
    -------
    ``None`` (``adata`` is updated in place) or, with ``copy=True``, the updated copy. Sets
    ``obsm["X_jepa"]`` (cells × n_latent, float32) and ``uns["jepa"]`` with ``params`` (the resolved
    config), ``diagnostics`` (effective rank, per-dimension std, mean cosine), ``train_info`` and
    ``history`` (the training metrics per logged step, a DataFrame; plot it with
    :func:`celljepa.pl.jepa_training`).

    Logs (at INFO; ``logging.getLogger("celljepa").setLevel("INFO")``) as scanpy's tools do::

        computing JEPA embedding
            finished (0:00:12): added
            'X_jepa', JEPA cell embeddings (adata.obsm)
            'jepa', parameters, diagnostics, training history (adata.uns)

    Data that are not log-normalised (raw counts, or values scaled by ``sc.pp.scale``) are refused with an
    error naming where usable data are: ``adata.raw`` (``adata.raw.to_adata()``) or one of ``adata.layers``.

    Examples
    --------
    >>> import celljepa as cj
    >>> adata = cj.datasets.demo()
    >>> cj.tl.jepa_embed(adata, n_latent=16, max_steps=20, mask="random", progress=False)
    >>> adata.obsm["X_jepa"].shape
    (5961, 16)
    >>> sorted(adata.uns["jepa"])
    ['diagnostics', 'history', 'params', 'train_info']
    """
    from ..eval.embedding import collapse_diagnostics
    from ..models import CellJEPA

    if not isinstance(adata, AnnData):
        raise InputError(f"adata must be an AnnData, got {type(adata).__name__}.")
    start = time.perf_counter()
    logger.info("computing JEPA embedding")
    adata = adata.copy() if copy else adata
    if model is None:
        model = CellJEPA(adata, layer=layer, n_latent=n_latent, config=config, **model_kwargs)
        model.train(max_steps=max_steps, batch_size=batch_size, lr=lr, seed=seed, device=device, progress=progress)
    else:
        if not isinstance(model, CellJEPA):
            raise InputError(f"model must be a celljepa.models.CellJEPA, got {type(model).__name__}.")
        given = {
            "n_latent": n_latent,
            "config": config,
            "max_steps": max_steps,
            "batch_size": batch_size,
            "lr": lr,
            "seed": seed,
            **model_kwargs,
        }
        ignored = sorted(k for k, v in given.items() if v is not None)
        if ignored:
            raise InputError(
                f"{', '.join(ignored)} only apply when training a new model; a trained model was given. "
                "Fix: drop them, or pass model=None."
            )
        require_log_expression(adata, model.config.data.layer if layer is None else layer)
    z = model.get_latent_representation(adata, layer=layer, device=device, progress=progress)
    key = key_added or "X_jepa"
    uns_key = key_added or "jepa"
    adata.obsm[key] = z
    adata.uns[uns_key] = {
        "params": _plain(model.config.to_dict()),
        "diagnostics": collapse_diagnostics(z),
        "train_info": _plain(model.train_info_),
        "history": _history_frame(model.history_),
    }
    logger.info(
        "    finished (%s): added\n    %r, JEPA cell embeddings (adata.obsm)\n"
        "    %r, parameters, diagnostics, training history (adata.uns)",
        timedelta(seconds=round(time.perf_counter() - start)),
        key,
        uns_key,
    )
    return adata if copy else None


def _history_frame(history: list[dict]):
    """Training records (not the evaluation-batch ones) as a numeric DataFrame, storable in ``uns``."""
    import pandas as pd

    rows = [r for r in history if r.get("split") != "eval"]
    frame = pd.DataFrame.from_records(rows).drop(columns=["split"], errors="ignore")
    return frame.apply(pd.to_numeric, errors="coerce").astype("float64").reset_index(drop=True)


def _plain(obj):
    """Drop ``None`` values (h5ad cannot store them) recursively."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
