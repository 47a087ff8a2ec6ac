"""``cj.pp.normalize``: raw counts kept in a layer, ``X`` library-size normalised and log1p-transformed."""

from __future__ import annotations

from anndata import AnnData

from .._errors import renamed_argument
from .._logging import log_step
from ..data import contract as C
from ..data._normalize import XState, log_normalize


def normalize(
    adata: AnnData,
    *,
    target_sum: float = C.DEFAULT_TARGET_SUM,
    layer: str = C.COUNTS_LAYER,
    assume: XState | None = None,
    copy: bool = False,
    counts_layer: str | None = None,
) -> AnnData | None:
    """Keep raw counts in ``layers[layer]`` (``"counts"``) and set ``X`` to library-size normalised log1p values.

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
    layer
        The layer of raw counts that ``X`` is checked against and, when ``X`` holds counts, where they are kept
        (written if absent). ``X`` itself is what is normalised.
    assume
        ``None`` detects what ``X`` holds; ``"counts"`` or ``"log1p"`` declares it.
    copy
        Return a modified copy instead of writing in place.
    counts_layer
        Deprecated alias of ``layer`` (emits a FutureWarning).

    Returns
    -------
    Returns ``None`` (or the copy when ``copy=True``) and sets

    ``adata.X``
        log1p(library-size normalised counts), float32 (unchanged if it was already log-normalised).
    ``adata.layers[layer]``
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
    layer = renamed_argument("cj.pp.normalize", "counts_layer", counts_layer, "layer", layer, C.COUNTS_LAYER)
    adata = adata.copy() if copy else adata
    with log_step("normalize") as written:
        written += log_normalize(adata, assume=assume, target_sum=target_sum, counts_layer=layer)
    return adata if copy else None
