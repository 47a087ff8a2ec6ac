"""The embedding benchmark: JEPA, PCA and scVI judged by scib-metrics, and their robustness to dropout.

For every labelled dataset and seed, three representations of the same cells and genes are fitted without
labels and scored with :func:`celljepa.eval.scib.embedding_scores`:

- ``jepa``: :class:`celljepa.models.CellJEPA` with its default configuration (``cj.tl.jepa_embed``'s model),
  on the log-normalised genes;
- ``pca``: 50 principal components of the same log-normalised genes (:func:`scanpy.pp.pca`);
- ``scvi``: scvi-tools' ``SCVI`` with its default model and training rule, on the raw counts of the same genes
  (a real batch, where a dataset has one, as its ``batch_key``). Only where real counts exist: scVI is never
  fed made-up counts.

**Dropout robustness.** Where a dataset has counts, they are thinned binomially to 50, 25, 10 and 5 % of the
reads (:func:`celljepa.data.counts.binomial_thin`, seeded by the seed and the depth, the same thinned cells
for every method) and log-normalised again. Each representation embeds the thinned cells (a) with the model
fitted at full depth (``transfer``) and (b) refitted on the thinned cells (``refit``).

A run is a folder of tasks, one JSON file each under ``OUT/tasks/<dataset>/seed<s>/``, written atomically with
the digest of its inputs: a run that was interrupted resumes where it stopped, and a task whose inputs changed
is computed again. :func:`collect` turns the tasks into the tables (``embedding_quality.md`` /
``robustness.md`` and their JSON) and the statistics of the two claims.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._errors import InputError
from .._io import write_json_atomic, write_text_atomic
from .._logging import logger
from ..data.counts import binomial_thin, recover_counts
from ..data.proteins import protein_cell_types
from ..eval.scib import BATCH_METRICS, BIO_METRICS, embedding_scores
from ..eval.verdict import holm

__all__ = [
    "DEPTHS",
    "ENCODER_CANDIDATES",
    "METHODS",
    "EmbeddingDataset",
    "collect",
    "one_sided_sign_flip",
    "load_embedding_dataset",
    "prepare_dataset",
    "run_embedding_benchmark",
    "run_encoder_selection",
    "selection_decision",
    "task_list",
]

DEPTHS = (0.5, 0.25, 0.1, 0.05)
METHODS = ("jepa", "pca", "scvi")
N_PCS = 50
N_TOP_GENES = 2000
CLAIM_DEPTH = 0.1
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


# --- representations -------------------------------------------------------------------------------------------


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
        from ..models import CellJEPA

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


# --- tasks -------------------------------------------------------------------------------------------------------


def _thin_seed(seed: int, depth: float) -> int:
    return 100_003 * (seed + 1) + int(round(depth * 1000))


def thinned(ds: EmbeddingDataset, depth: float, seed: int) -> tuple[AnnData, sp.csr_matrix]:
    """The dataset's counts thinned to ``depth`` of the reads (seeded by seed and depth), and their log view."""
    if ds.counts is None:
        raise InputError(f"{ds.name} has no counts to thin.")
    counts = binomial_thin(ds.counts, depth, seed=_thin_seed(seed, depth), where=f"{ds.name} counts")
    return log_normalize(counts, ds.log.obs, ds.log.var_names), counts


def task_list(
    ds: EmbeddingDataset, seeds: Sequence[int], methods: Sequence[str], depths: Sequence[float]
) -> list[dict]:
    """Every task of one dataset, per seed and method.

    ``full``: fit at full depth, score it and each thinned depth; ``refit`` per depth where the dataset has
    counts and labels. scVI only where the dataset has counts.
    """
    tasks = []
    for seed in seeds:
        for method in methods:
            if method == "scvi" and ds.counts is None:
                continue
            tasks.append({"dataset": ds.name, "seed": int(seed), "method": method, "kind": "full", "depth": 1.0})
            if ds.counts is not None and ds.label_key is not None:
                for d in depths:
                    tasks.append(
                        {"dataset": ds.name, "seed": int(seed), "method": method, "kind": "refit", "depth": float(d)}
                    )
    return tasks


def _task_path(out: Path, task: dict) -> Path:
    stem = task["method"] if task["kind"] == "full" else f"{task['method']}-refit{int(round(task['depth'] * 100)):02d}"
    return out / "tasks" / task["dataset"] / f"seed{task['seed']}" / f"{stem}.json"


def _digest(ds: EmbeddingDataset, task: dict, settings: dict, depths: Sequence[float]) -> str:
    payload = {
        "data": ds.fingerprint(),
        "task": task,
        "settings": settings,
        "depths": list(depths) if task["kind"] == "full" else [],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _score(ds: EmbeddingDataset, z: np.ndarray, seed: int, x_pre) -> dict[str, float]:
    return embedding_scores(z, ds.labels, ds.batch, x_pre=x_pre, seed=seed)


def _x_pre(log: AnnData, seed: int) -> np.ndarray:
    return _PCA().fit(None, log, None, seed, {}).z


def run_task(ds: EmbeddingDataset, task: dict, settings: dict, depths: Sequence[float]) -> dict:
    """Fit one representation and score it (and, for ``full``, the thinned cells it embeds)."""
    seed, method = task["seed"], task["method"]
    rep = REPRESENTATIONS[method]()
    t0 = time.perf_counter()
    if task["kind"] == "full":
        log, counts = ds.log, ds.counts
    else:
        log, counts = thinned(ds, task["depth"], seed)
    rep.fit(ds, log, counts, seed, settings)
    fit_s = time.perf_counter() - t0
    x_pre = _x_pre(log, seed) if ds.batch_key is not None else None
    key = "1.0" if task["kind"] == "full" else str(task["depth"])
    result = {**task, "fit_seconds": round(fit_s, 2), "scores": {key: _score(ds, rep.embed(log, counts), seed, x_pre)}}
    if method == "scvi":
        result["scvi_epochs"] = rep.epochs
    if task["kind"] == "full" and ds.counts is not None and ds.label_key is not None:
        for d in depths:
            tlog, tcounts = thinned(ds, d, seed)
            x_pre_thin = _x_pre(tlog, seed) if ds.batch_key is not None else None
            result["scores"][str(d)] = _score(ds, rep.embed(tlog, tcounts), seed, x_pre_thin)
    result["seconds"] = round(time.perf_counter() - t0, 2)
    return result


def run_embedding_benchmark(
    datasets: Sequence[EmbeddingDataset],
    out: str | Path,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    methods: Sequence[str] = METHODS,
    depths: Sequence[float] = DEPTHS,
    settings: dict | None = None,
    progress: bool = True,
    on_task: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Run (or resume) every task of ``datasets`` into ``out``; return the task results.

    ``settings``: ``jepa_steps`` (``None``: the default config's), ``jepa_options`` (CellJEPA keyword
    arguments), ``jepa_config`` (a nested config dict, e.g. ``{"train": {"thin_views": 0.05}, "data":
    {"counts_layer": "counts"}}``; the dataset's counts are in ``layers["counts"]``), ``scvi_max_epochs``
    (``None``: scvi-tools' default rule). A finished task whose digest (data fingerprint, task, settings)
    matches is read back, not recomputed.
    """
    from tqdm.auto import tqdm

    unknown = sorted(set(methods) - set(REPRESENTATIONS))
    if unknown:
        raise InputError(f"unknown method(s) {unknown}; known: {', '.join(REPRESENTATIONS)}.")
    settings = dict(settings or {})
    out = Path(out)
    # full-depth fits first (seed by seed, every dataset), then the refits at the claim's depth, then the other
    # refits: a partial run has whole tables and, as early as possible, what the dropout claim needs
    jobs = [(ds, t) for ds in datasets for t in task_list(ds, seeds, methods, depths)]
    order = {ds.name: i for i, ds in enumerate(datasets)}
    jobs.sort(
        key=lambda j: (
            j[1]["kind"] != "full",
            j[1]["kind"] != "full" and not np.isclose(j[1]["depth"], CLAIM_DEPTH),
            j[1]["seed"],
            order[j[1]["dataset"]],
            -j[1]["depth"],
        )
    )
    results = []
    bar = tqdm(jobs, desc="embedding benchmark", unit="task", disable=not progress)
    for ds, task in bar:
        bar.set_postfix_str(f"{task['dataset']} seed {task['seed']} {task['method']} {task['kind']} {task['depth']}")
        path = _task_path(out, task)
        digest = _digest(ds, task, settings, depths)
        if path.exists():
            done = json.loads(path.read_text())
            if done.get("digest") == digest:
                results.append(done)
                continue
            logger.info("%s: inputs changed, computing it again", path)
        result = {**run_task(ds, task, settings, depths), "digest": digest, "note": ds.note}
        write_json_atomic(path, result)
        results.append(result)
        if on_task is not None:
            on_task(result)
    return results


# --- tables and claims -------------------------------------------------------------------------------------------


def _ci(values) -> tuple[float, float, float, int]:
    """Mean and a t-interval (95 %) over seeds."""
    from scipy import stats

    v = np.asarray([x for x in values if np.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return (np.nan, np.nan, np.nan, 0)
    m = float(v.mean())
    if v.size < 2:
        return (m, np.nan, np.nan, 1)
    half = float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
    return (m, m - half, m + half, int(v.size))


def scores_frame(results: Sequence[dict]) -> pd.DataFrame:
    """One row per (dataset, seed, method, mode, depth) with every metric.

    ``mode``: ``full``, ``transfer`` (fitted at full depth, thinned cells embedded) or ``refit``.
    """
    rows = []
    for r in results:
        for depth, scores in r["scores"].items():
            d = float(depth)
            mode = "full" if d == 1.0 else ("transfer" if r["kind"] == "full" else "refit")
            rows.append(
                {"dataset": r["dataset"], "seed": r["seed"], "method": r["method"], "mode": mode, "depth": d, **scores}
            )
    return pd.DataFrame(rows)


def collect(
    results: Sequence[dict], out: str | Path, *, claim_depth: float = CLAIM_DEPTH, expected: int | None = None
) -> dict:
    """Tables and claim statistics from task results.

    Writes ``embedding_quality.{md,json}``, ``robustness.{md,json}`` and ``scores.csv`` into ``out``
    (atomically) and returns the summary. ``expected``: the number of tasks of the whole run; when fewer have
    finished, every table says so in its first lines.
    """
    out = Path(out)
    frame = scores_frame(results)
    full = frame[frame["mode"] == "full"]
    quality = []
    for (dataset, method), g in full.groupby(["dataset", "method"], sort=True):
        row = {"dataset": dataset, "method": method, "seeds": int(g["seed"].nunique())}
        for m in (*BIO_METRICS, "bio_conservation", *BATCH_METRICS, "batch_correction"):
            if m in g and g[m].notna().any():
                row[m] = _ci(g[m])
        quality.append(row)
    comparisons = _quality_comparisons(full)
    robustness = _robustness_rows(frame)
    claim = _robustness_claim(frame, claim_depth)
    summary = {
        "tasks": {"finished": len(results), "expected": expected},
        "quality": quality,
        "quality_comparisons": comparisons,
        "robustness": robustness,
        "robustness_claim": claim,
        "notes": {r["dataset"]: r.get("note", "") for r in results},
    }
    write_text_atomic(out / "scores.csv", frame.to_csv(index=False))
    write_json_atomic(out / "embedding_quality.json", {"quality": quality, "comparisons": comparisons})
    write_json_atomic(out / "robustness.json", {"robustness": robustness, "claim": claim})
    write_text_atomic(out / "embedding_quality.md", quality_markdown(summary))
    write_text_atomic(out / "robustness.md", robustness_markdown(summary))
    return summary


def _jepa_minus_others(wide: pd.DataFrame):
    """``(other, paired differences JEPA − other, their mean and t-interval)`` for PCA and scVI, where present."""
    for other in ("pca", "scvi"):
        if wide.empty or "jepa" not in wide or other not in wide:
            continue
        d = (wide["jepa"] - wide[other]).dropna()
        if not d.empty:
            yield other, d, _ci(d)


def _quality_comparisons(full: pd.DataFrame) -> list[dict]:
    """JEPA − PCA and JEPA − scVI in mean bio conservation per dataset, paired over seeds (t-interval)."""
    rows = []
    if "bio_conservation" not in full:
        return rows
    for dataset, g in full.groupby("dataset", sort=True):
        wide = g.pivot_table(index="seed", columns="method", values="bio_conservation")
        for other, _, (mean, lo, hi, n) in _jepa_minus_others(wide):
            rows.append(
                {"dataset": dataset, "comparison": f"jepa - {other}", "difference": mean, "ci": [lo, hi], "seeds": n}
            )
    return rows


def _robustness_rows(frame: pd.DataFrame) -> list[dict]:
    rows = []
    if "bio_conservation" not in frame:
        return rows
    sub = frame[frame["bio_conservation"].notna()]
    for (dataset, method, mode, depth), g in sub.groupby(["dataset", "method", "mode", "depth"], sort=True):
        mean, lo, hi, n = _ci(g["bio_conservation"])
        rows.append(
            {
                "dataset": dataset,
                "method": method,
                "mode": mode,
                "depth": depth,
                "bio_conservation": mean,
                "ci": [lo, hi],
                "seeds": n,
            }
        )
    return rows


def one_sided_sign_flip(d) -> float:
    """Exact one-sided sign-flip p-value of ``mean(d) < 0`` (paired differences; :func:`scipy.stats.permutation_test`).

    Every sign pattern is enumerated, so with ``n`` pairs the smallest possible p-value is ``2^-n``.

    Examples
    --------
    >>> one_sided_sign_flip([-1.0, -2.0, -3.0])   # only the observed pattern is as low: 1/8
    0.125
    """
    from scipy import stats

    d = np.asarray(d, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size == 0 or not np.any(d != 0):
        return 1.0
    if d.size == 1:  # two sign patterns: the observed one and its flip
        return 0.5 if d[0] < 0 else 1.0
    res = stats.permutation_test((d,), np.mean, permutation_type="samples", alternative="less", n_resamples=np.inf)
    return float(res.pvalue)


def _robustness_claim(frame: pd.DataFrame, depth: float, *, alpha: float = 0.05) -> dict:
    """Test "JEPA loses less of its full-depth score than PCA and scVI", per mode, paired over (dataset, seed).

    The rule, fixed before the runs: loss = bio_conservation(full) − bio_conservation(``depth``) per dataset,
    seed and method; ``d = loss(JEPA) − loss(other)`` over the (dataset, seed) pairs; the directional claim
    (``mean(d) < 0``) is tested with the exact one-sided sign-flip test (:func:`one_sided_sign_flip`). Within a
    mode (``transfer``, ``refit``) the claim needs both comparators (an intersection-union test: the mode's p
    is the larger of the two), and Holm runs over the two modes. Met in a mode when its Holm p < ``alpha``.
    With ``n`` pairs no p-value is below ``2^-n``: 6 pairs (2 datasets × 3 seeds) can reach 0.016, so the claim
    can be met only if JEPA loses less in every pair.
    """
    if "bio_conservation" not in frame:
        return {"comparisons": [], "modes": {}, "met": {}}
    sub = frame[frame["bio_conservation"].notna()]
    full = sub[sub["mode"] == "full"].set_index(["dataset", "seed", "method"])["bio_conservation"]
    comps = []
    for mode in ("transfer", "refit"):
        at = sub[(sub["mode"] == mode) & np.isclose(sub["depth"], depth)]
        at = at.set_index(["dataset", "seed", "method"])["bio_conservation"]
        loss = (full - at).dropna().unstack("method") if not at.empty else pd.DataFrame()
        for other, d, (mean, lo, hi, n) in _jepa_minus_others(loss):
            comps.append(
                {
                    "mode": mode,
                    "comparison": f"jepa - {other}",
                    "depth": depth,
                    "loss_difference": mean,
                    "ci": [lo, hi],
                    "pairs": n,
                    "jepa_loses_less_in": int((d < 0).sum()),
                    "datasets": sorted({k[0] for k in d.index}),
                    "p_one_sided": one_sided_sign_flip(d.to_numpy()),
                    "loss_jepa": float(loss["jepa"].loc[d.index].mean()),
                    "loss_other": float(loss[other].loc[d.index].mean()),
                }
            )
    modes = {}
    for mode in ("transfer", "refit"):
        cs = [c for c in comps if c["mode"] == mode]
        if len(cs) == 2:
            modes[mode] = {"p": max(c["p_one_sided"] for c in cs)}
    if modes:
        for mode, p in zip(modes, holm([m["p"] for m in modes.values()]), strict=True):
            modes[mode]["holm_p"] = float(p)
            modes[mode]["met"] = bool(p < alpha)
    return {
        "comparisons": comps,
        "modes": modes,
        "met": {m: v["met"] for m, v in modes.items()},
        "rule": (
            f"loss = full-depth score − score at {depth:.0%} of the reads; JEPA's loss below both PCA's and "
            "scVI's (exact one-sided sign-flip over (dataset, seed) pairs, the larger p of the two), "
            f"Holm over the two modes, alpha {alpha}"
        ),
    }


def _fmt(ci) -> str:
    mean, lo, hi, n = ci
    if not np.isfinite(mean):
        return "–"
    if not np.isfinite(lo):
        return f"{mean:.3f}"
    return f"{mean:.3f} [{lo:.3f}, {hi:.3f}]"


def _signed_ci(ci) -> str:
    """``[+lo, +hi]`` of a difference's interval, or nothing where it is undefined (one seed)."""
    lo, hi = ci
    return f"[{lo:+.3f}, {hi:+.3f}]" if np.isfinite(lo) else ""


def _partial(summary: dict) -> list[str]:
    tasks = summary.get("tasks") or {}
    done, expected = tasks.get("finished"), tasks.get("expected")
    if expected is None or done is None or done >= expected:
        return []
    return [
        f"**Partial: {done} of {expected} tasks have finished**; the tables and the claim below use only those "
        "(rerun the same command to finish the rest).",
        "",
    ]


def quality_markdown(summary: dict) -> str:
    """The embedding-quality tables as markdown."""
    lines = [
        "# Embedding quality: JEPA, PCA and scVI by scib-metrics",
        "",
        *_partial(summary),
        "Every score in [0, 1], higher is better; mean over seeds with a 95 % t-interval. Bio conservation is the mean",
        "of NMI and ARI (Leiden, resolution optimised by NMI), label silhouette, isolated-label silhouette and cLISI.",
        "No representation saw the labels.",
        "",
        "| dataset | method | seeds | bio conservation | NMI | ARI | silhouette (label) | isolated labels | cLISI |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["quality"]:
        if "bio_conservation" not in r:
            continue
        lines.append(
            f"| {r['dataset']} | {r['method']} | {r['seeds']} | **{_fmt(r['bio_conservation'])}** | "
            + " | ".join(_fmt(r[m]) if m in r else "–" for m in BIO_METRICS)
            + " |"
        )
    batch = [r for r in summary["quality"] if "batch_correction" in r]
    if batch:
        lines += [
            "",
            "Batch correction (datasets with a real batch):",
            "",
            "| dataset | method | seeds | batch correction | silhouette (batch) | iLISI | kBET | graph connectivity "
            "| PCR comparison |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in batch:
            lines.append(
                f"| {r['dataset']} | {r['method']} | {r['seeds']} | **{_fmt(r['batch_correction'])}** | "
                + " | ".join(_fmt(r[m]) if m in r else "–" for m in BATCH_METRICS)
                + " |"
            )
    if summary["quality_comparisons"]:
        lines += [
            "",
            "JEPA against the others, bio conservation, paired over seeds:",
            "",
            "| dataset | comparison | difference [95% CI] | seeds |",
            "|---|---|---|---|",
        ]
        for c in summary["quality_comparisons"]:
            lo, hi = c["ci"]
            ci = f"[{lo:+.3f}, {hi:+.3f}]" if np.isfinite(lo) else ""
            lines.append(f"| {c['dataset']} | {c['comparison']} | {c['difference']:+.3f} {ci} | {c['seeds']} |")
    lines += ["", "Datasets:", ""] + [f"- {k}: {v}" for k, v in sorted(summary["notes"].items())]
    return "\n".join(lines) + "\n"


def robustness_markdown(summary: dict) -> str:
    """The depth curves and the dropout claim as markdown."""
    lines = [
        "# Dropout robustness: bio conservation against sequencing depth",
        "",
        *_partial(summary),
        "Counts thinned binomially (seeded); *transfer*: the model fitted at full depth embeds the thinned cells;",
        "*refit*: fitted again on the thinned cells. Mean over seeds [95 % t-interval].",
        "",
    ]
    rows = summary["robustness"]
    depths = sorted({r["depth"] for r in rows}, reverse=True)
    cell = {(r["dataset"], r["method"], r["mode"], r["depth"]): r for r in rows}
    lines += [
        "| dataset | method | mode | " + " | ".join(f"{d:.0%}" for d in depths) + " | seeds |",
        "|---|---|---|" + "---|" * (len(depths) + 1),
    ]
    for dataset, method in sorted({(r["dataset"], r["method"]) for r in rows if r["mode"] != "full"}):
        for mode in ("transfer", "refit"):
            if not any((dataset, method, mode, d) in cell for d in depths):
                continue
            parts, seeds = [], set()
            for d in depths:
                r = cell.get((dataset, method, "full" if d == 1.0 else mode, d))
                if r is None:
                    parts.append("–")
                    continue
                lo, hi = r["ci"]
                parts.append(f"{r['bio_conservation']:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) else ""))
                seeds.add(r["seeds"])
            lines.append(
                f"| {dataset} | {method} | {mode} | " + " | ".join(parts) + f" | {'/'.join(map(str, sorted(seeds)))} |"
            )
    claim = summary["robustness_claim"]
    lines += [
        "",
        f"## The claim: JEPA loses less of its full-depth score at {int(CLAIM_DEPTH * 100)} % of the reads",
        "",
        f"Rule, fixed before the runs: {claim.get('rule', '')}.",
        "",
        "| mode | comparison | loss JEPA | loss other | difference [95% CI] | pairs | JEPA loses less in "
        "| p (one-sided) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in claim["comparisons"]:
        ci = _signed_ci(c["ci"])
        lines.append(
            f"| {c['mode']} | {c['comparison']} | {c['loss_jepa']:.3f} | {c['loss_other']:.3f} | "
            f"{c['loss_difference']:+.3f} {ci} | {c['pairs']} | {c['jepa_loses_less_in']} | {c['p_one_sided']:.3g} |"
        )
    for mode, m in claim.get("modes", {}).items():
        lines.append(f"\n**{mode}: {'met' if m['met'] else 'not met'}** (p {m['p']:.3g}, Holm p {m['holm_p']:.3g}).")
    return "\n".join(lines) + "\n"


# --- choosing an encoder change without labels ----------------------------------------------------------------------

#: The encoder changes judged by :func:`run_encoder_selection`, each one switch from the default (docs/science.md).
ENCODER_CANDIDATES: dict[str, dict] = {
    "default": {},
    "count_views": {
        "jepa_config": {"train": {"thin_views": 0.05}, "data": {"counts_layer": "counts"}},
    },
    "module_masks_085": {"jepa_options": {"mask": "module", "mask_ratio": 0.85}},
    "steps_6000": {"jepa_steps": 6000},
}
SELECTION_DATASETS = ("kang2018", "citefuse", "papalexi2021")
HELDOUT_FRACTION = 0.1


def heldout_cells(
    ds: EmbeddingDataset, fraction: float = HELDOUT_FRACTION, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``(training rows, held-out rows)``: a seeded share of the cells left out of the encoder's training."""
    rng = np.random.default_rng([seed, 0x5E1])
    n = ds.log.n_obs
    held = np.sort(rng.choice(n, max(2, int(round(fraction * n))), replace=False))
    return np.setdiff1d(np.arange(n), held), held


def _selection_task(ds: EmbeddingDataset, name: str, candidate: dict, seed: int) -> dict:
    from ..data.counts import binomial_split
    from ..eval.embedding import collapse_diagnostics, split_half_retrieval

    if ds.counts is None:
        raise InputError(f"{ds.name} has no counts: the held-out cells cannot be split into halves.")
    train_rows, held = heldout_cells(ds)
    t0 = time.perf_counter()
    rep = _JEPA().fit(ds, ds.log[train_rows].copy(), ds.counts[train_rows], seed, candidate)
    fit_s = time.perf_counter() - t0
    half_a, half_b = binomial_split(ds.counts[held], seed=0, where=f"{ds.name} counts")
    obs = ds.log.obs.iloc[held]
    z_a = rep.embed(log_normalize(half_a, obs, ds.log.var_names), None)
    z_b = rep.embed(log_normalize(half_b, obs, ds.log.var_names), None)
    diag = collapse_diagnostics(rep.embed(ds.log[held], None))
    return {
        "dataset": ds.name,
        "candidate": name,
        "seed": int(seed),
        "settings": candidate,
        "heldout_cells": int(held.size),
        "retrieval": split_half_retrieval(z_a, z_b),
        "effective_rank_fraction": diag["effective_rank_fraction"],
        "fit_seconds": round(fit_s, 2),
    }


def run_encoder_selection(
    datasets: Sequence[EmbeddingDataset],
    out: str | Path,
    *,
    candidates: dict[str, dict] | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    progress: bool = True,
) -> list[dict]:
    """Train each encoder candidate on 90 % of each dataset's cells and score the held-out cells without labels.

    The score is :func:`celljepa.eval.embedding.split_half_retrieval` (cosine, top-1) of the held-out cells'
    two binomial halves, with the effective rank of their full-depth embedding as the collapse check. One task
    file per (dataset, candidate, seed) under ``OUT/selection/``, written atomically with its digest; a run
    resumes. :func:`selection_decision` applies the rule of docs/science.md.
    """
    from tqdm.auto import tqdm

    candidates = dict(ENCODER_CANDIDATES if candidates is None else candidates)
    out = Path(out)
    jobs = [(ds, name, cand, s) for s in seeds for ds in datasets for name, cand in candidates.items()]
    results = []
    for ds, name, cand, seed in tqdm(jobs, desc="encoder selection", unit="fit", disable=not progress):
        path = out / "selection" / ds.name / name / f"seed{seed}.json"
        payload = {"data": ds.fingerprint(), "candidate": cand, "seed": seed, "heldout": HELDOUT_FRACTION}
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
        if path.exists():
            done = json.loads(path.read_text())
            if done.get("digest") == digest:
                results.append(done)
                continue
        result = {**_selection_task(ds, name, cand, seed), "digest": digest}
        write_json_atomic(path, result)
        results.append(result)
    return results


def selection_decision(results: Sequence[dict], *, baseline: str = "default", min_rank_fraction: float = 0.25) -> dict:
    """The rule, fixed before the runs (docs/science.md), applied to :func:`run_encoder_selection`'s results.

    A candidate replaces ``baseline`` only if its mean top-1 is above the baseline's on every dataset, the
    paired 95 % t-interval over seeds lies above 0 on at least two datasets, and no seed is collapsed (effective
    rank below ``min_rank_fraction`` of the dimension); among several, the largest mean gain wins.
    """
    frame = pd.DataFrame(
        [
            {
                "dataset": r["dataset"],
                "candidate": r["candidate"],
                "seed": r["seed"],
                "top1": r["retrieval"]["top1"],
                "rank_fraction": r["effective_rank_fraction"],
            }
            for r in results
        ]
    )
    rows, verdicts = [], {}
    if frame.empty or baseline not in set(frame["candidate"]):
        return {"rows": rows, "candidates": verdicts, "chosen": baseline}
    datasets = sorted(frame["dataset"].unique())
    for name in sorted(set(frame["candidate"]) - {baseline}):
        above_all, ci_above, gains, collapsed = True, 0, [], False
        for dataset in datasets:
            sub = frame[frame["dataset"] == dataset]
            wide = sub.pivot_table(index="seed", columns="candidate", values="top1")
            if name not in wide or baseline not in wide:
                above_all = False
                continue
            d = (wide[name] - wide[baseline]).dropna()
            mean, lo, hi, n = _ci(d)
            collapsed |= bool((sub.loc[sub["candidate"] == name, "rank_fraction"] < min_rank_fraction).any())
            above_all &= bool(mean > 0)
            ci_above += int(np.isfinite(lo) and lo > 0)
            gains.append(mean)
            rows.append(
                {
                    "dataset": dataset,
                    "candidate": name,
                    "top1": float(wide[name].mean()),
                    "baseline_top1": float(wide[baseline].mean()),
                    "difference": mean,
                    "ci": [lo, hi],
                    "seeds": n,
                }
            )
        qualifies = above_all and ci_above >= 2 and not collapsed and len(gains) == len(datasets)
        verdicts[name] = {
            "above_on_every_dataset": above_all,
            "ci_above_zero_on": ci_above,
            "collapsed": collapsed,
            "mean_gain": float(np.mean(gains)) if gains else float("nan"),
            "qualifies": bool(qualifies),
        }
    qualifying = {k: v["mean_gain"] for k, v in verdicts.items() if v["qualifies"]}
    chosen = max(qualifying, key=qualifying.get) if qualifying else baseline
    return {"rows": rows, "candidates": verdicts, "chosen": chosen}


def selection_markdown(decision: dict, results: Sequence[dict]) -> str:
    """The selection table and the decision as markdown."""
    lines = [
        "# Encoder changes judged without labels on held-out cells",
        "",
        "Split-half retrieval (top-1, cosine) of the held-out 10 % of cells: each held-out cell's reads split in two",
        "binomial halves, both embedded; the share of cells whose half finds its own other half first. Mean over",
        "seeds; the difference is paired with the default over seeds [95 % t-interval].",
        "",
        "| dataset | candidate | top-1 | default | difference [95% CI] | seeds |",
        "|---|---|---|---|---|---|",
    ]
    for r in decision["rows"]:
        ci = _signed_ci(r["ci"])
        lines.append(
            f"| {r['dataset']} | {r['candidate']} | {r['top1']:.3f} | {r['baseline_top1']:.3f} | "
            f"{r['difference']:+.3f} {ci} | {r['seeds']} |"
        )
    lines += [
        "",
        "| candidate | above the default on every dataset | CI above 0 on | collapsed | mean gain | qualifies |",
        "|---|---|---|---|---|---|",
    ]
    for name, v in decision["candidates"].items():
        lines.append(
            f"| {name} | {'yes' if v['above_on_every_dataset'] else 'no'} | {v['ci_above_zero_on']} | "
            f"{'yes' if v['collapsed'] else 'no'} | {v['mean_gain']:+.3f} | {'**yes**' if v['qualifies'] else 'no'} |"
        )
    fits = {r["candidate"]: [] for r in results}
    for r in results:
        fits[r["candidate"]].append(r["fit_seconds"])
    lines += [
        "",
        f"**Chosen: `{decision['chosen']}`.** Fit time per encoder (s): "
        + ", ".join(f"{k} {np.median(v):.0f}" for k, v in fits.items())
        + ".",
    ]
    return "\n".join(lines) + "\n"
