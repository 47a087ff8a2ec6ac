"""Plotting: datasets, E-distances, benchmark results and verdicts, JEPA training curves."""

from ._benchmark import benchmark
from ._condition_counts import condition_counts
from ._edistance import edistance
from ._jepa_training import jepa_training
from ._verdict import verdict

__all__ = ["benchmark", "condition_counts", "edistance", "jepa_training", "verdict"]
