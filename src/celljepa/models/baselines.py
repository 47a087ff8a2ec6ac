"""Baselines: no-change, mean-shift, additive, ridge in the evaluation space, linear G·W·Pᵀ."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import Ridge

from ..data import contract as C
from .base import Condition, PerturbationModel, TrainData

RIDGE_ALPHAS = (1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1e3, 1e4)


class NoChange(PerturbationModel):
    """Predicted cells = the context's control cells."""

    name = "no_change"

    def fit(self, train: TrainData) -> NoChange:
        self._train = train
        return self

    def predict(self, condition: Condition) -> np.ndarray:
        return self._train.control_cells(condition.context_id)


def _per_perturbation_shifts(train: TrainData, conditions) -> dict[str, np.ndarray]:
    """Average observed shift of each perturbation over the conditions (contexts, doses) it was seen in."""
    acc: dict[str, list[np.ndarray]] = {}
    for cond, rows in conditions:
        acc.setdefault(cond.perturbation_id, []).append(train.shift(cond, rows))
    return {p: np.mean(v, axis=0) for p, v in acc.items()}


class MeanShift(PerturbationModel):
    """Control cells + the perturbation's mean shift learned on training data.

    A perturbation seen in training (in any context, e.g. S2) uses its own average shift; an unseen
    one the average shift over all training conditions.
    """

    name = "mean_shift"

    def fit(self, train: TrainData) -> MeanShift:
        self._train = train
        conditions = train.train_conditions + train.val_conditions
        self._shifts = _per_perturbation_shifts(train, conditions)
        self._global = np.mean([train.shift(c, r) for c, r in conditions], axis=0)
        return self

    def shift_for(self, perturbation_id: str) -> np.ndarray:
        return self._shifts.get(perturbation_id, self._global)

    def predict(self, condition: Condition) -> np.ndarray:
        return self._train.control_cells(condition.context_id) + self.shift_for(condition.perturbation_id)


class Additive(MeanShift):
    """Combinations: control cells + the sum of the single perturbations' shifts.

    Singles unseen in training contribute the global mean shift; a condition that is itself seen, or
    a single perturbation, is predicted as by :class:`MeanShift`.
    """

    name = "additive"

    def predict(self, condition: Condition) -> np.ndarray:
        if not condition.is_combo or condition.perturbation_id in self._shifts:
            return super().predict(condition)
        total = sum(self.shift_for(C.token_name(t)) for t in condition.tokens)
        return self._train.control_cells(condition.context_id) + total


_FEATURE_SETS = ("tokens", "tokens+context", "tokens+context+dose_time")


class RidgeShift(PerturbationModel):
    """Ridge regression from condition features to the mean shift in the evaluation space.

    Features: multi-hot perturbation tokens, optionally one-hot context and log-dose / time. The
    feature set and ``alpha`` are chosen by the mean-shift MSE on the validation conditions; the
    chosen model is then refitted on training + validation conditions.
    """

    name = "ridge"

    def __init__(self, alphas=RIDGE_ALPHAS, feature_sets=_FEATURE_SETS):
        self.alphas = tuple(alphas)
        self.feature_sets = tuple(feature_sets)

    def _features(self, conds: list[Condition], feature_set: str) -> np.ndarray:
        cols = [np.array([[t in c.tokens for t in self._tokens] for c in conds], dtype=float)]
        if "context" in feature_set:
            cols.append(np.array([[c.context_id == x for x in self._contexts] for c in conds], dtype=float))
        if "dose_time" in feature_set:
            dose = np.array([np.log1p(c.dose) if np.isfinite(c.dose) else 0.0 for c in conds])[:, None]
            time = np.array([c.time_hours if np.isfinite(c.time_hours) else 0.0 for c in conds])[:, None]
            cols += [dose, time]
        return np.hstack(cols)

    def fit(self, train: TrainData) -> RidgeShift:
        self._train = train
        tr, va = train.train_conditions, train.val_conditions
        self._tokens = sorted({t for c, _ in tr + va for t in c.tokens})
        self._contexts = sorted({c.context_id for c, _ in tr + va})
        y_tr = np.array([train.shift(c, r) for c, r in tr])
        best = (np.inf, self.feature_sets[0], self.alphas[len(self.alphas) // 2])
        if va:
            y_va = np.array([train.shift(c, r) for c, r in va])
            for fs in self.feature_sets:
                x_tr, x_va = self._features([c for c, _ in tr], fs), self._features([c for c, _ in va], fs)
                for alpha in self.alphas:
                    err = float(np.mean((Ridge(alpha=alpha).fit(x_tr, y_tr).predict(x_va) - y_va) ** 2))
                    if err < best[0]:
                        best = (err, fs, alpha)
        self.val_mse_, self.feature_set_, self.alpha_ = best
        conds = [c for c, _ in tr + va]
        y = np.array([train.shift(c, r) for c, r in tr + va])
        self._model = Ridge(alpha=self.alpha_).fit(self._features(conds, self.feature_set_), y)
        return self

    def predict(self, condition: Condition) -> np.ndarray:
        shift = self._model.predict(self._features([condition], self.feature_set_))[0]
        return self._train.control_cells(condition.context_id) + shift

    def params(self) -> dict:
        return {"alpha": self.alpha_, "feature_set": self.feature_set_, "val_mse": self.val_mse_}


class LinearGWP(PerturbationModel):
    """Linear model ``Y ≈ G·W·Pᵀ + b`` for unseen gene perturbations (Ahlmann-Eltze et al. style).

    ``G`` are the genes' loadings in the training PCA (the evaluation space's components), ``P`` the
    perturbation embeddings (the perturbed gene's own loading, summed over a combination's genes;
    zero for genes outside the space and for non-gene tokens), ``Y`` the training mean shifts in HVG
    expression and ``b`` their average. ``W = (GᵀG + λI)⁻¹ Gᵀ (Y − b) P (PᵀP + λI)⁻¹``: ridge on both
    sides, ``λ`` chosen on validation conditions. Predictions are mapped back to the evaluation space.
    """

    name = "linear_gwp"

    def __init__(self, lambdas=(1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0)):
        self.lambdas = tuple(lambdas)

    def _embed(self, cond: Condition) -> np.ndarray:
        vec = np.zeros(self._k)
        for t in cond.tokens:
            if C.token_kind(t) == "gene":
                vec = vec + self._train.gene_embedding.get(C.token_name(t), 0.0)
        return vec

    def _solve(self, conds, lam: float) -> np.ndarray:
        # In the evaluation space G has orthonormal columns, so Gᵀ(Y − b) is the shift in PCA coordinates.
        ys = np.array([self._train.shift(c, r) for c, r in conds]) - self._b  # (n_cond, k) = ((Y−b)ᵀ G)
        p = np.array([self._embed(c) for c, _ in conds])  # (n_cond, k)
        k = self._k
        left = np.linalg.solve(np.eye(k) + lam * np.eye(k), np.eye(k))  # (GᵀG + λI)⁻¹ with GᵀG = I
        right = np.linalg.solve(p.T @ p + lam * np.eye(k), np.eye(k))
        return left @ ys.T @ p @ right  # W: (k, k)

    def fit(self, train: TrainData) -> LinearGWP:
        self._train = train
        self._k = train.z.shape[1]
        tr, va = train.train_conditions, train.val_conditions
        self._b = np.mean([train.shift(c, r) for c, r in tr], axis=0)
        best = (np.inf, self.lambdas[len(self.lambdas) // 2])
        if va:
            y_va = np.array([train.shift(c, r) for c, r in va])
            for lam in self.lambdas:
                w = self._solve(tr, lam)
                pred = self._b + np.array([w @ self._embed(c) for c, _ in va])
                err = float(np.mean((pred - y_va) ** 2))
                if err < best[0]:
                    best = (err, lam)
        self.val_mse_, self.lambda_ = best
        self._b = np.mean([train.shift(c, r) for c, r in tr + va], axis=0)
        self._w = self._solve(tr + va, self.lambda_)
        self.coverage_ = float(np.mean([np.any(self._embed(c) != 0) for c, _ in tr + va]))
        return self

    def predict(self, condition: Condition) -> np.ndarray:
        shift = self._b + self._w @ self._embed(condition)
        return self._train.control_cells(condition.context_id) + shift

    def params(self) -> dict:
        return {"lambda": self.lambda_, "val_mse": self.val_mse_, "gene_embedding_coverage": self.coverage_}


def default_baselines(*, combos: bool, gene_perturbations: bool) -> list[PerturbationModel]:
    """The baselines of evaluation.md that apply to a split."""
    out: list[PerturbationModel] = [NoChange(), MeanShift(), RidgeShift()]
    if combos:
        out.append(Additive())
    if gene_perturbations:
        out.append(LinearGWP())
    return out
