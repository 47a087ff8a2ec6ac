"""Markdown reports and metrics.json files in the layout of evaluation.md."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import pandas as pd

_NAMES = {"edistance": "E-distance ↓", "mse": "MSE ↓", "cosine_distance": "cos dist ↓",
          "delta_pearson": "Δ Pearson ↑", "delta_pearson_top20_de": "Δ Pearson top-20 DE ↑",
          "top1": "top-1 ↑", "mrr": "MRR ↑"}


def _fmt(x: float, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def ci_cell(stat: Mapping) -> str:
    """``mean [low, high]``."""
    return f"{_fmt(stat['mean'])} [{_fmt(stat['ci_low'])}, {_fmt(stat['ci_high'])}]"


def methods_table(metrics: Mapping, metric_names: Iterable[str] | None = None) -> str:
    """Markdown table: one row per method, ``mean [95% CI]`` per metric; the best baseline marked."""
    names = list(metric_names or metrics["metric_higher_is_better"].keys())
    head = "| method | " + " | ".join(_NAMES.get(n, n) for n in names) + " |"
    sep = "|---|" + "---|" * len(names)
    rows = []
    for m, stats in metrics["methods"].items():
        label = f"**{m}** (best baseline)" if m == metrics.get("best_baseline") else m
        rows.append(f"| {label} | " + " | ".join(ci_cell(stats[n]) for n in names) + " |")
    return "\n".join([head, sep, *rows])


def comparisons_table(metrics: Mapping, metric_names: Iterable[str] | None = None) -> str:
    """Markdown table of paired bootstrap differences against the best baseline, with verdicts."""
    names = list(metric_names or metrics["metric_higher_is_better"].keys())
    higher = metrics["metric_higher_is_better"]
    head = "| comparison | " + " | ".join(_NAMES.get(n, n) for n in names) + " |"
    sep = "|---|" + "---|" * len(names)
    rows = []
    for label, comp in metrics["comparisons"].items():
        cells = []
        for n in names:
            d = comp[n]
            if d["n"] == 0 or math.isnan(d["diff"]):
                cells.append("n/a")
                continue
            if d["ci_low"] > 0 or d["ci_high"] < 0:
                better = (d["diff"] > 0) == higher[n]
                verdict = "better" if better else "worse"
            else:
                verdict = "no difference"
            cells.append(f"{_fmt(d['diff'])} [{_fmt(d['ci_low'])}, {_fmt(d['ci_high'])}] {verdict}")
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join([head, sep, *rows]) if rows else "(one method only)"


def dataset_summary(obs: pd.DataFrame, n_genes: int) -> str:
    """One markdown line: cells, genes, perturbations, conditions, contexts."""
    pert = obs[~obs["is_control"].to_numpy(dtype=bool)]
    n_cond = pert.groupby(["context_id", "perturbation_id"], observed=True).ngroups
    return (f"{len(obs):,} cells × {n_genes:,} genes; {pert['perturbation_id'].nunique()} perturbations, "
            f"{n_cond} (context, perturbation) conditions, {obs['context_id'].nunique()} contexts, "
            f"{int(obs['is_control'].sum()):,} control cells.")


HELD_OUT = {"S1_unseen_perturbation": "perturbations (every context)",
             "S2_unseen_context": "whole contexts (their controls are inputs)",
             "S3_unseen_combo": "combinations whose singles are seen"}


def split_summary(fold: Mapping) -> str:
    """Markdown lines describing what a fold holds out and its group and cell counts."""
    lines = [f"- Split `{fold['split_name']}`, fold {fold['fold']} of {fold['n_folds']}"
             f"{' (pilot)' if fold.get('pilot') else ''}, seed {fold['seed']}: held out "
             f"{HELD_OUT.get(fold['split_name'], 'groups')}.",
             f"- Groups: {len(fold['train_groups'])} train, {len(fold['val_groups'])} validation, "
             f"{len(fold['test_groups'])} test ({', '.join(fold['test_groups'][:12])}"
             f"{', ...' if len(fold['test_groups']) > 12 else ''}).",
             f"- Cells: {len(fold['train_cells']):,} train, {len(fold['val_cells']):,} validation, "
             f"{len(fold['test_cells']):,} test."]
    return "\n".join(lines)


def verdict_lines(metrics: Mapping) -> list[str]:
    """Plain sentences: which methods beat the best baseline on the primary metric (CI excludes 0)."""
    primary = metrics["primary_metric"]
    out = []
    for label, comp in metrics["comparisons"].items():
        d = comp[primary]
        if d["n"] == 0:
            continue
        if d["ci_high"] < 0:
            out.append(f"- {label}: lower {primary} (better), diff {_fmt(d['diff'])} "
                       f"[{_fmt(d['ci_low'])}, {_fmt(d['ci_high'])}], n = {d['n']} conditions.")
        elif d["ci_low"] > 0:
            out.append(f"- {label}: higher {primary} (worse), diff {_fmt(d['diff'])} "
                       f"[{_fmt(d['ci_low'])}, {_fmt(d['ci_high'])}], n = {d['n']} conditions.")
        else:
            out.append(f"- {label}: no difference on {primary} (CI [{_fmt(d['ci_low'])}, {_fmt(d['ci_high'])}] "
                       f"includes 0), n = {d['n']} conditions.")
    return out
