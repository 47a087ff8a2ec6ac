"""``cj.pp.validate``: check an AnnData against the data contract, every violation at once."""

from __future__ import annotations

from anndata import AnnData

from .._errors import Violation
from ..data._validate import check_contract, contract_violations


def validate(adata: AnnData, *, min_cells: int | None = None, strict: bool = True) -> list[Violation] | None:
    """Check ``adata`` against the celljepa data contract.

    Rules: the contract columns exist with the right types and no missing values; ``is_control``
    matches the ``control:CTRL`` token and no perturbed cell carries a control-like label; tokens
    follow ``kind:name``; ``var_names`` and ``obs_names`` are unique; ``X`` is finite; raw counts
    (``layers['counts']``) are non-negative integers; every context has control cells; every
    ``(context_id, perturbation_id, dose, time_hours)`` condition has at least ``min_cells`` cells;
    there is at least one perturbed condition; the provenance keys are in ``uns``.

    Parameters
    ----------
    adata
        Annotated data matrix, usually after :func:`celljepa.pp.standardize` and
        :func:`celljepa.pp.normalize`.
    min_cells
        Minimum cells per condition. ``None`` uses the value recorded at ingestion
        (``uns['celljepa']['min_cells']``), else 10.
    strict
        Raise :class:`celljepa.ContractError` listing every violation (default). With
        ``strict=False`` return the list of :class:`celljepa.Violation` instead (empty when valid).

    Returns
    -------
    ``None`` when valid and ``strict``; the list of violations when ``strict=False``.

    Examples
    --------
    >>> import celljepa as cj
    >>> adata = cj.datasets.demo()
    >>> cj.pp.validate(adata)
    >>> bad = adata.copy(); del bad.obs["context_id"]
    >>> [v.rule for v in cj.pp.validate(bad, strict=False)]
    ['required_column']
    """
    if strict:
        check_contract(adata, min_cells=min_cells)
        return None
    return contract_violations(adata, min_cells=min_cells)
