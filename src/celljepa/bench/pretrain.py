"""``celljepa pretrain``: one JEPA pretraining run folder.

``OUT/`` receives ``config.yaml`` (resolved), ``inputs.json`` (the content fingerprint of the data),
``metrics.jsonl``, ``checkpoints/{last,best}.pt``, ``model/`` (:meth:`CellJEPA.save`), ``embeddings.npz``
(``obs_names``, ``X_jepa``) and ``eval.json`` (collapse diagnostics, kNN accuracy of labels on X_jepa versus
X_pca), written last: a folder with ``eval.json`` holds a finished run.

A run resumes only on the same config and the same data (by content); anything else is refused before a file
changes. ``--restart`` over a finished run trains in a staging folder beside it and swaps it in when complete,
so the finished run stays if the new one fails.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .._defaults import FAST_DEV_JEPA_STEPS
from .._errors import InputError
from .._io import (
    LOCK_NAME,
    atomic_path,
    check_readable_h5ad,
    refuse_other_kind,
    remove_tree_quietly,
    staged_folder,
    write_json_atomic,
    write_text_atomic,
)
from .._logging import logger
from ..data._keys import suggest
from ..data._normalize import require_log_expression
from ..train.config import JEPAConfig, load_config
from ..train.distributed import barrier, is_main, world_size
from .tasks import data_fingerprint, locks_out

__all__ = ["FAST_DEV", "embedding_eval", "pretrain"]

# --fast-dev: a smoke run that exercises every stage in seconds.
FAST_DEV = {
    "train": {"max_steps": FAST_DEV_JEPA_STEPS, "log_every": 5, "eval_every": 10, "checkpoint_every": 10},
    "data": {"eval_cells": 256},
    "eval": {"max_cells": 2000},
}


def _config_yaml(cfg: JEPAConfig) -> str:
    import yaml

    header = "# Resolved celljepa pretraining config (every key; edit a copy and pass it with --config).\n"
    return header + yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def pca_embedding(x, fit: np.ndarray, n_pcs: int, seed: int) -> tuple[np.ndarray, dict]:
    """Coordinates of every row of ``x`` on ``n_pcs`` PCs of all genes fitted (scanpy) on the rows ``fit``."""
    import anndata as ad
    import scanpy as sc

    from ..train.data import to_csr32

    x = to_csr32(x)
    train = x[fit]
    n_comp = int(min(n_pcs, train.shape[0] - 1, train.shape[1] - 1))
    if n_comp < 1:
        raise InputError("too few cells or genes for the PCA comparison.")
    work = ad.AnnData(train)
    sc.pp.pca(work, n_comps=n_comp, zero_center=True, random_state=seed)
    loadings = np.asarray(work.varm["PCs"], dtype=np.float64)
    mean = np.asarray(train.mean(axis=0), dtype=np.float64).ravel()
    coords = np.asarray(x @ loadings) - mean @ loadings
    return coords, {"n_pcs": n_comp, "fit_cells": int(train.shape[0]), "genes": int(x.shape[1])}


def embedding_eval(
    model,
    adata,
    *,
    train_rows: np.ndarray,
    labels=None,
    cfg: JEPAConfig | None = None,
    progress: bool = False,
    embedding: np.ndarray | None = None,
) -> dict:
    """Collapse diagnostics of the embedding and kNN accuracy of ``labels`` on X_jepa versus X_pca.

    Both embeddings are computed for the same seeded subsample of at most ``eval.max_cells`` cells
    (read once); the PCA (``eval.n_pcs`` components of all the model's genes) is fitted on the training
    cells of that subsample only, like the encoder. ``embedding`` (all cells of ``adata``), when
    already computed, is used instead of encoding the subsample again.
    """
    from ..eval.embedding import collapse_diagnostics, is_collapsed, knn_table

    cfg = cfg or model.config
    e = cfg.eval
    rng = np.random.default_rng([cfg.train.seed, 0xE7A2])
    n = adata.n_obs
    rows = np.arange(n) if n <= e.max_cells else np.sort(rng.choice(n, e.max_cells, replace=False))
    sub = adata[rows]
    sub = sub.to_memory() if getattr(adata, "isbacked", False) else sub
    z = embedding[rows] if embedding is not None else model.get_latent_representation(sub, progress=progress)
    x = sub.layers[cfg.data.layer] if cfg.data.layer else sub.X
    pcs, pca_info = pca_embedding(x, np.isin(rows, train_rows), e.n_pcs, cfg.train.seed)
    diag = collapse_diagnostics(z, max_cells=None)
    obs = sub.obs
    knn = knn_table(
        {"X_jepa": z, "X_pca": pcs},
        obs,
        list(labels if labels is not None else e.labels),
        k=e.knn_k,
        n_folds=e.knn_folds,
        seed=cfg.train.seed,
        max_cells=None,
    )
    return {
        "diagnostics": diag,
        "collapsed": is_collapsed(diag),
        "pca_diagnostics": collapse_diagnostics(pcs),
        "knn": knn,
        "pca": pca_info,
        "n_cells": int(rows.size),
        "knn_k": e.knn_k,
        "knn_folds": e.knn_folds,
    }


def _split_rows(split_path, adata) -> tuple[np.ndarray, np.ndarray | None, dict]:
    from ..splits import fold_roles, read_split

    fold = read_split(split_path)
    roles = np.asarray(fold_roles(fold, adata.obs_names))
    train = np.flatnonzero(roles == "train")
    val = np.flatnonzero(roles == "val")
    if train.size < 2:
        raise InputError(
            f"split {split_path} lists {train.size} training cells of this file; is it the split of "
            f"another dataset (split dataset_id {fold.get('dataset_id')!r})?"
        )
    info = {k: fold[k] for k in ("dataset_id", "split_name", "seed", "fold", "n_folds")}
    info.update(path=str(split_path), n_train_cells=int(train.size), n_val_cells=int(val.size))
    return train, (val if val.size >= 2 else None), info


def _read(path: Path, *, backed: bool):
    """Read an .h5ad (backed on request), with a clear error for a file that is cut short or damaged."""
    import anndata as ad

    try:
        return ad.read_h5ad(path, backed="r" if backed else None)
    except Exception as err:  # noqa: BLE001 - h5py/anndata raise many kinds for a damaged file
        raise InputError(
            f"cannot read '{path}' ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
            ": the file is damaged or cut short. Fix: copy or write it again."
        ) from None


@locks_out
def pretrain(
    h5ad,
    *,
    out: str | os.PathLike,
    config: str | os.PathLike | JEPAConfig | None = None,
    split: str | os.PathLike | None = None,
    fast_dev: bool = False,
    backed: bool | None = None,
    overrides: dict | None = None,
    restart: bool = False,
    progress: bool = True,
    handle_signals: bool = True,
    feature_set: str | os.PathLike | None = None,
) -> dict | None:
    """Run JEPA pretraining on ``h5ad`` into the run folder ``out`` and return ``eval.json``'s content.

    Running it again on the same folder resumes from ``checkpoints/last.pt`` (a finished run only
    re-writes its outputs); ``restart=True`` clears the folder's training state first.

    ``h5ad`` may be several files: each is mapped onto ``feature_set`` (a stored list such as
    ``foundation-v1``, a feature set file, or ``intersection`` / ``union_hvg`` built from these training
    files; default ``foundation-v1``), genes a dataset lacks are absent (never prediction targets), the
    cells are stacked with ``obs["dataset_id"]``, and every batch holds an equal share of each dataset
    (``data.balance_key``). The list used is written to ``OUT/feature_set.txt``. One file with
    ``feature_set`` is mapped onto it the same way.

    Under torch.distributed (``torchrun`` or ``srun``, :func:`celljepa.train.distributed.distributed_session`)
    every rank trains on its slice of each batch and rank 0 writes the run folder; the other ranks
    return ``None``.

    Raises
    ------
    celljepa.train.checkpoint.TrainingInterrupted
        On SIGTERM/SIGUSR1, after the checkpoint is written.
    """
    out = Path(out)
    refuse_other_kind(out, "pretrain")
    paths = [check_readable_h5ad(p) for p in (h5ad if isinstance(h5ad, (list, tuple)) else [h5ad])]
    combined = len(paths) > 1 or feature_set is not None
    if combined and len(paths) > 1 and not (overrides or {}).get("data", {}).get("balance_key"):
        overrides = {**(overrides or {}), "data": {**(overrides or {}).get("data", {}), "balance_key": "dataset_id"}}
    if combined and (backed or split is not None):
        raise InputError(
            "several datasets (or --feature-set) are held in memory and take no --split-file yet. Fix: "
            "drop --backed/--split-file, or pretrain on one dataset."
        )
    cfg = config if isinstance(config, JEPAConfig) else load_config(config, overrides=None)
    merged = {s: {} for s in cfg.to_dict()}
    for extra in ((FAST_DEV if fast_dev else {}), overrides or {}):
        for section, values in extra.items():
            if section not in merged:
                raise InputError(
                    f"--set {section}.{next(iter(values), 'KEY')}=...: unknown config section "
                    f"{section!r}.{suggest(section, merged)} Sections: {', '.join(merged)}."
                )
            merged[section].update(values)
    if backed is not None:
        merged["data"]["backed"] = bool(backed)
    cfg = cfg.replace(**merged)
    main = is_main()
    t0 = time.perf_counter()
    fs_info = None
    if combined:
        adata, fs = _combined_data(paths, feature_set or "foundation-v1")
        fs_info = {**fs.info(), "absent_genes": {k: int(len(v)) for k, v in adata.uns.get("absent_genes", {}).items()}}
    else:
        adata = _read(paths[0], backed=cfg.data.backed)
    try:
        require_log_expression(adata, cfg.data.layer, source=", ".join(map(str, paths)))
        inputs = {"data": data_fingerprint(adata), "sources": [str(p) for p in paths]}
        # checked before any file changes, --restart included: a refused run deletes nothing
        finished = (out / "eval.json").is_file()
        if not restart:
            _check_resume(out, cfg, inputs)
    except BaseException:
        if getattr(adata, "isbacked", False):
            adata.file.close()
        raise
    if restart and finished:  # the finished run stays until the new one is complete
        if world_size() > 1:
            if getattr(adata, "isbacked", False):
                adata.file.close()
            raise InputError(
                f"--restart over the finished run in {out} trains in a staging folder, which one "
                "process holds; under torch.distributed pass a new --out instead."
            )
        with staged_folder(out) as stage:
            result = _train(
                adata,
                stage,
                cfg,
                inputs,
                paths=paths,
                combined=combined,
                fs=fs if combined else None,
                fs_info=fs_info,
                split=split,
                progress=progress,
                handle_signals=handle_signals,
                t0=t0,
            )
        logger.info("pretraining run written to %s (it replaced the finished run there)", out)
        return result
    if restart and main:
        remove_tree_quietly(out / "checkpoints")
        (out / "metrics.jsonl").unlink(missing_ok=True)
    barrier()
    new_run = not out.exists() or not any(p.name != LOCK_NAME for p in out.iterdir())
    try:
        result = _train(
            adata,
            out,
            cfg,
            inputs,
            paths=paths,
            combined=combined,
            fs=fs if combined else None,
            fs_info=fs_info,
            split=split,
            progress=progress,
            handle_signals=handle_signals,
            t0=t0,
        )
    except BaseException:
        if new_run and main and not (out / "checkpoints" / "last.pt").is_file():
            for p in out.iterdir():  # nothing to resume from: a new run that failed leaves no half-started folder
                if p.name != LOCK_NAME:
                    remove_tree_quietly(p) if p.is_dir() else p.unlink(missing_ok=True)
        raise
    if result is not None:
        logger.info("pretraining run written to %s", out)
    return result


INPUTS_FILE = "inputs.json"


def _check_resume(out: Path, cfg: JEPAConfig, inputs: dict) -> None:
    """Refuse to resume (or rewrite) a run folder that holds a run of another config or other data."""
    config_path = out / "config.yaml"
    started = (out / "checkpoints" / "last.pt").is_file() or (out / "eval.json").is_file()
    if not started or not config_path.is_file():
        return
    previous = load_config(config_path)
    if previous.digest() != cfg.digest():
        raise InputError(
            f"{out} holds a run with a different config ({config_path}). Fix: use a new --out "
            "folder, or --restart to start this one over."
        )
    try:
        stored = json.loads((out / INPUTS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # a run of a version that recorded no fingerprint: the gene names and cell count are checked on resume
    if stored.get("data") != inputs["data"]:
        raise InputError(
            f"{out} holds a run trained on other data: the data changed (content fingerprint "
            f"{stored.get('data')} → {inputs['data']}; then {', '.join(stored.get('sources', []))}, now "
            f"{', '.join(inputs['sources'])}). Nothing was changed. Fix: use a new --out folder, or "
            "--restart to train on these data (the old run stays until the new one is complete)."
        )


def _train(
    adata,
    out: Path,
    cfg: JEPAConfig,
    inputs: dict,
    *,
    paths,
    combined: bool,
    fs,
    fs_info,
    split,
    progress,
    handle_signals,
    t0,
) -> dict | None:
    from ..models import CellJEPA

    main = is_main()
    if main:  # the data are read and checked: only now the run folder gets its files
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "config.yaml", _config_yaml(cfg))
        write_json_atomic(out / INPUTS_FILE, inputs)
        if combined:
            fs.write(out / "feature_set.txt")
    try:
        train_rows, eval_rows, split_info = (np.arange(adata.n_obs), None, None)
        if split is not None:
            train_rows, eval_rows, split_info = _split_rows(split, adata)
        model = CellJEPA(adata, config=cfg)
        model.train(
            train_indices=train_rows,
            eval_indices=eval_rows,
            run_dir=out,
            progress=progress,
            handle_signals=handle_signals,
        )
        train_s = time.perf_counter() - t0
        if not main:
            return None
        model.save(out / "model", overwrite=True)
        z = model.get_latent_representation(adata, progress=progress) if not cfg.data.backed else None
        result = embedding_eval(model, adata, train_rows=train_rows, progress=progress, embedding=z)
        if z is not None:
            with atomic_path(out / "embeddings.npz") as tmp, open(tmp, "wb") as fh:
                np.savez(fh, obs_names=np.asarray(adata.obs_names, dtype=str), X_jepa=z)
        dataset_id = (
            "+".join(adata.obs["dataset_id"].cat.categories)
            if combined and len(paths) > 1
            else str(adata.uns.get("dataset_id", paths[0].stem))
        )
        result.update(
            source=", ".join(str(p) for p in paths),
            dataset_id=dataset_id,
            split=split_info,
            feature_set=fs_info,
            n_obs=int(adata.n_obs),
            n_vars=int(adata.n_vars),
            n_train_cells=int(train_rows.size),
            train_info=model.train_info_,
            gene_sets=model.gene_sets_source_,
            final=_last(model.history_, eval_split=False),
            final_eval=_last(model.history_, eval_split=True),
            train_seconds=round(train_s, 2),
            total_seconds=round(time.perf_counter() - t0, 2),
            embeddings="embeddings.npz" if z is not None else None,
            data=inputs["data"],
        )
        write_json_atomic(out / "eval.json", result)
    finally:
        if getattr(adata, "isbacked", False):
            adata.file.close()
    return result


def _last(history: list[dict], *, eval_split: bool) -> dict | None:
    rows = [r for r in history if (r.get("split") == "eval") == eval_split]
    return rows[-1] if rows else None


def knn_summary(result: dict) -> pd.DataFrame:
    """The kNN table of an ``eval.json`` as a DataFrame (label × embedding accuracy)."""
    rows = []
    for label, by_emb in result["knn"].items():
        if "skipped" in by_emb:
            continue
        for emb, r in by_emb.items():
            rows.append(
                {
                    "label": label,
                    "embedding": emb,
                    "accuracy": r["accuracy"],
                    "accuracy_sd": r["accuracy_sd"],
                    "n_classes": r["n_classes"],
                    "chance": r["chance"],
                }
            )
    return pd.DataFrame(rows)


def _combined_data(paths, feature_set):
    """Read the files and map them onto one feature set (built from them when a strategy is named)."""
    import anndata as ad

    from ..data._harmonize import combine_datasets, map_genes, resolve_feature_set

    datasets = {}
    for p in paths:
        adata = ad.read_h5ad(p)
        name = str(adata.uns.get("dataset_id", p.stem))
        if name in datasets:
            name = f"{name}_{len(datasets)}"
        datasets[name] = adata
    fs = resolve_feature_set(feature_set, datasets, name="+".join(datasets))
    if len(datasets) == 1:
        ((name, only),) = datasets.items()
        return map_genes(only, fs, name=name), fs
    return combine_datasets(datasets, fs), fs
