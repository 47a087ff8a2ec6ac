"""Choosing an encoder change without labels: split-half retrieval of held-out cells."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..._errors import InputError
from .datasets import EmbeddingDataset, log_normalize
from .report import _ci, _signed_ci
from .representations import _JEPA
from .tasks import resumed

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
    from ...data.counts import binomial_split
    from ...eval.embedding import collapse_diagnostics, split_half_retrieval

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
        payload = {"data": ds.fingerprint(), "candidate": cand, "seed": seed, "heldout": HELDOUT_FRACTION}
        result, _ = resumed(
            out / "selection" / ds.name / name / f"seed{seed}.json",
            payload,
            lambda ds=ds, name=name, cand=cand, seed=seed: _selection_task(ds, name, cand, seed),
        )
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
