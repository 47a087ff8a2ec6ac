"""Every report's markdown, as pure functions of plain data (dicts, lists, records) to text.

One module per report kind: :mod:`._cells` (number formats, CI cells and the tables and sentences the reports
share), :mod:`.fold` (a fold run's ``report.md``), :mod:`.benchmark` (a benchmark's combined ``report.md``),
:mod:`.consolidated` (``celljepa report``'s ``report.md``), :mod:`.sweep` (``ablation.md``) and :mod:`.holdout`
(``holdout.md``). Nothing here reads or writes a file or sees an AnnData: the workflows (``celljepa.bench``)
gather the data, call these functions and write the text.
"""

from ._cells import (
    HELD_OUT,
    NEVER_LEFT,
    ci_cell,
    comparator_of,
    comparator_table,
    comparisons_table,
    dataset_summary,
    diff_cell,
    effect_methods_table,
    effects_lines,
    figure_lines,
    held_out_controls,
    methods_table,
    never_left_cell,
    never_left_lines,
    plural,
    seeds_lines,
    split_summary,
    twin_sentence,
    verdict_lines,
    verdict_sentence,
    verdict_sentences,
    verdict_table,
)
from .benchmark import benchmark_report, final_lines, verdict_preamble
from .consolidated import TABLE_METRICS, render_markdown, step_columns
from .fold import fold_report
from .holdout import holdout_markdown, holdout_rows, transfer_rows
from .sweep import ablation_markdown

__all__ = [
    "HELD_OUT",
    "NEVER_LEFT",
    "TABLE_METRICS",
    "ablation_markdown",
    "benchmark_report",
    "ci_cell",
    "comparator_of",
    "comparator_table",
    "comparisons_table",
    "dataset_summary",
    "diff_cell",
    "effect_methods_table",
    "effects_lines",
    "figure_lines",
    "final_lines",
    "fold_report",
    "holdout_markdown",
    "held_out_controls",
    "holdout_rows",
    "methods_table",
    "never_left_cell",
    "never_left_lines",
    "plural",
    "render_markdown",
    "seeds_lines",
    "split_summary",
    "step_columns",
    "transfer_rows",
    "twin_sentence",
    "verdict_lines",
    "verdict_preamble",
    "verdict_sentence",
    "verdict_sentences",
    "verdict_table",
]
