"""Add methods to a finished benchmark: score only what it lacks, on the same folds, and re-judge.

A benchmark with JEPA models at 3 split seeds × 3 model seeds costs hours; adding a peer tool to it should not
retrain every encoder. ``benchmark(..., reuse=RUN)`` scores, per fold, the baselines and the new methods
(peers) only, checks that its baselines agree with the ones stored in ``RUN`` (same folds, evaluation space,
effect tests and scores: the proof that both runs saw the same fold), then takes every stored method's rows
from ``RUN``, adds the new methods' rows and summarises the fold again, so the comparator is chosen on
validation from the whole pool (baselines, PCA twin, peers) and the verdict is redone. The E-distance of a
condition subsamples its observed cells by the condition's own key, so a method scored in another run gets
exactly the number it would have got beside the others.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

from .._errors import InputError
from .evaluate import FoldResult, score_fold
from .pooling import summarize

__all__ = ["REUSE_TOLERANCE", "reuse_fold"]

#: Largest difference between a baseline's score here and in the reused run (CSV round trip of float64).
REUSE_TOLERANCE = 1e-9
_CHECKED = ("edistance", "mse", "delta_pearson", "etest_edistance", "effect_se")
_SAME_CONFIG = ("evaluation", "jepa", "transition", "model_seeds")


def _read(folder: Path, name: str, *, required: bool = True) -> pd.DataFrame | None:
    path = folder / name
    if not path.is_file():
        if required:
            raise InputError(
                f"--reuse: {path} is missing; the reused run must hold every fold of this benchmark "
                "(finished). Fix: point --reuse at a finished run with the same plan and seeds."
            )
        return None
    return pd.read_csv(path, float_precision="round_trip")  # the stored values exactly


def reuse_fold(
    adata: AnnData,
    fold: dict,
    old_dir: Path,
    *,
    config: dict,
    evaluation,
    new_methods: list,
    keep_predictions: bool = False,
) -> FoldResult:
    """Score ``new_methods`` and the baselines on ``fold``; merge with the stored run folder ``old_dir``.

    ``config`` is this run's fold config (:func:`~celljepa.bench.run._run_config`): its evaluation, JEPA,
    transition and model-seed settings must equal the stored fold's, and the baselines scored here must equal
    the stored ones (:data:`REUSE_TOLERANCE`), else an :class:`InputError` says what differs.
    """
    if keep_predictions:
        raise InputError(
            "--predictions cannot be combined with --reuse: the reused run's predicted cells were not "
            "kept. Fix: drop one of the two."
        )
    try:
        old_config = json.loads((old_dir / "config.json").read_text(encoding="utf-8"))
        old_metrics = json.loads((old_dir / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(
            f"--reuse: cannot read the finished fold in {old_dir}: {err}. Fix: point --reuse at a "
            "finished run with the same plan and seeds."
        ) from None
    differ = [k for k in _SAME_CONFIG if old_config.get(k) != config.get(k)]
    if differ:
        raise InputError(
            f"--reuse: the fold in {old_dir} was run with other settings ({', '.join(differ)}); "
            "the run must use the same evaluation, JEPA, transition and model seeds."
        )
    old_per = _read(old_dir, "per_condition.csv")
    old_val = _read(old_dir, "validation.csv")
    old_seeds = _read(old_dir, "per_condition_seeds.csv", required=False)
    seeds = config.get("model_seeds") or None
    new_methods = new_methods if callable(new_methods) else (lambda seed, fixed=list(new_methods): fixed)
    names = {m.name for m in new_methods(seeds[0] if seeds else None)}
    clash = names & set(old_per["method"])
    if clash:
        raise InputError(f"--reuse: {sorted(clash)} are already scored in {old_dir}.")

    new = score_fold(adata, fold, config=evaluation, peers=new_methods, model_seeds=seeds)
    _check_baselines(new.per_condition, old_per, old_dir)

    def merged(old: pd.DataFrame | None, frame: pd.DataFrame | None) -> pd.DataFrame | None:
        if frame is None:
            return old
        added = frame[frame["method"].isin(names)]
        if old is None:
            return added
        # this code's layout; a column the stored run lacks stays empty for its rows
        return pd.concat([old[[c for c in frame.columns if c in old]], added], ignore_index=True)[list(frame.columns)]

    per_condition = merged(old_per, new.per_condition)
    validation = merged(old_val, new.validation)
    per_seed = merged(old_seeds if old_seeds is not None else _seeds_of(old_per), new.per_seed)
    per_seed["split_seed"], per_seed["fold"] = int(fold["seed"]), int(fold["fold"])
    metrics = summarize(
        per_condition,
        validation,
        per_seed=per_seed,
        primary=evaluation.primary,
        n_boot=evaluation.n_bootstrap,
        seed=evaluation.seed,
        min_conditions=evaluation.min_conditions,
    )
    keep = ("dataset_id", "split", "fold", "seed", "model_seeds", "transductive", "embedding_space", "never_left_start")
    metrics.update({k: old_metrics[k] for k in keep if k in old_metrics})
    metrics["reused"] = {
        "from": str(old_dir),
        "methods_added": sorted(names),
        "baselines_checked": int((new.per_condition["role"] == "baseline").sum()),
    }
    params = {**old_config.get("methods", {}), **{k: v for k, v in new.params.items() if k in names}}
    timings = dict(old_config.get("timings_s", {}))
    timings.update({k: v for k, v in new.timings.items() if k.removesuffix("_s") in names})
    timings["total_s"] = float(timings.get("total_s", 0.0)) + sum(
        v for k, v in new.timings.items() if k.removesuffix("_s") in names
    )
    return dataclasses.replace(
        new,
        per_condition=per_condition,
        validation=validation,
        per_seed=per_seed,
        metrics=metrics,
        params=params,
        timings=timings,
    )


def _seeds_of(per_condition: pd.DataFrame) -> pd.DataFrame:
    """A per-seed frame for a fold stored without one (a single model seed): its per-condition rows."""
    frame = per_condition.copy()
    if "model_seed" not in frame:
        frame["model_seed"] = np.nan
    return frame


def _check_baselines(new: pd.DataFrame, old: pd.DataFrame, old_dir: Path) -> None:
    base = new[new["role"] == "baseline"].set_index(["method", "condition"])
    stored = old.set_index(["method", "condition"])
    missing = base.index.difference(stored.index)
    if len(missing):
        raise InputError(
            f"--reuse: the fold in {old_dir} lacks {len(missing)} baseline row(s) scored here, e.g. "
            f"{list(missing[:3])}: it is not the same fold (other data, split or code)."
        )
    worst = ("", 0.0)
    for col in _CHECKED:
        if col not in base or col not in stored:
            continue
        a = base[col].to_numpy(dtype=float)
        b = stored.loc[base.index, col].to_numpy(dtype=float)
        both = np.isfinite(a) & np.isfinite(b)
        if (np.isfinite(a) != np.isfinite(b)).any():
            worst = max(worst, (col, np.inf), key=lambda t: t[1])
        elif both.any():
            worst = max(worst, (col, float(np.abs(a[both] - b[both]).max())), key=lambda t: t[1])
    if worst[1] > REUSE_TOLERANCE:
        raise InputError(
            f"--reuse: the baselines scored here differ from the ones stored in {old_dir} ({worst[0]}: "
            f"max difference {worst[1]:.3g}); the stored run was made with other code or data, so its "
            "methods cannot be merged with new ones. Fix: rerun the benchmark in full."
        )
