"""Plotting: datasets, E-distances and benchmark results."""

from ._benchmark import benchmark
from ._condition_counts import condition_counts
from ._edistance import edistance

__all__ = ["benchmark", "condition_counts", "edistance"]
