"""Models: baselines, the JEPA encoder and the transition predictors (pure nn.Modules plus AnnData-aware wrappers)."""

from . import baselines
from .base import Condition, PerturbationModel, TrainData

__all__ = ["Condition", "PerturbationModel", "TrainData", "baselines"]
