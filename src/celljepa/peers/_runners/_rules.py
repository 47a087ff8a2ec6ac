"""How each peer's batch size, epochs or steps scale with the cells it is given: one function per peer.

A peer's published settings were chosen for its own data (scGen's tutorial: 13,766 Kang PBMCs; CPA's Norman
tutorial: ~100,000 cells; GEARS's Norman data: ~90,000 cells; State's examples: GPU runs of 40,000 steps or
more). A fold here holds a few hundred to a few tens of thousands of cells, so each runner sizes its training to
the cells it fits on (after its own validation split) with the rule below, written once, used by the runner,
recorded in ``result.json`` and tested as a pure function. Plain Python: no import beyond the standard library,
so that every peer environment and celljepa can load it.
"""

from __future__ import annotations

import math

__all__ = ["cpa_settings", "gears_settings", "scgen_settings", "state_settings"]


def _clip(value: float, low: int, high: int) -> int:
    return int(min(max(int(value), low), high))


#: scGen's perturbation-prediction tutorial: 13,766 registered Kang cells, batch 32, scvi-tools' 90 % training
#: split: ceil(0.9 * 13,766 / 32) = 388 updates per epoch; patience 25 and 100 epochs are counted in those.
SCGEN_TUTORIAL_UPDATES_PER_EPOCH = 388


def scgen_settings(n_cells: int) -> dict:
    """scGen: the tutorial's batch 32, and its patience (25 epochs) and epochs (100) counted in updates.

    ``n_cells`` are the cells scGen fits on; scvi-tools holds out 10 % of them for its early stopping
    (``train_size=0.9``, monitor ``elbo_validation``, as in the tutorial).

    - ``batch_size = min(32, max(8, floor(0.9 * n_cells / 20)))``: the tutorial's 32 unless an epoch would have
      fewer than ~20 updates (below ~710 cells).
    - ``updates = ceil(0.9 * n_cells / batch_size)`` per epoch; the tutorial's epoch is 388 updates (13,766
      cells). ``early_stopping_patience = max(25, ceil(25 * 388 / updates))`` and ``max_epochs = max(100,
      ceil(100 * 388 / updates))``: the tutorial's patience and epoch budget in updates, never fewer epochs than
      the tutorial. On 13,766 cells or more this is the tutorial (25, 100); on a fold of 1,341 cells (38
      updates per epoch) it is 256 and 1,022. scGen's validation ELBO (which weighs the KL term 20,000 times
      more than its training loss, ``kl_weight=5e-5``) is lowest after 2 to 3 epochs, so the patience decides how
      long it trains: 25 epochs are ~10,000 updates on the tutorial's data (it stopped at epoch 31) and ~1,000
      on such a fold.
    - ``max_minutes = 60``: a run that has not stopped by then ends (its last weights are kept, as always).
    """
    n = max(int(n_cells), 1)
    batch = _clip(0.9 * n // 20, 8, 32)
    updates = max(1, math.ceil(0.9 * n / batch))
    ref = SCGEN_TUTORIAL_UPDATES_PER_EPOCH
    return {
        "max_epochs": max(100, math.ceil(100 * ref / updates)),
        "batch_size": batch,
        "early_stopping": True,
        "early_stopping_patience": max(25, math.ceil(25 * ref / updates)),
        "early_stopping_monitor": "elbo_validation",
        "train_size": 0.9,
        "max_minutes": 60.0,
    }


def cpa_settings(n_train: int) -> dict:
    """CPA: batch ``clip(n_train / 20, 32, 2048)``, so that an epoch has at least ~20 updates.

    ``n_train`` are the cells of CPA's own training split (85 % of the cells it fits on; the other 15 % are its
    validation split). The Norman tutorial's batch of 2,048 gives ~45 updates per epoch on its ~92,000
    training cells; on a fold of 2,600 cells it would give one. Everything else is the tutorial's: up to 2,000
    epochs, validation every 5 epochs, early stopping on CPA's ``cpa_metric`` after 5 checks without
    improvement, the best state restored.
    """
    return {
        "batch_size": _clip(int(n_train) // 20, 32, 2048),
        "max_epochs": 2000,
        "check_val_every_n_epoch": 5,
        "early_stopping_patience": 5,
    }


def gears_settings(n_train: int) -> dict:
    """GEARS: 20 epochs (its default) and batch ``clip(n_train / 100, 8, 32)``: at least ~100 updates per epoch.

    ``n_train`` are the cells of GEARS's training split (the cells of the perturbations not held out for its
    validation). GEARS halves its learning rate after every epoch (``StepLR(step_size=1, gamma=0.5)``), so the
    updates of the first few epochs are nearly all its training and more epochs change nothing (after 20 the
    rate is 1e-3 / 2**20): the lever is the number of updates per epoch. Its tutorials' batch of 32 gives ~1,900
    per epoch on Norman's ~60,000 training cells; here the batch shrinks (never below 8) to give at least ~100.
    """
    return {"epochs": 20, "batch_size": _clip(int(n_train) // 100, 8, 32)}


def state_settings(n_train: int, batch_size: int = 8, cell_set_len: int = 128) -> dict:
    """State: ~250 passes over the training cells, 1,000 to 4,000 steps, validation every 100, at most 60 minutes.

    ``n_train`` are the cells of State's training split (its validation conditions held out). A step is
    ``batch_size`` sets of ``cell_set_len`` cells, so a pass over the training cells takes
    ``ceil(n_train / (batch_size * cell_set_len))`` steps; ``max_steps = clip(250 * that, 1000, 4000)``.
    Validation runs every ``val_freq = min(100, max_steps // 10)`` steps and the weights of the best validation
    loss are the ones kept. ``max_minutes`` stops a run on a slow CPU (the best weights so far are kept). State's
    README trains 40,000 steps and its default config 400,000 (validation every 2,000), on a GPU: this is 10 to
    400 times fewer steps.
    """
    per_pass = max(1, math.ceil(int(n_train) / (int(batch_size) * int(cell_set_len))))
    max_steps = _clip(250 * per_pass, 1000, 4000)
    return {
        "max_steps": max_steps,
        "val_freq": min(100, max_steps // 10),
        "batch_size": int(batch_size),
        "max_minutes": 60.0,
    }
