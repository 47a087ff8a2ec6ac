"""A cross-dataset holdout's ``holdout.md``, and its rows: elsewhere vs own encoder, embedding transfer."""

from __future__ import annotations

from collections.abc import Mapping

from ._cells import plural, verdict_sentence


def _others_outcome(d: Mapping) -> str:
    """``helps`` / ``hurts`` / ``no detectable difference`` / ``not claimable`` from a labelled comparison."""
    return {"wins": "helps", "loses": "hurts"}.get(d.get("outcome"), d.get("outcome", "undetermined"))


def _effect_mean(metrics: Mapping, method: str) -> float:
    """Mean test E-distance of a method over the conditions with an effect (all conditions in older runs)."""
    stats = metrics["methods"][method]
    return stats.get("edistance_effect", stats["edistance"])["mean"]


def holdout_rows(result: Mapping) -> list[dict]:
    """One row per held-out split and JEPA model: the encoder from elsewhere vs the dataset's own."""
    rows = []
    for split, m in result["prediction"].items():
        comparator = m.get("comparator", m.get("best_baseline"))
        for kind, d in m["others_vs_self"].items():
            name = f"jepa_{kind}"
            rows.append(
                {
                    "holdout": result["holdout"],
                    "pretrained_on": "+".join(result["pretrained_on"]),
                    "split": split,
                    "model": name,
                    "n": d["n"],
                    "edistance_others": _effect_mean(m, f"{name}_others"),
                    "edistance_self": _effect_mean(m, f"{name}_self"),
                    "comparator": comparator,
                    "edistance_comparator": _effect_mean(m, comparator),
                    "diff": d["diff"],
                    "ci_low": d["ci_low"],
                    "ci_high": d["ci_high"],
                    "p": d.get("p"),
                    "p_holm": d.get("p_holm"),
                    "outcome": _others_outcome(d),
                    "verdict": m.get("verdict", {}).get("outcome"),
                }
            )
    return rows


def transfer_rows(result: Mapping) -> list[dict]:
    """The kNN accuracy per label on the three embeddings of the held-out dataset."""
    rows = []
    for label, by in result["transfer"]["knn"].items():
        if "skipped" in by:
            continue
        rows.append(
            {
                "holdout": result["holdout"],
                "label": label,
                "n_classes": by["X_pca_self"]["n_classes"],
                **{k: by[k]["accuracy"] for k in ("X_jepa_others", "X_jepa_self", "X_pca_self")},
            }
        )
    return rows


def holdout_markdown(result: Mapping) -> str:
    """``holdout.md``: the two questions of a holdout run, as tables.

    Parameters
    ----------
    result
        The holdout run's result, as ``holdout.json`` holds it (``celljepa.bench.holdout.holdout_run`` returns it).

    Returns
    -------
    str
        The text of ``holdout.md``.
    """
    lines = [
        f"# Cross-dataset holdout: {result['holdout']}",
        "",
        f"Encoder pretrained on {', '.join(result['pretrained_on'])} (never a cell of {result['holdout']}); "
        f"feature set `{result['feature_set']['id']}` ({result['genes_present_in_holdout']} of "
        f"{plural(result['feature_set']['n_genes'], 'gene')} measured in {result['holdout']}). Wall time "
        f"{result['wall_time_s']:.0f} s.",
        "",
        "## (a) Embedding transfer: kNN accuracy of labels in the held-out dataset",
        "",
        "| label | classes | JEPA pretrained elsewhere | JEPA on this dataset alone | PCA on this dataset |",
        "|---|---|---|---|---|",
    ]
    for r in transfer_rows(result):
        lines.append(
            f"| {r['label']} | {r['n_classes']} | {r['X_jepa_others']:.3f} | {r['X_jepa_self']:.3f} | "
            f"{r['X_pca_self']:.3f} |"
        )
    lines += [
        "",
        "## (b) Perturbation prediction inside the held-out dataset",
        "",
        f"Split seeds {result.get('split_seeds', [result.get('seed')])}, model seeds "
        f"{result.get('model_seeds', [result.get('seed')])}; mean test E-distance (evaluation space, lower is "
        "better) on the conditions with a detectable effect. elsewhere − own is paired over those "
        "conditions (hierarchical 95% CI, sign-flip p, Holm over the claimable rows of this run); *helps* / "
        "*hurts* need the CI to exclude 0 and Holm p < 0.05; otherwise *no detectable difference*; fewer "
        "than 10 conditions: *not claimable*. The comparator is the non-JEPA method with the best "
        "out-of-sample validation score.",
        "",
        "| split | model | n | encoder from elsewhere | own encoder | comparator (validation) | elsewhere − own "
        "[95% CI] | p (Holm) | more data | primary vs comparator |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in holdout_rows(result):
        p = "n/a" if r["p_holm"] is None else f"{r['p_holm']:.2g}"
        lines.append(
            f"| {r['split']} | {r['model']} | {r['n']} | {r['edistance_others']:.3f} | "
            f"{r['edistance_self']:.3f} | {r['comparator']} {r['edistance_comparator']:.3f} | "
            f"{r['diff']:+.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] | {p} | {r['outcome']} | "
            f"{r['verdict'] or '–'} |"
        )
    for split, m in result["prediction"].items():
        if m.get("verdict"):
            lines += ["", "- " + verdict_sentence(f"{result['holdout']} {split} (encoder from elsewhere)", m)]
    return "\n".join(lines) + "\n"
