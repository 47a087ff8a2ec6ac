"""Models: baselines, the JEPA encoder and the transition predictors (pure nn.Modules plus AnnData-aware wrappers)."""

from . import baselines, modules
from .base import Condition, PerturbationModel, TrainData
from .jepa import CellJEPA

__all__ = ["CellJEPA", "Condition", "PerturbationModel", "TrainData", "baselines", "modules"]
