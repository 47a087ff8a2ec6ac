"""Tools: deterministic OOD splits (more tools arrive with the evaluation and JEPA steps)."""

from ._make_splits import make_splits

__all__ = ["make_splits"]
