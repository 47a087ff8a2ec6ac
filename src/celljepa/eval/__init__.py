"""Evaluation: E-distance, E-test, mean-level and retrieval metrics, bootstrap CIs, the evaluation space."""

from .bootstrap import bootstrap_ci, paired_bootstrap_diff
from .edistance import edistance_matrix, edistance_sets
from .etest import auto_permutations, etest_groups
from .metrics import cosine_distance, delta_pearson, delta_pearson_top_de, mse, retrieval_ranks
from .space import EvaluationSpace

__all__ = [
    "EvaluationSpace",
    "auto_permutations",
    "bootstrap_ci",
    "cosine_distance",
    "delta_pearson",
    "delta_pearson_top_de",
    "edistance_matrix",
    "edistance_sets",
    "etest_groups",
    "mse",
    "paired_bootstrap_diff",
    "retrieval_ranks",
]
