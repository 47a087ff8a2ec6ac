"""``cj.pp.normalize``: raw counts kept in a layer, ``X`` library-size normalised and log1p-transformed."""

from __future__ import annotations

from anndata import AnnData

from .._logging import log_step
from ..data import contract as C
from ..data._normalize import XState, log_normalize


def normalize(
    adata: AnnData,
    *,
    target_sum: float = C.DEFAULT_TARGET_SUM,
    counts_layer: str = C.COUNTS_LAYER,
    assume: XState | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Keep raw counts in ``layers['counts']`` and set ``X`` to library-size normalised log1p values.

    Normalisation is :func:`scanpy.pp.normalize_total` followed by :func:`scanpy.pp.log1p`. Data
    whose ``X`` is already log-normalised (detected as non-integer values below 30, or declared with
    ``assume='log1p'``) is not normalised a second time; the log says so and ``uns['preprocess']``
    records it. No batch correction is applied (see ``docs/decisions.md``).

    Parameters
    ----------
    adata
        Annotated data matrix.
    target_sum
        Total counts per cell after normalisation.
    counts_layer
        Layer that holds (or will hold) the raw counts.
    assume
        ``None`` detects what ``X`` holds; ``"counts"`` or ``"log1p"`` declares it.
    copy
        Return a modified copy instead of writing in place.

    Returns
    -------
    Returns ``None`` (or the copy when ``copy=True``) and sets

    ``adata.X``
        log1p(library-size normalised counts), float32 (unchanged if it was already log-normalised).
    ``adata.layers['counts']``
        The raw counts, when ``X`` held counts.
    ``adata.uns['preprocess_name' | 'preprocess_version' | 'preprocess' | 'log1p']``
        What was done.

    Examples
    --------
    >>> import celljepa as cj, scanpy as sc
    >>> adata = cj.datasets.simulate(1000, 100, 5, 2, seed=0, preprocessed=False)
    >>> cj.pp.normalize(adata)
    >>> "counts" in adata.layers
    True
    """
    adata = adata.copy() if copy else adata
    with log_step("normalize") as written:
        written += log_normalize(adata, assume=assume, target_sum=target_sum, counts_layer=counts_layer)
    return adata if copy else None
