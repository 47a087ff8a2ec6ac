"""Group splits (unseen condition, unseen genes, unseen context, unseen combination) from metadata and a seed."""

from __future__ import annotations

import difflib
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .._errors import InputError, SplitError
from .._io import folder_name, write_json_atomic
from ..data.contract import (
    CONTEXT_ID,
    IS_CONTROL,
    PERTURBATION_ID,
    PERTURBATION_TOKENS,
    S1,
    S1G,
    S2,
    S3,
    SPLIT_NAMES,
    n_tokens,
    split_tokens,
)

ROLES = ("train", "val", "test", "unused")
SPLIT_COLUMNS = (PERTURBATION_ID, IS_CONTROL, CONTEXT_ID, PERTURBATION_TOKENS)
FOLD_KEYS = (
    "dataset_id",
    "split_name",
    "seed",
    "fold",
    "n_folds",
    "pilot",
    "train_groups",
    "val_groups",
    "test_groups",
    "train_cells",
    "val_cells",
    "test_cells",
)
#: Keys a fold may hold beside :data:`FOLD_KEYS` (written and read when present): ``unused_perturbations``, the
#: sorted perturbation ids that are in no role of an ``S1g_unseen_genes`` fold (their tokens mix roles).
OPTIONAL_FOLD_KEYS = ("unused_perturbations",)

_TRAIN, _VAL, _TEST, _UNUSED = 0, 1, 2, 3
_GROUP_WORDS = {
    S1: "perturbations",
    S1G: "perturbation tokens",
    S2: "contexts with perturbed cells",
    S3: "eligible combinations",
}


def check_split_name(name: str) -> str:
    """Return ``name`` if it is a known split name; raise :class:`SplitError` otherwise.

    Parameters
    ----------
    name
        One of :data:`SPLIT_NAMES`.

    Returns
    -------
    str
        ``name`` unchanged.

    Raises
    ------
    SplitError
        For an unknown name; the message lists the valid names and suggests the closest one.

    Examples
    --------
    >>> check_split_name("S2_unseen_context")
    'S2_unseen_context'
    >>> check_split_name("s1")
    Traceback (most recent call last):
    ...
    celljepa._errors.SplitError: Unknown split name 's1'. Did you mean 'S1_unseen_perturbation'? ...
    >>> check_split_name("s1g")
    Traceback (most recent call last):
    ...
    celljepa._errors.SplitError: Unknown split name 's1g'. Did you mean 'S1g_unseen_genes'? ...
    """
    if isinstance(name, str) and name in SPLIT_NAMES:
        return name
    text = str(name)
    lowered = text.strip().lower()
    suggestion = None
    if lowered:
        prefixed = [s for s in SPLIT_NAMES if s.lower().startswith(lowered)]
        codes = {s.split("_", 1)[0].lower(): s for s in SPLIT_NAMES}  # "s1", "s1g", "s2", "s3"
        if lowered in codes:
            suggestion = codes[lowered]
        elif len(prefixed) == 1:
            suggestion = prefixed[0]
        else:
            lower_map = {s.lower(): s for s in SPLIT_NAMES}
            close = difflib.get_close_matches(lowered, list(lower_map), n=1, cutoff=0.3)
            if close:
                suggestion = lower_map[close[0]]
    hint = f" Did you mean {suggestion!r}?" if suggestion else ""
    raise SplitError(f"Unknown split name {text!r}.{hint} Valid names: {', '.join(SPLIT_NAMES)}.")


def make_split_folds(
    obs: pd.DataFrame,
    split_name: str,
    *,
    dataset_id: str,
    n_folds: int = 5,
    seed: int = 0,
    val_fraction: float = 0.15,
) -> list[dict]:
    """Make the ``n_folds`` folds of a group split from cell metadata and a seed.

    Groups are held out, never single cells:

    - ``S1_unseen_perturbation`` (*unseen condition*): groups are the ``perturbation_id`` values of
      non-control cells. ``train_cells`` are all control cells (of every context; they are the inputs
      a method starts from) plus the cells of the training perturbations; ``val_cells`` /
      ``test_cells`` are the cells of the validation / test perturbations. A held-out perturbation
      may be a combination whose genes are seen in training (``A+B`` held out, ``A`` trained on).
    - ``S1g_unseen_genes``: groups are the perturbation *tokens* (genes, drugs, ...) of non-control
      cells, so no token of a test condition occurs in any training or validation condition. Each
      token gets a role (train / val / test) as groups do; a perturbation whose tokens all have one
      role takes that role, one whose tokens mix roles is *unused* in that fold: its cells are in
      none of the three cell lists and its id is in the fold's ``unused_perturbations``. A
      combination is a test perturbation only in the fold whose test tokens hold all its tokens.
      Controls are training cells, as in S1. Without combinations it is S1 with groups named by
      token.
    - ``S2_unseen_context``: groups are the contexts (``context_id``) that have perturbed cells.
      Train / val / test cells are *all* cells of the train / val / test contexts, controls
      included: the controls of a held-out context are listed in ``test_cells`` because they are
      the inputs used to predict that context, and must never be fitted on. Contexts that hold
      only control cells are not groups; their cells go to ``train_cells``.
    - ``S3_unseen_combo``: groups are the *eligible* combination perturbations (two or more
      tokens): every token of the combination also occurs as a single-token perturbation in
      every context where the combination has cells. Combinations that are not eligible stay in
      training in every fold. ``train_cells`` are all controls, all single perturbations, the
      non-eligible combinations and the training combinations; ``val_cells`` / ``test_cells``
      are the cells of the validation / test combinations.

    Fold assignment depends on the metadata and ``seed`` only (not on row order): the groups are
    sorted, permuted with ``np.random.default_rng(seed)``, and a group's fold is its position in
    the permutation modulo ``n_folds`` (balanced fold sizes). The test groups of fold ``f`` are
    the groups of fold ``f``; from the remaining groups ``max(1, round(val_fraction * n))`` are
    drawn as validation groups with a generator seeded from ``(seed, f)`` (none when
    ``val_fraction`` is 0); the rest are training groups.

    Parameters
    ----------
    obs
        Cell metadata indexed by unique cell names, with the contract columns
        ``perturbation_id``, ``is_control``, ``context_id`` and ``perturbation_tokens``.
    split_name
        One of :data:`SPLIT_NAMES`.
    dataset_id
        Name of the dataset, stored in every fold and used in file names.
    n_folds
        Number of folds (at least 2; fewer than 3 marks the folds as ``pilot``).
    seed
        Non-negative integer seed of the assignment.
    val_fraction
        Fraction of the non-test groups used for validation, in ``[0, 1)``.

    Returns
    -------
    list of dict
        One dict per fold with the keys ``dataset_id, split_name, seed, fold, n_folds, pilot,
        train_groups, val_groups, test_groups, train_cells, val_cells, test_cells`` (and, for
        ``S1g_unseen_genes``, ``unused_perturbations``); lists are sorted and hold plain Python strings.

    Raises
    ------
    InputError
        Missing contract columns, missing values, duplicated cell names, a bad seed or dataset id.
    SplitError
        An unknown split name, ``n_folds < 2``, ``val_fraction`` outside ``[0, 1)``, fewer groups
        than folds (a fold without test groups), a fold without training groups,
        ``S3_unseen_combo`` on a dataset without (eligible) combinations, or an ``S1g_unseen_genes``
        fold without a test or a training perturbation (its tokens occur only in mixed combinations).

    Examples
    --------
    >>> import pandas as pd
    >>> obs = pd.DataFrame(
    ...     {
    ...         "perturbation_id": ["control", "A", "B", "C", "control", "A"],
    ...         "is_control": [True, False, False, False, True, False],
    ...         "context_id": ["c1", "c1", "c1", "c1", "c2", "c2"],
    ...         "perturbation_tokens": [
    ...             "control:CTRL", "gene:A", "gene:B", "gene:C", "control:CTRL", "gene:A"
    ...         ],
    ...     },
    ...     index=[f"cell{i}" for i in range(6)],
    ... )
    >>> folds = make_split_folds(obs, "S1_unseen_perturbation", dataset_id="toy", n_folds=3)
    >>> sorted(g for f in folds for g in f["test_groups"])
    ['A', 'B', 'C']
    >>> folds[0]["pilot"], len(folds[0]["train_groups"]), len(folds[0]["val_groups"])
    (False, 1, 1)
    >>> all({"cell0", "cell4"} <= set(f["train_cells"]) for f in folds)
    True

    Unseen genes: with ``A+B`` as well, the fold that holds out gene ``A`` cannot train on ``A+B``
    (nor test it, since ``B`` is not held out): ``A+B`` is unused there.

    >>> combo = pd.DataFrame({"perturbation_id": ["A+B"], "is_control": [False], "context_id": ["c1"],
    ...                       "perturbation_tokens": ["gene:A|gene:B"]}, index=["cell6"])
    >>> folds = make_split_folds(pd.concat([obs, combo]), "S1g_unseen_genes", dataset_id="toy", n_folds=3)
    >>> folds[1]["test_groups"], folds[1]["test_cells"], folds[1]["unused_perturbations"]
    (['gene:A'], ['cell1', 'cell5'], ['A+B'])
    """
    split_name = check_split_name(split_name)
    dataset_id = _check_dataset_id(dataset_id)
    seed = _check_seed(seed)
    n_folds = _check_n_folds(n_folds)
    val_fraction = _check_val_fraction(val_fraction)
    table = _prepare(obs)

    if split_name == S1G:
        return _folds_s1g(table, dataset_id=dataset_id, n_folds=n_folds, seed=seed, val_fraction=val_fraction)
    if split_name == S1:
        groups, cell_group = _groups_s1(table)
        fixed_train = table["is_control"]
    elif split_name == S2:
        groups, cell_group = _groups_s2(table)
        fixed_train = np.zeros(table["n"], dtype=bool)
    else:
        groups, cell_group = _groups_s3(table, dataset_id)
        fixed_train = table["is_control"]
    # Cells outside every group (controls; for S2 control-only contexts; for S3 singles and
    # non-eligible combinations) are training cells in every fold.
    fixed_train = fixed_train | (cell_group < 0)

    n_groups = len(groups)
    if n_groups < n_folds:
        raise SplitError(_too_few_groups_message(split_name, dataset_id, groups, n_folds))

    group_fold = _assign_folds(n_groups, n_folds, seed)
    names = table["names"]
    folds = []
    for fold in range(n_folds):
        role = _group_roles(group_fold, fold, seed, val_fraction)
        _require_train_groups(role, group_fold, fold, split_name, dataset_id, n_folds, val_fraction)
        cell_role = np.where(cell_group >= 0, role[np.maximum(cell_group, 0)], _TRAIN).astype(np.int8)
        cell_role[fixed_train] = _TRAIN
        folds.append(_fold_dict(split_name, dataset_id, seed, fold, n_folds, groups, role, names, cell_role))
    return folds


def _fold_dict(
    split_name: str,
    dataset_id: str,
    seed: int,
    fold: int,
    n_folds: int,
    groups: np.ndarray,
    role: np.ndarray,
    names: np.ndarray,
    cell_role: np.ndarray,
) -> dict:
    return {
        "dataset_id": dataset_id,
        "split_name": split_name,
        "seed": seed,
        "fold": fold,
        "n_folds": n_folds,
        "pilot": bool(n_folds < 3),
        "train_groups": _sorted_list(groups[role == _TRAIN]),
        "val_groups": _sorted_list(groups[role == _VAL]),
        "test_groups": _sorted_list(groups[role == _TEST]),
        "train_cells": _sorted_list(names[cell_role == _TRAIN]),
        "val_cells": _sorted_list(names[cell_role == _VAL]),
        "test_cells": _sorted_list(names[cell_role == _TEST]),
    }


def _require_train_groups(
    role: np.ndarray,
    group_fold: np.ndarray,
    fold: int,
    split_name: str,
    dataset_id: str,
    n_folds: int,
    val_fraction: float,
) -> None:
    if np.any(role == _TRAIN):
        return
    n_rest = int(np.sum(group_fold != fold))
    raise SplitError(
        f"{split_name} on dataset {dataset_id!r}: fold {fold} would have no training groups "
        f"({len(group_fold)} {_GROUP_WORDS[split_name]}, {n_folds} folds, {n_rest} non-test group(s), "
        f"all needed for validation with val_fraction={val_fraction}). "
        "Use fewer folds, or val_fraction=0 to skip validation groups."
    )


def _folds_s1g(t: dict, *, dataset_id: str, n_folds: int, seed: int, val_fraction: float) -> list[dict]:
    """The folds of ``S1g_unseen_genes``: tokens get roles as groups do; a perturbation takes the role its tokens share.

    ``t["tok"]`` are the distinct ``perturbation_tokens`` strings ("conditions" here); each is split into its
    tokens once. A condition whose tokens hold more than one role in a fold is unused in that fold.
    """
    perturbed = ~t["is_control"]
    present = np.unique(t["tok_codes"][perturbed])  # the conditions of perturbed cells (codes into t["tok"])
    cond_tokens = [sorted(set(split_tokens(t["tok"][int(k)]))) for k in present]
    groups = np.asarray(sorted({tok for toks in cond_tokens for tok in toks}), dtype=object)
    if len(groups) < n_folds:
        raise SplitError(_too_few_groups_message(S1G, dataset_id, groups, n_folds))
    index = {tok: i for i, tok in enumerate(groups.tolist())}
    # condition x token membership as (condition, token) index pairs; per fold, the smallest and largest role of a
    # condition's tokens (np.minimum.at / np.maximum.at) tell whether they share one role; cells follow by lookup
    sizes = np.fromiter((len(toks) for toks in cond_tokens), dtype=np.int64, count=len(cond_tokens))
    member_tok = np.fromiter(
        (index[tok] for toks in cond_tokens for tok in toks), dtype=np.int64, count=int(sizes.sum())
    )
    member_cond = np.repeat(np.arange(len(cond_tokens)), sizes)
    code_to_cond = np.full(len(t["tok"]), -1, dtype=np.int64)
    code_to_cond[present] = np.arange(len(present))
    cell_cond = np.where(perturbed, code_to_cond[t["tok_codes"]], -1)

    group_fold = _assign_folds(len(groups), n_folds, seed)
    names = t["names"]
    folds = []
    for fold in range(n_folds):
        role = _group_roles(group_fold, fold, seed, val_fraction)
        _require_train_groups(role, group_fold, fold, S1G, dataset_id, n_folds, val_fraction)
        member_role = role[member_tok].astype(np.int64)
        low = np.full(len(cond_tokens), _UNUSED, dtype=np.int64)
        high = np.full(len(cond_tokens), -1, dtype=np.int64)
        np.minimum.at(low, member_cond, member_role)
        np.maximum.at(high, member_cond, member_role)
        cond_role = np.where(low == high, low, _UNUSED).astype(np.int8)
        for needed, word in ((_TEST, "test"), (_TRAIN, "training")):
            if not np.any(cond_role == needed):
                raise SplitError(_s1g_empty_role_message(dataset_id, fold, n_folds, word, groups, role, needed))
        cell_role = np.where(cell_cond >= 0, cond_role[np.maximum(cell_cond, 0)], _TRAIN).astype(np.int8)
        out = _fold_dict(S1G, dataset_id, seed, fold, n_folds, groups, role, names, cell_role)
        unused_pids = np.unique(t["pid_codes"][cell_role == _UNUSED])
        out["unused_perturbations"] = _sorted_list(t["pid"][unused_pids])
        folds.append(out)
    return folds


def _s1g_empty_role_message(
    dataset_id: str, fold: int, n_folds: int, word: str, groups: np.ndarray, role: np.ndarray, needed: int
) -> str:
    tokens = groups[role == needed]
    listed = ", ".join(map(str, tokens[:10])) + (", ..." if len(tokens) > 10 else "")
    return (
        f"{S1G} on dataset {dataset_id!r}: fold {fold} of {n_folds} has no {word} perturbation: its {word} "
        f"token(s) ({listed}) occur only in combinations with tokens of another role. "
        f"Use fewer folds (--folds), another seed, or {S1} (held-out conditions may share genes with training)."
    )


def split_file_name(fold: dict) -> str:
    """File name of one fold: ``{dataset_id}.{split_name}.seed{seed}.fold{fold}.json``.

    Examples
    --------
    >>> fold = {"dataset_id": "norman19", "split_name": "S1_unseen_perturbation", "seed": 0, "fold": 2}
    >>> split_file_name(fold)
    'norman19.S1_unseen_perturbation.seed0.fold2.json'
    """
    missing = [k for k in ("dataset_id", "split_name", "seed", "fold") if k not in fold]
    if missing:
        raise InputError(f"A fold dict lacks the key(s) {', '.join(missing)}; make folds with make_split_folds.")
    return f"{fold['dataset_id']}.{fold['split_name']}.seed{int(fold['seed'])}.fold{int(fold['fold'])}.json"


def write_split_files(folds: Sequence[dict], out_dir: str | os.PathLike) -> list[Path]:
    """Write each fold to ``out_dir/{dataset_id}.{split_name}.seed{seed}.fold{fold}.json``.

    Files are written atomically as deterministic JSON (sorted keys), so the same folds give
    byte-identical files. The keys of :data:`FOLD_KEYS` are written, and those of
    :data:`OPTIONAL_FOLD_KEYS` when the fold has them (``S1g_unseen_genes``). If any write fails,
    the files this call already wrote are removed and the error is raised again.

    Parameters
    ----------
    folds
        Fold dicts from :func:`make_split_folds`.
    out_dir
        Output folder (created if needed).

    Returns
    -------
    list of pathlib.Path
        The written paths, in the order of ``folds``.

    Raises
    ------
    InputError
        A fold lacks keys, or two folds map to the same file name.

    Examples
    --------
    >>> import tempfile
    >>> fold = {"dataset_id": "toy", "split_name": "S1_unseen_perturbation", "seed": 0, "fold": 0,
    ...         "n_folds": 2, "pilot": True, "train_groups": ["A"], "val_groups": [], "test_groups": ["B"],
    ...         "train_cells": ["c0", "c1"], "val_cells": [], "test_cells": ["c2"]}
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     paths = write_split_files([fold], tmp)
    ...     read_split(paths[0]) == fold
    True
    """
    folds = list(folds)
    for i, fold in enumerate(folds):
        missing = [k for k in FOLD_KEYS if k not in fold]
        if missing:
            raise InputError(f"Fold {i} lacks the key(s) {', '.join(missing)}; make folds with make_split_folds.")
    out = Path(out_dir)
    paths = [out / split_file_name(f) for f in folds]
    if len(set(paths)) != len(paths):
        raise InputError("Two folds map to the same split file name; pass the folds of one dataset, split and seed.")
    written: list[Path] = []
    try:
        for fold, path in zip(folds, paths, strict=True):
            write_json_atomic(path, {k: fold[k] for k in FOLD_KEYS + OPTIONAL_FOLD_KEYS if k in fold})
            written.append(path)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return written


def read_split(path: str | os.PathLike) -> dict:
    """Read one split file written by :func:`write_split_files`.

    Parameters
    ----------
    path
        A ``.json`` split file.

    Returns
    -------
    dict
        The fold dict.

    Raises
    ------
    InputError
        The file is missing, is not JSON, is not a JSON object, or lacks fold keys (all named).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     p = pathlib.Path(tmp, "bad.json")
    ...     _ = p.write_text('{"fold": 0}')
    ...     read_split(p)
    Traceback (most recent call last):
    ...
    celljepa._errors.InputError: Split file '...bad.json' lacks the key(s) dataset_id, ...
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"Split file not found: '{p}'. Check the path or write it with write_split_files.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"Cannot read split file '{p}': {exc}.") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"Split file '{p}' is not valid JSON ({exc}). Re-create it with write_split_files.") from None
    if not isinstance(data, dict):
        raise InputError(f"Split file '{p}' holds a JSON {type(data).__name__}, not an object with fold keys.")
    missing = [k for k in FOLD_KEYS if k not in data]
    if missing:
        raise InputError(
            f"Split file '{p}' lacks the key(s) {', '.join(missing)}. Re-create it with write_split_files."
        )
    return data


def fold_roles(fold: dict, obs_names: Iterable[str]) -> pd.Categorical:
    """Role of each cell in one fold: ``train``, ``val``, ``test`` or ``unused`` (in no list).

    Parameters
    ----------
    fold
        A fold dict (from :func:`make_split_folds` or :func:`read_split`).
    obs_names
        Cell names, e.g. ``adata.obs_names``.

    Returns
    -------
    pandas.Categorical
        One role per name, categories ``["train", "val", "test", "unused"]``.

    Raises
    ------
    InputError
        The fold lacks a cell list, or a cell is listed under two roles.

    Examples
    --------
    >>> fold = {"train_cells": ["a", "b"], "val_cells": ["c"], "test_cells": ["d"]}
    >>> list(fold_roles(fold, ["d", "a", "x", "c"]))
    ['test', 'train', 'unused', 'val']
    """
    missing = [k for k in ("train_cells", "val_cells", "test_cells") if k not in fold]
    if missing:
        raise InputError(f"The fold lacks the key(s) {', '.join(missing)}.")
    index = pd.Index(obs_names).astype(str)
    codes = np.full(len(index), _UNUSED, dtype=np.int8)
    seen = np.zeros(len(index), dtype=bool)
    for code, key in ((_TRAIN, "train_cells"), (_VAL, "val_cells"), (_TEST, "test_cells")):
        mask = index.isin(pd.Index(fold[key]).astype(str))
        if np.any(mask & seen):
            first = index[mask & seen][0]
            raise InputError(f"Cell {first!r} is listed under two roles in the fold; the split file is corrupt.")
        codes[mask] = code
        seen |= mask
    return pd.Categorical.from_codes(codes, categories=list(ROLES))


# --------------------------------------------------------------------------------------------
# helpers


def _check_dataset_id(dataset_id) -> str:
    if not isinstance(dataset_id, str) or not dataset_id.strip():
        raise InputError(f"dataset_id must be a non-empty string, got {dataset_id!r}.")
    return folder_name(dataset_id, "dataset_id")


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}.")
    return int(seed)


def _check_n_folds(n_folds) -> int:
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)):
        raise SplitError(f"n_folds must be an integer, got {n_folds!r}.")
    if n_folds < 2:
        raise SplitError(
            f"n_folds={n_folds} is too small: a group split needs at least 2 folds. "
            "Use --folds 2 (pilot) or more (3+ for reported results)."
        )
    return int(n_folds)


def _check_val_fraction(val_fraction) -> float:
    try:
        value = float(val_fraction)
    except (TypeError, ValueError):
        raise SplitError(f"val_fraction must be a number in [0, 1), got {val_fraction!r}.") from None
    if not math.isfinite(value) or not 0.0 <= value < 1.0:
        raise SplitError(
            f"val_fraction={val_fraction!r} is outside [0, 1). "
            "Use e.g. 0.15 (the default), or 0 for no validation groups."
        )
    return value


def _prepare(obs: pd.DataFrame) -> dict:
    """Factorise the contract columns once (vectorised; works on ~1M cells)."""
    if not isinstance(obs, pd.DataFrame):
        raise InputError(f"obs must be a pandas DataFrame (e.g. adata.obs), got {type(obs).__name__}.")
    missing = [c for c in SPLIT_COLUMNS if c not in obs.columns]
    if missing:
        raise InputError(
            f"obs lacks the contract column(s) {', '.join(missing)}; splits need {', '.join(SPLIT_COLUMNS)}. "
            "Prepare the dataset with the celljepa data contract first."
        )
    with_na = [c for c in SPLIT_COLUMNS if obs[c].isna().any()]
    if with_na:
        raise InputError(f"obs column(s) {', '.join(with_na)} contain missing values; fill or drop those cells.")
    if not obs.index.is_unique:
        dup = obs.index[obs.index.duplicated()][0]
        raise InputError(f"Cell names are not unique (e.g. {str(dup)!r}); call adata.obs_names_make_unique() first.")
    is_control = _as_bool(obs[IS_CONTROL])
    pid_codes, pid_uniques = pd.factorize(obs[PERTURBATION_ID], sort=False)
    ctx_codes, ctx_uniques = pd.factorize(obs[CONTEXT_ID], sort=False)
    tok_codes, tok_uniques = pd.factorize(obs[PERTURBATION_TOKENS], sort=False)
    return {
        "n": len(obs),
        "names": np.asarray(obs.index.astype(str), dtype=object),
        "is_control": is_control,
        "pid_codes": pid_codes,
        "pid": np.asarray([str(u) for u in pid_uniques], dtype=object),
        "ctx_codes": ctx_codes,
        "ctx": np.asarray([str(u) for u in ctx_uniques], dtype=object),
        "tok_codes": tok_codes,
        "tok": [str(u) for u in tok_uniques],
    }


def _as_bool(col: pd.Series) -> np.ndarray:
    if pd.api.types.is_bool_dtype(col.dtype):
        return col.to_numpy(dtype=bool)
    if isinstance(col.dtype, pd.CategoricalDtype):
        col = col.astype(col.cat.categories.dtype)
        if pd.api.types.is_bool_dtype(col.dtype):
            return col.to_numpy(dtype=bool)
    if pd.api.types.is_numeric_dtype(col.dtype):
        values = col.to_numpy()
        if np.isin(values, [0, 1]).all():
            return values.astype(bool)
    if col.dtype == object:
        values = set(pd.unique(col))
        if values <= {True, False}:
            return col.to_numpy().astype(bool)
    raise InputError(
        f"obs['{IS_CONTROL}'] must be boolean (True for control cells), got dtype {col.dtype}; "
        f"convert it, e.g. obs['{IS_CONTROL}'] = obs['perturbation_id'] == 'control'."
    )


def _groups_from_codes(codes: np.ndarray, uniques: np.ndarray, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted group labels and, per cell, the index of its group (-1 when the cell is in none)."""
    present = np.zeros(len(uniques), dtype=bool)
    present[np.unique(codes[members])] = True
    labels = uniques[present]
    order = np.argsort(labels.astype(str), kind="stable")
    groups = labels[order]
    code_to_group = np.full(len(uniques), -1, dtype=np.int64)
    code_to_group[np.flatnonzero(present)[order]] = np.arange(len(groups))
    return groups, code_to_group[codes]


def _groups_s1(t: dict) -> tuple[np.ndarray, np.ndarray]:
    groups, cell_group = _groups_from_codes(t["pid_codes"], t["pid"], ~t["is_control"])
    return groups, np.where(t["is_control"], -1, cell_group)


def _groups_s2(t: dict) -> tuple[np.ndarray, np.ndarray]:
    return _groups_from_codes(t["ctx_codes"], t["ctx"], ~t["is_control"])


def _groups_s3(t: dict, dataset_id: str) -> tuple[np.ndarray, np.ndarray]:
    perturbed = ~t["is_control"]
    cond = pd.DataFrame(
        {"ctx": t["ctx_codes"][perturbed], "pid": t["pid_codes"][perturbed], "tok": t["tok_codes"][perturbed]}
    ).drop_duplicates()
    tok_n = np.asarray([n_tokens(s) for s in t["tok"]], dtype=np.int64)
    cond["n_tok"] = tok_n[cond["tok"].to_numpy()]
    combo_pids = np.unique(cond.loc[cond["n_tok"] >= 2, "pid"].to_numpy())
    if combo_pids.size == 0:
        raise SplitError(
            f"S3_unseen_combo: dataset {dataset_id!r} has no combination perturbations "
            "(no perturbed cell has 2+ perturbation tokens). Use S1_unseen_perturbation or S2_unseen_context."
        )
    single_cond = cond.loc[cond["n_tok"] == 1, ["ctx", "tok"]]
    singles = {(int(c), t["tok"][int(k)]) for c, k in single_cond.itertuples(index=False)}
    ineligible: set[int] = set()
    combo_cond = cond[cond["pid"].isin(combo_pids)]
    for c, p, k in combo_cond[["ctx", "pid", "tok"]].itertuples(index=False):
        if any((int(c), tok) not in singles for tok in split_tokens(t["tok"][int(k)])):
            ineligible.add(int(p))
    eligible = np.asarray([p for p in combo_pids.tolist() if p not in ineligible], dtype=np.int64)
    if eligible.size == 0:
        examples = ", ".join(sorted(str(t["pid"][p]) for p in combo_pids)[:10])
        raise SplitError(
            f"S3_unseen_combo: dataset {dataset_id!r} has {combo_pids.size} combination "
            f"perturbation(s) ({examples}) "
            "but none is eligible: a held-out combination needs each of its single perturbations measured in "
            "every context where the combination is. Use S1_unseen_perturbation instead."
        )
    member_codes = np.zeros(len(t["pid"]), dtype=bool)
    member_codes[eligible] = True
    members = perturbed & member_codes[t["pid_codes"]]
    groups, cell_group = _groups_from_codes(t["pid_codes"], t["pid"], members)
    return groups, np.where(members, cell_group, -1)


def _too_few_groups_message(split_name: str, dataset_id: str, groups: np.ndarray, n_folds: int) -> str:
    n = len(groups)
    word = _GROUP_WORDS[split_name]
    listed = f" ({', '.join(map(str, groups))})" if 0 < n <= 10 else ""
    head = f"{split_name} on dataset {dataset_id!r} has {n} group(s) ({word}){listed}, "
    if n < 2:
        return head + "but a group split needs at least 2 groups. Use another split for this dataset."
    return head + (f"fewer than n_folds={n_folds}, so fold {n} would have no test groups. Use --folds {n} or fewer.")


def _assign_folds(n_groups: int, n_folds: int, seed: int) -> np.ndarray:
    """Fold of each (sorted) group: position in a seeded permutation modulo ``n_folds``."""
    perm = np.random.default_rng(seed).permutation(n_groups)
    group_fold = np.empty(n_groups, dtype=np.int64)
    group_fold[perm] = np.arange(n_groups) % n_folds
    return group_fold


def _group_roles(group_fold: np.ndarray, fold: int, seed: int, val_fraction: float) -> np.ndarray:
    role = np.full(len(group_fold), _TRAIN, dtype=np.int8)
    role[group_fold == fold] = _TEST
    rest = np.flatnonzero(group_fold != fold)
    if val_fraction > 0 and rest.size:
        n_val = min(rest.size, max(1, int(round(val_fraction * rest.size))))
        chosen = np.random.default_rng([seed, fold]).choice(rest.size, size=n_val, replace=False)
        role[rest[chosen]] = _VAL
    return role


def _sorted_list(values: np.ndarray) -> list[str]:
    return sorted(str(v) for v in values.tolist())
