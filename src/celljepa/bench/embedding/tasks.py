"""The embedding benchmark's tasks: one fit each, written atomically with its digest; a run resumes."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from ..._errors import InputError
from ..._io import write_json_atomic
from ..._logging import logger
from ...data.counts import binomial_thin
from ...eval.scib import embedding_scores
from .datasets import EmbeddingDataset, log_normalize
from .representations import _PCA, REPRESENTATIONS

#: the read depths the counts are thinned to, and the one the dropout claim is judged at
DEPTHS = (0.5, 0.25, 0.1, 0.05)
CLAIM_DEPTH = 0.1
METHODS = ("jepa", "pca", "scvi")


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


def digest_of(payload: dict) -> str:
    """A short digest of a task's inputs (the data's fingerprint, the task, its settings)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def resumed(path: Path, payload: dict, compute: Callable[[], dict]) -> tuple[dict, bool]:
    """The finished task at ``path`` if it was computed from the same inputs, else ``compute()`` written there.

    ``payload`` is what the task depends on; its :func:`digest_of` is stored in the task file, so a task whose
    inputs changed is computed again. The file is written atomically: an interrupted task leaves nothing.
    Returns ``(result, computed)``.
    """
    digest = digest_of(payload)
    if path.exists():
        done = json.loads(path.read_text())
        if done.get("digest") == digest:
            return done, False
        logger.info("%s: inputs changed, computing it again", path)
    result = {**compute(), "digest": digest}
    write_json_atomic(path, result)
    return result, True


def _payload(ds: EmbeddingDataset, task: dict, settings: dict, depths: Sequence[float]) -> dict:
    return {
        "data": ds.fingerprint(),
        "task": task,
        "settings": settings,
        "depths": list(depths) if task["kind"] == "full" else [],
    }


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
        result, computed = resumed(
            _task_path(out, task),
            _payload(ds, task, settings, depths),
            lambda ds=ds, task=task: {**run_task(ds, task, settings, depths), "note": ds.note},
        )
        results.append(result)
        if computed and on_task is not None:
            on_task(result)
    return results
