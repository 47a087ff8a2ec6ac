"""Plotting: figures of datasets, splits and (later) benchmark results."""

from ._condition_counts import condition_counts

__all__ = ["condition_counts"]
