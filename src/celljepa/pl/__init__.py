"""Plotting: datasets, E-distances, predictions, benchmark results and verdicts, JEPA training curves.

Every function takes ``ax=`` (draw into these axes; for a plot of one panel), ``show=`` (default: on an
interactive backend when nothing is saved), ``save=`` (a file, the format from its suffix, written
atomically) and ``return_fig=``, and returns ``None`` when it shows the figure, else the Figure with
``return_fig=True``, else the Axes (a list of Axes for several panels), as scanpy's plots do.
"""

from ._benchmark import benchmark
from ._condition_counts import condition_counts
from ._dropout_robustness import dropout_robustness
from ._edistance import edistance
from ._jepa_training import jepa_training
from ._predicted_vs_observed import predicted_vs_observed
from ._verdict import verdict, where_jepa_helps

__all__ = [
    "benchmark",
    "condition_counts",
    "dropout_robustness",
    "edistance",
    "jepa_training",
    "predicted_vs_observed",
    "verdict",
    "where_jepa_helps",
]
