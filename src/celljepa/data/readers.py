"""Readers for the perturbation layouts users have: scPerturb, GEARS/CPA, PerturBench and generic."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
from anndata import AnnData

from .._errors import InputError
from .._io import check_readable_h5ad
from ._keys import suggest

FORMATS = ("auto", "scperturb", "gears", "perturbench", "generic")

# Doses are brought to nanomolar when the unit column names a molar unit.
_DOSE_TO_NM = {"nm": 1.0, "um": 1e3, "µm": 1e3, "μm": 1e3, "mm": 1e6, "m": 1e9, "pm": 1e-3}


@dataclass
class Layout:
    """How one source layout maps onto :func:`celljepa.pp.standardize` keyword arguments."""

    name: str
    keys: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def read_source(path: str | Path, *, backed: bool = False) -> AnnData:
    """Read an ``.h5ad`` file with clear errors for missing, empty, non-HDF5 or unreadable files.

    ``backed=True`` leaves ``X`` on disk (read-only; ``obs``, ``var`` and ``uns`` are loaded).
    """
    p = check_readable_h5ad(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # old-format uns entries (e.g. scGen's 'neighbors') still load
            adata = ad.read_h5ad(p, backed="r" if backed else None)
    except Exception as err:  # h5py/anndata raise many types; the user needs the file and the reason
        raise InputError(f"'{p}' is an HDF5 file but not a readable AnnData (.h5ad): {err}") from None
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise InputError(f"'{p}' holds no data ({adata.n_obs} cells × {adata.n_vars} genes).")
    return adata


def _values(obs: pd.DataFrame, col: str) -> set[str]:
    return set(obs[col].astype(str).unique()) if col in obs.columns else set()


def detect_format(adata: AnnData) -> str:
    """Guess the source layout from obs column names and values.

    - ``gears``: ``condition`` with ``ctrl`` or ``A+ctrl`` labels (GEARS / CPA Norman).
    - ``scperturb``: ``perturbation`` plus scPerturb's ``cell_line`` / ``dose_value`` / ``nperts``.
    - ``perturbench``: ``perturbation`` with ``control`` and a ``cell_type`` column.

    Raises :class:`InputError` listing the obs columns when none matches; use ``format="generic"``
    with explicit keys then.
    """
    obs = adata.obs
    conditions = _values(obs, "condition")
    if conditions and ("ctrl" in conditions or any(c.endswith("+ctrl") or c.startswith("ctrl+") for c in conditions)):
        return "gears"
    if "perturbation" in obs.columns:
        if {"cell_line", "dose_value", "nperts"} & set(obs.columns):
            return "scperturb"
        if "cell_type" in obs.columns and "control" in _values(obs, "perturbation"):
            return "perturbench"
    cols = ", ".join(map(str, obs.columns[:30]))
    raise InputError(
        "Could not detect the layout (scPerturb, GEARS/CPA, PerturBench) from obs columns "
        f"[{cols}]. Use format='generic' (CLI: --format generic) with --perturbation-key and "
        "--control-values (and --context-key if there are several contexts)."
    )


def layout_for(adata: AnnData, fmt: str) -> Layout:
    """Return the standardize keywords for ``fmt`` applied to this AnnData (``fmt`` may be ``auto``)."""
    if fmt not in FORMATS:
        raise InputError(f"format='{fmt}' is not known.{suggest(fmt, FORMATS)} Use one of {', '.join(FORMATS)}.")
    if fmt == "auto":
        fmt = detect_format(adata)
    obs = adata.obs
    if fmt == "gears":
        keys = {
            "perturbation_key": "condition",
            "control_values": ["ctrl"],
            "combo_sep": "+",
            "perturbation_kind": "gene",
        }
        if "cell_type" in obs.columns:
            keys["context_key"] = "cell_type"
            keys["cell_type_key"] = "cell_type"
        if "control" in obs.columns:
            keys["control_key"] = "control"
        return Layout("gears", keys, ["GEARS doses ('1+1') are placeholders for CRISPR and are not used."])
    if fmt == "perturbench":
        keys = {
            "perturbation_key": "perturbation",
            "control_values": ["control"],
            "combo_sep": "+",
            "context_key": "cell_type",
            "cell_type_key": "cell_type",
        }
        if "perturbation_type" in obs.columns:
            keys["kind_key"] = "perturbation_type"
        drug_types = {"drug", "chemical", "compound", "small molecule"}
        has_drugs = any(str(v).lower() in drug_types for v in _values(obs, "perturbation_type"))
        if has_drugs and "dose" in obs.columns:
            keys["dose_key"] = "dose"
        if "dataset" in obs.columns:
            keys["batch_key"] = "dataset"
        return Layout("perturbench", keys)
    if fmt == "scperturb":
        keys = {"perturbation_key": "perturbation", "control_values": ["control"]}
        context = next((c for c in ("cell_line", "celltype", "cell_type") if c in obs.columns), None)
        if context:
            keys["context_key"] = context
            keys["cell_type_key"] = context
        if "perturbation_type" in obs.columns:
            keys["kind_key"] = "perturbation_type"
        if "dose_value" in obs.columns:
            keys["dose_key"] = "dose_value"
        if "time" in obs.columns:
            keys["time_key"] = "time"
        if "nperts" in obs.columns and pd.to_numeric(obs["nperts"], errors="coerce").max() > 1:
            keys["combo_sep"] = "_"  # scPerturb joins multiple perturbations with '_'
        return Layout("scperturb", keys, ["doses are converted to nM when dose_unit names a molar unit"])
    return Layout("generic", {})


def prepare_scperturb_dose(adata: AnnData) -> str | None:
    """Convert ``obs['dose_value']`` to nM using ``obs['dose_unit']`` (in place); return the unit used.

    scPerturb stores drug doses as ``dose_value`` + ``dose_unit`` (``nM``, ``uM``, ...). When every unit
    is molar the values are brought to nM so that one number means one thing across files.
    """
    obs = adata.obs
    if "dose_value" not in obs.columns or "dose_unit" not in obs.columns:
        return None
    units = obs["dose_unit"].astype(str).str.strip().str.lower()
    known = units.isin(list(_DOSE_TO_NM) + ["nan", "none", ""])
    if not known.all():
        return ",".join(sorted(set(obs["dose_unit"].astype(str)[~known])))
    factor = units.map(lambda u: _DOSE_TO_NM.get(u, np.nan)).to_numpy(dtype=float)
    values = pd.to_numeric(obs["dose_value"], errors="coerce").to_numpy(dtype=float)
    obs["dose_value_raw"] = obs["dose_value"]
    obs["dose_value"] = values * factor
    return "nM"


def merge_keys(layout: Layout, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Layout defaults updated with every explicitly given (non-``None``) keyword."""
    keys = dict(layout.keys)
    keys.update({k: v for k, v in overrides.items() if v is not None})
    if "perturbation_key" not in keys or "control_values" not in keys:
        missing = [k for k in ("perturbation_key", "control_values") if k not in keys]
        raise InputError(
            f"The '{layout.name}' layout needs {' and '.join(missing)} "
            "(CLI: --perturbation-key COLUMN --control-values LABEL[,LABEL])."
        )
    return keys
