"""Cell types called from surface proteins (CITE-seq ADTs), independently of the RNA.

Used to label the RNA of a paired RNA + protein dataset for an embedding benchmark: the labels come from the
other modality, so no RNA representation has seen them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._errors import InputError

__all__ = ["ISOTYPE_CONTROLS", "protein_cell_types"]

#: Antibodies that bind nothing specific (background), left out of the clustering.
ISOTYPE_CONTROLS = ("IgG1", "IgG2a", "IgG2b", "IgG")


def protein_cell_types(
    proteins: pd.DataFrame,
    *,
    resolution: float = 0.5,
    n_neighbors: int = 15,
    seed: int = 0,
    n_markers: int = 2,
) -> pd.Series:
    """Leiden clusters of cells on their surface proteins, each named by its top markers.

    The ADT counts are CLR-normalised per protein across cells (``log1p(x) - mean log1p(x)``, as muon's
    ``clr`` does by default), isotype controls (:data:`ISOTYPE_CONTROLS`) are left out, each protein is
    scaled to unit variance, and scanpy builds the kNN graph (``use_rep="X"``) and the Leiden clusters
    (igraph flavour, seeded). A cluster's name lists the proteins with the highest mean scaled level in it,
    e.g. ``"p1 CD4+CD28+"``.

    Parameters
    ----------
    proteins
        Raw ADT counts, cells × proteins (e.g. ``adata.obsm["protein_expression"]``).
    resolution, n_neighbors, seed
        Leiden resolution, neighbours of the graph, seed of the graph and the clustering.
    n_markers
        Markers named per cluster.

    Returns
    -------
    A categorical Series of labels indexed like ``proteins``.

    Examples
    --------
    >>> import anndata as ad
    >>> from celljepa.data.proteins import protein_cell_types
    >>> adata = ad.read_h5ad("../shared/data/multimodal/citefuse/mimitou2019_ctrl_vs_ctcl.h5ad")  # doctest: +SKIP
    >>> protein_cell_types(adata.obsm["protein_expression"]).value_counts().head(2)  # doctest: +SKIP
    """
    import anndata as ad
    import scanpy as sc

    if not isinstance(proteins, pd.DataFrame):
        raise InputError(
            f"proteins must be a DataFrame of ADT counts (cells × proteins), got {type(proteins).__name__}."
        )
    keep = [c for c in proteins.columns if str(c) not in ISOTYPE_CONTROLS]
    if len(keep) < 2:
        raise InputError("fewer than 2 proteins besides the isotype controls: no cell types can be called.")
    values = proteins[keep].to_numpy(dtype=np.float64)
    if not np.isfinite(values).all() or (values < 0).any():
        raise InputError("the protein counts hold NaN, inf or negative values; pass raw ADT counts.")
    logged = np.log1p(values)
    clr = logged - logged.mean(axis=0, keepdims=True)
    sd = clr.std(axis=0, ddof=1, keepdims=True)
    scaled = clr / np.where(sd > 0, sd, 1.0)
    a = ad.AnnData(scaled.astype(np.float32))
    a.obs_names = proteins.index.astype(str)
    a.var_names = [str(c) for c in keep]
    sc.pp.neighbors(a, use_rep="X", n_neighbors=n_neighbors, random_state=seed)
    sc.tl.leiden(a, resolution=resolution, random_state=seed, flavor="igraph", n_iterations=2, directed=False)
    clusters = a.obs["leiden"].astype(str).to_numpy()
    means = pd.DataFrame(scaled, columns=a.var_names).groupby(clusters).mean()
    names = {
        cl: f"p{cl} " + "".join(f"{m}+" for m in row.sort_values(ascending=False).index[:n_markers])
        for cl, row in means.iterrows()
    }
    return pd.Series(pd.Categorical([names[c] for c in clusters]), index=proteins.index, name="protein_cell_type")
