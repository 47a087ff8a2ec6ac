"""A fold run's ``report.md`` (``eval-baselines``, ``train-transition`` and every fold of a benchmark)."""

from __future__ import annotations

from collections.abc import Mapping

from ..verdict import MIN_CONDITIONS
from ._cells import (
    comparator_table,
    comparisons_table,
    effects_lines,
    figure_lines,
    methods_table,
    split_summary,
    verdict_sentence,
)


def _embedding_space_lines(metrics: Mapping) -> list[str]:
    diag = metrics.get("embedding_space", {}).get("edistance_mean")
    if not diag:
        return []
    cells = ", ".join(f"`{k}` {v:.3f}" for k, v in diag.items())
    return [
        "## Diagnostics in the JEPA embedding space (secondary)",
        "",
        f"Mean E-distance between predicted and observed cells in the fold encoder's own space: {cells}. Not "
        "a headline: a model can shrink its own space; the evaluation-space numbers above are the result.",
        "",
    ]


def fold_report(record: Mapping) -> str:
    """The markdown of one fold run (its ``report.md``).

    Every input is plain data that the workflow gathered from the fold's result (``celljepa.bench.run``
    builds the record); nothing is read from disk here.

    Parameters
    ----------
    record
        ``metrics`` (the fold's metrics.json dict), ``dataset`` (the one-line dataset summary,
        :func:`~celljepa.eval.report.dataset_summary`), ``split`` (the fold's split.json dict), ``space``
        (``{"n_genes", "n_pcs"}`` of the evaluation space), ``params`` (method → chosen hyperparameters),
        ``timings`` (step → seconds, with ``total_s``), ``cpus`` (the machine's core count) and ``figures``
        (paths relative to the run folder).

    Returns
    -------
    str
        The text of ``report.md``.
    """
    m = record["metrics"]
    params, timings = record["params"], record["timings"]
    lines = [
        f"# {m['dataset_id']} · {m['split']} · fold {m['fold']} · split seed {m['seed']}",
        "",
        "## Dataset",
        "",
        record["dataset"],
        "",
        "## Split",
        "",
        split_summary(record["split"]),
        "",
        "- Inputs only: "
        + (
            "none held out"
            if m["split"] != "S2_unseen_context"
            else (
                "held-out contexts' control cells were fitted on (`--transductive`)"
                if m.get("transductive")
                else "the held-out contexts' control cells are where predictions start; no method, "
                "JEPA pretraining included, fits on them"
            )
        ),
        "",
        "## Evaluation space",
        "",
        f"{record['space']['n_genes']} HVGs and {record['space']['n_pcs']} PCs fitted on the training cells "
        "only (`eval_space.npz`). Every method hands in predicted cells; metrics are means over "
        f"{m['n_test_conditions']} test conditions with 95% hierarchical bootstrap CIs (model seeds and "
        "conditions, 10,000 resamples)"
        + (f", averaged over model seeds {m['model_seeds']}" if len(m.get("model_seeds") or []) > 1 else "")
        + ".",
        "",
        "## Methods",
        "",
        methods_table(m),
        "",
        "## Comparator (chosen on the validation conditions)",
        "",
        comparator_table(m),
        "",
        "## Effect filter",
        "",
        *effects_lines(m),
        "",
        f"## Paired comparisons against the comparator (`{m['comparator']}`)",
        "",
        "Difference (method − comparator) with its 95% hierarchical bootstrap CI over all test conditions; "
        "descriptive. A claim needs the verdict rule below.",
        "",
        comparisons_table(m),
        "",
        *(
            [
                f"## Verdict (one fold: {m['verdict']['n']} conditions; claims need at least {MIN_CONDITIONS})",
                "",
                verdict_sentence(f"{m['dataset_id']} {m['split']} fold {m['fold']}", m),
                "",
            ]
            if "verdict" in m
            else ([m["verdict_note"], ""] if "verdict_note" in m else [])
        ),
        *(_embedding_space_lines(m)),
        "## Chosen hyperparameters (validation groups only)",
        "",
    ]
    for name, values in params.items():
        if values:
            lines.append(
                f"- `{name}`: "
                + ", ".join(
                    f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}"
                    for k, v in values.items()
                    if not k.startswith("config.")
                )
            )
    compute = f"Wall time {timings['total_s']:.1f} s on CPU ({record['cpus']} cores)"
    if "jepa_encoder" in params:
        enc = params["jepa_encoder"]
        trans = {k: v for k, v in params.items() if k.startswith("jepa_") and k != "jepa_encoder"}
        compute += (
            f": JEPA pretraining {timings.get('jepa_pretrain_s', 0.0):.1f} s "
            f"({enc['n_parameters']:,} parameters), "
            + ", ".join(
                f"{k} {v.get('train_seconds', 0):.1f} s ({v.get('n_parameters', 0):,} parameters)"
                for k, v in trans.items()
            )
            + "; the baselines' only fitted parameters are ridge / linear coefficients."
        )
    else:
        compute += "; baselines have no trained parameters beyond the ridge coefficients."
    lines += ["", "## Compute", "", compute, ""]
    lines += figure_lines(record.get("figures") or [])
    return "\n".join(lines)
