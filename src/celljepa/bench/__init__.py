"""Workflows: score predictors on split folds and write runs and reports (the benchmark harness)."""

from .config import RunConfig
from .evaluate import METRICS, EvalConfig, FoldResult, score_fold, summarize
from .run import DEMO_PLAN, benchmark, demo_datasets, eval_baselines

__all__ = [
    "DEMO_PLAN",
    "METRICS",
    "EvalConfig",
    "FoldResult",
    "RunConfig",
    "benchmark",
    "demo_datasets",
    "eval_baselines",
    "score_fold",
    "summarize",
]
