"""The evaluation space of a split: HVGs + PCA fitted on its training cells, saved with the run."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scanpy as sc
import scipy.sparse as sp
from anndata import AnnData

from .._errors import InputError
from .._io import atomic_path

DEFAULT_N_HVG = 2000
DEFAULT_N_PCS = 50


def _require_finite(x, what: str) -> None:
    values = x.data if sp.issparse(x) else np.asarray(x)
    bad = ~np.isfinite(values)
    if bad.any():
        raise InputError(f"X has {int(bad.sum())} NaN/inf value(s) in {what}. Fix: `celljepa validate FILE` lists "
                         "them; re-ingest the raw counts (`celljepa ingest`) or remove those cells.")


def _dense(x) -> np.ndarray:
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)


@dataclass
class EvaluationSpace:
    """Log-normalised expression of HVGs, centred, projected on the training PCA.

    Attributes
    ----------
    genes
        HVG names (in ``var_names`` order).
    mean
        Training mean of each HVG (the PCA centre).
    components
        ``(n_pcs, n_hvg)`` PCA loadings.
    """

    genes: np.ndarray
    mean: np.ndarray
    components: np.ndarray

    @property
    def n_pcs(self) -> int:
        return int(self.components.shape[0])

    @classmethod
    def fit(cls, train: AnnData, *, n_hvg: int = DEFAULT_N_HVG, n_pcs: int = DEFAULT_N_PCS,
            seed: int = 0) -> EvaluationSpace:
        """Fit the space on training cells only.

        HVGs by ``scanpy.pp.highly_variable_genes`` (seurat flavour on log data; all genes when fewer
        than ``n_hvg``), then ``scanpy.pp.pca``.
        """
        if train.n_obs < 3:
            raise InputError(f"the training fold has {train.n_obs} cells; an evaluation space needs at least 3.")
        if n_hvg < 1 or n_pcs < 1:
            raise InputError(f"n_hvg={n_hvg} and n_pcs={n_pcs} must both be at least 1 (CLI: --n-hvg, --n-pcs).")
        _require_finite(train.X, "the training cells")
        work = AnnData(train.X.copy(), var=train.var[[]].copy())
        work.uns["log1p"] = {"base": None}
        if work.n_vars > n_hvg:
            sc.pp.highly_variable_genes(work, n_top_genes=n_hvg, flavor="seurat")
            work = work[:, work.var["highly_variable"].to_numpy()].copy()
        x = _dense(work.X)
        n_comp = int(min(n_pcs, x.shape[0] - 1, x.shape[1] - 1))
        if n_comp < 1:
            raise InputError("not enough cells or genes in the training fold for a PCA.")
        work.X = x
        sc.pp.pca(work, n_comps=n_comp, zero_center=True, random_state=seed, svd_solver="arpack"
                  if n_comp < min(x.shape) - 1 else "full")
        return cls(genes=np.asarray(work.var_names, dtype=object), mean=x.mean(axis=0),
                   components=np.asarray(work.varm["PCs"]).T.copy())

    def gene_indices(self, var_names) -> np.ndarray:
        """Positions of the space's genes in ``var_names`` (error naming missing genes)."""
        lookup = {g: i for i, g in enumerate(map(str, var_names))}
        missing = [g for g in self.genes if g not in lookup]
        if missing:
            raise InputError(f"{len(missing)} evaluation-space gene(s) are missing from the data, e.g. {missing[:5]}.")
        return np.array([lookup[g] for g in self.genes], dtype=np.int64)

    def genes_of(self, adata: AnnData) -> np.ndarray:
        """Dense log-expression of the space's genes for every cell of ``adata``."""
        return _dense(adata.X[:, self.gene_indices(adata.var_names)])

    def transform(self, adata_or_genes) -> np.ndarray:
        """Coordinates in the evaluation space: ``(x_hvg − mean) · componentsᵀ``."""
        if isinstance(adata_or_genes, AnnData):
            x = self.genes_of(adata_or_genes)
            _require_finite(x, "the cells to project")
        else:
            x = np.asarray(adata_or_genes)
        if x.shape[1] != self.components.shape[1]:
            raise InputError(f"expected {self.components.shape[1]} genes, got {x.shape[1]}.")
        return (x - self.mean) @ self.components.T

    def inverse_transform(self, z: np.ndarray) -> np.ndarray:
        """Back to HVG log-expression: ``z · components + mean``."""
        z = np.asarray(z)
        if z.shape[-1] != self.n_pcs:
            raise InputError(f"expected {self.n_pcs} evaluation-space dimensions, got {z.shape[-1]}.")
        return z @ self.components + self.mean

    def save(self, path: str | os.PathLike) -> Path:
        """Write the space to ``path`` (.npz, atomically) so predictions can be scored later."""
        path = Path(path)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, genes=self.genes.astype(str), mean=self.mean, components=self.components)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> EvaluationSpace:
        """Read a space written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as f:
            return cls(genes=f["genes"].astype(object), mean=f["mean"], components=f["components"])

    def describe(self) -> dict:
        """JSON-ready summary (gene count, PCs, SHA-256 of the gene list)."""
        import hashlib

        return {"n_genes": int(len(self.genes)), "n_pcs": self.n_pcs,
                "genes_sha256": hashlib.sha256("\n".join(map(str, self.genes)).encode()).hexdigest(),
                "explained_by": "HVGs (scanpy seurat flavour) + PCA (scanpy) on training cells only"}

    def __repr__(self) -> str:
        return f"EvaluationSpace({len(self.genes)} genes, {self.n_pcs} PCs)"


def space_to_json(space: EvaluationSpace) -> str:
    """The summary of a space as JSON text."""
    return json.dumps(space.describe(), sort_keys=True)
