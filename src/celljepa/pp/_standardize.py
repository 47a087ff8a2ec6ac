"""``cj.pp.standardize``: write the contract columns (perturbation, control flag, context, tokens, dose, time)."""

from __future__ import annotations

from collections.abc import Sequence

from anndata import AnnData

from .._logging import log_step
from ..data._standardize import KEY_DEFAULTS, set_provenance, write_contract


def standardize(
    adata: AnnData,
    *,
    perturbation_key: str,
    control_values: str | Sequence[str],
    context_key: str | None = None,
    context_value: str = KEY_DEFAULTS["context_value"],
    dose_key: str | None = None,
    time_key: str | None = None,
    time_unit: str = KEY_DEFAULTS["time_unit"],
    combo_sep: str | None = None,
    perturbation_kind: str = KEY_DEFAULTS["perturbation_kind"],
    kind_key: str | None = None,
    control_key: str | None = None,
    cell_type_key: str | None = None,
    batch_key: str | None = None,
    dataset_id: str | None = None,
    source: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Write the celljepa contract columns into ``adata.obs``.

    Every cell gets a canonical ``perturbation_id`` (names sorted and joined by ``+``, ``control``
    for controls), ``perturbation_tokens`` (``gene:KLF1|gene:MAP2K6``; ``control:CTRL``),
    ``is_control``, ``context_id``, ``dose`` and ``time_hours``. Combination labels are split on
    ``combo_sep`` and control parts inside them are dropped (GEARS writes ``KLF1+ctrl``), so
    ``B+A`` and ``A+B`` give the same id.

    Parameters
    ----------
    adata
        Annotated data matrix (cells × genes).
    perturbation_key
        obs column holding the perturbation label of each cell.
    control_values
        Label(s) in ``perturbation_key`` that mark control cells (``"control"``, ``"ctrl"``,
        ``"non-targeting"``). Each must occur in the column.
    context_key
        obs column with the biological context (cell line, cell type). ``None`` gives every cell
        ``context_value``.
    context_value
        Context of all cells when ``context_key`` is ``None`` (e.g. ``"THP-1"``).
    dose_key
        obs column with the dose (numbers, or strings such as ``"1+1"``); ``NaN`` when absent.
    time_key
        obs column with the time since perturbation; strings may carry a unit (``"24h"``).
    time_unit
        Unit of plain numbers in ``time_key``: ``"h"``, ``"min"`` or ``"d"``.
    combo_sep
        Separator of combination labels (``"+"``). ``None``: labels are single perturbations.
    perturbation_kind
        Token kind for every perturbation (``"gene"``, ``"drug"``, ``"cytokine"``, ...).
    kind_key
        obs column with a per-cell perturbation type (``"CRISPRi"``, ``"drug"``) mapped to a kind;
        overrides ``perturbation_kind``.
    control_key
        Optional boolean/0-1 obs column that flags controls; it must agree with ``control_values``.
    cell_type_key, batch_key
        Optional obs columns copied to the contract columns ``cell_type`` and ``batch``.
    dataset_id, source
        Provenance written to ``adata.uns`` (with ``created_at`` and ``feature_set``).
    copy
        Return a modified copy instead of writing in place.

    Returns
    -------
    Returns ``None`` (or the copy when ``copy=True``) and sets

    ``adata.obs['perturbation_id' | 'is_control' | 'context_id' | 'perturbation_tokens' | 'dose' | 'time_hours']``
        The contract columns (strings as categoricals, ``is_control`` bool, dose/time float).
    ``adata.obs['cell_type' | 'batch']``
        When ``cell_type_key`` / ``batch_key`` are given.
    ``adata.uns['celljepa']['standardize']``
        The parameters used.
    ``adata.uns['dataset_id' | 'source' | 'created_at' | 'feature_set']``
        Provenance, when ``dataset_id`` is given.

    Pre-existing obs columns with contract names are kept as ``<name>_raw``.

    Examples
    --------
    >>> import celljepa as cj
    >>> adata = cj.datasets.demo(preprocessed=False)
    >>> cj.pp.standardize(adata, perturbation_key="perturbation", control_values="control",
    ...                   context_key="cell_type", combo_sep="+", dataset_id="perturbench_devel")
    >>> adata.obs["perturbation_tokens"].iloc[0]
    'gene:KLF1|gene:MAP2K6'
    """
    adata = adata.copy() if copy else adata
    keys = dict(
        perturbation_key=perturbation_key,
        control_values=control_values,
        context_key=context_key,
        context_value=context_value,
        dose_key=dose_key,
        time_key=time_key,
        time_unit=time_unit,
        combo_sep=combo_sep,
        perturbation_kind=perturbation_kind,
        kind_key=kind_key,
        control_key=control_key,
        cell_type_key=cell_type_key,
        batch_key=batch_key,
    )
    with log_step("standardize") as written:
        written += write_contract(adata, keys)
        if dataset_id is not None:
            set_provenance(adata, dataset_id=dataset_id, source=source or "in-memory AnnData")
            written.append("uns[provenance]")
    return adata if copy else None
