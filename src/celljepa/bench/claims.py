"""The claims family of a run: which dataset × split rows can carry a claim, fixed from the data before fitting.

A row can carry a claim when it has at least ``min_conditions`` test conditions with an effect (the E-test and
the standard-error rule of :func:`~celljepa.bench.evaluate.fold_effects`, pooled over folds and split seeds).
That depends on the data and the splits alone, so a run computes it once, before any model is fitted, and writes
it to ``OUT/claims.json``; the pooled rows are checked against it after fitting. ``celljepa benchmark`` and
``celljepa holdout`` both use it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pandas as pd
from anndata import AnnData
from tqdm.auto import tqdm

from .._errors import CelljepaError
from .._io import waiting_lock, write_json_atomic
from ..eval.verdict import claimable
from .config import RunConfig
from .evaluate import fold_effects
from .pooling import CLAIMS_RULE, pooled_effects
from .tasks import data_fingerprint

CLAIMS_FILE = "claims.json"
CLAIMS_LOCK = ".claims.lock"


def claims_inputs(
    datasets: dict[str, AnnData], jobs, run: RunConfig, *, fingerprints: dict[str, str] | None = None
) -> str:
    """Digest of everything the claims family depends on: the data, the folds and the evaluation settings.

    ``fingerprints`` (dataset id -> :func:`~celljepa.bench.tasks.data_fingerprint`) saves hashing the data again
    when the caller has them. A ``claims.json`` is read back only for the same digest.
    """
    fingerprints = fingerprints or {}
    ids = sorted({job[0] for job in jobs})
    record = {
        "data": {d: fingerprints.get(d) or data_fingerprint(datasets[d]) for d in ids},
        "folds": [[d, split, int(s), fold] for d, split, s, fold in jobs],
        "evaluation": {str(s): dataclasses.asdict(run.evaluation_for(s)) for s in sorted({j[2] for j in jobs})},
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:16]


def claims_family(
    datasets: dict[str, AnnData],
    jobs,
    run: RunConfig,
    *,
    progress: bool = False,
    when: str = "before any model was fitted",
    inputs: str | None = None,
) -> tuple[dict, dict]:
    """The claims family of a run from the data and the splits alone, before any model is fitted.

    Each fold's effect filter (:func:`~celljepa.bench.evaluate.fold_effects`: evaluation space on its training
    cells, E-test and standard error of every test condition) pooled per dataset × split over folds and split
    seeds (:func:`~celljepa.bench.pooling.pooled_effects`); a row with at least ``min_conditions`` conditions
    with an effect is claimable. Returns ``(claims, effects)``: the record written to ``claims.json`` and each
    fold's effect table, keyed ``(dataset, split, split seed, fold)``, which the folds use as they are.
    ``inputs`` is the :func:`claims_inputs` digest (computed here when not given).
    """
    inputs = inputs or claims_inputs(datasets, jobs, run)
    effects: dict = {}
    parts: dict[str, list[pd.DataFrame]] = {}
    for dataset_id, split, s, fold in tqdm(
        jobs, desc="claims family (effect filter)", unit="fold", disable=not progress
    ):
        frame = fold_effects(datasets[dataset_id], fold, run.evaluation_for(s))
        effects[(dataset_id, split, s, fold["fold"])] = frame
        parts.setdefault(f"{dataset_id}/{split}", []).append(frame.reset_index())
    rows = {}
    for key, frames in parts.items():
        flags = pooled_effects(pd.concat(frames, ignore_index=True), effect_alpha=run.evaluation.effect_alpha)
        n = int(flags["has_effect"].sum())
        rows[key] = {"n_test": int(len(flags)), "n_effect": n, "claimable": claimable(n, run.evaluation.min_conditions)}
    return {
        "rule": CLAIMS_RULE,
        "computed": f"from the data and the splits alone, {when}",
        "min_conditions": run.evaluation.min_conditions,
        "inputs": inputs,
        "rows": rows,
    }, effects


def fixed_claims(
    out: Path,
    datasets: dict[str, AnnData],
    jobs,
    run: RunConfig,
    *,
    progress: bool = False,
    when: str = "before any model was fitted",
    fingerprints: dict[str, str] | None = None,
) -> tuple[dict, dict]:
    """The run's claims family, computed once: ``OUT/claims.json`` read back, or computed and written.

    The file is read back when it was computed from the same inputs (:func:`claims_inputs`: data, folds,
    evaluation settings), so a restarted run whose folds are all finished does not run the effect filter again;
    a file from other inputs (another run in the same folder) is replaced. A file written by a celljepa version
    that recorded no inputs is read back as it is (the pooled rows are still checked against it by
    :func:`check_claims`). Fold tasks started together (a Slurm array) take turns on ``OUT/.claims.lock``
    (:func:`~celljepa._io.waiting_lock`): the first computes the family with :func:`claims_family` and writes it
    atomically, the others wait and read it. Returns ``(claims, effects)``; ``effects`` is empty when the family
    was read back (a fold that still has to be scored then computes its own effect filter, data only).
    """
    path = Path(out) / CLAIMS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    inputs = claims_inputs(datasets, jobs, run, fingerprints=fingerprints)
    with waiting_lock(path.parent / CLAIMS_LOCK):
        if path.is_file():
            old = json.loads(path.read_text(encoding="utf-8"))
            if old.get("inputs", inputs) == inputs:
                return old, {}
        claims, effects = claims_family(datasets, jobs, run, progress=progress, when=when, inputs=inputs)
        write_json_atomic(path, claims)
        return claims, effects


def check_claims(claims: dict, combined: dict) -> None:
    """The pooled verdict rows must rest on the claims family computed before fitting (the filter is data only)."""
    for key, m in combined.items():
        want = claims["rows"].get(key, {}).get("n_effect")
        if want is not None and want != m["n_effect_conditions"]:
            raise CelljepaError(
                f"{key}: {m['n_effect_conditions']} conditions with an effect after fitting, {want} "
                "before: the effect filter must not depend on the methods. This is a bug; please "
                "report it with the run folder."
            )
