"""Training: the JEPA pretraining config, data streaming, the training loop, checkpoints and run folders.

Most users need :class:`celljepa.models.CellJEPA`, :func:`celljepa.tl.jepa_embed` or ``celljepa pretrain``;
this package holds the machinery behind them.
"""

from .checkpoint import TrainingInterrupted, load_checkpoint, save_checkpoint
from .config import JEPAConfig, load_config
from .data import BatchPlan, CellSource
from .run import pretrain

__all__ = ["BatchPlan", "CellSource", "JEPAConfig", "TrainingInterrupted", "load_checkpoint", "load_config",
           "pretrain", "save_checkpoint"]
