"""Tools: OOD splits, E-distance and the E-test, JEPA embeddings, transition models, perturbation prediction."""

from ._edistance import edistance
from ._etest import etest
from ._fit_transition import fit_transition
from ._jepa_embed import jepa_embed
from ._make_splits import make_splits
from ._predict import predict_perturbation

__all__ = ["edistance", "etest", "fit_transition", "jepa_embed", "make_splits", "predict_perturbation"]
