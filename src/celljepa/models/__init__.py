"""Models: baselines, the JEPA encoder and the transition predictors (pure nn.Modules plus AnnData-aware wrappers)."""

from . import baselines, modules, transition
from .base import Condition, PerturbationModel, TrainData
from .jepa import CellJEPA
from .transition import JEPATransition, TransitionConfig, fit_transition

__all__ = ["CellJEPA", "Condition", "JEPATransition", "PerturbationModel", "TrainData", "TransitionConfig",
           "baselines", "fit_transition", "modules", "transition"]
