"""The representations the embedding benchmark compares: JEPA, 50 PCs, scVI."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from .datasets import EmbeddingDataset

N_PCS = 50


class _PCA:
    """50 PCs of the log-normalised genes (scanpy); thinned cells are projected on the full-depth loadings."""

    def fit(self, ds: EmbeddingDataset, log: AnnData, counts, seed: int, settings: dict) -> _PCA:
        import scanpy as sc

        a = log.copy()
        n_comps = min(N_PCS, a.n_vars - 1, a.n_obs - 1)
        sc.pp.pca(a, n_comps=n_comps, random_state=seed)
        self.loadings = np.asarray(a.varm["PCs"])
        self.mean = np.asarray(a.X.mean(axis=0)).ravel()
        self.z = np.asarray(a.obsm["X_pca"])
        return self

    def embed(self, log: AnnData, counts) -> np.ndarray:
        x = log.X.toarray() if sp.issparse(log.X) else np.asarray(log.X)
        return (x - self.mean) @ self.loadings


class _JEPA:
    """CellJEPA with its default configuration (what ``cj.tl.jepa_embed`` trains)."""

    def fit(self, ds: EmbeddingDataset, log: AnnData, counts, seed: int, settings: dict) -> _JEPA:
        from ...models import CellJEPA

        adata = log.copy()
        if counts is not None:  # count-aware views (train.thin_views) read them; otherwise unused
            adata.layers["counts"] = sp.csr_matrix(counts, dtype=np.float32)
        self.model = CellJEPA(adata, config=settings.get("jepa_config"), **settings.get("jepa_options", {}))
        self.model.train(max_steps=settings.get("jepa_steps"), seed=seed, progress=False)
        return self

    def embed(self, log: AnnData, counts) -> np.ndarray:
        return np.asarray(self.model.get_latent_representation(log, progress=False))


class _SCVI:
    """scvi-tools' SCVI, default model and training rule, on raw counts (batch_key where a real batch exists)."""

    def _adata(self, ds: EmbeddingDataset, counts, obs) -> AnnData:
        a = AnnData(sp.csr_matrix(counts, dtype=np.float32), obs=obs.copy())
        a.var_names = list(ds.log.var_names)
        a.layers["counts"] = a.X.copy()
        return a

    def fit(self, ds: EmbeddingDataset, log: AnnData, counts, seed: int, settings: dict) -> _SCVI:
        import logging

        import scvi

        for name in ("scvi", "lightning", "lightning.pytorch", "pytorch_lightning"):
            logging.getLogger(name).setLevel(logging.ERROR)
        scvi.settings.seed = seed
        self.ds = ds
        a = self._adata(ds, counts, log.obs)
        scvi.model.SCVI.setup_anndata(a, layer="counts", batch_key=ds.batch_key)
        self.model = scvi.model.SCVI(a)
        train = {"enable_progress_bar": False, "accelerator": "cpu"}
        if settings.get("scvi_max_epochs"):
            train["max_epochs"] = settings["scvi_max_epochs"]
        self.model.train(**train)
        self.epochs = int(self.model.history["elbo_train"].shape[0])
        return self

    def embed(self, log: AnnData, counts) -> np.ndarray:
        return np.asarray(self.model.get_latent_representation(self._adata(self.ds, counts, log.obs)))


REPRESENTATIONS: dict[str, type] = {"jepa": _JEPA, "pca": _PCA, "scvi": _SCVI}
