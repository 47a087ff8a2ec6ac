"""Write the contract columns (perturbation_id, is_control, context_id, tokens, dose, time) into obs."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._errors import InputError
from .._io import folder_name
from .._logging import logger
from . import contract as C
from ._keys import require_obs_key, suggest

# How the ``perturbation_type`` labels of public layouts map onto token kinds.
KIND_ALIASES: dict[str, str] = {
    "gene": "gene",
    "genetic": "gene",
    "crispr": "gene",
    "crispra": "gene",
    "crispri": "gene",
    "crispr-cas9": "gene",
    "crispr_cas9": "gene",
    "crisprko": "gene",
    "knockout": "gene",
    "knockdown": "gene",
    "overexpression": "gene",
    "orf": "gene",
    "shrna": "gene",
    "sirna": "gene",
    "drug": "drug",
    "drugs": "drug",
    "chemical": "drug",
    "compound": "drug",
    "small molecule": "drug",
    "small_molecule": "drug",
    "cytokine": "cytokine",
    "cytokines": "cytokine",
    "stimulus": "cytokine",
    "protein": "cytokine",
    "ligand": "cytokine",
}

# Defaults of the optional contract keys (the keywords of cj.pp.standardize that describe the source).
REQUIRED_KEYS = ("perturbation_key", "control_values")
KEY_DEFAULTS: dict[str, Any] = {
    "context_key": None,
    "context_value": "default",
    "dose_key": None,
    "time_key": None,
    "time_unit": "h",
    "combo_sep": None,
    "perturbation_kind": "gene",
    "kind_key": None,
    "control_key": None,
    "cell_type_key": None,
    "batch_key": None,
}

_TIME_UNITS = {
    "h": 1.0,
    "hour": 1.0,
    "hours": 1.0,
    "hr": 1.0,
    "hrs": 1.0,
    "min": 1 / 60,
    "minutes": 1 / 60,
    "d": 24.0,
    "day": 24.0,
    "days": 24.0,
}


def _as_list(values: str | Sequence[str] | None) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str):
        return [values]
    return [str(v) for v in values]


def _kind_of(value: object, *, column: str) -> str:
    key = str(value).strip().lower()
    if key in KIND_ALIASES:
        return KIND_ALIASES[key]
    raise InputError(
        f"obs['{column}'] has the perturbation type '{value}', which celljepa cannot map to a token kind."
        f"{suggest(key, KIND_ALIASES)} Known types: {', '.join(sorted(KIND_ALIASES))}. "
        "Pass perturbation_kind=... (one kind for all cells) instead of kind_key to override."
    )


def _parse_time(value: object, unit_scale: float) -> float:
    if isinstance(value, str):
        text = value.strip().lower()
        for suffix in sorted(_TIME_UNITS, key=len, reverse=True):
            if text.endswith(suffix) and text[: -len(suffix)].strip():
                number = C.parse_number(text[: -len(suffix)].strip())
                return number * _TIME_UNITS[suffix]
    return C.parse_number(value) * unit_scale


def write_contract(adata: AnnData, keys: Mapping[str, Any]) -> list[str]:
    """Write the contract columns into ``adata.obs`` in place, as :func:`celljepa.pp.standardize` describes.

    ``keys`` are the keywords of :func:`celljepa.pp.standardize` that name the source's columns and labels
    (``perturbation_key`` and ``control_values`` required; :data:`KEY_DEFAULTS` fills the rest; ``None``
    means the default). Returns the keys written.
    """
    unknown = sorted(set(keys) - set(KEY_DEFAULTS) - set(REQUIRED_KEYS))
    if unknown:
        raise InputError(f"unknown contract key {unknown[0]!r}.{suggest(unknown[0], [*REQUIRED_KEYS, *KEY_DEFAULTS])}")
    missing = [k for k in REQUIRED_KEYS if keys.get(k) is None]
    if missing:
        raise InputError(
            f"{' and '.join(missing)} must be given: the obs column of the perturbation labels and "
            "the label(s) of control cells."
        )
    k = {**KEY_DEFAULTS, **{key: value for key, value in keys.items() if value is not None}}
    perturbation_key, control_values = k["perturbation_key"], k["control_values"]
    context_key, context_value = k["context_key"], k["context_value"]
    dose_key, time_key, time_unit = k["dose_key"], k["time_key"], k["time_unit"]
    combo_sep, perturbation_kind, kind_key = k["combo_sep"], k["perturbation_kind"], k["kind_key"]
    control_key, cell_type_key, batch_key = k["control_key"], k["cell_type_key"], k["batch_key"]
    obs = adata.obs
    written: list[str] = []
    controls = _as_list(control_values)
    if not controls:
        raise InputError("control_values is empty: name the label(s) that mark control cells, e.g. 'control'.")
    for argument, key in (
        ("perturbation_key", perturbation_key),
        ("context_key", context_key),
        ("dose_key", dose_key),
        ("time_key", time_key),
        ("kind_key", kind_key),
        ("control_key", control_key),
        ("cell_type_key", cell_type_key),
        ("batch_key", batch_key),
    ):
        if key is not None:
            require_obs_key(obs.columns, key, argument=argument)
    if time_unit not in _TIME_UNITS:
        raise InputError(f"time_unit='{time_unit}' is not known; use one of 'h', 'min', 'd'.")
    if kind_key is None and perturbation_kind not in C.TOKEN_KINDS:
        raise InputError(
            f"perturbation_kind='{perturbation_kind}' is not a token kind.{suggest(perturbation_kind, C.TOKEN_KINDS)} "
            f"Use one of {', '.join(C.TOKEN_KINDS)}."
        )

    raw = obs[perturbation_key]
    missing = raw.isna().to_numpy()
    if missing.any():
        raise InputError(
            f"obs['{perturbation_key}'] has {int(missing.sum())} cell(s) without a perturbation label "
            f"(first: '{obs.index[np.flatnonzero(missing)[0]]}'). Label them (e.g. as a control value) "
            "or remove them before standardize."
        )
    labels = raw.astype(str).str.strip()
    present = set(labels.unique())
    absent = [c for c in controls if c not in present]
    if absent:
        raise InputError(
            f"control value(s) {absent} do not occur in obs['{perturbation_key}'].{suggest(absent[0], present)} "
            f"Values present include: {', '.join(sorted(present)[:15])}."
        )
    control_set = set(controls)

    if kind_key is not None:
        kinds = obs[kind_key].astype(str).str.strip()
    else:
        kinds = pd.Series(perturbation_kind, index=obs.index)

    # Resolve each distinct (label, kind) once; cells then map by code.
    pairs = pd.MultiIndex.from_arrays([labels.to_numpy(), kinds.to_numpy()])
    codes, uniques = pd.factorize(pairs)
    token_of: list[str] = []
    for label, kind_value in uniques:
        if label in control_set:
            token_of.append(C.CONTROL_TOKEN)
            continue
        parts = [p.strip() for p in (label.split(combo_sep) if combo_sep else [label])]
        parts = [p for p in parts if p and p not in control_set]
        if not parts:
            token_of.append(C.CONTROL_TOKEN)
            continue
        kind = _kind_of(kind_value, column=kind_key) if kind_key is not None else perturbation_kind
        try:
            token_of.append(C.join_tokens(C.make_token(kind, p) for p in parts))
        except ValueError as err:
            raise InputError(f"obs['{perturbation_key}'] label '{label}': {err}.") from None
    token_arr = np.asarray(token_of, dtype=object)[codes]
    pid_of = {t: C.perturbation_id_from_tokens(C.split_tokens(t)) for t in set(token_of)}
    pid_arr = np.asarray([pid_of[t] for t in token_of], dtype=object)[codes]
    is_control = token_arr == C.CONTROL_TOKEN

    if control_key is not None:
        flag = obs[control_key]
        try:
            flag_bool = (
                flag.astype(str)
                .str.strip()
                .str.lower()
                .map({"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False})
            )
        except Exception:  # pragma: no cover - defensive
            flag_bool = pd.Series(np.nan, index=obs.index)
        if flag_bool.isna().any():
            raise InputError(f"obs['{control_key}'] must be boolean or 0/1 to serve as control_key.")
        disagree = flag_bool.to_numpy(dtype=bool) != is_control
        if disagree.any():
            bad = sorted(set(labels[disagree]))[:10]
            raise InputError(
                f"obs['{control_key}'] disagrees with control_values={controls} for {int(disagree.sum())} "
                f"cell(s) with labels {bad}: a perturbation label is flagged as control or vice versa. "
                "Fix control_values or the control column."
            )

    if context_key is not None:
        ctx = obs[context_key]
        if ctx.isna().any():
            raise InputError(
                f"obs['{context_key}'] has {int(ctx.isna().sum())} cell(s) without a context. "
                "Fill them or drop those cells."
            )
        context = ctx.astype(str).str.strip().to_numpy(dtype=object)
    else:
        context = np.full(adata.n_obs, str(context_value), dtype=object)

    dose = _map_numbers(obs[dose_key], C.parse_number) if dose_key else np.full(adata.n_obs, np.nan)
    scale = _TIME_UNITS[time_unit]
    time = _map_numbers(obs[time_key], lambda v: _parse_time(v, scale)) if time_key else np.full(adata.n_obs, np.nan)

    new = {
        C.PERTURBATION_ID: pd.Categorical(pid_arr),
        C.IS_CONTROL: is_control.astype(bool),
        C.CONTEXT_ID: pd.Categorical(context),
        C.PERTURBATION_TOKENS: pd.Categorical(token_arr),
        C.DOSE: dose.astype(np.float64),
        C.TIME_HOURS: time.astype(np.float64),
    }
    if cell_type_key is not None:
        new["cell_type"] = pd.Categorical(obs[cell_type_key].astype(str).to_numpy())
    if batch_key is not None:
        new["batch"] = pd.Categorical(obs[batch_key].astype(str).to_numpy())
    # Columns the source already had under a contract name (PerturBench's string "dose") are kept
    # as <name>_raw; a second standardize call just overwrites its own earlier output.
    restandardizing = "standardize" in adata.uns.get("celljepa", {})
    for name, values in new.items():
        if name in obs.columns and not restandardizing and f"{name}_raw" not in obs.columns:
            obs[f"{name}_raw"] = obs[name]
        obs[name] = values
        written.append(f"obs['{name}']")

    params = {
        "perturbation_key": perturbation_key,
        **k,
        "control_values": controls,
        "context_value": context_value if context_key is None else None,
        "perturbation_kind": perturbation_kind if kind_key is None else None,
    }
    meta = dict(adata.uns.get("celljepa", {}))
    meta["standardize"] = drop_none(params)
    adata.uns["celljepa"] = meta
    written.append("uns['celljepa']['standardize']")
    n_ctrl = int(is_control.sum())
    n_pert, n_ctx = len(set(pid_arr[~is_control])), len(set(context))
    logger.info(
        "standardize: %d cell%s, %d perturbation%s, %d context%s, %d control cell%s",
        adata.n_obs, "" if adata.n_obs == 1 else "s", n_pert, "" if n_pert == 1 else "s",
        n_ctx, "" if n_ctx == 1 else "s", n_ctrl, "" if n_ctrl == 1 else "s",
    )  # fmt: skip
    return written


def _map_numbers(column: pd.Series, parse) -> np.ndarray:
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    parsed = np.asarray([parse(u) for u in uniques] + [np.nan], dtype=np.float64)
    return parsed[codes]  # code -1 (missing) picks the trailing NaN


def drop_none(mapping: Mapping) -> dict:
    """Drop ``None`` values (h5ad cannot store them) from a flat mapping."""
    return {k: v for k, v in mapping.items() if v is not None}


def set_provenance(adata: AnnData, *, dataset_id: str, source: str) -> None:
    """Write ``dataset_id``, ``source``, ``created_at`` (UTC, ISO 8601) and ``feature_set`` to ``adata.uns``."""
    folder_name(dataset_id, "dataset_id")
    adata.uns["dataset_id"] = str(dataset_id)
    adata.uns["source"] = str(source)
    adata.uns["created_at"] = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    adata.uns["feature_set"] = C.feature_set_record(list(adata.var_names))
