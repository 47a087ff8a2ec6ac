"""The datasets of the embedding benchmark: labelled cells with counts where they exist."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from ..._errors import InputError
from ...data.counts import recover_counts
from ...data.proteins import protein_cell_types

N_TOP_GENES = 2000
#: the datasets under ``../shared/data`` (and scanpy's bundled one) this benchmark knows how to read
DATASETS = ("kang2018", "citefuse", "pbmc68k_reduced", "perturbench_devel", "papalexi2021")
PAPALEXI_CELLS = 5000


@dataclasses.dataclass
class EmbeddingDataset:
    """One dataset of the benchmark: log-normalised cells on the genes every representation uses.

    ``counts`` (the same cells × genes, CSR) is ``None`` where a dataset has no real counts: then neither scVI
    nor the thinning runs on it. ``label_key`` may be ``None`` (batch metrics only), ``batch_key`` names a real
    batch or is ``None``.
    """

    name: str
    log: AnnData
    counts: sp.csr_matrix | None
    label_key: str | None
    batch_key: str | None
    note: str = ""

    @property
    def labels(self) -> np.ndarray | None:
        return None if self.label_key is None else self.log.obs[self.label_key].astype(str).to_numpy()

    @property
    def batch(self) -> np.ndarray | None:
        return None if self.batch_key is None else self.log.obs[self.batch_key].astype(str).to_numpy()

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update("\n".join(map(str, self.log.obs_names)).encode())
        h.update(b"\0" + "\n".join(map(str, self.log.var_names)).encode())
        for key in (self.label_key, self.batch_key):
            if key is not None:
                h.update(b"\0" + self.log.obs[key].astype(str).str.cat(sep="\n").encode())
        for m in (self.log.X, self.counts):
            if m is None:
                continue
            m = sp.csr_matrix(m)
            for arr in (m.indptr, m.indices, m.data):
                h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()[:16]


def log_normalize(counts, obs: pd.DataFrame, var_names) -> AnnData:
    """``normalize_total`` (10,000 per cell) and ``log1p`` of counts, through scanpy, as an AnnData."""
    import scanpy as sc

    a = AnnData(sp.csr_matrix(counts, dtype=np.float32), obs=obs.copy())
    a.var_names = list(var_names)
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    return a


def prepare_dataset(
    name: str,
    *,
    counts=None,
    log: AnnData | None = None,
    obs: pd.DataFrame | None = None,
    var_names=None,
    label_key: str | None,
    batch_key: str | None = None,
    n_top_genes: int = N_TOP_GENES,
    note: str = "",
) -> EmbeddingDataset:
    """An :class:`EmbeddingDataset` from raw counts (preferred) or, without counts, log-normalised data.

    With ``counts`` (cells × genes, with ``obs`` and ``var_names``) the log-normalised view is made here
    (:func:`log_normalize`); with ``log`` only, scVI and the thinning are left out. Above ``n_top_genes``
    genes, the highly variable genes of the full-depth log data (scanpy, seurat flavour; labels unused) are
    kept: every representation sees the same genes.
    """
    import scanpy as sc

    if counts is None and log is None:
        raise InputError(f"{name}: give counts or log-normalised data.")
    if counts is not None:
        if obs is None or var_names is None:
            raise InputError(f"{name}: counts need obs and var_names.")
        counts = sp.csr_matrix(counts, dtype=np.float32)
        log = log_normalize(counts, obs, var_names)
    else:
        log = AnnData(sp.csr_matrix(log.X, dtype=np.float32), obs=log.obs.copy(), var=pd.DataFrame(index=log.var_names))
    for key in (label_key, batch_key):
        if key is not None and key not in log.obs:
            raise InputError(f"{name}: obs has no column {key!r}; it has {list(log.obs.columns)}.")
    if log.n_vars > n_top_genes:
        hvg = sc.pp.highly_variable_genes(log, n_top_genes=n_top_genes, flavor="seurat", inplace=False)
        keep = np.flatnonzero(hvg["highly_variable"].to_numpy())
        log = log[:, keep].copy()
        if counts is not None:
            counts = counts[:, keep]
    log.obs_names_make_unique()
    return EmbeddingDataset(name, log, counts, label_key, batch_key, note)


def load_embedding_dataset(name: str, data_dir: str | Path = "../shared/data") -> EmbeddingDataset:
    """One of :data:`DATASETS`, read from ``data_dir`` (``../shared/data`` beside the repository).

    - ``kang2018``: the scGen Kang 2018 PBMCs; counts recovered from the log-normalised values
      (:func:`celljepa.data.counts.recover_counts`; refused if they do not come out integer); labels
      ``cell_type``; no batch (``condition`` is the stimulation, biology).
    - ``citefuse``: the CiteFuse PBMCs, raw RNA counts; labels called from the 49 proteins
      (:func:`celljepa.data.proteins.protein_cell_types`); no batch (the two donors differ in disease).
    - ``pbmc68k_reduced``: scanpy's bundled PBMCs, ``adata.raw`` (log data only: no scVI, no thinning); labels
      ``bulk_labels``.
    - ``perturbench_devel``: the PerturBench demo cells (log data only); labels ``cell_type`` (four cell lines).
    - ``papalexi2021``: THP-1 CRISPR screen, raw counts, no cell-type labels; batch ``bio_rep``; 5,000 cells
      sampled (seed 0, within each replicate) so that scVI's default training fits the benchmark's time.
    """
    import anndata as ad

    root = Path(data_dir)

    def read(rel: str) -> AnnData:
        path = root / rel
        if not path.exists():
            raise InputError(f"{name}: {path} not found; pass the folder of the shared data with --data-dir.")
        return ad.read_h5ad(path)

    if name == "kang2018":
        a = read("perturbation/scgen/valid.h5ad")
        counts, report = recover_counts(a.X, where=f"{name} X")
        note = (
            f"counts recovered from log-normalised X: every cell's values are integers within 0.02 "
            f"(worst cell {report['integer_share_min']:.1%})"
        )
        return prepare_dataset(
            name,
            counts=counts,
            obs=a.obs[["cell_type", "condition"]],
            var_names=a.var_names,
            label_key="cell_type",
            note=note,
        )
    if name == "citefuse":
        a = read("multimodal/citefuse/mimitou2019_ctrl_vs_ctcl.h5ad")
        obs = a.obs[["condition"]].copy()
        obs["protein_cell_type"] = protein_cell_types(a.obsm["protein_expression"]).to_numpy()
        return prepare_dataset(
            name,
            counts=a.X,
            obs=obs,
            var_names=a.var_names,
            label_key="protein_cell_type",
            note="raw counts; labels: Leiden clusters of the 47 non-isotype proteins",
        )
    if name == "pbmc68k_reduced":
        import scanpy as sc

        a = sc.datasets.pbmc68k_reduced()
        log = a.raw.to_adata()
        log.obs = a.obs[["bulk_labels"]].copy()
        return prepare_dataset(
            name,
            log=log,
            label_key="bulk_labels",
            note="log-normalised adata.raw only (no counts: no scVI, no thinning)",
        )
    if name == "perturbench_devel":
        a = read("perturbation/perturbench/devel.h5ad")
        log = AnnData(a.X, obs=a.obs[["cell_type"]].copy())
        log.var_names = a.var_names
        return prepare_dataset(
            name,
            log=log,
            label_key="cell_type",
            note="log-normalised only (counts not recoverable); labels: four cell lines",
        )
    if name == "papalexi2021":
        a = read("perturbation/sceptre/papalexi2021_sceptre_lowmoi_example_data.h5ad")
        rng = np.random.default_rng(0)
        reps = a.obs["bio_rep"].astype(str).to_numpy()
        share = PAPALEXI_CELLS / a.n_obs
        idx = np.sort(
            np.concatenate(
                [
                    rng.choice(np.flatnonzero(reps == r), int(round(share * (reps == r).sum())), replace=False)
                    for r in np.unique(reps)
                ]
            )
        )
        a = a[idx]
        return prepare_dataset(
            name,
            counts=a.X,
            obs=a.obs[["bio_rep"]],
            var_names=a.var_names,
            label_key=None,
            batch_key="bio_rep",
            note=f"raw counts, {idx.size:,} cells sampled within replicates; no labels: batch metrics only",
        )
    raise InputError(f"unknown embedding dataset {name!r}; known: {', '.join(DATASETS)}.")
