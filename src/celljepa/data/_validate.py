"""Check an AnnData against the data contract and report every violation at once."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from pandas.api.types import is_bool_dtype, is_float_dtype, is_object_dtype, is_string_dtype

from .._errors import ContractError, InputError, Violation
from .._io import folder_name
from . import contract as C

_STRING_COLUMNS = (C.PERTURBATION_ID, C.CONTEXT_ID, C.PERTURBATION_TOKENS)


def _is_string_column(col: pd.Series) -> bool:
    if isinstance(col.dtype, pd.CategoricalDtype):
        cats = col.cat.categories
        return len(cats) == 0 or is_object_dtype(cats.dtype) or is_string_dtype(cats.dtype)
    return is_object_dtype(col.dtype) or is_string_dtype(col.dtype)


def _stored_values(matrix) -> np.ndarray:
    if sp.issparse(matrix):
        return np.asarray(matrix.data)
    return np.asarray(matrix).ravel()


def _fmt(values, n: int = 8) -> str:
    values = list(values)
    shown = ", ".join(f"'{v}'" for v in values[:n])
    return shown + (f", ... ({len(values)} in all)" if len(values) > n else "")


def contract_violations(adata: AnnData, *, min_cells: int | None = None) -> list[Violation]:
    """Every violation of the data contract in ``adata`` (empty when valid); see :func:`celljepa.pp.validate`.

    ``min_cells`` ``None`` uses the value recorded at ingestion (``uns['celljepa']['min_cells']``), else 10.
    """
    v: list[Violation] = []
    add = v.append
    obs = adata.obs
    meta = adata.uns.get("celljepa", {}) if isinstance(adata.uns.get("celljepa", {}), dict) else {}
    if min_cells is None:
        min_cells = int(meta.get("min_cells", C.DEFAULT_MIN_CELLS))

    if adata.n_obs == 0 or adata.n_vars == 0:
        add(
            Violation(
                "non_empty",
                "X",
                f"the data has {adata.n_obs} cells × {adata.n_vars} genes.",
                "ingest a file with cells and genes.",
            )
        )

    # Columns and types.
    present = {}
    for name in C.REQUIRED_OBS:
        if name not in obs.columns:
            add(
                Violation(
                    "required_column",
                    f"obs['{name}']",
                    "the contract column is missing.",
                    "run cj.pp.standardize (or `celljepa ingest`) to write the contract columns.",
                )
            )
            continue
        col = obs[name]
        if name in _STRING_COLUMNS:
            if not _is_string_column(col):
                add(
                    Violation(
                        "column_type",
                        f"obs['{name}']",
                        f"must hold strings, has dtype {col.dtype}.",
                        f"convert with adata.obs['{name}'] = adata.obs['{name}'].astype(str).",
                    )
                )
                continue
            if col.isna().any():
                add(
                    Violation(
                        "missing_values",
                        f"obs['{name}']",
                        f"{int(col.isna().sum())} cell(s) have no value.",
                        "label every cell or drop the unlabelled ones.",
                    )
                )
                continue
        elif name == C.IS_CONTROL:
            if not is_bool_dtype(col.dtype):
                add(
                    Violation(
                        "column_type",
                        f"obs['{name}']",
                        f"must be bool, has dtype {col.dtype}.",
                        "re-run cj.pp.standardize, which writes a bool column.",
                    )
                )
                continue
        elif not is_float_dtype(col.dtype):
            add(
                Violation(
                    "column_type",
                    f"obs['{name}']",
                    f"must be float (NaN when unknown), has dtype {col.dtype}.",
                    f"convert with pd.to_numeric(adata.obs['{name}'], errors='coerce').",
                )
            )
            continue
        present[name] = col

    if not adata.var_names.is_unique:
        dups = adata.var_names[adata.var_names.duplicated()].unique()
        add(
            Violation(
                "unique_var_names",
                "var_names",
                f"{len(dups)} duplicated gene name(s): {_fmt(dups)}.",
                "call adata.var_names_make_unique() or aggregate duplicated genes.",
            )
        )
    if not adata.obs_names.is_unique:
        dups = adata.obs_names[adata.obs_names.duplicated()].unique()
        add(
            Violation(
                "unique_obs_names",
                "obs_names",
                f"{len(dups)} duplicated cell name(s): {_fmt(dups)}.",
                "call adata.obs_names_make_unique().",
            )
        )

    # Values of X and counts.
    x_values = _stored_values(adata.X) if adata.X is not None else np.empty(0)
    if x_values.size and not np.isfinite(x_values).all():
        n_bad = int((~np.isfinite(x_values)).sum())
        add(Violation("finite_values", "X", f"{n_bad} NaN/inf value(s).", "remove or impute them, then re-ingest."))
    if C.COUNTS_LAYER in adata.layers:
        counts = _stored_values(adata.layers[C.COUNTS_LAYER])
        if counts.size:
            if not np.isfinite(counts).all():
                add(Violation("counts", "layers['counts']", "NaN/inf values.", "store raw integer counts."))
            elif counts.min() < 0:
                add(
                    Violation(
                        "counts",
                        "layers['counts']",
                        f"{int((counts < 0).sum())} negative count(s).",
                        "store raw counts (>= 0) in layers['counts'].",
                    )
                )
            elif not np.all(counts == np.round(counts)):
                add(
                    Violation(
                        "counts",
                        "layers['counts']",
                        "non-integer values.",
                        "layers['counts'] must hold raw UMI counts; drop it if you have none.",
                    )
                )

    # Relations between the columns; each check runs when the columns it needs are usable.
    pid = present[C.PERTURBATION_ID].astype(str).to_numpy() if C.PERTURBATION_ID in present else None
    ctrl = present[C.IS_CONTROL].to_numpy(dtype=bool) if C.IS_CONTROL in present else None
    tokens = present[C.PERTURBATION_TOKENS].astype(str).to_numpy() if C.PERTURBATION_TOKENS in present else None
    ctx = present[C.CONTEXT_ID].astype(str).to_numpy() if C.CONTEXT_ID in present else None

    if tokens is not None:
        bad_tokens = sorted(
            {t for t in np.unique(tokens) for part in C.split_tokens(t) if not C.is_valid_token(part)}
            | {t for t in np.unique(tokens) if not C.split_tokens(t)}
        )
        if bad_tokens:
            add(
                Violation(
                    "token_format",
                    "obs['perturbation_tokens']",
                    f"malformed tokens: {_fmt(bad_tokens)}.",
                    "tokens are 'kind:name' joined by '|', e.g. 'gene:STAT1|gene:IRF9'.",
                )
            )
    if tokens is not None and ctrl is not None:
        token_ctrl = tokens == C.CONTROL_TOKEN
        if (token_ctrl != ctrl).any():
            add(
                Violation(
                    "control_consistency",
                    "obs['is_control']",
                    f"{int((token_ctrl != ctrl).sum())} cell(s) where is_control disagrees with the "
                    f"'{C.CONTROL_TOKEN}' token.",
                    "re-run cj.pp.standardize.",
                )
            )
    if ctrl is not None:
        declared = {str(c).lower() for c in meta.get("standardize", {}).get("control_values", [])}
        control_like = C.KNOWN_CONTROL_LABELS | declared
        clash: list[str] = []
        if tokens is not None:
            clash += sorted(
                {
                    C.token_name(p)
                    for t in np.unique(tokens[~ctrl])
                    for p in C.split_tokens(t)
                    if ":" in p and C.token_name(p).lower() in control_like
                }
            )
        if pid is not None:
            clash += sorted(p for p in np.unique(pid[~ctrl]) if p.lower() in control_like and p not in clash)
        if clash:
            add(
                Violation(
                    "control_label_as_perturbation",
                    "obs['perturbation_id']",
                    f"perturbed cells carry control-like label(s) {_fmt(clash)}.",
                    "add them to control_values in cj.pp.standardize (or `--control-values`).",
                )
            )
        if adata.n_obs and (~ctrl).sum() == 0:
            add(
                Violation(
                    "has_perturbations",
                    "obs['is_control']",
                    "every cell is a control: nothing to predict.",
                    "check control_values; the perturbed cells must not be listed as controls.",
                )
            )
    if ctrl is not None and ctx is not None:
        with_controls = set(np.unique(ctx[ctrl]))
        lacking = sorted(c for c in pd.unique(ctx) if c not in with_controls)
        if lacking:
            add(
                Violation(
                    "controls_per_context",
                    "obs['context_id']",
                    f"context(s) without control cells: {_fmt(lacking)}.",
                    "add control cells for these contexts, drop them, or fix control_values / context_key.",
                )
            )
    if pid is not None and ctx is not None:
        frame = pd.DataFrame({"context_id": ctx, "perturbation_id": pid})
        for extra in (C.DOSE, C.TIME_HOURS):
            if extra in present:
                frame[extra] = present[extra].to_numpy()
        sizes = frame.groupby(list(frame.columns), dropna=False, observed=True).size()
        small = sizes[sizes < min_cells]
        if len(small):
            shown = [
                " / ".join(str(x) for x in (k if isinstance(k, tuple) else (k,))) + f" ({n} cells)"
                for k, n in small.sort_values().items()
            ]
            add(
                Violation(
                    "min_cells_per_condition",
                    "obs['context_id', 'perturbation_id', 'dose', 'time_hours']",
                    f"{len(small)} condition(s) have fewer than {min_cells} cells: {_fmt(shown, 5)}.",
                    "drop those conditions, or lower the minimum (min_cells=..., `--min-cells N`).",
                )
            )

    # Provenance.
    missing_keys = [k for k in C.PROVENANCE_KEYS if k not in adata.uns]
    if missing_keys:
        add(
            Violation(
                "provenance",
                "uns",
                f"missing provenance key(s): {', '.join(missing_keys)}.",
                "pass dataset_id= to cj.pp.standardize and run cj.pp.normalize (or use `celljepa ingest`).",
            )
        )

    if "dataset_id" in adata.uns:
        try:
            folder_name(adata.uns["dataset_id"], "uns['dataset_id']")
        except InputError as err:
            add(
                Violation(
                    "dataset_id",
                    "uns['dataset_id']",
                    str(err).split(" Fix:")[0],
                    "set adata.uns['dataset_id'] to a plain name (letters, digits, . _ + -), e.g. "
                    "'norman2019'; it names the run folders of this dataset.",
                )
            )

    return v


def check_contract(adata: AnnData, *, min_cells: int | None = None) -> None:
    """Raise :class:`celljepa.ContractError` listing every violation of the contract, if there is any."""
    violations = contract_violations(adata, min_cells=min_cells)
    if violations:
        dataset_id = adata.uns.get("dataset_id")
        raise ContractError(violations, source=dataset_id if isinstance(dataset_id, str) else None)
