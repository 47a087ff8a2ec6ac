"""Models: baselines, the JEPA encoder and the transition predictors (AnnData-aware; their nn.Modules: celljepa.nn)."""

from . import baselines, transition
from .base import Condition, PerturbationModel, TrainData
from .jepa import CellJEPA
from .transition import JEPATransition, TransitionConfig

__all__ = [
    "CellJEPA",
    "Condition",
    "JEPATransition",
    "PerturbationModel",
    "TrainData",
    "TransitionConfig",
    "baselines",
    "transition",
]
