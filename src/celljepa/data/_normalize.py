"""Library-size normalisation + log1p (through scanpy) in place, with detection of data already log-normalised."""

from __future__ import annotations

from typing import Literal

import numpy as np
import scanpy as sc
import scipy.sparse as sp
from anndata import AnnData

from .._errors import InputError
from .._logging import logger
from . import contract as C

XState = Literal["counts", "log1p"]
_SAMPLE_ROWS = 20_000


def _values_sample(matrix) -> np.ndarray:
    """Stored values of (up to) the first rows of a dense or sparse matrix, for cheap checks."""
    rows = min(matrix.shape[0], _SAMPLE_ROWS)
    part = matrix[:rows]
    if sp.issparse(part):
        return np.asarray(part.tocsr().data)
    return np.asarray(part).ravel()


def _all_values(matrix) -> np.ndarray:
    if sp.issparse(matrix):
        return np.asarray(matrix.data)
    return np.asarray(matrix).ravel()


def detect_x_state(matrix, *, where: str = "X") -> XState:
    """Tell whether a matrix holds raw counts or log-normalised values.

    Integer-valued, non-negative → ``"counts"``; non-integer with a maximum below 30 → ``"log1p"``.
    Negative values (scaled data) and non-integer values above 30 (normalised but not logged) are
    ambiguous and raise :class:`InputError` asking for raw counts or an explicit declaration.
    """
    values = _all_values(matrix)
    if values.size == 0:
        return "counts"
    if not np.isfinite(values).all():
        n_bad = int((~np.isfinite(values)).sum())
        raise InputError(f"{where} has {n_bad} NaN/inf value(s). Remove or impute them before ingesting.")
    vmin = float(values.min())
    if vmin < 0:
        raise InputError(
            f"{where} has negative values (min {vmin:.3g}): it looks scaled or batch-corrected. "
            "celljepa needs raw counts or log1p-normalised values; pass the raw counts layer."
        )
    sample = _values_sample(matrix)
    integer = bool(np.all(sample == np.round(sample)))
    if integer:
        return "counts"
    vmax = float(values.max())
    if vmax < 30:
        return "log1p"
    raise InputError(
        f"{where} is non-integer with values up to {vmax:.3g}: it looks library-size normalised but not "
        "log-transformed. Provide raw counts, or declare assume='log1p' if it is log-normalised."
    )


def log_normalize(adata: AnnData, *, assume: XState | None = None, target_sum: float = C.DEFAULT_TARGET_SUM,
                  counts_layer: str = C.COUNTS_LAYER) -> list[str]:
    """Normalise ``adata`` in place as :func:`celljepa.pp.normalize` describes; return the keys written."""
    if assume not in (None, "counts", "log1p"):
        raise InputError(f"assume={assume!r} must be None, 'counts' or 'log1p'.")
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise InputError(f"AnnData is empty ({adata.n_obs} cells × {adata.n_vars} genes); nothing to normalise.")
    written = []
    detected = detect_x_state(adata.X)
    if assume is None and detected == "counts" and "log1p" in adata.uns:
        raise InputError(
            "X holds integers, as raw counts do, but uns['log1p'] says it was log-transformed: normalising it "
            "would log it twice. Fix: assume='log1p' (CLI: --assume log1p) if X is log-normalised, or "
            "assume='counts' (and del adata.uns['log1p']) if X holds raw counts."
        )
    state = assume or detected
    if counts_layer in adata.layers:
        check_counts(adata.layers[counts_layer], where=f"layers['{counts_layer}']")
    if state == "counts":
        check_counts(adata.X, where="X")
        adata.layers[counts_layer] = adata.X.copy()
        adata.X = adata.X.astype(np.float32)
        sc.pp.normalize_total(adata, target_sum=target_sum)
        sc.pp.log1p(adata)
        written += [f"layers['{counts_layer}']", "X"]
        normalized_here = True
    else:
        logger.warning(
            "normalize: X is already log-normalised (%s); not normalising again.",
            "declared" if assume else "detected: non-integer values below 30",
        )
        adata.uns.setdefault("log1p", {"base": None})
        normalized_here = False
    adata.uns["preprocess_name"] = C.PREPROCESS_NAME
    adata.uns["preprocess_version"] = C.PREPROCESS_VERSION
    adata.uns["preprocess"] = {
        "x_state_in": state,
        "x_state_detected": detected,
        "normalized_here": normalized_here,
        "target_sum": float(target_sum) if normalized_here else float("nan"),
        "counts_layer": counts_layer if counts_layer in adata.layers else "",
        "batch_correction": "none",
    }
    written.append("uns['preprocess']")
    return written


def check_counts(matrix, *, where: str) -> None:
    """Raise :class:`InputError` when a counts matrix has NaN/inf, negative or non-integer values."""
    values = _all_values(matrix)
    if values.size == 0:
        return
    if not np.isfinite(values).all():
        raise InputError(f"{where} has NaN/inf values; counts must be finite.")
    if float(values.min()) < 0:
        n_neg = int((values < 0).sum())
        raise InputError(f"{where} has {n_neg} negative count(s) (min {values.min():.3g}); counts must be >= 0.")
    sample = _values_sample(matrix)
    if not np.all(sample == np.round(sample)):
        raise InputError(f"{where} holds non-integer values, so it is not raw counts.")
