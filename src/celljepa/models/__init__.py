"""Models: baselines, the JEPA encoder and the transition predictors (AnnData-aware; their nn.Modules: celljepa.nn)."""

from . import baselines, plugins, transition
from .base import Condition, PerturbationModel, TrainData
from .jepa import CellJEPA
from .plugins import load_model_class, make_model, model_identity
from .transition import JEPATransition, TransitionConfig

__all__ = [
    "CellJEPA",
    "Condition",
    "JEPATransition",
    "PerturbationModel",
    "TrainData",
    "TransitionConfig",
    "baselines",
    "load_model_class",
    "make_model",
    "model_identity",
    "plugins",
    "transition",
]
