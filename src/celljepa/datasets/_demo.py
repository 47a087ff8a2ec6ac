"""The bundled demo dataset (PerturBench devel: Norman 2019 + sci-Plex-GxE), BSD-3."""

from __future__ import annotations

import warnings
from importlib import resources
from pathlib import Path

import anndata as ad
from anndata import AnnData

DEMO_DATASET_ID = "perturbench_devel"
_DEMO_FILE = "perturbench_devel.h5ad"


def demo_path() -> Path:
    """Path of the bundled demo ``.h5ad`` (the unmodified PerturBench devel file)."""
    return Path(str(resources.files("celljepa.datasets").joinpath("_data", _DEMO_FILE)))


def demo(*, preprocessed: bool = True) -> AnnData:
    """Load the bundled demo dataset.

    PerturBench's development file (BSD-3-Clause): 5,961 cells × 500 genes, log1p-normalised.
    Norman 2019 K562 CRISPRa (18 single genes and 15 pairs, context ``k562``) and the
    McFaline-Figueroa 2024 sci-Plex-GxE CRISPRi screen (9 kinase knock-downs in the glioblastoma
    lines A172, T98G, U87MG), 100 control cells per context. Cite Norman et al. 2019,
    McFaline-Figueroa et al. 2024 and PerturBench (Wu et al. 2024) when you use it.

    Parameters
    ----------
    preprocessed
        ``True`` (default): contract columns written, provenance set and validated, exactly as
        ``celljepa ingest`` produces it. ``False``: the file as distributed.

    Returns
    -------
    The AnnData.

    Examples
    --------
    >>> import celljepa as cj
    >>> adata = cj.datasets.demo()
    >>> adata.obs[["perturbation_id", "context_id"]].value_counts().head(3)
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata = ad.read_h5ad(demo_path())
    if not preprocessed:
        return adata
    from ..data._ingest import ingest_anndata

    return ingest_anndata(
        adata, dataset_id=DEMO_DATASET_ID, source=f"celljepa bundled {_DEMO_FILE}", format="perturbench"
    )
