"""Tools: deterministic OOD splits, E-distance and the E-test."""

from ._edistance import edistance
from ._etest import etest
from ._make_splits import make_splits

__all__ = ["edistance", "etest", "make_splits"]
