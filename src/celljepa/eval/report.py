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


def verdict_sentence(label: str, metrics: Mapping) -> str:
    """One sentence: whether the best JEPA model wins, ties or loses against the best baseline."""
    v = metrics["verdict"]
    e, p = v["edistance"], v["delta_pearson"]
    word = {"wins": "beats", "loses": "loses to", "ties": "ties with", "undetermined": "cannot be compared with"}
    text = (f"On {label}, `{v['model']}` {word[v['outcome']]} `{v['baseline']}`: E-distance difference "
            f"{_fmt(e['diff'])} [{_fmt(e['ci_low'])}, {_fmt(e['ci_high'])}], Δ Pearson difference {_fmt(p['diff'])} "
            f"[{_fmt(p['ci_low'])}, {_fmt(p['ci_high'])}], n = {v['n']} test conditions.")
    twin = v.get("vs_pca_twin")
    if twin:
        if twin["ci_high"] < 0:
            how = "better than"
        elif twin["ci_low"] > 0:
            how = "worse than"
        else:
            how = "no different from"
        text += (f" Against the same set model on PCA (`{twin['twin']}`) it is {how} it: E-distance difference "
                 f"{_fmt(twin['diff'])} [{_fmt(twin['ci_low'])}, {_fmt(twin['ci_high'])}].")
    return text


def verdict_table(combined: Mapping[str, Mapping]) -> str:
    """Markdown table of the verdicts of every dataset × split that has one."""
    lines = ["| dataset | split | n | best baseline | E-dist baseline | best JEPA model | E-dist JEPA | "
             "Δ E-distance [95% CI] | Δ Δ Pearson [95% CI] | verdict | JEPA − PCA twin, E-distance [95% CI] |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in combined.values():
        if "verdict" not in m:
            continue
        v = m["verdict"]
        e, p = v["edistance"], v["delta_pearson"]
        lines.append(f"| {m['dataset_id']} | {m['split']} | {v['n']} | {v['baseline']} | "
                     f"{_fmt(m['methods'][v['baseline']]['edistance']['mean'])} | {v['model']} | "
                     f"{_fmt(m['methods'][v['model']]['edistance']['mean'])} | {_fmt(e['diff'])} "
                     f"[{_fmt(e['ci_low'])}, {_fmt(e['ci_high'])}] | {_fmt(p['diff'])} [{_fmt(p['ci_low'])}, "
                     f"{_fmt(p['ci_high'])}] | **{v['outcome']}** | {_twin_cell(v.get('vs_pca_twin'))} |")
    return "\n".join(lines)


def _twin_cell(twin) -> str:
    if not twin:
        return "–"
    return f"{_fmt(twin['diff'])} [{_fmt(twin['ci_low'])}, {_fmt(twin['ci_high'])}]"


def verdict_sentences(combined: Mapping[str, Mapping]) -> list[str]:
    """One bullet per dataset × split with a verdict."""
    out = []
    for m in combined.values():
        if "verdict" in m:
            out.append("- " + verdict_sentence(f"{m['dataset_id']} {m['split']}", m))
    return out
