"""Markdown reports and metrics.json files in the layout of evaluation.md."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import pandas as pd

_NAMES = {"edistance": "E-distance ↓", "mse": "MSE ↓", "cosine_distance": "cos dist ↓",
          "delta_pearson": "Δ Pearson ↑", "delta_pearson_top20_de": "Δ Pearson top-20 DE ↑",
          "top1": "top-1 ↑", "mrr": "MRR ↑"}
_ROLE = {"baseline": "baseline", "pca_twin": "PCA twin", "peer": "peer", "jepa": "JEPA"}


def _fmt(x: float, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def _p(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.2g}" if x >= 1e-3 else f"{x:.1e}"


def ci_cell(stat: Mapping) -> str:
    """``mean [low, high]``."""
    return f"{_fmt(stat['mean'])} [{_fmt(stat['ci_low'])}, {_fmt(stat['ci_high'])}]"


def diff_cell(d: Mapping | None) -> str:
    """``diff [low, high]`` of a paired comparison, or ``–``."""
    if not d:
        return "–"
    if d.get("diff") is None:
        return "n/a"
    return f"{_fmt(d['diff'])} [{_fmt(d['ci_low'])}, {_fmt(d['ci_high'])}]"


def comparator_of(metrics: Mapping) -> str | None:
    """The comparator of a metrics dict (older runs: their ``best_baseline``)."""
    return metrics.get("comparator", metrics.get("best_baseline"))


def _label(metrics: Mapping, method: str) -> str:
    if method == comparator_of(metrics):
        return f"**{method}** (comparator)"
    if method == metrics.get("primary") and "verdict" in metrics:
        return f"**{method}** (primary)"
    return method


def _coverage_note(metrics: Mapping, method: str) -> str:
    cov = metrics.get("coverage", {}).get(method)
    entry = metrics.get("comparator_choice", {}).get("validation", {}).get(method, {})
    if cov is not None and cov < 0.5:
        return f" (covers {cov:.0%} of test conditions)"
    if entry.get("why", "").startswith("covers"):
        return " (low coverage)"
    return ""


def methods_table(metrics: Mapping, metric_names: Iterable[str] | None = None) -> str:
    """Markdown table: one row per method, its role, ``mean [95% CI]`` per metric; comparator and primary marked."""
    names = list(metric_names or metrics["metric_higher_is_better"].keys())
    roles = metrics.get("roles", {})
    head = "| method | role | " + " | ".join(_NAMES.get(n, n) for n in names) + " |"
    sep = "|---|---|" + "---|" * len(names)
    rows = []
    for m, stats in metrics["methods"].items():
        rows.append(f"| {_label(metrics, m)}{_coverage_note(metrics, m)} | {_ROLE.get(roles.get(m), '–')} | "
                    + " | ".join(ci_cell(stats[n]) for n in names) + " |")
    return "\n".join([head, sep, *rows])


def comparisons_table(metrics: Mapping, metric_names: Iterable[str] | None = None) -> str:
    """Markdown table of paired bootstrap differences against the comparator (all test conditions; descriptive)."""
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
                verdict = "CI: better" if better else "CI: worse"
            else:
                verdict = "CI includes 0"
            cells.append(f"{_fmt(d['diff'])} [{_fmt(d['ci_low'])}, {_fmt(d['ci_high'])}] {verdict}")
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join([head, sep, *rows]) if rows else "(one method only)"


def comparator_table(metrics: Mapping) -> str:
    """Markdown table of the comparator choice: every method's validation E-distance, coverage and eligibility."""
    choice = metrics.get("comparator_choice")
    if not choice:
        return ""
    lines = [f"Comparator: **`{choice['comparator']}`**: {choice['reason']}. Rule: {choice['rule']}; test scores "
             "choose nothing.", "",
             "| method | role | validation E-distance ↓ | validation conditions | how the score was obtained | "
             "coverage (validation) | eligible |",
             "|---|---|---|---|---|---|---|"]
    ranked = sorted(choice["validation"].items(),
                    key=lambda kv: (kv[1]["edistance"] is None, kv[1]["edistance"] or 0.0))
    for m, e in ranked:
        cov = "–" if e.get("coverage") is None else f"{e['coverage']:.0%}"
        elig = "yes" if e["eligible"] else f"no: {e['why']}"
        lines.append(f"| {m} | {_ROLE.get(e.get('role'), '–')} | {_fmt(e['edistance'])} | {e['n']} | "
                     f"{e.get('selection', '–')} | {cov} | {elig} |")
    return "\n".join(lines)


def effects_lines(metrics: Mapping) -> list[str]:
    """Sentences on the effect filter and the noise floor."""
    n, k = metrics.get("n_test_conditions", 0), metrics.get("n_effect_conditions")
    if k is None:
        return []
    out = [f"Effect filter: {k} of {n} test conditions differ detectably from their controls (E-test, "
           "Holm–Sidak adjusted p < 0.05) and enter the verdict."]
    without = metrics.get("conditions_without_effect", [])
    if without:
        shown = ", ".join(f"`{c}`" for c in without[:15]) + (", ..." if len(without) > 15 else "")
        out[0] += f" Without a detectable effect (shown apart, not in the verdict): {shown}."
    nf = metrics.get("noise_floor")
    if nf and nf.get("mean") is not None:
        out.append(f"Noise floor: split halves of the same observed cells differ by E-distance {_fmt(nf['mean'])} "
                   f"on average (sd {_fmt(nf.get('sd'))} over conditions); differences of that size are sampling.")
    return out


def effect_methods_table(metrics: Mapping) -> str:
    """Mean E-distance of every method on the conditions with and without a detectable effect."""
    lines = ["| method | E-distance, conditions with an effect | all conditions |", "|---|---|---|"]
    for m, stats in metrics["methods"].items():
        eff = stats.get("edistance_effect")
        lines.append(f"| {_label(metrics, m)} | {ci_cell(eff) if eff else '–'} | {ci_cell(stats['edistance'])} |")
    return "\n".join(lines)


def dataset_summary(obs: pd.DataFrame, n_genes: int) -> str:
    """One markdown line: cells, genes, perturbations, conditions, contexts."""
    pert = obs[~obs["is_control"].to_numpy(dtype=bool)]
    n_cond = pert.groupby(["context_id", "perturbation_id"], observed=True).ngroups
    return (f"{len(obs):,} cells × {n_genes:,} genes; {pert['perturbation_id'].nunique()} perturbations, "
            f"{n_cond} (context, perturbation) conditions, {obs['context_id'].nunique()} contexts, "
            f"{int(obs['is_control'].sum()):,} control cells.")


HELD_OUT = {"S1_unseen_perturbation": "perturbations (every context)",
            "S2_unseen_context": "whole contexts (their controls are inputs only)",
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
    """Plain sentences per comparison against the comparator on the primary metric (descriptive CIs)."""
    primary = metrics["primary_metric"]
    out = []
    for label, comp in metrics["comparisons"].items():
        d = comp[primary]
        if d["n"] == 0:
            continue
        if d["ci_high"] < 0:
            how = f"lower {primary} (CI below 0)"
        elif d["ci_low"] > 0:
            how = f"higher {primary} (CI above 0)"
        else:
            how = f"CI of the {primary} difference includes 0"
        out.append(f"- {label}: {how}, diff {_fmt(d['diff'])} [{_fmt(d['ci_low'])}, {_fmt(d['ci_high'])}], "
                   f"n = {d['n']} conditions.")
    return out


_WORD = {"wins": "beats", "loses": "loses to", "ties": "ties with", "undetermined": "cannot be compared with",
         "insufficient evidence": "has insufficient evidence against"}


def _claim(d: Mapping) -> str:
    return (f"{diff_cell(d)}, sign-flip p = {_p(d.get('p'))}, Holm p = {_p(d.get('p_holm'))}, n = {d.get('n', 0)}")


def twin_sentence(v: Mapping) -> str:
    """Whether the JEPA space beats its PCA twin, in words."""
    twin = v.get("vs_pca_twin")
    if not twin:
        return "No PCA twin was scored, so nothing here is attributable to the JEPA space."
    o = twin.get("outcome", "undetermined")
    space = {"wins": "the JEPA space **beats** its PCA twin",
             "loses": "the JEPA space is **worse** than its PCA twin",
             "ties": "the JEPA space **does not beat** its PCA twin (tie)",
             "insufficient evidence": "there are **too few conditions** to say whether the JEPA space beats its "
                                      "PCA twin",
             "undetermined": "the JEPA space and its PCA twin cannot be compared"}[o]
    return f"Against `{twin['twin']}` (the same model on PCA), {space}: {_claim(twin)}."


def verdict_sentence(label: str, metrics: Mapping) -> str:
    """One sentence: whether the primary JEPA model wins, ties or loses against the validation-chosen comparator."""
    v = metrics["verdict"]
    e = v["edistance"]
    text = (f"On {label}, `{v['model']}` {_WORD[v['outcome']]} `{v['baseline']}` (chosen on validation): "
            f"E-distance difference {_claim(e)} conditions with an effect; Δ Pearson difference "
            f"{diff_cell(v['delta_pearson'])}.")
    return text + " " + twin_sentence(v)


def verdict_table(combined: Mapping[str, Mapping]) -> str:
    """Markdown table of the verdicts of every dataset × split that has one."""
    lines = ["| dataset | split | n (no effect) | comparator (validation) | E-dist comparator* | primary | "
             "E-dist primary* | Δ E-distance [95% CI] | p (Holm) | verdict | JEPA − PCA twin [95% CI] | p (Holm) | "
             "JEPA space vs PCA |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in combined.values():
        if "verdict" not in m:
            continue
        v = m["verdict"]
        e = v["edistance"]
        twin = v.get("vs_pca_twin") or {}
        means = v.get("means") or {}
        lines.append(f"| {m['dataset_id']} | {m['split']} | {v['n']} ({v.get('n_without_effect', 0)}) | "
                     f"{v['baseline']} | {_fmt(means.get('baseline'))} | {v['model']} | {_fmt(means.get('model'))} | "
                     f"{diff_cell(e)} | {_p(e.get('p_holm'))} | **{v['outcome']}** | {diff_cell(twin)} | "
                     f"{_p(twin.get('p_holm'))} | {twin.get('outcome', '–')} |")
    lines += ["", "\\* mean over the n conditions with a detectable effect (the methods tables below also give the "
              "mean over all test conditions)."]
    return "\n".join(lines)


def verdict_sentences(combined: Mapping[str, Mapping]) -> list[str]:
    """One bullet per dataset × split with a verdict."""
    out = []
    for m in combined.values():
        if "verdict" in m:
            out.append("- " + verdict_sentence(f"{m['dataset_id']} {m['split']}", m))
    return out


def seeds_lines(metrics: Mapping) -> list[str]:
    """Every split seed's numbers (primary − comparator, primary − twin) and the model-seed spread."""
    seeds = metrics.get("seeds")
    if not seeds:
        return []
    lines = []
    split = seeds.get("split_seeds", {})
    if split:
        lines += ["| split seed | n | primary − comparator [95% CI] | p | primary − PCA twin [95% CI] | p |",
                  "|---|---|---|---|---|---|"]
        for s, e in split.items():
            c, t = e.get("vs_comparator") or {}, e.get("vs_pca_twin") or {}
            lines.append(f"| {s} | {e['n']} | {diff_cell(c)} | {_p(c.get('p'))} | {diff_cell(t)} | {_p(t.get('p'))} |")
        lines.append("")
    ms = seeds.get("model_seeds", {})
    if ms:
        lines += ["Mean test E-distance per model seed (all conditions, every split seed):", "",
                  "| method | " + " | ".join(f"seed {k}" for k in next(iter(ms.values()))["per_seed"]) + " | sd |",
                  "|---|" + "---|" * (len(next(iter(ms.values()))["per_seed"]) + 1)]
        for method, e in ms.items():
            lines.append(f"| {method} | " + " | ".join(_fmt(x) for x in e["per_seed"].values())
                         + f" | {_fmt(e['sd'])} |")
        lines.append("")
    return lines
