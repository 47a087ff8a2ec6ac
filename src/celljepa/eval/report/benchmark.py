"""A benchmark run's combined ``report.md``: the verdict, every dataset × split, every fold, the compute."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from ..verdict import MIN_CONDITIONS
from ._cells import (
    HELD_OUT,
    comparator_table,
    comparisons_table,
    effect_methods_table,
    effects_lines,
    figure_lines,
    methods_table,
    never_left_cell,
    plural,
    seeds_lines,
    stuck_counts,
    stuck_sentence,
    verdict_sentences,
    verdict_table,
)

_EVERY_FOLD = "## Every fold (mean E-distance per method)"


def _jepa_section(embeddings: Mapping[str, Mapping]) -> str:
    def acc(r, label, emb):
        entry = r["knn"].get(label, {})
        return f"{entry[emb]['accuracy']:.3f} ± {entry[emb]['accuracy_sd']:.3f}" if emb in entry else "–"

    lines = [
        "## JEPA embeddings",
        "",
        "A CellJEPA encoder pretrained on every cell of each dataset (no labels; `<dataset>/jepa/`). kNN "
        "accuracy (k = 15, stratified 5-fold, mean ± sd over folds) on X_jepa and on 50 PCs of the same genes; "
        "an embedding counts as collapsed below 25% effective rank or with a dimension of std < 1e-3.",
        "",
        "| dataset | steps | effective rank | min std | mean cosine | collapsed | kNN cell_type JEPA | PCA | "
        "kNN perturbation JEPA | PCA | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for dataset_id, r in embeddings.items():
        d = r["diagnostics"]
        steps = r["config"]["train"]["max_steps"]
        lines.append(
            f"| {dataset_id} | {steps} | {d['effective_rank']:.1f} / {d['dims']} | "
            f"{d['std_min']:.3f} | {d['mean_cosine']:.3f} | {'yes' if r['collapsed'] else 'no'} | "
            f"{acc(r, 'cell_type', 'X_jepa')} | {acc(r, 'cell_type', 'X_pca')} | "
            f"{acc(r, 'perturbation_id', 'X_jepa')} | {acc(r, 'perturbation_id', 'X_pca')} | "
            f"{r['train_seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n\n"


def _encoder_table(per_fold: list[Mapping]) -> str:
    rows = {}
    for r in per_fold:
        if "encoder" in r:
            rows.setdefault((r["dataset_id"], r["split"]), []).append(r)
    lines = [
        "| dataset | split | folds | steps | effective rank (mean, min) | min std (min) | collapsed folds | "
        "pretrain s / fold | transition s / fold |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (d, split), rs in rows.items():
        enc = [r["encoder"] for r in rs]
        ranks = [e["effective_rank"] for e in enc]
        pre = sum(r["timings"].get("jepa_pretrain_s", 0.0) for r in rs) / len(rs)
        trans = sum(v for r in rs for k, v in r["timings"].items() if k.startswith("jepa_") and k != "jepa_pretrain_s")
        lines.append(
            f"| {d} | {split} | {len(rs)} | {enc[0]['steps']} | {sum(ranks) / len(ranks):.1f}, "
            f"{min(ranks):.1f} / {enc[0]['dims']} | {min(e['std_min'] for e in enc):.3f} | "
            f"{sum(e['collapsed'] for e in enc)} | {pre:.1f} | {trans / len(rs):.1f} |"
        )
    return "\n".join(lines)


def _stuck_notes(combined: Mapping[str, Mapping], per_fold: list[Mapping]) -> dict:
    """``"dataset/split"`` → the folds where both sides of each verdict row never left their start."""
    out = {}
    for key, m in combined.items():
        if "verdict" not in m:
            continue
        v = m["verdict"]
        flags = [r.get("never_left_start") for r in per_fold if f"{r['dataset_id']}/{r['split']}" == key]
        out[key] = {"comparator": stuck_counts(flags, v["model"], v["baseline"])}
        twin = (v.get("vs_pca_twin") or {}).get("twin")
        if twin:
            out[key]["twin"] = stuck_counts(flags, v["model"], twin)
    return out


def _stuck_sentences(combined: Mapping[str, Mapping], notes: Mapping[str, Mapping]) -> list[str]:
    out = []
    for key, n in notes.items():
        v = combined[key]["verdict"]
        label = f"{combined[key]['dataset_id']} {combined[key]['split']}"
        twin = (v.get("vs_pca_twin") or {}).get("twin")
        for other, what, counts in (
            (v["baseline"], "primary − comparator", n.get("comparator")),
            (twin, "primary − PCA twin", n.get("twin")),
        ):
            line = stuck_sentence(label, v["model"], other, what, counts) if other else None
            if line:
                out.append(line)
    return out


def verdict_preamble(combined: Mapping[str, Mapping], *, family: int | None = None) -> list[str]:
    """The rule of the verdict, in words (shared by benchmark and consolidated reports)."""
    first = next((m for m in combined.values() if "verdict" in m), {})
    primary = first.get("primary", "jepa_set")
    jepa = primary_is_jepa(combined)
    pool = (
        "non-JEPA method (every baseline, the PCA twin `pca_set`, every peer)"
        if jepa
        else "best of the other methods of the pool (every baseline, the PCA twin when JEPA models run, every peer "
        "and every other user model; the primary itself leaves the pool)"
    )
    return [
        f"The primary model `{primary}` was named in the run config before the run. Its comparator is the "
        f"{pool} with the lowest mean E-distance on "
        "*validation* conditions it did not tune on (cross-fitted: tuned on one part of the validation "
        "conditions, scored on the other; the same rule for every method), pooled over folds and split seeds; "
        "test scores choose nothing. The verdict uses the test conditions whose observed cells differ "
        "detectably from their controls (E-test and standard error; data only); n counts them, the others are "
        "in parentheses and shown apart. A condition's score is its mean over model seeds and split seeds; every "
        "CI is a hierarchical bootstrap (split seeds or folds, model seeds, conditions; 10,000 resamples). "
        f"**Claims family**: only rows with n ≥ {MIN_CONDITIONS} can carry a claim (known from the data before "
        "any model is fitted); Holm correction runs over the claimable rows of this run"
        + (f" ({plural(family, 'comparison')} on E-distance)" if family is not None else "")
        + ", one family per metric. *wins* / *loses*: Holm-adjusted sign-flip p < 0.05 and the CI on the same "
        "side of 0; otherwise *no detectable difference* (nothing is called a tie: equality would need an "
        f"equivalence test); rows with n < {MIN_CONDITIONS} are *not claimable* and described only. E-distance "
        "is the pre-registered primary metric; MSE and Pearson-Δ have verdict columns of their own."
        + (
            " The JEPA space itself is judged against `pca_set`, the same set model on the evaluation space's PCA."
            if jepa
            else ""
        )
    ]


def primary_is_jepa(combined: Mapping[str, Mapping]) -> bool:
    """Whether the run's primary model is a JEPA model (the default) rather than a user model or a baseline."""
    first = next((m for m in combined.values() if "verdict" in m), {})
    primary = first.get("primary", "jepa_set")
    return first.get("roles", {}).get(primary, "jepa" if primary.startswith("jepa_") else "baseline") == "jepa"


def final_lines(final: Mapping | None) -> list[str]:
    """What a final run froze and what it held out, in words."""
    if not final:
        return []
    return [
        "## Final verdict: frozen before its first fold",
        "",
        f"This run's configuration was frozen before its first fold (`final.json`): code at commit "
        f"`{final['commit'][:12]}` (a clean checkout), configuration digest `{final['config_digest'][:12]}` "
        f"(plan, split seeds {final['config']['split_seeds']}, model seeds {final['config']['model_seeds']}, "
        f"evaluation, encoder, transition models, peers, data fingerprints), frozen {final['frozen']}. "
        f"Held out: {final['held_out']}. Not held out: {final['not_held_out']}",
        "",
    ]


def benchmark_report(record: Mapping) -> str:
    """The markdown of a benchmark run (its ``report.md``).

    Every input is plain data that ``celljepa.bench.run`` gathered after pooling the folds (the combined
    metrics as written to ``metrics_combined.json``); nothing is read from disk here.

    Parameters
    ----------
    record
        ``title`` (None: the default title), ``plan`` (dataset → {split: folds}), ``datasets`` (dataset → its
        one-line summary, :func:`~celljepa.eval.report.dataset_summary`), ``combined`` (``"dataset/split"`` →
        pooled metrics), ``per_fold`` (one row per fold: ids, ``n_test_conditions``, ``comparator``,
        ``edistance_<method>``, ``timings``, optional ``encoder``), ``transductive``, ``final`` (the
        ``final.json`` record or None), ``jepa`` and ``transition`` (the configs as dicts; ``jepa`` None for a
        baselines-only run), ``jepa_embeddings`` (dataset → its whole-dataset encoder's evaluation, may be
        empty), ``elapsed_s``, ``cpus``, ``celljepa`` (the version) and ``figures`` (paths relative to the run
        folder).

    Returns
    -------
    str
        The text of ``report.md``.
    """
    combined, per_fold = record["combined"], record["per_fold"]
    jepa = record.get("jepa")
    head = record.get("title") or (
        "celljepa benchmark: baselines and JEPA transition models"
        if jepa is not None
        else "celljepa benchmark: baselines"
    )
    first = next(iter(combined.values()), {})
    lines = [
        f"# {head}",
        "",
        "Every number follows the evaluation protocol (`docs/evaluation.md`): one evaluation space per "
        "split and split seed (HVGs + PCA on training cells), predictions are sets of cells, "
        "E-distance is the primary metric (lower is better), hierarchical bootstrap 95% CIs (split seeds or "
        "folds, model seeds, conditions; 10,000 resamples), "
        f"split seeds {first.get('split_seeds')}, model seeds {first.get('model_seeds') or 'as configured'}, "
        + (
            "transductive (held-out contexts' unlabeled controls were fitted on by every method)."
            if record.get("transductive")
            else "inductive (no cell of a held-out group is fitted on; a held-out context's control cells are "
            "used only as the inputs its predictions start from)."
        ),
        "",
    ]
    lines += final_lines(record.get("final"))
    if any(m.get("provisional") for m in combined.values()):
        lines += [
            f"**Provisional verdict**: {first.get('provisional')}. Rerun with `--split-seeds 0,1,2 "
            "--model-seeds 0,1,2` for a headline result.",
            "",
        ]
    if any("verdict" in m for m in combined.values()):
        family = first.get("holm_family_size")
        notes = _stuck_notes(combined, per_fold)
        stuck_lines = _stuck_sentences(combined, notes)
        lines += [
            "## Verdict: the pre-registered "
            + ("JEPA model" if primary_is_jepa(combined) else f"primary model `{first.get('primary')}`")
            + " against the comparator chosen on validation",
            "",
            *verdict_preamble(combined, family=family),
            "",
            verdict_table(combined, notes),
            "",
            *verdict_sentences(combined),
            "",
            *(
                [
                    "Verdict rows whose two sides both never left their start (early stopping kept the initial "
                    "parameters, step 0) in some folds; every fold's models are in the fold table below:",
                    "",
                    *stuck_lines,
                    "",
                ]
                if stuck_lines
                else []
            ),
        ]
        if any("encoder" in f for f in per_fold):
            lines += [
                "JEPA encoders (one per fold and model seed, pretrained on the cells the methods may fit on; "
                "collapse = effective rank < 25% of the dimension or a dimension with std < 1e-3):",
                "",
                _encoder_table(per_fold),
                "",
            ]
    for dataset_id, splits in record["plan"].items():
        lines += [f"## {dataset_id}", "", record["datasets"][dataset_id], ""]
        for split in splits:
            m = combined[f"{dataset_id}/{split}"]
            lines += [
                f"### {split} ({plural(m['n_folds'], 'fold')} × "
                f"{plural(len(m.get('split_seeds', [0])), 'split seed')}, "
                f"{plural(m['n_test_conditions'], 'test condition')})",
                "",
                f"Held out: {HELD_OUT.get(split, 'groups')}; every group is a test group in exactly one "
                "fold per split seed, validation groups are carved from the training groups.",
                "",
                methods_table(m),
                "",
                comparator_table(m),
                "",
                *effects_lines(m),
                "",
                effect_methods_table(m),
                "",
                f"Paired comparisons against the comparator (`{m['comparator']}`), all test conditions, descriptive:",
                "",
                comparisons_table(m, ["edistance", "delta_pearson", "mse"]),
                "",
                *(
                    ["Every split seed (conditions with an effect; the verdict pools them):", ""] + seeds_lines(m)
                    if m.get("seeds")
                    else []
                ),
            ]
    lines += [_EVERY_FOLD, ""]
    table = pd.DataFrame(per_fold)
    cols = [c for c in table.columns if c.startswith("edistance_")]
    flagged = any(r.get("never_left_start") for r in per_fold)
    if flagged:
        lines += [
            "Last column (*never left its start*): the trained models whose kept model is the untrained one "
            "(step 0). Early stopping on the validation conditions kept their initial parameters, so they predict "
            "with their starting map (no change or the mean training shift).",
            "",
        ]
    lines.append(
        "| dataset | split | split seed | fold | n | comparator | "
        + " | ".join(c[len("edistance_") :] for c in cols)
        + (" | never left its start |" if flagged else " |")
    )
    lines.append("|---|---|---|---|---|---|" + "---|" * (len(cols) + flagged))
    for i, r in table.iterrows():
        cells = " | ".join("n/a" if pd.isna(r[c]) else f"{r[c]:.3f}" for c in cols)
        lines.append(
            f"| {r['dataset_id']} | {r['split']} | {r['split_seed']} | {r['fold']} | "
            f"{r['n_test_conditions']} | {r['comparator']} | {cells} |"
            + (f" {never_left_cell(per_fold[i].get('never_left_start'))} |" if flagged else "")
        )
    lines += [
        "",
        "## Compute",
        "",
        f"{plural(len(per_fold), 'fold')} in {record['elapsed_s']:.1f} s on CPU "
        f"({plural(record['cpus'], 'core')}), celljepa {record['celljepa']}. Per-fold runs (config.json, metrics.json, "
        "per_condition.csv, validation.csv, report.md, figures) are in "
        "`<dataset>/<split>/split_seed<s>/fold<k>/`; the pooled conditions behind each verdict are in "
        "`<dataset>/<split>/per_condition.csv`.",
        "",
    ]
    if jepa is not None:
        pre = sum(r["timings"].get("jepa_pretrain_s", 0.0) for r in per_fold)
        trans = sum(
            v
            for r in per_fold
            for k, v in r["timings"].items()
            if k.startswith(("jepa_", "pca_")) and k != "jepa_pretrain_s"
        )
        enc = next((r["encoder"] for r in per_fold if "encoder" in r), None)
        lines += [
            f"JEPA pretraining {pre:.0f} s and transition training {trans:.0f} s of the total"
            + (f"; encoder {plural(enc['n_parameters'], 'parameter', sep=',')}" if enc else "")
            + ".",
            "",
            "JEPA config (`jepa`) and transition config (`transition`) are in every fold's `config.json`:",
            "",
            "```",
            f"jepa: {jepa}",
            f"transition: {record.get('transition')}",
            "```",
            "",
        ]
    lines += figure_lines(record.get("figures") or [])
    report = "\n".join(lines)
    if record.get("jepa_embeddings"):
        report = report.replace(_EVERY_FOLD, _jepa_section(record["jepa_embeddings"]) + _EVERY_FOLD)
    return report
