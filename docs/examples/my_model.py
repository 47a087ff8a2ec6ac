r"""A worked "bring your own model" example: a per-perturbation mean shift, shrunk toward the global mean shift.

Score it beside celljepa's baselines (``docs/bring-your-own-model.md``)::

    PYTHONPATH=docs/examples celljepa benchmark --data demo --model my_model:ShrunkMeanShift \
        --model-option shrinkage=0.5 --no-jepa --out runs/mine

The model, in the evaluation space (``TrainData.z``: the fold's PCA of its HVGs):

* for each perturbation seen in the fitting conditions, its *observed shift* ``s_p``: the mean, over the
  conditions (contexts, doses) it was seen in, of the condition's mean minus its context's control mean;
* the *global shift* ``g``: the mean shift of every fitting condition;
* the predicted shift of a seen perturbation is ``(1 - shrinkage) * s_p + shrinkage * g``: ``shrinkage = 0``
  is celljepa's ``mean_shift`` baseline, ``1`` predicts ``g`` for everything; an unseen perturbation gets
  ``g`` (and :meth:`ShrunkMeanShift.covers` says it is not covered: a fallback, not a prediction);
* the predicted cells of a condition are its context's control cells moved by the predicted shift.

With ``shrinkage=None`` (the default) the shrinkage is *tuned*: each value of ``grid`` is fitted on the
training conditions and scored on ``train.val_conditions`` (squared error of the predicted mean shift), and the
best is kept. Such a model says ``tunes_on_validation = True``, so the harness scores its validation conditions
cross-fitted (tuned on one part of them, scored on the other), like every other method. Then it is refitted on
training + validation conditions (``refit=True``) to predict the test conditions.
"""

from __future__ import annotations

import numpy as np

from celljepa.models import Condition, PerturbationModel, TrainData

__all__ = ["ShrunkMeanShift"]


class ShrunkMeanShift(PerturbationModel):
    """Control cells + the perturbation's mean shift shrunk toward the mean shift of every training condition.

    Parameters
    ----------
    shrinkage
        Weight of the global shift in ``[0, 1]``; None: tuned on the validation conditions among ``grid``.
    grid
        The shrinkages tried when ``shrinkage`` is None.

    Examples
    --------
    >>> model = ShrunkMeanShift(shrinkage=0.5)
    >>> model.name, model.role, model.tunes_on_validation
    ('shrunk_mean_shift', 'baseline', False)
    """

    name = "shrunk_mean_shift"
    # joins the comparator pool like any baseline (unless the run names it the primary model)
    role = "baseline"
    # refitted on training + validation conditions once tuned (refit=True)
    refits_on_validation = True

    def __init__(self, shrinkage: float | None = None, grid=(0.0, 0.25, 0.5, 0.75, 1.0)):
        grid = tuple(float(g) for g in grid)
        for value in (shrinkage, *grid):
            if value is not None and not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"shrinkage must lie in [0, 1], got {value!r}")
        if not grid:
            raise ValueError("grid must hold at least one shrinkage")
        self.shrinkage = None if shrinkage is None else float(shrinkage)
        self.grid = grid
        # a fixed shrinkage makes no choice on validation conditions: scored from one fit on training conditions
        self.tunes_on_validation = self.shrinkage is None

    # ------------------------------------------------------------------ fitting

    @staticmethod
    def _shifts(train: TrainData, conditions) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Each perturbation's mean shift over the conditions it was seen in, and the mean of every condition's."""
        per: dict[str, list[np.ndarray]] = {}
        every = []
        for cond, rows in conditions:
            s = train.shift(cond, rows)
            per.setdefault(cond.perturbation_id, []).append(s)
            every.append(s)
        if not every:
            raise ValueError("ShrunkMeanShift: no fitting condition (the fold has no training condition)")
        return {p: np.mean(v, axis=0) for p, v in per.items()}, np.mean(every, axis=0)

    def _tune(self, train: TrainData) -> float:
        """The shrinkage of ``grid`` with the lowest squared error of the validation conditions' mean shifts."""
        val = [(c, r) for c, r in train.val_conditions if len(r) >= 2]
        if not val:  # nothing to tune on: the middle of the grid, declared here
            return self.grid[len(self.grid) // 2]
        shifts, glob = self._shifts(train, train.train_conditions)
        observed = np.array([train.shift(c, r) for c, r in val])

        def error(lam: float) -> float:
            pred = np.array([self._shrunk(shifts, glob, c.perturbation_id, lam) for c, _ in val])
            return float(np.mean(np.sum((pred - observed) ** 2, axis=1)))

        return min(self.grid, key=error)  # ties: the first (least shrinkage) of the grid

    @staticmethod
    def _shrunk(shifts: dict, glob: np.ndarray, perturbation_id: str, lam: float) -> np.ndarray:
        own = shifts.get(perturbation_id)
        return glob if own is None else (1.0 - lam) * own + lam * glob

    def fit(self, train: TrainData, *, refit: bool = True) -> ShrunkMeanShift:
        """Tune the shrinkage on ``train.val_conditions`` (unless fixed), then learn the shifts.

        ``refit=True``: from training + validation conditions (the model that predicts the test conditions);
        ``refit=False``: from training conditions only (its validation predictions are then out of sample).
        """
        self._train = train
        self.shrinkage_ = self.shrinkage if self.shrinkage is not None else self._tune(train)
        self._shift_of, self._global = self._shifts(train, train.fitting_conditions(refit))
        return self

    # ------------------------------------------------------------------ predicting

    def predict(self, condition: Condition) -> np.ndarray:
        """The context's control cells moved by the perturbation's shrunk shift (the global shift if unseen)."""
        shift = self._shrunk(self._shift_of, self._global, condition.perturbation_id, self.shrinkage_)
        return self._train.control_cells(condition.context_id) + shift

    def covers(self, condition: Condition) -> bool:
        """Whether the perturbation was seen in the fitting conditions (else the global shift is a fallback)."""
        return condition.perturbation_id in self._shift_of

    def params(self) -> dict:
        """The shrinkage used, and whether it was tuned (recorded in the fold's config)."""
        return {"shrinkage": self.shrinkage_, "tuned": self.shrinkage is None, "grid": list(self.grid)}
