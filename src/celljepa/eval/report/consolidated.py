"""A consolidated report's ``report.md`` (``celljepa report``): the merged runs, as their ``report.json`` holds them.

:func:`render_markdown` reads only the report dict (``celljepa.bench.consolidate`` gathers it from the run
folders), so ``render_markdown(json.load(report.json))`` gives ``report.md`` again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ..verdict import label as verdict_label
from ._cells import _NAMES, _fmt, _p, ci_cell, diff_cell, plural, twin_sentence

#: Metrics of the per-dataset tables, in column order (those a run holds are shown).
TABLE_METRICS = ("edistance", "mse", "delta_pearson", "delta_pearson_top20_de", "top1", "mrr")


def _secs(x) -> str:
    if x is None:
        return "–"
    x = float(x)
    return f"{x:,.0f}" if x >= 100 else (f"{x:.1f}" if x >= 1 else f"{x:.2f}")


def _runs_section(report: dict) -> list[str]:
    lines = [
        "## Runs merged",
        "",
        "| run | kind | path | contents | celljepa | commit | date | wall time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["runs"]:
        v = r["versions"]
        commit = v.get("commit") or v.get("git_commit") or "–"
        date = f"{r['date']} ({r['date_source']})" if r["date"] else "–"
        wall = f"{_secs(r['wall_time_s'])} s" if r["wall_time_s"] is not None else "not recorded"
        lines.append(
            f"| {r['label']} | {r['kind']} | `{r['path']}` | {r['summary']} | {v.get('celljepa', '–')} | "
            f"{commit} | {date} | {wall} |"
        )
    return lines + [""]


def _verdict_section(report: dict) -> list[str]:
    rows = report["verdicts"]
    lines = [
        "## Verdict per dataset × split: the pre-registered JEPA model against the comparator chosen on validation",
        "",
    ]
    if not rows:
        return lines + ["No run holds a verdict: the runs merged have no JEPA models (baseline-only runs).", ""]
    lines += [
        "Per run and dataset × split: the primary model named in the run config against the non-JEPA method "
        "(baselines, the PCA twin, peers) with the best out-of-sample *validation* score, on the test "
        "conditions with a detectable effect (n; conditions without one in parentheses), E-distance (the "
        "primary metric). Every number, Holm p and label is the run's own: each run corrects over its own "
        "claims family (rows with n ≥ 10 conditions with an effect), so merging runs changes no verdict. "
        "*wins* / *loses*: Holm p < 0.05 and the CI on the same side of 0; otherwise *no detectable "
        "difference*; *not claimable*: n < 10, described only. The last columns ask whether the JEPA space "
        "itself helps: the same comparison against the PCA twin `pca_set`. A dataset × split present in "
        "several runs has one row per run; where a run repeats another's test on the same folds and seeds "
        "with more methods in the pool (peers added with `--reuse`), the other row is *superseded*: shown, "
        "not a claim. Rows written under earlier protocols (*old protocol*, *protocol v2*) are shown, never a "
        "claim.",
        "",
        "| run | dataset | split | seeds (split × model) | n (no effect) | comparator | E-dist comparator | "
        "primary | E-dist primary | primary per model seed | Δ E-distance [95% CI] | p | Holm p | verdict | "
        "JEPA − PCA twin [95% CI] | Holm p | JEPA space vs PCA |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v in rows:
        seeds = f"{len(v['split_seeds'] or [0])} × {len(v['model_seeds'] or [0])}" if v.get("split_seeds") else "–"
        if v.get("provisional"):
            seeds += " (provisional)"
        twin = v["vs_pca_twin"] or {}
        current = not v["old_protocol"] and not v.get("superseded_by")
        said = verdict_label(v["edistance"]) if current else v["outcome"]
        per_seed = " / ".join(_fmt(x) for x in (v.get("seed_means") or {}).get(v["model"], {}).values()) or "–"
        lines.append(
            f"| {v['run']} | {v['dataset_id']} | {v['split']} | {seeds} | {v['n']} "
            f"({v['n_without_effect'] if v['n_without_effect'] is not None else '–'}) | {v['baseline']} | "
            f"{_fmt(v['baseline_edistance'])} | {v['model']} | {_fmt(v['model_edistance'])} | {per_seed} | "
            f"{diff_cell(v['edistance'])} | {_p(v['edistance'].get('p'))} | "
            f"{_p(v['edistance'].get('p_holm')) if current else '–'} | **{said}** | {diff_cell(twin)} | "
            f"{_p(twin.get('p_holm')) if current else '–'} | "
            f"{(verdict_label(twin) if current else twin.get('outcome', '–')) if twin else '–'} |"
        )
    counts = {
        o: sum(v["outcome"] == o for v in rows)
        for o in (
            "wins",
            "loses",
            "no detectable difference",
            "not claimable",
            "undetermined",
            "old protocol",
            "protocol v2",
            "superseded",
        )
    }
    outcomes = ", ".join(f"{n} {o}" for o, n in counts.items() if n)
    lines += ["", f"Outcomes: {outcomes} ({plural(len(rows), 'row')}).", ""]
    lines += ["In words, per dataset × split: does the JEPA space beat its PCA twin?", ""]
    for v in rows:
        if v.get("superseded_by"):
            lines.append(
                f"- {v['dataset_id']} {v['split']} ({v['run']}): superseded by {v['superseded_by']} "
                "(the same test with more methods in the pool), not a claim."
            )
            continue
        lines.append(
            f"- {v['dataset_id']} {v['split']} ({v['run']}): " + twin_sentence({"vs_pca_twin": v["vs_pca_twin"]})
            if not v["old_protocol"]
            else f"- {v['dataset_id']} {v['split']} ({v['run']}): {v['outcome']}, not a claim."
        )
    lines.append("")
    if report["figures"]:
        lines += [f"![where JEPA helps]({report['figures'][0]})", ""]
        old = [v["old_protocol"] for v in report["verdicts"]]
        if any(old) and not all(old):
            lines += ["The figure leaves out the rows of the old protocol (no claim).", ""]
    return lines


def _peers_section(report: dict) -> list[str]:
    rows = report.get("peers") or []
    if not rows:
        return []
    lines = [
        "## Peers: published tools on the same folds",
        "",
        "Each peer trained with its own code on the same cells as the refitted baselines (training + "
        "validation conditions), with its own early stopping inside them, its predicted cells projected into "
        "the fold's evaluation space and scored like every other method (mean over the test conditions it "
        "predicts, hierarchical 95% CI; a condition a peer cannot predict is n/a and counts against its "
        "coverage). Compute: the peer's fits and predictions summed over the folds. The "
        "last columns are the split's verdict (as the verdict table above states it): the primary JEPA model "
        "against the best non-JEPA method (baselines, PCA twin and these peers) chosen on validation. A run "
        "superseded by another holding the same peers on the same folds is not repeated here.",
        "",
        "| run | dataset | split | peer | coverage | E-distance [95% CI] | Pearson-Δ [95% CI] | "
        "compute s (folds) | comparator | primary − comparator [95% CI] | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cov = f"{r['coverage']:.0%}" if r.get("coverage") is not None else "–"
        comp = f"**{r['comparator']}**" if r["comparator"] == r["peer"] else str(r["comparator"])
        lines.append(
            f"| {r['run']} | {r['dataset_id']} | {r['split']} | {r['peer']} | {cov} | "
            f"{ci_cell(r['edistance']) if r.get('edistance') else '–'} | "
            f"{ci_cell(r['delta_pearson']) if r.get('delta_pearson') else '–'} | "
            f"{_secs(r['compute_s'])} ({r['timed_folds']}) | {comp} | "
            f"{diff_cell(r['verdict_edistance']) if r.get('verdict_edistance') else '–'} | "
            f"{r['verdict'] or 'no JEPA model'} |"
        )
    return lines + [""]


def _methods_table(entry: Mapping) -> str:
    shown = [k for k in TABLE_METRICS if any(m.get(k, {}).get("mean") is not None for m in entry["methods"])]
    lines = [
        "| method | role | " + " | ".join(_NAMES.get(k, k) for k in shown) + " |",
        "|---|---|" + "---|" * len(shown),
    ]
    for m in entry["methods"]:
        name = f"**{m['method']}** (comparator)" if m.get("comparator", m.get("best_baseline")) else m["method"]
        if m.get("coverage") is not None and m["coverage"] < 0.5:  # near-0 coverage: not posing as a baseline
            name += f" (covers {m['coverage']:.0%} of test conditions)"
        cells = [ci_cell(m[k]) if k in m else "–" for k in shown]
        lines.append(f"| {name} | {m['role']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _datasets_section(report: dict) -> list[str]:
    lines = [
        "## Results per dataset",
        "",
        "Every method of every split: mean over the test conditions with its 95% CI as the run computed it "
        "(protocol v3: hierarchical bootstrap over split seeds or folds, model seeds and conditions; earlier "
        "runs: conditions only), in the split's evaluation space. E-distance is the primary metric. "
        "Metrics no method has a value for (e.g. retrieval with a single test condition per fold) are left out.",
        "",
    ]
    for dataset, entries in report["datasets"].items():
        lines += [f"### {dataset}", ""]
        for e in entries:
            verdict = f"; verdict **{e['verdict']}**" if e["verdict"] else "; no JEPA model"
            how = (
                "best baseline on the test mean, old protocol: not a claim"
                if e.get("old_protocol")
                else "chosen on validation"
            )
            lines += [
                f"#### {e['split']} · run {e['run']} ({e['folds']}, "
                f"{plural(e['n_test_conditions'], 'test condition')})",
                "",
                f"Comparator `{e.get('comparator', e.get('best_baseline'))}` ({how}){verdict}.",
                "",
                _methods_table(e),
                "",
            ]
    return lines


def _holdout_section(report: dict) -> list[str]:
    rows = report["holdout"]
    if not rows:
        return []
    lines = [
        "## Cross-dataset holdout",
        "",
        "Trained on some datasets, scored on a dataset none of them contains: the primary model on the encoder "
        "pretrained elsewhere against the comparator chosen on validation (its verdict row is above).",
        "",
        "| run | trained on | tested on | split | n | comparator | primary | Δ E-distance [95% CI] | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for h in rows:
        lines.append(
            f"| {h['run']} | {', '.join(h['train_datasets'])} | {h['test_dataset']} | {h['split'] or '–'} | "
            f"{h['n']} | {h.get('comparator', h.get('best_baseline'))} | {h['model'] or '–'} | "
            f"{diff_cell(h['edistance'])} | {h['outcome'] or '–'} |"
        )
    pairs = [h for h in rows if h.get("others_vs_self")]
    if pairs:
        lines += [
            "",
            "Does more, different data help? The transition models on the encoder pretrained on the other "
            "datasets minus the same models on the held-out dataset's own encoder (mean test E-distance on the "
            "conditions with an effect, paired 95% CI, sign-flip p Holm-corrected with the claims above; "
            "*helps* needs the CI below 0, Holm p < 0.05 and n ≥ 10).",
            "",
            "| tested on | split | n | elsewhere − own, jepa_set [95% CI] | p (Holm) | outcome | "
            "elsewhere − own, jepa_prototype | p (Holm) | outcome |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for h in pairs:
            o = h["others_vs_self"]
            st, pr = o.get("set", {}), o.get("prototype", {})
            lines.append(
                f"| {h['test_dataset']} | {h['split']} | {st.get('n', '–')} | {diff_cell(st)} | "
                f"{_p(st.get('p_holm'))} | {st.get('outcome', '–')} | {diff_cell(pr)} | "
                f"{_p(pr.get('p_holm'))} | {pr.get('outcome', '–')} |"
            )
    transfer = {h["test_dataset"]: h["transfer"] for h in rows if h.get("transfer")}
    if transfer:
        lines += [
            "",
            "Embedding transfer: kNN accuracy of the held-out dataset's labels on the encoder pretrained "
            "elsewhere, on a JEPA pretrained on the dataset alone, and on its own PCA.",
            "",
            "| tested on | label | classes | JEPA elsewhere | JEPA alone | PCA alone |",
            "|---|---|---|---|---|---|",
        ]
        for test, knn in transfer.items():
            for label, by in knn.items():
                if "skipped" in by:
                    continue
                lines.append(
                    f"| {test} | {label} | {by['X_pca_self']['n_classes']} | "
                    f"{by['X_jepa_others']['accuracy']:.3f} | {by['X_jepa_self']['accuracy']:.3f} | "
                    f"{by['X_pca_self']['accuracy']:.3f} |"
                )
    return lines + [""]


def _ablation_section(report: dict) -> list[str]:
    rows = report["ablations"]
    if not rows and not report["ablations_missing"]:
        return []
    lines = [
        "## Ablations",
        "",
        "The rows of each sweep's `ablation.json`: per ablation, model seed and dataset × split, the mean test "
        "E-distance of the JEPA set and prototype models [95% CI], their paired difference with the comparator "
        "chosen on validation [95% CI, all conditions], the task's verdict (the report rule within the task) "
        "and the encoders' mean effective rank and collapsed folds.",
        "",
        "| run | ablation | seed | dataset / split | n | comparator | jepa_set | jepa_set − comparator | "
        "jepa_prototype | jepa_prototype − comparator | verdict | effective rank | collapsed folds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def pair(r, name):
        mean, ci = r.get(name), r.get(f"{name}_ci")
        if mean is None:
            return "–", "–"
        cell = f"{_fmt(mean)} [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else _fmt(mean)
        dci = r.get(f"{name}_diff_ci")
        diff = f"{_fmt(r[f'{name}_diff'])} [{_fmt(dci[0])}, {_fmt(dci[1])}]" if dci else "–"
        return cell, diff

    for r in rows:
        s, sd = pair(r, "jepa_set")
        p, pd_ = pair(r, "jepa_prototype")
        collapsed = f"{r['collapsed_folds']}/{r['folds']}" if "collapsed_folds" in r else "–"
        head = " | ".join(str(r.get(k, "–")) for k in ("run", "ablation", "seed", "dataset_split", "n"))
        comp = r.get("comparator", r.get("best_baseline", "–"))
        comp_e = r.get("comparator_edistance", r.get("baseline_edistance"))
        verdict = r.get("verdict", "–") if "comparator" in r else "old protocol"
        lines.append(
            f"| {head} | {comp} {_fmt(comp_e)} | {s} | "
            f"{sd} | {p} | {pd_} | "
            f"{verdict} | {_fmt(r.get('effective_rank'), 1)} | {collapsed} |"
        )
    if report["ablations_missing"]:
        lines += ["", "Missing or failed sweep tasks:", ""]
        lines += [
            f"- {m['run']}: task {m.get('index')} ({m.get('ablation')}, seed {m.get('seed')}): "
            f"{m.get('state', 'missing')}"
            for m in report["ablations_missing"]
        ]
    return lines + [""]


def step_columns(folds: Iterable[Mapping]) -> list[str]:
    """The timing columns of the compute tables, in order.

    The evaluation space and JEPA pretraining first, then every other step in the order the folds name them,
    ``total_s`` last.

    Parameters
    ----------
    folds
        Timed folds, each with its ``timings`` (step → seconds).

    Returns
    -------
    list[str]
        The timing keys.
    """
    keys = list(dict.fromkeys(k for f in folds for k in f["timings"]))
    head = [k for k in ("evaluation_space_s", "jepa_pretrain_s") if k in keys]
    return head + [k for k in keys if k not in head and k != "total_s"] + (["total_s"] if "total_s" in keys else [])


def _compute_section(report: dict) -> list[str]:
    c = report["compute"]
    t = c["totals"]
    lines = [
        "## Compute",
        "",
        f"Total wall time {_secs(t['wall_time_s'])} s over {plural(t['runs_timed'], 'run')} (the runs' own wall times; "
        f"timed folds {_secs(t['fold_total_s'])} s)."
        + (f" Not recorded for: {', '.join(t['runs_without_wall_time'])}." if t["runs_without_wall_time"] else ""),
        "",
        "| run | kind | wall time s | timed folds |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['run']} | {r['kind']} | {_secs(r['wall_time_s'])} | {r['timed_folds']} |" for r in c["runs"]]
    if t["by_step_s"]:
        lines += [
            "",
            "Summed over every timed fold (seconds; a method's time is its fit and prediction on the fold):",
            "",
            "| step | seconds |",
            "|---|---|",
        ]
        lines += [f"| {k.removesuffix('_s')} | {_secs(v)} |" for k, v in t["by_step_s"].items()]
    if c["folds"]:
        cols = step_columns(c["folds"])
        lines += [
            "",
            "Per fold (seconds): evaluation space, JEPA pretraining, each method's fit + predict, total.",
            "",
            "| run | dataset | split | fold | " + " | ".join(k.removesuffix("_s") for k in cols) + " |",
            "|---|---|---|---|" + "---|" * len(cols),
        ]
        for f in c["folds"]:
            where = f["run"] if f["task"] is None else f"{f['run']} · {f['task']}"
            lines.append(
                f"| {where} | {f['dataset_id']} | {f['split']} | {f['fold']} | "
                + " | ".join(_secs(f["timings"].get(k)) for k in cols)
                + " |"
            )
    keys = [
        "celljepa",
        "commit",
        "python",
        "torch",
        "anndata",
        "scanpy",
        "scikit-learn",
        "kernel_backend",
        "device",
        "machine",
        "cpus",
    ]
    lines += [
        "",
        "Machine and versions as recorded by each run:",
        "",
        "| run | " + " | ".join(keys) + " | other |",
        "|---|" + "---|" * (len(keys) + 1),
    ]
    for r in c["runs"]:
        v = r["versions"]
        other = ", ".join(f"{k} {v[k]}" for k in v if k not in keys) or "–"
        lines.append(f"| {r['run']} | " + " | ".join(str(v.get(k, "–")) for k in keys) + f" | {other} |")
    return lines + [""]


def render_markdown(report: Mapping) -> str:
    """The markdown of a consolidated report (the dict ``celljepa.bench.consolidate.consolidate`` returns).

    The report dict is plain JSON: the one ``report.json`` holds gives the same text.

    Parameters
    ----------
    report
        A consolidated report.

    Returns
    -------
    str
        report.md's text.
    """
    lines = [
        f"# {report['title']}",
        "",
        f"{plural(len(report['runs']), 'run')} merged by `celljepa report` (celljepa {report['celljepa']}). Every "
        "number and every label is copied from the runs' own metrics files, which follow the evaluation protocol "
        "(`docs/evaluation.md`): one evaluation space per split fitted on training cells, predictions are sets "
        "of cells, E-distance is the primary metric (lower is better), hierarchical bootstrap CIs (split seeds "
        "or folds, model seeds, conditions), sign-flip p-values Holm-corrected within each run's own claims "
        "family. Nothing is corrected again here: a run added to the report changes no verdict. `report.json` "
        "holds the same numbers.",
        "",
    ]
    for section in (
        _runs_section,
        _verdict_section,
        _peers_section,
        _datasets_section,
        _holdout_section,
        _ablation_section,
        _compute_section,
    ):
        lines += section(report)
    return "\n".join(lines).rstrip("\n") + "\n"
