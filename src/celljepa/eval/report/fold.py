"""A fold run's ``report.md`` (``eval-baselines``, ``train-transition`` and every fold of a benchmark)."""

from __future__ import annotations

from collections.abc import Mapping

from ..verdict import MIN_CONDITIONS
from ._cells import (
    comparator_table,
    comparisons_table,
    effects_lines,
    figure_lines,
    held_out_controls,
    methods_table,
    never_left_lines,
    plural,
    split_summary,
    stuck_counts,
    stuck_sentence,
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


def _stuck_verdict_lines(m: Mapping) -> list[str]:
    """Notes on the fold's verdict rows whose two sides both never left their start."""
    v, flags = m["verdict"], m.get("never_left_start")
    twin = (v.get("vs_pca_twin") or {}).get("twin")
    out = [
        stuck_sentence(
            f"{m['dataset_id']} {m['split']} fold {m['fold']}",
            v["model"],
            other,
            what,
            stuck_counts([flags], v["model"], other),
        )
        for other, what in ((v["baseline"], "primary − comparator"), (twin, "primary − PCA twin"))
        if other
    ]
    out = [line for line in out if line]
    return out + [""] if out else []


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
        held_out_controls(m["split"], transductive=bool(m.get("transductive"))),
        "",
        "## Evaluation space",
        "",
        f"{plural(record['space']['n_genes'], 'HVG')} and {plural(record['space']['n_pcs'], 'PC')} fitted on the "
        "training cells only (`eval_space.npz`). Every method hands in predicted cells; metrics are means over "
        f"{plural(m['n_test_conditions'], 'test condition')} with 95% hierarchical bootstrap CIs (model seeds and "
        "conditions, 10,000 resamples)"
        + (f", averaged over model seeds {m['model_seeds']}" if len(m.get("model_seeds") or []) > 1 else "")
        + ".",
        "",
        "## Methods",
        "",
        methods_table(m),
        "",
        *never_left_lines(m),
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
                f"## Verdict (one fold: {plural(m['verdict']['n'], 'condition')}; claims need at least "
                f"{MIN_CONDITIONS})",
                "",
                verdict_sentence(f"{m['dataset_id']} {m['split']} fold {m['fold']}", m),
                "",
                *_stuck_verdict_lines(m),
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
    compute = f"Wall time {timings['total_s']:.1f} s on CPU ({plural(record['cpus'], 'core')})"
    if "jepa_encoder" in params:
        enc = params["jepa_encoder"]
        trans = {k: v for k, v in params.items() if k.startswith("jepa_") and k != "jepa_encoder"}
        compute += (
            f": JEPA pretraining {timings.get('jepa_pretrain_s', 0.0):.1f} s "
            f"({plural(enc['n_parameters'], 'parameter', sep=',')}), "
            + ", ".join(
                f"{k} {v.get('train_seconds', 0):.1f} s ({plural(v.get('n_parameters', 0), 'parameter', sep=',')})"
                for k, v in trans.items()
            )
            + "; the baselines' only fitted parameters are ridge / linear coefficients."
        )
    else:
        compute += "; baselines have no trained parameters beyond the ridge coefficients."
    lines += ["", "## Compute", "", compute, ""]
    lines += figure_lines(record.get("figures") or [])
    return "\n".join(lines)
