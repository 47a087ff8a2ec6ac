"""Tools: deterministic OOD splits, E-distance and the E-test, JEPA embeddings."""

from ._edistance import edistance
from ._etest import etest
from ._jepa_embed import jepa_embed
from ._make_splits import make_splits

__all__ = ["edistance", "etest", "jepa_embed", "make_splits"]
