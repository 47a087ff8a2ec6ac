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


#: Integer-valued data whose largest value is at most this, over at least :data:`_JUDGED_VALUES` stored values,
#: are rounded log values, not counts: a real cell's top genes carry tens to thousands of UMIs.
INTEGER_LOG_MAX = 15
_JUDGED_VALUES = 1_000


def _uns_says_log(uns) -> str | None:
    """The ``uns`` record that says X was log-transformed (scanpy's ``log1p``, celljepa's ``preprocess``)."""
    if uns is None:
        return None
    if "log1p" in uns:
        return "uns['log1p']"
    pre = uns.get("preprocess")
    if isinstance(pre, dict) and (pre.get("normalized_here") or pre.get("x_state_in") == "log1p"):
        return "uns['preprocess']"
    return None


def detect_x_state(matrix, *, where: str = "X", uns=None, judge: bool = True) -> XState:
    """Tell whether a matrix holds raw counts or log-normalised values: celljepa's one rule, on every entry point.

    Ingest, :func:`celljepa.pp.normalize`, the encoder (:class:`celljepa.models.CellJEPA`, so
    :func:`celljepa.tl.jepa_embed` and ``celljepa pretrain``) and the evaluation space (``eval-baselines``,
    ``benchmark``, ``holdout``) all decide with it:

    - non-integer values with a maximum below 30 → ``"log1p"``;
    - integers → ``"counts"``, unless ``uns`` records a log transform (``uns['log1p']``, ``uns['preprocess']``)
      or the largest of at least 1,000 stored values is at most :data:`INTEGER_LOG_MAX` (rounded log values:
      raw counts of real cells reach higher), which are refused as ambiguous;
    - negative values (scaled data), NaN/inf, and non-integer values of 30 or more (normalised but not
      logged) raise :class:`InputError`.

    A backed matrix is judged on its first rows. ``judge=False`` (a state the user declared) only refuses
    NaN/inf and negative values and reports what the values are.

    Examples
    --------
    >>> import numpy as np
    >>> detect_x_state(np.array([[0, 3, 12], [5, 0, 40]]))
    'counts'
    >>> detect_x_state(np.array([[0.0, 1.2], [2.5, 0.3]]))
    'log1p'
    """
    if not isinstance(matrix, np.ndarray) and not sp.issparse(matrix):  # backed (h5py / anndata sparse dataset)
        matrix = matrix[: min(matrix.shape[0], _SAMPLE_ROWS)]
    values = _all_values(matrix)
    if values.size == 0:
        return "counts"
    if values.dtype.kind == "f" and values.dtype.itemsize < 4:
        values = values.astype(np.float32)  # float16: judged (and later read) as float32
    if not np.isfinite(values).all():
        n_bad = int((~np.isfinite(values)).sum())
        raise InputError(
            f"{where} has {n_bad} NaN/inf value(s). Fix: `celljepa validate FILE` lists them; remove "
            "or impute them (or re-ingest the raw counts with `celljepa ingest`)."
        )
    vmin = float(values.min())
    if vmin < 0:
        raise InputError(
            f"{where} has negative values (min {vmin:.3g}): it looks scaled (e.g. by sc.pp.scale) or "
            "batch-corrected. celljepa needs raw counts or log1p-normalised values. Fix: in a scanpy workflow the "
            "log-normalised values are usually in adata.raw (use adata.raw.to_adata()), and raw counts, if "
            "kept, in a layer such as layers['counts']."
        )
    sample = _values_sample(matrix)
    integer = bool(np.all(sample == np.round(sample)))
    vmax = float(values.max())
    if not judge:
        return "counts" if integer else "log1p"
    if integer:
        record = _uns_says_log(uns)
        if record is not None:
            raise InputError(
                f"{where} holds integers, as raw counts do, but {record} says it was log-transformed: "
                "normalising it would log it twice, and reading it as log data would be wrong if it holds counts. "
                "Fix: assume='log1p' (CLI: --assume log1p) if it is log-normalised, or assume='counts' (and "
                f"del adata.{record.replace(chr(39), chr(34))}) if it holds raw counts."
            )
        if vmax <= INTEGER_LOG_MAX and np.count_nonzero(values) >= _JUDGED_VALUES:
            raise InputError(
                f"{where} holds only integers from 0 to {vmax:.0f} over {np.count_nonzero(values):,} stored values: "
                "raw counts of real cells reach higher (a cell's top genes carry tens to thousands of UMIs), so "
                "these look like log-normalised values that were rounded, which cannot be normalised or read as "
                "log data. Fix: pass the raw counts (e.g. layers['counts']), or declare assume='counts' "
                "(CLI: --assume counts) if these are counts."
            )
        return "counts"
    if vmax < 30:
        return "log1p"
    raise InputError(
        f"{where} is non-integer with values up to {vmax:.3g}: it looks library-size normalised but not "
        "log-transformed. Provide raw counts, or declare assume='log1p' if it is log-normalised."
    )


def require_log_normalized(matrix, *, where: str, uns=None, fix: str | None = None) -> None:
    """Raise a named :class:`InputError` unless ``matrix`` holds log-normalised values (:func:`detect_x_state`).

    The door every reader of log expression goes through: raw counts never reach the encoder or the evaluation
    space silently.
    """
    if detect_x_state(matrix, where=where, uns=uns) == "counts":
        raise InputError(
            f"{where} holds raw counts (integers), but it is read as log-normalised expression. Fix: "
            + (
                fix
                or "cj.pp.normalize(adata) first (it keeps the counts in layers['counts'] and log-normalises X), "
                "or `celljepa ingest` the file."
            )
        )


def _state_of(matrix, uns=None) -> str:
    """What a matrix holds, in words, for an error message (judged on its first rows)."""
    matrix = matrix[: min(matrix.shape[0], 2_000)]
    try:
        state = detect_x_state(matrix, uns=uns)
    except InputError as err:
        text = str(err)
        if "negative values" in text:
            return "scaled: has negative values"
        if "NaN/inf" in text:
            return "has NaN/inf values"
        if "not log-transformed" in text or "non-integer with values up to" in text:
            return "normalised, not log-transformed"
        return "not usable as counts or log values"
    return "log-normalised" if state == "log1p" else "raw counts"


def where_to_look(adata: AnnData, *, read: str | None = None) -> str:
    """Where a scanpy user's usable expression is: what ``adata.raw`` and each of ``adata.layers`` hold.

    ``read`` is the place that was refused (``None``: ``X``), left out of the list.
    """
    parts = []
    raw = getattr(adata, "raw", None)
    if raw is not None:
        state = _state_of(raw.X)
        if state == "log-normalised":
            parts.append(
                f"adata.raw holds log-normalised values ({raw.n_vars:,} genes; where scanpy keeps them before "
                "sc.pp.scale): use adata.raw.to_adata()"
            )
        elif state == "raw counts":
            parts.append("adata.raw holds raw counts: use adata.raw.to_adata() and cj.pp.normalize it first")
        else:
            parts.append(f"adata.raw is set but {state}")
    else:
        parts.append(
            "adata.raw is not set (after sc.pp.scale, keep the log-normalised data first: adata.raw = adata, "
            "before scaling)"
        )
    layers = [name for name in adata.layers if name != read]
    if layers:
        listed = ", ".join(f"{name!r} ({_state_of(adata.layers[name])})" for name in layers)
        parts.append(f"adata.layers holds {listed}; pass layer=<name> for a log-normalised one")
    else:
        parts.append("adata.layers is empty")
    return "Where to look: " + "; ".join(parts) + "."


def require_log_expression(adata: AnnData, layer: str | None = None, *, source: str | None = None) -> None:
    """Raise a named :class:`InputError` unless ``adata``'s ``X`` (or ``layer``) holds log-normalised expression.

    The one check of every reader of log expression (the encoder, ``celljepa pretrain``, the evaluation space),
    judged by :func:`detect_x_state` on the first rows, so it costs the same on every fold of any dataset.
    ``source`` (a file name) is named in the message. A refusal names the scanpy places where usable
    expression usually is: ``adata.raw`` (log-normalised data after ``sc.pp.scale``) and each of ``adata.layers``
    with what it holds.

    Examples
    --------
    >>> import celljepa as cj, scanpy as sc
    >>> adata = cj.datasets.demo()
    >>> adata.raw = adata
    >>> sc.pp.scale(adata)
    >>> require_log_expression(adata)  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    celljepa._errors.InputError: X has negative values ... use adata.raw.to_adata() ...
    """
    if layer is not None and layer not in adata.layers:
        raise InputError(
            f"layer {layer!r} is not in adata.layers of {source or 'adata'} (layers: "
            f"{', '.join(adata.layers) or 'none'}). Fix: read X (layer=None; CLI: drop data.layer), or "
            "one of the listed layers."
        )
    matrix = adata.layers[layer] if layer is not None else adata.X
    if matrix.shape[0] > _SAMPLE_ROWS:
        matrix = matrix[:_SAMPLE_ROWS]
    where = (f"layers[{layer!r}]" if layer is not None else "X") + (f" of {source}" if source else "")
    try:
        require_log_normalized(
            matrix,
            where=where,
            uns=None if layer is not None else adata.uns,
            fix="cj.pp.normalize(adata) first, or `celljepa ingest` the file first (either keeps the "
            "counts in layers['counts'] and log-normalises X)"
            + ("; read X, not the counts layer." if layer is not None else "."),
        )
    except InputError as err:
        raise InputError(f"{err} {where_to_look(adata, read=layer)}") from None


def log_normalize(
    adata: AnnData,
    *,
    assume: XState | None = None,
    target_sum: float = C.DEFAULT_TARGET_SUM,
    counts_layer: str = C.COUNTS_LAYER,
) -> list[str]:
    """Normalise ``adata`` in place as :func:`celljepa.pp.normalize` describes; return the keys written."""
    if assume not in (None, "counts", "log1p"):
        raise InputError(f"assume={assume!r} must be None, 'counts' or 'log1p'.")
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise InputError(f"AnnData is empty ({adata.n_obs} cells × {adata.n_vars} genes); nothing to normalise.")
    written = []
    # declared: the matrix is still checked for NaN/inf/negative values, not judged
    detected = detect_x_state(adata.X, uns=adata.uns, judge=assume is None)
    state = assume or detected
    has_layer = counts_layer in adata.layers
    if has_layer:
        check_counts(adata.layers[counts_layer], where=f"layers['{counts_layer}']")
    if state == "counts":
        check_counts(adata.X, where="X")
        if has_layer and not _same(adata.layers[counts_layer], adata.X):
            raise InputError(
                f"layers['{counts_layer}'] already holds raw counts, and X holds other integer values: normalising "
                f"X would log values that are not those counts and replace the layer, losing the raw counts. Fix: "
                f"adata.X = adata.layers['{counts_layer}'].copy() to normalise the counts, or pass "
                "assume='log1p' if X is already log-normalised."
            )
        if not has_layer:
            adata.layers[counts_layer] = adata.X.copy()
            written.append(f"layers['{counts_layer}']")
        adata.X = adata.X.astype(np.float32)
        sc.pp.normalize_total(adata, target_sum=target_sum)
        sc.pp.log1p(adata)
        written.append("X")
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


def _same(a, b) -> bool:
    """Whether two matrices (dense or sparse) hold the same values."""
    if a.shape != b.shape:
        return False
    if sp.issparse(a) or sp.issparse(b):
        diff = sp.csr_matrix(a) - sp.csr_matrix(b)
        return diff.nnz == 0 or not np.any(diff.data)
    return bool(np.array_equal(np.asarray(a), np.asarray(b)))
