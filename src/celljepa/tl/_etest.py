"""``cj.tl.etest``: permutation E-test of every group against a control group."""

from __future__ import annotations

from anndata import AnnData

from .._errors import renamed_argument
from .._logging import log_step
from ..eval.etest import etest_groups
from ._edistance import representation
from ._groups import cells_by_group, check_group, group_labels


def etest(
    adata: AnnData,
    groupby: str,
    control: str,
    *,
    use_rep: str = "X_pca",
    groups: list[str] | None = None,
    n_permutations: int | str = "auto",
    cap: int | None = 256,
    alpha: float = 0.05,
    seed: int = 0,
    key_added: str = "etest",
    progress: bool = True,
    copy: bool = False,
    obsm_key: str | None = None,
) -> AnnData | None:
    """Permutation E-test of each group's distribution against the control's.

    For each group, its cells and the control cells are pooled (each subsampled to ``cap``, seeded)
    and the E-distance of the true labelling is compared with ``n_permutations`` random
    relabellings: ``p = (1 + #(null ≥ observed)) / (1 + n_permutations)``. p-values are adjusted
    across groups with Holm–Sidak (``significant``) and Benjamini–Hochberg. ``"auto"`` picks enough
    permutations that the smallest attainable Holm–Sidak-adjusted p-value can reach ``alpha``.

    Parameters
    ----------
    adata
        Annotated data matrix with an embedding in ``obsm``.
    groupby
        obs column defining the groups.
    control
        The control group of ``groupby``.
    use_rep
        Representation to test in: an ``obsm`` key (``"X_pca"``, ``"X_jepa"``, ...) or ``"X"``.
    groups
        Groups to test (default: every group except the control).
    n_permutations
        Number of permutations per group, or ``"auto"``.
    cap
        Cells per group and control at most (``None``: all).
    alpha
        Significance level of the adjusted p-values.
    seed
        Seed of subsampling and permutations.
    key_added
        Key in ``adata.uns``.
    progress
        Show a progress bar.
    copy
        Return a modified copy of ``adata`` instead of writing into it.
    obsm_key
        Deprecated alias of ``use_rep`` (emits a FutureWarning).

    Returns
    -------
    Returns ``None`` (or the modified copy when ``copy=True``) and sets

    ``adata.uns[key_added]["results"]``
        DataFrame indexed by group: ``edistance``, ``pvalue``, ``pvalue_adj_holm_sidak``, ``pvalue_adj_bh``,
        ``significant`` (Holm–Sidak-adjusted p < ``alpha``), ``n_cells``, ``n_control``, ``n_permutations``.
    ``adata.uns[key_added]["params"]``
        The arguments and the number of permutations used.

    Examples
    --------
    >>> import celljepa as cj, scanpy as sc
    >>> adata = cj.datasets.demo()
    >>> adata = adata[adata.obs["context_id"] == "k562"].copy()
    >>> sc.pp.pca(adata)
    >>> cj.tl.etest(adata, "perturbation_id", "control")
    >>> res = adata.uns["etest"]["results"]
    >>> res[res["significant"]].index.tolist()
    """
    use_rep = renamed_argument("cj.tl.etest", "obsm_key", obsm_key, "use_rep", use_rep, "X_pca")
    adata = adata.copy() if copy else adata
    with log_step("etest") as written:
        x = representation(adata, use_rep)
        labels = group_labels(adata, groupby)
        check_group(labels, control, groupby)
        names = list(groups) if groups is not None else sorted(g for g in labels.unique() if g != control)
        for g in names:
            check_group(labels, g, groupby, argument="groups")
        sets = cells_by_group(x, labels, names + [control], min_cells=2)
        result = etest_groups(
            {g: sets[g] for g in names},
            sets[control],
            n_permutations=n_permutations,
            cap=cap,
            alpha=alpha,
            seed=seed,
            progress=progress,
        )
        result.index.name = groupby
        adata.uns[key_added] = {
            "params": {
                "groupby": groupby,
                "control": control,
                "use_rep": use_rep,
                "cap": cap if cap else 0,
                "alpha": alpha,
                "seed": seed,
                "n_permutations": int(result["n_permutations"].iloc[0]),
            },
            "results": result,
        }
        written.append(f"uns['{key_added}']")
    return adata if copy else None
