"""The shared pieces of every report.

Number formats, CI and difference cells, the method, comparator, comparison and verdict tables and sentences,
the dataset and split summaries.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from numbers import Real
from pathlib import PurePosixPath

import pandas as pd

from ..verdict import label as verdict_label

_NAMES = {
    "edistance": "E-distance ↓",
    "mse": "MSE ↓",
    "cosine_distance": "cos dist ↓",
    "delta_pearson": "Δ Pearson ↑",
    "delta_pearson_top20_de": "Δ Pearson top-20 DE ↑",
    "top1": "top-1 ↑",
    "mrr": "MRR ↑",
}
_ROLE = {"baseline": "baseline", "pca_twin": "PCA twin", "peer": "peer", "jepa": "JEPA"}


def plural(n, noun: str, plural_form: str | None = None, *, sep: str = "") -> str:
    """``n`` and ``noun``, the noun in its plural unless ``n`` is 1: ``plural(1, "fold")`` is ``"1 fold"``.

    Parameters
    ----------
    n
        The count (an int, or anything whose ``str`` is shown; only the number 1 takes the singular).
    noun
        The singular noun (or noun phrase: ``"test condition"``); the plural adds ``s`` to its last word.
    plural_form
        The plural when it is not ``noun + "s"`` (``plural(2, "split seed")`` needs none; ``"dataset/split"``
        neither; ``plural(3, "class", "classes")``).
    sep
        ``","``: thousands separators (``plural(3375, "cell", sep=",")`` is ``"3,375 cells"``).

    Returns
    -------
    str
        ``"<n> <noun>"``.

    Examples
    --------
    >>> plural(1, "fold"), plural(3, "fold"), plural(0, "context")
    ('1 fold', '3 folds', '0 contexts')
    >>> plural(1, "class", "classes"), plural(2, "class", "classes")
    ('1 class', '2 classes')
    """
    number = isinstance(n, Real) and not isinstance(n, bool)
    count = f"{n:,}" if sep == "," and number else str(n)
    one = number and n == 1
    return f"{count} {noun if one else (plural_form or noun + 's')}"


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


#: What a flagged model is, in words (fold and benchmark reports).
NEVER_LEFT = "never left its start: the kept model is the untrained one (step 0)"


def _seeds_of(entry: Mapping) -> str:
    """`` (model seeds 0, 2 of 3)`` where a method never left its start in some of its model seeds only."""
    if entry.get("all_seeds", True):
        return ""
    seeds = [s for s in entry["model_seeds"] if s is not None]
    return f" (model {'seed' if len(seeds) == 1 else 'seeds'} {', '.join(map(str, seeds))} of {entry['n_seeds']})"


def never_left_cell(flags: Mapping | None) -> str:
    """The methods that never left their start in a fold, for a table cell (``–`` for none)."""
    if not flags:
        return "–"
    return ", ".join(f"{name}{_seeds_of(e)}" for name, e in flags.items())


def never_left_lines(metrics: Mapping) -> list[str]:
    """The fold report's flag: each trained method whose kept model is its starting point, and what that means."""
    flags = metrics.get("never_left_start")
    if not flags:
        return []
    lines = [
        "**Never left its start**: early stopping on the validation conditions kept the initial parameters "
        "(step 0) of these models, so each predicts with its starting map (the start chosen on validation: no "
        "change, or the mean training shift), not with a trained network:",
        "",
    ]
    for name, e in flags.items():
        inits = sorted({str(i) for i in e.get("init", []) if i})
        lines.append(
            f"- `{name}`{_seeds_of(e)} {NEVER_LEFT}" + (f"; start `{'`, `'.join(inits)}`" if inits else "") + "."
        )
    return lines + [""]


def both_stuck(flags: Mapping | None, a: str | None, b: str | None) -> str | None:
    """Whether methods ``a`` and ``b`` both never left their start in one fold.

    ``"all"``: in every model seed; ``"some"``: in some model seeds only; None otherwise (``flags``: the fold's
    ``never_left_start``).
    """
    if not flags or a not in flags or b not in flags:
        return None
    return "all" if flags[a].get("all_seeds", True) and flags[b].get("all_seeds", True) else "some"


def stuck_counts(folds: Iterable[Mapping | None], a: str | None, b: str | None) -> dict:
    """In how many folds methods ``a`` and ``b`` both never left their start.

    ``folds``: each fold's ``never_left_start``. Returns ``{"all": k, "some": j, "folds": n}`` (in every model seed /
    in some model seeds only / folds in all).
    """
    said = [both_stuck(f, a, b) for f in folds]
    return {"all": said.count("all"), "some": said.count("some"), "folds": len(said)}


def _stuck_span(counts: Mapping | None) -> str:
    if not counts or not (counts["all"] or counts["some"]):
        return ""
    k = counts["all"] + counts["some"]
    some = f", {counts['some']} of them in some model seeds only" if counts["some"] else ""
    return f"never left their start in {k} of {plural(counts['folds'], 'fold')}{some}"


def stuck_cell(counts: Mapping | None) -> str:
    """A verdict cell's note: both sides never left their start in some folds (empty when in none)."""
    span = _stuck_span(counts)
    return f" (both sides {span})" if span else ""


def stuck_sentence(label: str, a: str, b: str, what: str, counts: Mapping | None) -> str | None:
    """A sentence on a verdict row whose two sides both never left their start in some folds, or None."""
    span = _stuck_span(counts)
    if not span:
        return None
    return (
        f"- **{label}, {what}**: `{a}` and `{b}` both {span}: early stopping kept both initial models (step 0), "
        "so in those folds the row compares two starting maps (no change or the mean training shift), not "
        "trained models."
    )


def methods_table(metrics: Mapping, metric_names: Iterable[str] | None = None) -> str:
    """Markdown table: one row per method, its role, ``mean [95% CI]`` per metric; comparator and primary marked."""
    names = list(metric_names or metrics["metric_higher_is_better"].keys())
    roles = metrics.get("roles", {})
    head = "| method | role | " + " | ".join(_NAMES.get(n, n) for n in names) + " |"
    sep = "|---|---|" + "---|" * len(names)
    rows = []
    for m, stats in metrics["methods"].items():
        stuck = " (never left its start)" if m in (metrics.get("never_left_start") or {}) else ""
        rows.append(
            f"| {_label(metrics, m)}{_coverage_note(metrics, m)}{stuck} | {_ROLE.get(roles.get(m), '–')} | "
            + " | ".join(ci_cell(stats[n]) for n in names)
            + " |"
        )
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
    lines = [
        f"Comparator: **`{choice['comparator']}`**: {choice['reason']}. Rule: {choice['rule']}; test scores "
        "choose nothing.",
        "",
        "| method | role | validation E-distance ↓ | validation conditions | how the score was obtained | "
        "coverage (validation) | eligible |",
        "|---|---|---|---|---|---|---|",
    ]
    ranked = sorted(
        choice["validation"].items(), key=lambda kv: (kv[1]["edistance"] is None, kv[1]["edistance"] or 0.0)
    )
    for m, e in ranked:
        cov = "–" if e.get("coverage") is None else f"{e['coverage']:.0%}"
        elig = "yes" if e["eligible"] else f"no: {e['why']}"
        lines.append(
            f"| {m} | {_ROLE.get(e.get('role'), '–')} | {_fmt(e['edistance'])} | {e['n']} | "
            f"{e.get('selection', '–')} | {cov} | {elig} |"
        )
    return "\n".join(lines)


def effects_lines(metrics: Mapping) -> list[str]:
    """Sentences on the effect filter: how many conditions enter the verdict and why the others do not."""
    n, k = metrics.get("n_test_conditions", 0), metrics.get("n_effect_conditions")
    if k is None:
        return []
    f = metrics.get("effect_filter") or {}
    out = [
        f"Effect filter: {k} of {plural(n, 'test condition')} {'differs' if k == 1 else 'differ'} detectably from "
        f"{'its' if k == 1 else 'their'} controls and {'enters' if k == 1 else 'enter'} the verdict: "
        "the E-test against the context's controls is significant (Holm–Sidak adjusted p < 0.05; "
        f"{plural(f.get('n_etest', '–'), 'condition')}) and the E-distance to the controls exceeds 2 standard "
        f"errors (split halves; {plural(f.get('n_clears_noise', '–'), 'condition')}). The filter depends on the "
        "data alone."
    ]
    if f.get("effect_se_median") is not None:
        out[0] += (
            f" Median standard error {_fmt(f['effect_se_median'])}; median E-distance / standard error "
            f"{_fmt(f.get('effect_over_se_median'), 1)}."
        )
    without = metrics.get("conditions_without_effect", [])
    if without:
        shown = ", ".join(f"`{c}`" for c in without[:15]) + (", ..." if len(without) > 15 else "")
        out[0] += f" Without a detectable effect (shown apart, not in the verdict): {shown}."
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
    return (
        f"{plural(len(obs), 'cell', sep=',')} × {plural(n_genes, 'gene', sep=',')}; "
        f"{plural(pert['perturbation_id'].nunique(), 'perturbation')}, "
        f"{plural(n_cond, '(context, perturbation) condition')}, {plural(obs['context_id'].nunique(), 'context')}, "
        f"{plural(int(obs['is_control'].sum()), 'control cell', sep=',')}."
    )


HELD_OUT = {
    "S1_unseen_perturbation": "conditions: perturbations unseen as such (every context); a held-out "
    "combination may contain perturbations seen in training",
    "S2_unseen_context": "whole contexts (their control cells are used only as the inputs predictions start from)",
    "S1g_unseen_genes": "genes (perturbation tokens): no token of a test condition is in any training or "
    "validation condition; perturbations mixing held-out and seen tokens are unused",
    "S3_unseen_combo": "combinations whose singles are seen",
}


def held_out_controls(split: str, *, transductive: bool) -> str:
    """One markdown line: what the fold does with the control cells of what it holds out, in plain words.

    Only S2 (unseen contexts) holds control cells out: inductive (the default), a held-out context's control
    cells are only the inputs its predictions start from; ``--transductive`` lets every method alike fit on
    them too (unlabeled).
    """
    if split != "S2_unseen_context":
        return (
            "- Control cells: none held out. Every test condition's context is seen in training; predictions "
            "start from its control cells, which any method may fit on."
        )
    if transductive:
        return (
            "- Held-out contexts' control cells: the inputs predictions start from, and also fitted on (unlabeled) "
            "by every method alike, JEPA pretraining included (transductive, `--transductive`)."
        )
    return (
        "- Held-out contexts' control cells: used only as the inputs predictions start from (inductive): no "
        "method, JEPA pretraining included, fits anything on them."
    )


def split_summary(fold: Mapping) -> str:
    """Markdown lines describing what a fold holds out and its group and cell counts."""
    lines = [
        f"- Split `{fold['split_name']}`, fold {fold['fold']} of {fold['n_folds']}"
        f"{' (pilot)' if fold.get('pilot') else ''}, seed {fold['seed']}: held out "
        f"{HELD_OUT.get(fold['split_name'], 'groups')}.",
        f"- Groups: {len(fold['train_groups'])} train, {len(fold['val_groups'])} validation, "
        f"{len(fold['test_groups'])} test ({', '.join(fold['test_groups'][:12])}"
        f"{', ...' if len(fold['test_groups']) > 12 else ''}).",
        f"- Cells: {len(fold['train_cells']):,} train, {len(fold['val_cells']):,} validation, "
        f"{len(fold['test_cells']):,} test.",
    ]
    unused = fold.get("unused_perturbations")
    if unused:
        lines.append(
            f"- Unused: {plural(len(unused), 'perturbation')} {'mixes' if len(unused) == 1 else 'mix'} held-out "
            "and seen tokens "
            f"({', '.join(unused[:12])}{', ...' if len(unused) > 12 else ''})."
        )
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
        out.append(
            f"- {label}: {how}, diff {_fmt(d['diff'])} [{_fmt(d['ci_low'])}, {_fmt(d['ci_high'])}], "
            f"n = {plural(d['n'], 'condition')}."
        )
    return out


_NAMES_SHORT = {"edistance": "E-distance", "mse": "MSE", "delta_pearson": "Pearson-Δ"}


def _claim(d: Mapping) -> str:
    held = f", Holm p = {_p(d.get('p_holm'))} (family of {d.get('family_size')})" if d.get("p_holm") is not None else ""
    return f"{diff_cell(d)}, sign-flip p = {_p(d.get('p'))}{held}, n = {d.get('n', 0)}"


def _said(d: Mapping) -> str:
    return verdict_label(d)


def twin_sentence(v: Mapping, metric: str = "edistance") -> str:
    """Whether the JEPA space beats its PCA twin on ``metric``, in words."""
    twin = (
        v.get("vs_pca_twin")
        if metric == "edistance"
        else ((v.get("secondary") or {}).get(metric) or {}).get("vs_pca_twin")
    )
    if not twin:
        return "No PCA twin was scored, so nothing here is attributable to the JEPA space."
    o = twin.get("outcome", "undetermined")
    name = _NAMES_SHORT.get(metric, metric)
    space = {
        "wins": f"the JEPA space **beats** its PCA twin on {name}",
        "loses": f"the JEPA space is **worse** than its PCA twin on {name}",
        "no detectable difference": f"the JEPA space shows **no detectable difference** from its PCA twin on {name}",
        "not claimable": f"the row is **not claimable** (n = {plural(twin.get('n', 0), 'condition')} with an effect, "
        f"fewer than 10): {name} difference described only",
        "undetermined": "the JEPA space and its PCA twin cannot be compared",
    }.get(o, o)
    note = " (the unadjusted CI excludes 0)" if _said(twin).endswith("excludes 0)") else ""
    return f"Against `{twin['twin']}` (the same model on PCA), {space}{note}: {_claim(twin)}."


_VERBS = {
    "wins": "beats",
    "loses": "loses to",
    "no detectable difference": "shows no detectable difference from",
    "not claimable": "is not claimable against",
    "undetermined": "cannot be compared with",
}


def verdict_sentence(label: str, metrics: Mapping) -> str:
    """One sentence per verdict metric: the primary JEPA model against the validation-chosen comparator."""
    v = metrics["verdict"]
    e = v["edistance"]
    note = " (the unadjusted CI excludes 0)" if _said(e).endswith("excludes 0)") else ""
    n_note = (
        f" (n = {plural(v['n'], 'condition')} with an effect; claims need 10)" if not v.get("claimable", True) else ""
    )
    text = (
        f"On {label}, `{v['model']}` {_VERBS.get(e.get('outcome'), e.get('outcome'))} `{v['baseline']}` (chosen "
        f"on validation) on E-distance{note}{n_note}: difference {_claim(e)} "
        f"{'condition' if e.get('n', 0) == 1 else 'conditions'} with an effect."
    )
    for metric, rows in (v.get("secondary") or {}).items():
        d = rows["vs_comparator"]
        text += (
            f" {_NAMES_SHORT.get(metric, metric)}: {_said(d)}, {diff_cell(d)}"
            f"{', Holm p = ' + _p(d.get('p_holm')) if d.get('p_holm') is not None else ''}."
        )
    return text + " " + twin_sentence(v)


def _seed_cell(v: Mapping, method: str | None) -> str:
    means = (v.get("seed_means") or {}).get(method) if method else None
    if not means:
        return "–"
    return " / ".join(_fmt(x) for x in means.values())


def verdict_table(combined: Mapping[str, Mapping], stuck: Mapping[str, Mapping] | None = None) -> str:
    """Markdown tables of the verdicts of every dataset × split: E-distance (primary), then MSE and Pearson-Δ.

    ``stuck`` (``"dataset/split"`` → ``{"comparator": counts, "twin": counts}``, :func:`stuck_counts`) notes on
    the E-distance verdict cells the folds where both sides never left their start.
    """
    stuck = stuck or {}
    lines = [
        "| dataset | split | n (no effect) | comparator (validation) | comparator* | primary* | primary per "
        "model seed* | primary − comparator [95% CI] | p | Holm p | verdict (E-distance) | primary − PCA twin "
        "[95% CI] | Holm p | JEPA space vs PCA |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    second = [
        "| dataset | split | MSE: primary − comparator [95% CI] | Holm p | verdict | Pearson-Δ: primary − "
        "comparator [95% CI] | Holm p | verdict | MSE vs PCA twin | Pearson-Δ vs PCA twin |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in combined.values():
        if "verdict" not in m:
            continue
        v = m["verdict"]
        e = v["edistance"]
        twin = v.get("vs_pca_twin") or {}
        means = v.get("means") or {}
        notes = stuck.get(f"{m['dataset_id']}/{m['split']}") or {}
        lines.append(
            f"| {m['dataset_id']} | {m['split']} | {v['n']} ({v.get('n_without_effect', 0)}) | "
            f"{v['baseline']} | {_fmt(means.get('baseline'))} | {_fmt(means.get('model'))} | "
            f"{_seed_cell(v, v['model'])} | {diff_cell(e)} | {_p(e.get('p'))} | {_p(e.get('p_holm'))} | "
            f"**{_said(e)}**{stuck_cell(notes.get('comparator'))} | {diff_cell(twin)} | {_p(twin.get('p_holm'))} | "
            f"{_said(twin) if twin else '–'}{stuck_cell(notes.get('twin')) if twin else ''} |"
        )
        sec = v.get("secondary") or {}
        cells = []
        for metric in ("mse", "delta_pearson"):
            d = (sec.get(metric) or {}).get("vs_comparator") or {}
            cells += [diff_cell(d), _p(d.get("p_holm")), _said(d) if d else "–"]
        for metric in ("mse", "delta_pearson"):
            d = (sec.get(metric) or {}).get("vs_pca_twin") or {}
            cells.append(f"{diff_cell(d)} {_said(d)}" if d else "–")
        second.append(f"| {m['dataset_id']} | {m['split']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "\\* mean E-distance over the n conditions with a detectable effect; per model seed: the mean of "
        "that seed's (condition, split seed) scores, so a condition tested in several split seeds counts once "
        "per split seed, while the pooled mean averages each condition over its split seeds first (a method "
        "without model seeds shows one value). Every CI is the hierarchical bootstrap (split "
        "seeds or folds, model seeds, conditions; 10,000 resamples). Rows with fewer than 10 conditions with an "
        "effect are not claimable and carry no Holm p.",
        "",
        "The same verdict on the secondary metrics (each its own Holm family; Pearson-Δ: higher is better):",
        "",
        *second,
    ]
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
        lines += [
            "| split seed | n | primary − comparator [95% CI] | p | primary − PCA twin [95% CI] | p |",
            "|---|---|---|---|---|---|",
        ]
        for s, e in split.items():
            c, t = e.get("vs_comparator") or {}, e.get("vs_pca_twin") or {}
            lines.append(f"| {s} | {e['n']} | {diff_cell(c)} | {_p(c.get('p'))} | {diff_cell(t)} | {_p(t.get('p'))} |")
        lines.append("")
    ms = seeds.get("model_seeds", {})
    if ms:
        lines += [
            "Mean test E-distance per model seed (all conditions, every split seed):",
            "",
            "| method | " + " | ".join(f"seed {k}" for k in next(iter(ms.values()))["per_seed"]) + " | sd |",
            "|---|" + "---|" * (len(next(iter(ms.values()))["per_seed"]) + 1),
        ]
        for method, e in ms.items():
            lines.append(
                f"| {method} | " + " | ".join(_fmt(x) for x in e["per_seed"].values()) + f" | {_fmt(e['sd'])} |"
            )
        lines.append("")
    return lines


def figure_lines(figures: list[str]) -> list[str]:
    """The ``## Figures`` section: one image per path (relative to the report's folder), or nothing.

    Parameters
    ----------
    figures
        Figure paths relative to the folder of the report, in posix form (``figures/verdict.png``).

    Returns
    -------
    list[str]
        Markdown lines; empty without figures.
    """
    if not figures:
        return []
    return ["## Figures", ""] + [f"![{PurePosixPath(p).stem}]({p})" for p in figures] + [""]
