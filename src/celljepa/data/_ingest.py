"""Ingestion: read a source file, write the contract, normalise, validate, write atomically with provenance."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from anndata import AnnData

from .._errors import InputError
from .._io import write_h5ad_atomic
from .._logging import log_step, logger
from . import contract as C
from ._normalize import log_normalize
from ._standardize import drop_none, set_provenance, write_contract
from ._validate import check_contract
from .readers import layout_for, merge_keys, prepare_scperturb_dose, read_source


def ingest_anndata(
    adata: AnnData,
    *,
    dataset_id: str,
    source: str,
    format: str = "auto",
    min_cells: int = C.DEFAULT_MIN_CELLS,
    assume: str | None = None,
    **keys: Any,
) -> AnnData:
    """Bring an in-memory AnnData into the contract: standardize, normalise, provenance, validate.

    ``keys`` are :func:`celljepa.pp.standardize` keywords that override the layout's defaults.
    Raises :class:`celljepa.ContractError` with every violation when the result is not valid.
    """
    if min_cells < 1:
        raise InputError(f"min_cells={min_cells} must be at least 1.")
    layout = layout_for(adata, format)
    dose_unit = prepare_scperturb_dose(adata) if layout.name == "scperturb" else None
    std_keys = merge_keys(layout, keys)
    write_contract(adata, std_keys)
    _drop_empty_cells(adata)
    log_normalize(adata, assume=assume)
    set_provenance(adata, dataset_id=dataset_id, source=source)
    meta = dict(adata.uns.get("celljepa", {}))
    meta.update(drop_none({"format": layout.name, "min_cells": int(min_cells), "dose_unit": dose_unit}))
    adata.uns["celljepa"] = meta
    for note in layout.notes:
        logger.info("ingest (%s): %s", layout.name, note)
    check_contract(adata, min_cells=min_cells)
    return adata


def _drop_empty_cells(adata: AnnData) -> None:
    """Drop cells without a single count (nothing measured; library-size normalisation is undefined for them)."""
    totals = np.asarray(adata.X.sum(axis=1)).ravel()
    empty = totals == 0
    if empty.any():
        logger.warning(
            "ingest: dropped %d cell(s) with no counts at all (e.g. %s); nothing was measured in them.",
            int(empty.sum()),
            list(adata.obs_names[empty][:3]),
        )
        adata._inplace_subset_obs(~empty)
        meta = dict(adata.uns.get("celljepa", {}))
        meta["dropped_empty_cells"] = int(empty.sum())
        adata.uns["celljepa"] = meta


def processed_path(out_dir: str | os.PathLike, dataset_id: str) -> Path:
    """``<out_dir>/<dataset_id>/<preprocess_version>.h5ad``."""
    return Path(out_dir) / dataset_id / f"{C.PREPROCESS_VERSION}.h5ad"


def ingest(
    source: str | os.PathLike,
    *,
    dataset_id: str,
    out_dir: str | os.PathLike,
    format: str = "auto",
    min_cells: int = C.DEFAULT_MIN_CELLS,
    assume: str | None = None,
    overwrite: bool = True,
    **keys: Any,
) -> Path:
    """Ingest ``source`` (.h5ad) into ``<out_dir>/<dataset_id>/<preprocess_version>.h5ad``.

    The file is written through a temporary file and renamed, so a failure at any step leaves
    nothing behind. Returns the path written.

    Examples
    --------
    >>> from celljepa.data import ingest
    >>> path = ingest("norman.h5ad", dataset_id="norman_gears", out_dir="data/processed", min_cells=1)
    """
    with log_step("ingest") as written:
        adata = read_source(source)
        target = processed_path(out_dir, dataset_id)
        if target.exists() and not overwrite:
            raise InputError(
                f"'{target}' exists. Fix: pass overwrite=True (CLI: drop --no-overwrite) to replace "
                "it, or another --dataset-id / --out."
            )
        ingest_anndata(
            adata,
            dataset_id=dataset_id,
            source=str(Path(source).resolve()),
            format=format,
            min_cells=min_cells,
            assume=assume,
            **keys,
        )
        write_h5ad_atomic(adata, target)
        written.append(str(target))
    return target
