"""``cj.tl.make_splits``: deterministic out-of-distribution splits stored on the AnnData."""

from __future__ import annotations

from anndata import AnnData

from .._errors import InputError
from .._logging import log_step
from ..data import contract as C
from ..splits import check_split_name, fold_roles, make_split_folds


def make_splits(
    adata: AnnData,
    split: str = "S1_unseen_perturbation",
    *,
    n_folds: int = 5,
    seed: int = 0,
    val_fraction: float = 0.15,
    key_added: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Make k-fold group splits for out-of-distribution evaluation.

    ``S1_unseen_perturbation`` holds out conditions (a held-out combination may contain seen genes),
    ``S1g_unseen_genes`` holds out genes (no test gene is in any training or validation condition; perturbations
    mixing held-out and seen genes are unused), ``S2_unseen_context`` holds out contexts,
    ``S3_unseen_combo`` holds out combinations whose singles are all seen. Folds are derived from
    the contract columns and ``seed`` only; validation groups are carved from the training groups;
    control cells of every context stay available as inputs. Fewer than 3 folds are labelled pilot.

    Parameters
    ----------
    adata
        Annotated data matrix with the contract columns (:func:`celljepa.pp.standardize`).
    split
        ``"S1_unseen_perturbation"``, ``"S1g_unseen_genes"``, ``"S2_unseen_context"`` or ``"S3_unseen_combo"``.
    n_folds
        Number of folds (default 5).
    seed
        Seed of the group assignment.
    val_fraction
        Fraction of the non-test groups used for validation (at least one group).
    key_added
        Name under which results are stored; defaults to ``split``.
    copy
        Return a copy instead of writing in place.

    Returns
    -------
    Returns ``None`` (or the copy when ``copy=True``) and sets

    ``adata.uns['splits'][key_added]``
        ``split_name``, ``seed``, ``n_folds``, ``pilot`` and per fold its train / val / test groups.
    ``adata.obs[f'{key_added}_fold{f}']``
        The role of each cell in fold ``f``: ``train``, ``val``, ``test`` or ``unused``.

    Examples
    --------
    >>> import celljepa as cj
    >>> adata = cj.datasets.demo()
    >>> cj.tl.make_splits(adata, "S1_unseen_perturbation", n_folds=5, seed=0)
    >>> adata.obs["S1_unseen_perturbation_fold0"].value_counts()
    """
    split = check_split_name(split)
    missing = [
        c for c in (C.PERTURBATION_ID, C.IS_CONTROL, C.CONTEXT_ID, C.PERTURBATION_TOKENS) if c not in adata.obs.columns
    ]
    if missing:
        raise InputError(f"obs lacks the contract column(s) {missing}; run `cj.pp.standardize` first.")
    adata = adata.copy() if copy else adata
    key = key_added or split
    dataset_id = str(adata.uns.get("dataset_id", "dataset"))
    with log_step("make_splits") as written:
        folds = make_split_folds(
            adata.obs, split, dataset_id=dataset_id, n_folds=n_folds, seed=seed, val_fraction=val_fraction
        )
        for fold in folds:
            column = f"{key}_fold{fold['fold']}"
            adata.obs[column] = fold_roles(fold, adata.obs_names)
            written.append(f"obs['{column}']")
        splits = dict(adata.uns.get("splits", {}))
        splits[key] = {
            "split_name": split,
            "seed": int(seed),
            "n_folds": int(n_folds),
            "pilot": bool(folds[0]["pilot"]),
            "folds": {
                str(f["fold"]): {
                    k: list(f[k])
                    for k in ("train_groups", "val_groups", "test_groups", "unused_perturbations")
                    if k in f
                }
                for f in folds
            },
        }
        adata.uns["splits"] = splits
        written.append(f"uns['splits']['{key}']")
    return adata if copy else None
