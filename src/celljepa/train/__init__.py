"""Training: the JEPA pretraining config, data streaming, the training loop, checkpoints and DDP.

Most users need :class:`celljepa.models.CellJEPA`, :func:`celljepa.tl.jepa_embed` or ``celljepa pretrain``
(:func:`celljepa.bench.pretrain.pretrain`, the run folder); this package holds the machinery behind them.
"""

from .checkpoint import TrainingInterrupted, load_checkpoint, save_checkpoint
from .config import JEPAConfig, load_config
from .data import BatchPlan, CellSource

__all__ = [
    "BatchPlan",
    "CellSource",
    "JEPAConfig",
    "TrainingInterrupted",
    "load_checkpoint",
    "load_config",
    "save_checkpoint",
]
