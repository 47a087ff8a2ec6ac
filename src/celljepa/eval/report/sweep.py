"""A sweep's ``ablation.md``: validation (what a configuration is chosen on), the choice, test, encoders."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ._cells import plural


def _seeds_word(seeds) -> str:
    """``split seed`` or ``split seeds``, by how many are listed."""
    return "split seed" if len(list(seeds)) == 1 else "split seeds"


def _fmt_sd(values: list[float]) -> str:
    if not values:
        return "–"
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" if v.size > 1 else f"{v[0]:.3f}"


def _validation_markdown(grid: Mapping, validation: list[Mapping]) -> list[str]:
    if not validation:
        return []
    split_seeds, reference, ablations = grid["split_seeds"], grid["reference"], list(grid["ablations"])
    lines = [
        "## Validation (what a configuration is chosen on)",
        "",
        f"Validation conditions of {_seeds_word(split_seeds)} {', '.join(map(str, split_seeds))} (each fold's "
        "validation "
        "perturbations; never a test condition), E-distance in the fold's evaluation space averaged over the "
        "model seeds, mean [95% bootstrap CI]; differences are paired over the same validation conditions "
        "(below 0: the JEPA model is closer to the observed cells).",
        "",
        "| dataset / split | ablation | n val | jepa_set | pca_set | comparator | jepa_set − pca_set | "
        f"jepa_set − comparator | jepa_set − {reference}'s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(m):
        return f"{m['edistance']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]" if m else "–"

    def diff(d):
        return f"{d['diff']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]" if d else "–"

    for r in sorted(
        validation,
        key=lambda r: (r["dataset_split"], ablations.index(r["ablation"]) if r["ablation"] in ablations else 0),
    ):
        m = r["methods"]
        comp = r["comparator"]
        lines.append(
            f"| {r['dataset_split']} | {r['ablation']} (seeds {', '.join(map(str, r['model_seeds']))}) | "
            f"{r['n_validation']} | {cell(m.get('jepa_set'))} | "
            f"{cell(m.get('pca_set'))} | {comp} {cell(m.get(comp))} | {diff(r.get('jepa_set_vs_pca_twin'))} | "
            f"{diff(r.get('jepa_set_vs_comparator'))} | {diff(r.get('jepa_set_vs_reference'))} |"
        )
    return lines + [""]


def _spread_markdown(grid: Mapping, validation: list[Mapping]) -> list[str]:
    """Each model seed's mean validation E-distance and their SD (how reliably a model trains)."""
    rows = [r for r in validation if any(m.get("seed_sd") is not None for m in r["methods"].values())]
    if not rows:
        return []
    ablations = list(grid["ablations"])
    lines = [
        "## Model-seed spread on validation (how reliably the models train)",
        "",
        "Each model seed's mean validation E-distance over the same validation conditions, and their standard "
        "deviation over the model seeds.",
        "",
        "| dataset / split | ablation | jepa_set per seed | jepa_set SD | pca_set per seed | pca_set SD |",
        "|---|---|---|---|---|---|",
    ]

    def cells(m):
        if not m or m.get("seed_sd") is None:
            return "–", "–"
        per = " / ".join(f"{m['seed_means'][k]:.3f}" for k in sorted(m["seed_means"], key=int))
        return per, f"{m['seed_sd']:.4f}"

    for r in sorted(
        rows, key=lambda r: (r["dataset_split"], ablations.index(r["ablation"]) if r["ablation"] in ablations else 0)
    ):
        js, jsd = cells(r["methods"].get("jepa_set"))
        ps, psd = cells(r["methods"].get("pca_set"))
        lines.append(f"| {r['dataset_split']} | {r['ablation']} | {js} | {jsd} | {ps} | {psd} |")
    return lines + [""]


def _choice_markdown(choice: Mapping | None) -> list[str]:
    if not choice:
        return []
    lines = [f"**Choice on validation** (rule: {choice['rule']}): **{choice['chosen']}**.", ""]
    for a, v in choice["ablations"].items():
        if v["complete"] and "lower_sd" in v:  # the seed-spread rule
            lines.append(
                f"- {a}: seed SD lower on {len(v['lower_sd'])} of {v['of']} "
                f"({', '.join(v['lower_sd']) or 'none'}); mean higher by more than its seed SD on "
                f"{', '.join(v['worse_mean']) or 'none'}"
            )
        elif not v["complete"]:
            lines.append(
                f"- {a}: incomplete ({v['dataset_splits']} of {plural(v['of'], 'dataset/split')} with every model seed)"
            )
        else:
            lines.append(
                f"- {a}: lower mean on {v['lower_mean']} of {v['of']}; CI below 0 on "
                f"{', '.join(v['better_ci']) or 'none'}; above 0 on {', '.join(v['worse_ci']) or 'none'}"
            )
    return lines + [""]


def ablation_markdown(
    grid: Mapping,
    rows: list[Mapping],
    missing: list[Mapping],
    validation: list[Mapping] | None = None,
    choice: Mapping | None = None,
) -> str:
    """The markdown of a sweep (its ``ablation.md``), from the rows ``celljepa.bench.sweep`` collects.

    Parameters
    ----------
    grid
        The grid as plain data: ``source`` (the grid file), ``ablations`` (names, in the grid's order; the first
        is the ``reference``), ``reference``, ``seeds`` (model seeds), ``split_seeds`` and ``max_folds``.
    rows
        One test row per finished ``(ablation, seed)`` and dataset/split (``ablation.json``'s ``rows``).
    missing
        The missing or failed tasks (``index``, ``ablation``, ``seed``, ``state``, ``folder``).
    validation
        The validation rows (what a configuration is chosen on); None or empty: no validation section.
    choice
        The choice on validation (its rule, the verdict per ablation and the configuration chosen), or None.

    Returns
    -------
    str
        The text of ``ablation.md``.
    """
    keys = list(dict.fromkeys(r["dataset_split"] for r in rows))
    abls = list(grid["ablations"])
    max_folds = grid["max_folds"]
    lines = [
        "# Ablation table",
        "",
        f"Grid `{grid['source']}`: ablations {', '.join(abls)} × model seeds {list(grid['seeds'])}; "
        f"{_seeds_word(grid['split_seeds'])} {', '.join(map(str, grid['split_seeds']))}; "
        f"{'all folds' if max_folds is None else 'first ' + plural(max_folds, 'fold')} "
        "of each split. Cells: mean ± sd over seeds of the mean test E-distance (evaluation space, lower is "
        "better). The baselines do not depend on the JEPA seed, so their column is one number; the "
        "comparator is the non-JEPA method with the best validation score.",
        "",
        *_validation_markdown(grid, validation or []),
        *_spread_markdown(grid, validation or []),
        *_choice_markdown(choice),
        "## Test (reported, never used for a choice)",
        "",
        "| dataset / split | comparator | " + " | ".join(f"{a}: set | {a}: prototype" for a in abls) + " |",
        "|---|---|" + "---|---|" * len(abls),
    ]
    for key in keys:
        sel = [r for r in rows if r["dataset_split"] == key]
        base = sel[0]
        cells = []
        for a in abls:
            ra = [r for r in sel if r["ablation"] == a]
            cells += [
                _fmt_sd([r["jepa_set"] for r in ra if "jepa_set" in r]),
                _fmt_sd([r["jepa_prototype"] for r in ra if "jepa_prototype" in r]),
            ]
        lines.append(f"| {key} | {base['comparator']} {base['comparator_edistance']:.3f} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Encoders: effective rank (mean over folds and seeds) and collapsed folds",
        "",
        "| dataset / split | " + " | ".join(abls) + " |",
        "|---|" + "---|" * len(abls),
    ]
    for key in keys:
        cells = []
        for a in abls:
            ra = [r for r in rows if r["dataset_split"] == key and r["ablation"] == a and "effective_rank" in r]
            cells.append(
                f"{np.mean([r['effective_rank'] for r in ra]):.1f} "
                f"({sum(r['collapsed_folds'] for r in ra)}/{sum(r['folds'] for r in ra)} collapsed)"
                if ra
                else "–"
            )
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Every task: jepa_set − comparator, E-distance, paired 95% CI",
        "",
        "The verdict of each task follows the report rule (conditions with an effect; Holm over the task's "
        "claimable rows, n ≥ 10; fewer conditions: *not claimable*).",
        "",
        "| ablation | seed | dataset / split | n | jepa_set | diff [95% CI] (all conditions) | verdict (n) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ci = r.get("jepa_set_diff_ci")
        diff = f"{r['jepa_set_diff']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "–"
        verdict = f"{r['verdict']} ({r.get('verdict_n', '?')})" if r.get("verdict") else "–"
        lines.append(
            f"| {r['ablation']} | {r['seed']} | {r['dataset_split']} | {r['n']} | "
            f"{r.get('jepa_set', float('nan')):.3f} | {diff} | {verdict} |"
        )
    if missing:
        lines += ["", "## Missing or failed tasks", ""]
        lines += [
            f"- task {m['index']} ({m['ablation']}, seed {m['seed']}): {m['state']}; no metrics_combined.json "
            f"in `{m['folder']}`"
            for m in missing
        ]
    return "\n".join(lines) + "\n"
