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
from ..data._normalize import require_log_expression

DEFAULT_N_HVG = 2000
DEFAULT_N_PCS = 50
# Training folds of more cells than STREAM_CELLS, and backed data, are read in chunks of CHUNK_ROWS cells: the
# HVGs come from a seeded sample of HVG_SAMPLE training cells (scanpy), the PCA from the scatter matrix of all.
STREAM_CELLS = 200_000
HVG_SAMPLE = 30_000
CHUNK_ROWS = 20_000


def _require_finite(x, what: str) -> None:
    values = x.data if sp.issparse(x) else np.asarray(x)
    bad = ~np.isfinite(values)
    if bad.any():
        raise InputError(
            f"X has {int(bad.sum())} NaN/inf value(s) in {what}. Fix: `celljepa validate FILE` lists "
            "them; re-ingest the raw counts (`celljepa ingest`) or remove those cells."
        )


def _dense(x) -> np.ndarray:
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)


def _streamed(adata: AnnData, n_rows: int) -> bool:
    return bool(adata.isbacked) or n_rows > STREAM_CELLS


def iter_blocks(adata: AnnData, rows: np.ndarray, columns: np.ndarray | None = None, *, chunk: int = CHUNK_ROWS):
    """``adata.X[rows][:, columns]`` in blocks of ``chunk`` rows (CSR or dense, as stored), never all at once.

    ``rows`` are positions in ``adata`` (read in sorted order from a backed file); blocks come in the order of
    ``rows``.
    """
    rows = np.asarray(rows, dtype=np.int64)
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        order = np.argsort(part, kind="stable")
        block = adata.X[part[order]]
        if sp.issparse(block):
            block = sp.csr_matrix(block)
        elif hasattr(block, "to_memory"):
            block = block.to_memory()
        if columns is not None:
            block = block[:, columns]
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        yield block[inverse] if not np.array_equal(order, np.arange(len(order))) else block


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
    def fit(
        cls,
        train: AnnData,
        *,
        n_hvg: int = DEFAULT_N_HVG,
        n_pcs: int = DEFAULT_N_PCS,
        seed: int = 0,
        rows: np.ndarray | None = None,
    ) -> EvaluationSpace:
        """Fit the space on training cells only: ``train``, or its cells at positions ``rows``.

        HVGs by ``scanpy.pp.highly_variable_genes`` (seurat flavour on log data; all genes when fewer
        than ``n_hvg``), then ``scanpy.pp.pca``. A backed AnnData, or more than :data:`STREAM_CELLS` training
        cells, is read in chunks and never densified whole: the HVGs are chosen by the same scanpy call on a
        seeded sample of :data:`HVG_SAMPLE` training cells (all of them when there are fewer), the PCA is exact,
        the leading eigenvectors of the training cells' scatter matrix accumulated chunk by chunk (the same
        subspace as ``scanpy.pp.pca``; memory ``n_hvg²``, not cells × genes).
        """
        n_rows = train.n_obs if rows is None else len(rows)
        if n_rows < 3:
            raise InputError(f"the training fold has {n_rows} cells; an evaluation space needs at least 3.")
        if n_hvg < 1 or n_pcs < 1:
            raise InputError(f"n_hvg={n_hvg} and n_pcs={n_pcs} must both be at least 1 (CLI: --n-hvg, --n-pcs).")
        require_log_expression(train)
        if _streamed(train, n_rows):
            return cls._fit_streamed(
                train, np.arange(train.n_obs) if rows is None else np.asarray(rows), n_hvg=n_hvg, n_pcs=n_pcs, seed=seed
            )
        if rows is not None:
            train = train[np.asarray(rows)]
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
        sc.pp.pca(
            work,
            n_comps=n_comp,
            zero_center=True,
            random_state=seed,
            svd_solver="arpack" if n_comp < min(x.shape) - 1 else "full",
        )
        return cls(
            genes=np.asarray(work.var_names, dtype=object),
            mean=x.mean(axis=0),
            components=np.asarray(work.varm["PCs"]).T.copy(),
        )

    @classmethod
    def _fit_streamed(cls, adata: AnnData, rows: np.ndarray, *, n_hvg: int, n_pcs: int, seed: int) -> EvaluationSpace:
        rng = np.random.default_rng([seed, 17])
        sample = np.sort(rng.choice(rows, HVG_SAMPLE, replace=False)) if len(rows) > HVG_SAMPLE else np.sort(rows)
        (x,) = iter_blocks(adata, sample, chunk=len(sample))  # one read of the sample
        _require_finite(x, "the training cells")
        work = AnnData(x, var=adata.var[[]].copy())
        work.uns["log1p"] = {"base": None}
        columns = np.arange(adata.n_vars)
        if work.n_vars > n_hvg:
            sc.pp.highly_variable_genes(work, n_top_genes=n_hvg, flavor="seurat")
            columns = np.flatnonzero(work.var["highly_variable"].to_numpy())
        del work, x
        d = len(columns)
        n, mean, scatter = 0, np.zeros(d), np.zeros((d, d))
        for block in iter_blocks(adata, np.sort(rows), columns):
            _require_finite(block, "the training cells")
            nb = block.shape[0]
            if sp.issparse(block) and block.nnz > 0.05 * nb * d:  # not sparse enough for a sparse product
                block = block.toarray()
            if not sp.issparse(block):
                block = np.asarray(block, dtype=np.float64)
            mb = np.asarray(block.mean(axis=0), dtype=np.float64).ravel()
            gram = block.T @ block
            gram = np.asarray(gram.toarray() if sp.issparse(gram) else gram, dtype=np.float64)
            m2b = gram - nb * np.outer(mb, mb)
            delta = mb - mean
            scatter += m2b + np.outer(delta, delta) * (n * nb / (n + nb))
            mean += delta * nb / (n + nb)
            n += nb
        n_comp = int(min(n_pcs, n - 1, d - 1))
        if n_comp < 1:
            raise InputError("not enough cells or genes in the training fold for a PCA.")
        values, vectors = np.linalg.eigh(scatter)
        components = vectors[:, np.argsort(values)[::-1][:n_comp]].T
        # sign convention of scikit-learn's svd_flip: the largest loading of each component is positive
        signs = np.sign(components[np.arange(n_comp), np.abs(components).argmax(axis=1)])
        components *= np.where(signs == 0, 1.0, signs)[:, None]
        return cls(genes=np.asarray(adata.var_names[columns], dtype=object), mean=mean, components=components)

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

    def transform(self, adata_or_genes, *, rows: np.ndarray | None = None) -> np.ndarray:
        """Coordinates in the evaluation space: ``(x_hvg − mean) · componentsᵀ``.

        ``adata_or_genes`` is an AnnData (``rows``: only the cells at these positions) or a cells × HVG array. A
        backed AnnData, or more than :data:`STREAM_CELLS` cells, is projected chunk by chunk.
        """
        if isinstance(adata_or_genes, AnnData) and _streamed(
            adata_or_genes, adata_or_genes.n_obs if rows is None else len(rows)
        ):
            adata = adata_or_genes
            idx = self.gene_indices(adata.var_names)
            shift = self.mean @ self.components.T
            parts = []
            for block in iter_blocks(adata, np.arange(adata.n_obs) if rows is None else np.asarray(rows), idx):
                _require_finite(block, "the cells to project")
                parts.append(np.asarray(block @ self.components.T, dtype=np.float64) - shift)
            return np.vstack(parts)
        if isinstance(adata_or_genes, AnnData) and rows is not None:
            adata_or_genes = adata_or_genes[np.asarray(rows)]
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

        return {
            "n_genes": int(len(self.genes)),
            "n_pcs": self.n_pcs,
            "genes_sha256": hashlib.sha256("\n".join(map(str, self.genes)).encode()).hexdigest(),
            "explained_by": "HVGs (scanpy seurat flavour) + PCA (scanpy) on training cells only",
        }

    def __repr__(self) -> str:
        return f"EvaluationSpace({len(self.genes)} genes, {self.n_pcs} PCs)"


def space_to_json(space: EvaluationSpace) -> str:
    """The summary of a space as JSON text."""
    return json.dumps(space.describe(), sort_keys=True)
