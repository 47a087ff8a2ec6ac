"""The interface every perturbation predictor implements: ``fit(train_data)``, ``predict(condition)``."""

from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..data import contract as C

# Largest control set a prediction starts from (see TrainData.control_cells): above it, a seeded sample.
MAX_SET_CELLS = 2048


@dataclass(frozen=True)
class Condition:
    """One ``(context_id, perturbation_id)`` condition, refined by dose and time when known."""

    context_id: str
    perturbation_id: str
    tokens: tuple[str, ...]
    dose: float = float("nan")
    time_hours: float = float("nan")

    @property
    def is_combo(self) -> bool:
        return len(self.tokens) > 1

    @property
    def key(self) -> str:
        """Stable text id: ``context|perturbation[|dose][|time h]``."""
        parts = [self.context_id, self.perturbation_id]
        if np.isfinite(self.dose):
            parts.append(f"dose={self.dose:g}")
        if np.isfinite(self.time_hours):
            parts.append(f"t={self.time_hours:g}h")
        return "|".join(parts)


def conditions_of(obs: pd.DataFrame) -> list[tuple[Condition, np.ndarray]]:
    """The perturbed conditions present in ``obs`` with the positions of their cells, in a stable order."""
    pert = obs.loc[~obs[C.IS_CONTROL].to_numpy(dtype=bool)]
    if pert.empty:
        return []
    frame = pd.DataFrame(
        {
            "context_id": pert[C.CONTEXT_ID].astype(str).to_numpy(),
            "perturbation_id": pert[C.PERTURBATION_ID].astype(str).to_numpy(),
            "tokens": pert[C.PERTURBATION_TOKENS].astype(str).to_numpy(),
            "dose": pert[C.DOSE].to_numpy(dtype=float) if C.DOSE in pert else np.nan,
            "time": pert[C.TIME_HOURS].to_numpy(dtype=float) if C.TIME_HOURS in pert else np.nan,
            "pos": np.flatnonzero(~obs[C.IS_CONTROL].to_numpy(dtype=bool)),
        }
    )
    out = []
    for (ctx, pid, tok, dose, time), rows in frame.groupby(
        ["context_id", "perturbation_id", "tokens", "dose", "time"], dropna=False, sort=True
    ):
        out.append((Condition(ctx, pid, tuple(C.split_tokens(tok)), float(dose), float(time)), rows["pos"].to_numpy()))
    return out


@dataclass
class TrainData:
    """Everything a predictor may learn from: training and validation cells in the evaluation space.

    Attributes
    ----------
    z
        ``(n_cells, k)`` evaluation-space coordinates of every cell a method may see (training and
        validation cells, and the control cells of every context, including held-out contexts).
    obs
        The contract columns of those cells (same row order as ``z``).
    train_conditions, val_conditions
        Conditions with the row positions of their cells in ``z``.
    gene_embedding
        Optional ``{gene name: vector}`` (the perturbed gene's loading in the training PCA) for
        methods that generalise to unseen gene perturbations.
    embedding
        Optional ``(n_cells, d)`` learned representation of the same cells (e.g. ``X_jepa`` of an
        encoder pretrained on these cells only), for predictors that work in that space.
    encoder
        The encoder that produced ``embedding`` (a trained :class:`~celljepa.models.CellJEPA`), or None.
    space
        The fold's :class:`~celljepa.eval.space.EvaluationSpace`, or None.
    fit_rows
        Boolean mask over the rows of ``z``: the cells a method may *fit* on (training and validation
        cells). The other rows are held-out-context control cells, visible only as the inputs a
        prediction starts from (inductive evaluation); None means every row may be fitted on
        (``--transductive``).
    source
        The AnnData the rows come from (row ``i`` of ``z`` is cell ``positions[i]`` of ``source``), for methods
        that learn in gene space (the peers); None when the data are not at hand.
    """

    z: np.ndarray
    obs: pd.DataFrame
    train_conditions: list[tuple[Condition, np.ndarray]]
    val_conditions: list[tuple[Condition, np.ndarray]]
    gene_embedding: dict[str, np.ndarray] = field(default_factory=dict)
    embedding: np.ndarray | None = None
    encoder: object | None = field(default=None, repr=False)
    space: object | None = field(default=None, repr=False)
    positions: np.ndarray | None = field(default=None, repr=False)
    fit_rows: np.ndarray | None = field(default=None, repr=False)
    source: object | None = field(default=None, repr=False)
    # caches of the rows and means of each context's control cells (fresh in every copy: init=False)
    _controls: dict[str, np.ndarray] = field(default_factory=dict, repr=False, init=False)
    _control_means: dict[str, np.ndarray] = field(default_factory=dict, repr=False, init=False)

    def control_rows(self, context_id: str) -> np.ndarray:
        """Row positions (in ``z``) of the control cells of ``context_id``."""
        if context_id not in self._controls:
            mask = self.obs[C.IS_CONTROL].to_numpy(dtype=bool) & (
                self.obs[C.CONTEXT_ID].astype(str).to_numpy() == context_id
            )
            if not mask.any():
                raise KeyError(f"no control cells for context '{context_id}'")
            self._controls[context_id] = np.flatnonzero(mask)
        return self._controls[context_id]

    def start_rows(self, context_id: str) -> np.ndarray:
        """Row positions (in ``z``) of the control cells a prediction of ``context_id`` starts from.

        Every control cell of the context, or, above :data:`MAX_SET_CELLS`, a seeded sample of that many (the
        same for every method): a predicted set then has a bounded size however large the screen, and the
        E-distance, which compares at most ``cap`` (256) cells per resample, loses nothing.
        """
        rows = self.control_rows(context_id)
        if len(rows) > MAX_SET_CELLS:
            rng = np.random.default_rng([zlib.crc32(str(context_id).encode()), len(rows)])
            rows = np.sort(rng.choice(rows, MAX_SET_CELLS, replace=False))
        return rows

    def control_cells(self, context_id: str) -> np.ndarray:
        """Evaluation-space coordinates of the control cells a prediction of ``context_id`` starts from.

        The cells of :meth:`start_rows`.
        """
        return self.z[self.start_rows(context_id)]

    def control_mean(self, context_id: str) -> np.ndarray:
        """Mean of every control cell of ``context_id`` in the evaluation space (computed once per context)."""
        if context_id not in self._control_means:
            self._control_means[context_id] = self.z[self.control_rows(context_id)].mean(axis=0)
        return self._control_means[context_id].copy()

    def shift(self, condition: Condition, rows: np.ndarray) -> np.ndarray:
        """Observed mean shift of a condition: its mean minus its context's control mean."""
        return self.z[rows].mean(axis=0) - self.control_mean(condition.context_id)

    def fit_mask(self) -> np.ndarray:
        """Boolean mask of the rows of ``z`` a method may fit on (see ``fit_rows``)."""
        return np.ones(len(self.z), dtype=bool) if self.fit_rows is None else np.asarray(self.fit_rows, dtype=bool)

    def fitting_conditions(self, refit: bool) -> list[tuple[Condition, np.ndarray]]:
        """The conditions a final fit uses: training, plus validation when ``refit`` (after tuning)."""
        return self.train_conditions + (self.val_conditions if refit else [])


class PerturbationModel(ABC):
    """A perturbation predictor: learn from :class:`TrainData`, predict a set of cells per condition.

    Predictions are cells in the evaluation space (typically the context's control cells mapped by
    the model), so set metrics such as the E-distance apply to every method alike.
    """

    name: str = "model"
    #: ``"baseline"``, ``"pca_twin"`` or ``"peer"``: the non-JEPA methods, whose member with the best
    #: *validation* score is the comparator of a report; ``"jepa"``: a model in a JEPA embedding space.
    role: str = "baseline"
    #: Whether :meth:`fit` refits on training + validation conditions once tuned. Such a method is fitted
    #: a second time with ``refit=False`` (training conditions only) to score it on the validation conditions.
    refits_on_validation: bool = True
    #: Whether :meth:`fit` makes any choice on ``train.val_conditions`` (hyperparameters, early stopping, ...). The
    #: harness then scores such a method on validation conditions it did not tune on (cross-fitting); a method
    #: that tunes nothing is scored on them from one fit on training conditions.
    tunes_on_validation: bool = True

    @property
    def is_baseline(self) -> bool:
        """True for the simple baselines (``role == "baseline"``)."""
        return self.role == "baseline"

    @abstractmethod
    def fit(self, train: TrainData, *, refit: bool = True) -> PerturbationModel:
        """Learn from training cells; tune hyperparameters on ``train.val_conditions`` only.

        With ``refit=True`` the tuned model may be refitted on training + validation conditions (the
        model that predicts the test conditions); with ``refit=False`` it is fitted on the training
        conditions only, so that its predictions of the validation conditions are honest validation scores.
        """

    @abstractmethod
    def predict(self, condition: Condition) -> np.ndarray:
        """Predicted cells ``(n, k)`` in the evaluation space for ``condition``."""

    def predict_many(self, conditions: list[Condition]) -> dict[Condition, np.ndarray]:
        """:meth:`predict` of every condition.

        A method that predicts all at once (a peer run in its own process) overrides this.
        """
        return {c: self.predict(c) for c in conditions}

    def covers(self, condition: Condition) -> bool:
        """Whether the method has what it needs for ``condition`` (e.g. an embedding of every perturbed gene).

        A method that covers few conditions falls back to a generic answer for the rest; reports mark it
        instead of letting it pose as a baseline.
        """
        return True

    def params(self) -> dict:
        """Chosen hyperparameters, for the run's config."""
        return {}
