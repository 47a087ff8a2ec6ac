"""Pure ``nn.Module`` building blocks: the masked gene encoder, the JEPA predictor, the transition nets, losses.

They take plain sizes and tensors (no AnnData, no files); the AnnData-aware models that own them live in
:mod:`celljepa.models`, the training machinery in :mod:`celljepa.train`.
"""

from . import modules, transition
from .modules import (
    ActionPredictor,
    CSRBatch,
    JEPAPredictor,
    MaskedGeneEncoder,
    MaskPointer,
    covariance_loss,
    mlp,
    predictive_loss,
    variance_loss,
)
from .transition import ActionEncoder, TransitionNet

__all__ = [
    "ActionEncoder",
    "ActionPredictor",
    "CSRBatch",
    "JEPAPredictor",
    "MaskPointer",
    "MaskedGeneEncoder",
    "TransitionNet",
    "covariance_loss",
    "mlp",
    "modules",
    "predictive_loss",
    "transition",
    "variance_loss",
]
