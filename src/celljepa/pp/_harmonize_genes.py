"""``cj.pp.harmonize_genes``: map a dataset onto a shared gene list (a feature set)."""

from __future__ import annotations

from anndata import AnnData

from .._logging import log_step
from ..data._harmonize import load_feature_set, map_genes


def harmonize_genes(
    adata: AnnData,
    feature_set,
    *,
    id_column: str | None = None,
    aliases=None,
    dataset_id: str | None = None,
    measured_only: bool = False,
) -> AnnData:
    """Map ``adata`` onto a feature set: same genes in the same order, absent genes flagged.

    Parameters
    ----------
    adata
        A dataset (``X`` and every layer are reindexed; ``obs``, ``obsm`` and ``uns`` are kept;
        ``varm`` is dropped, it belongs to the old genes).
    feature_set
        A :class:`FeatureSet`, a stored id (``"foundation-v1"``) or a feature set file.
    id_column, aliases
        As in :func:`gene_keys`.
    dataset_id
        Name used in messages (default ``uns["dataset_id"]``).
    measured_only
        Keep only the list's genes the dataset measures (in the list's order; no absent columns). For an
        encoder with GO gene vectors (``model.gene_embedding: go``), which embeds any gene of the list, on a
        genome-wide list such as ``"genome-v1"``.

    Returns
    -------
    A new AnnData (the genes change, so there is no in-place form): ``var_names`` = the feature set's
    genes, ``var["absent"]`` (True where the dataset does not measure the gene: zero columns that are
    not observations), ``var["source_id"]`` (the dataset's own identifier) and ``uns["feature_set"]``
    (:meth:`FeatureSet.info` plus ``n_present``, ``n_absent``, ``n_dropped`` and the identifier report).

    Examples
    --------
    >>> import celljepa as cj
    >>> from celljepa.bench import demo_datasets
    >>> norman = demo_datasets()["norman2019"]
    >>> h = cj.pp.harmonize_genes(norman, "foundation-v1")
    >>> h.n_vars == len(cj.datasets.load_feature_set("foundation-v1").genes), int((~h.var["absent"]).sum()) > 100
    (True, True)
    """
    fs = load_feature_set(feature_set)
    with log_step("harmonize_genes") as written:
        out = map_genes(
            adata,
            fs,
            name=dataset_id or str(adata.uns.get("dataset_id", "this dataset")),
            id_column=id_column,
            aliases=aliases,
            measured_only=measured_only,
        )
        written.append(f"a new AnnData on {fs.id} ({out.uns['feature_set']['n_present']} genes present)")
    return out
