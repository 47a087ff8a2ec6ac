"""Tools: deterministic OOD splits, E-distance and the E-test, JEPA embeddings, perturbation prediction."""

from ._edistance import edistance
from ._etest import etest
from ._jepa_embed import jepa_embed
from ._make_splits import make_splits
from ._predict import predict_perturbation

__all__ = ["edistance", "etest", "jepa_embed", "make_splits", "predict_perturbation"]
