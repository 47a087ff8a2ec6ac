"""Baselines a reviewer expects, every one tuned on validation conditions only.

Shift models (control cells + a predicted shift): no-change, mean-shift, additive (combinations), the
mean shift plus the learned on-target change of each perturbed gene the space measures (``target_shift``,
genetic screens), ridge from condition features, the linear model ``G·W·Pᵀ`` of Ahlmann-Eltze et al.
(2025) with perturbation embeddings from the training PCA (``linear_gwp``) or from Gene Ontology
annotations for every gene (``linear_go``). Context-aware models for unseen contexts: the shift as a
ridge function of the context's control mean (``context_ridge``), the same linear map applied to every control cell
(``cell_linear``), the shift of the nearest training context (``nearest_context``). Spread models:
a shift plus a per-component spread ratio (``shift_scale``, and ``context_shift_scale`` on the
context-aware shift).

Every model implements :class:`~celljepa.models.base.PerturbationModel`: hyperparameters are chosen
on ``train.val_conditions`` with the model fitted on ``train.train_conditions``; ``fit(refit=True)``
then refits on training + validation conditions.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import Ridge

from ..data import contract as C
from ..eval.edistance import edistance_sets
from ..eval.space import iter_blocks
from .base import Condition, PerturbationModel, TrainData

RIDGE_ALPHAS = (1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1e3, 1e4)
#: Shrinkage of the log spread ratio towards 0 (no rescaling), chosen on validation.
SPREAD_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
#: Conditions need this many cells for their spread to be estimated.
MIN_SPREAD_CELLS = 5
#: Settings of the validation E-distance used for tuning (cheaper than the report's, same estimator).
_TUNE_CAP, _TUNE_RESAMPLES = 128, 2


def validation_edistance(train: TrainData, predict, conditions=None) -> float:
    """Mean E-distance of ``predict(condition)`` to the observed cells of the validation conditions.

    The evaluation-space estimator of the report with a smaller cap and fewer resamples, seeded; used
    to choose hyperparameters that change a predicted set's spread, not just its mean.
    """
    conds = [(c, r) for c, r in (train.val_conditions if conditions is None else conditions) if len(r) >= 2]
    if not conds:
        return float("nan")
    preds = [np.asarray(predict(c), dtype=np.float64) for c, _ in conds]
    obs = [train.z[r] for _, r in conds]
    return float(np.mean(edistance_sets(preds, obs, cap=_TUNE_CAP, n_resamples=_TUNE_RESAMPLES, seed=0)))


def _shift_mse(train: TrainData, shift_of, conds) -> float:
    y = np.array([train.shift(c, r) for c, r in conds])
    pred = np.array([shift_of(c) for c, _ in conds])
    return float(np.mean((pred - y) ** 2))


class ShiftModel(PerturbationModel):
    """A model whose prediction is the context's control cells plus one predicted shift."""

    def predict_shift(self, condition: Condition) -> np.ndarray:
        """The predicted mean shift of ``condition`` in the evaluation space."""
        raise NotImplementedError

    def predict(self, condition: Condition) -> np.ndarray:
        return self._train.control_cells(condition.context_id) + self.predict_shift(condition)


class _RidgeOnFeatures(ShiftModel):
    """The shift predicted by a fitted ridge (``self._model``) from ``self._features([condition], feature_set)``."""

    def predict_shift(self, condition: Condition) -> np.ndarray:
        return self._model.predict(self._features([condition], self.feature_set_))[0]


class NoChange(PerturbationModel):
    """Predicted cells = the context's control cells."""

    name = "no_change"
    tunes_on_validation = False

    def fit(self, train: TrainData, *, refit: bool = True) -> NoChange:
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


class MeanShift(ShiftModel):
    """Control cells + the perturbation's mean shift learned on training data.

    A perturbation seen in training (in any context, e.g. S2) uses its own average shift; an unseen
    one the average shift over all training conditions.
    """

    name = "mean_shift"
    tunes_on_validation = False

    def fit(self, train: TrainData, *, refit: bool = True) -> MeanShift:
        self._train = train
        conditions = train.fitting_conditions(refit)
        self._shifts = _per_perturbation_shifts(train, conditions)
        self._global = np.mean([train.shift(c, r) for c, r in conditions], axis=0)
        return self

    def shift_for(self, perturbation_id: str) -> np.ndarray:
        return self._shifts.get(perturbation_id, self._global)

    def predict_shift(self, condition: Condition) -> np.ndarray:
        return self.shift_for(condition.perturbation_id)


class Additive(MeanShift):
    """Combinations: control cells + the sum of the single perturbations' shifts.

    Singles unseen in training contribute the global mean shift; a condition that is itself seen, or
    a single perturbation, is predicted as by :class:`MeanShift`.
    """

    name = "additive"

    def predict_shift(self, condition: Condition) -> np.ndarray:
        if not condition.is_combo or condition.perturbation_id in self._shifts:
            return super().predict_shift(condition)
        return sum(self.shift_for(C.token_name(t)) for t in condition.tokens)


#: Forms of the on-target effect of :class:`TargetShift`: one change in log units for every target, or a
#: change proportional to the target's mean expression in the context's control cells.
TARGET_FORMS = ("absolute", "proportional")
#: Shrinkage of the learned on-target effect towards 0 (the mean shift alone), chosen on validation.
TARGET_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
#: Rows of the source read per block when :class:`TargetShift` reads gene columns.
_TARGET_CHUNK = 20_000


class TargetShift(MeanShift):
    r"""The mean shift plus the perturbed genes' own learned change (genetic screens).

    A CRISPR screen moves its target gene first: CRISPRi and knockouts lower the target's expression,
    CRISPRa raises it. Where the evaluation space measures the target (it is one of the space's genes),
    that change is a known move of the prediction. For a perturbation ``p`` not seen in the fitting
    conditions, in context ``x``, with measured target genes ``g ∈ T(p)``:

    .. math::

        \hat z = z_{\mathrm{ctrl}} + ar s + \sum_{g \in T(p)} \max(w\,\delta_g(x), -c_g(x))\, d_g,
        \qquad d_g = \mathrm{space.transform}(u + e_g) - \mathrm{space.transform}(u)

    ``z_ctrl`` are the context's control cells, ``s̄`` the mean shift of :class:`MeanShift` (the mean over
    the fitting conditions), ``c_g(x)`` the mean log-expression of ``g`` in the context's control cells,
    ``d_g`` the move of the evaluation space for a change of 1 in gene ``g``'s log-expression (computed
    through the space's own affine ``transform``; ``u`` is any point, e.g. the space's centre; the clip
    keeps the predicted mean expression at or above 0). The on-target effect ``δ_g`` is learned from the
    fitting conditions whose targets are measured: for each such condition and target, the observed
    change ``Δ = mean_cells(x_g) − c_g(context)`` of the target's own log-expression, read from
    ``train.source`` (the gene column, never the evaluation space's reconstruction). Two forms:

    - ``absolute``: ``δ_g(x) = mean(Δ)`` (log units, the same for every target);
    - ``proportional``: ``δ_g(x) = β · c_g(x)`` with ``β = Σ Δ·c / Σ c²`` (least squares through the origin).

    The data decide the sign and size. The form and the shrinkage weight ``w`` (:data:`TARGET_WEIGHTS`;
    ``w = 0`` is :class:`MeanShift`) are chosen by the validation E-distance
    (:func:`validation_edistance`) on the validation conditions the model covers, with the effect learned
    from the training conditions alone; without such conditions the effect is used as learned
    (``absolute``, ``w = 1``). ``fit(refit=False)`` learns from training conditions only and never reads a
    validation condition's cells; ``fit(refit=True)`` then relearns the chosen form on training +
    validation conditions. A perturbation seen in the fitting conditions keeps its own mean shift (its
    on-target change is already in it); a combination moves every measured target. A target outside the
    space's genes cannot move the prediction: :meth:`covers` is True only when every token of the
    condition is a gene the space measures (and an effect was learned).

    Parameters
    ----------
    forms
        Effect forms to choose from (:data:`TARGET_FORMS`).
    weights
        Shrinkage weights to choose from.

    Examples
    --------
    >>> model = TargetShift()
    >>> model.name, model.forms
    ('target_shift', ('absolute', 'proportional'))
    """

    name = "target_shift"
    tunes_on_validation = True  # the form and the weight (MeanShift alone tunes nothing)

    def __init__(self, forms=TARGET_FORMS, weights=TARGET_WEIGHTS):
        unknown = [f for f in forms if f not in TARGET_FORMS]
        if unknown or not forms:
            raise ValueError(f"TargetShift forms must be among {TARGET_FORMS}, got {tuple(forms)!r}.")
        if not weights or any(not 0.0 <= float(w) <= 1.0 for w in weights):
            raise ValueError(f"TargetShift weights must lie in [0, 1], got {tuple(weights)!r}.")
        self.forms = tuple(forms)
        self.weights = tuple(float(w) for w in weights)

    # ---------------------------------------------------------------- data: the gene columns, read once per fit

    def _measured_targets(self, condition: Condition) -> list[int]:
        """Positions (in the space's genes) of the condition's gene tokens that the space measures."""
        out = []
        for t in condition.tokens:
            if C.token_kind(t) == "gene":
                j = self._gene_pos.get(C.token_name(t))
                if j is not None:
                    out.append(j)
        return out

    def _read(self, train: TrainData, conds) -> list[tuple]:
        """Mean log-expression of the space's genes: per context over its control cells, per target condition.

        One pass over the source rows of every context's control cells and of the cells of ``conds`` with a
        measured target (block by block; backed files included); no other cell is read. Sets
        ``self._ctrl_expr`` ``{context: (n_genes,)}`` and returns one point
        ``(condition, gene position, Δ, control mean)`` per measured target of each condition.
        """
        is_ctrl = train.obs[C.IS_CONTROL].to_numpy(dtype=bool)
        contexts = sorted(set(train.obs.loc[is_ctrl, C.CONTEXT_ID].astype(str)))
        target_conds = [(c, r) for c, r in conds if self._measured_targets(c)]
        row_lists = [train.control_rows(x) for x in contexts] + [np.asarray(r) for _, r in target_conds]
        sizes = np.array([len(r) for r in row_lists], dtype=np.int64)
        rows = np.concatenate(row_lists).astype(np.int64) if row_lists else np.zeros(0, np.int64)
        group = np.repeat(np.arange(len(row_lists)), sizes)
        positions = np.asarray(train.positions, dtype=np.int64)[rows]
        sums = np.zeros((len(row_lists), len(self._columns)))
        start = 0
        for block in iter_blocks(train.source, positions, self._columns, chunk=_TARGET_CHUNK):
            n = block.shape[0]
            g = group[start : start + n]
            indicator = sp.csr_matrix((np.ones(n), (g, np.arange(n))), shape=(len(row_lists), n))
            part = indicator @ block
            sums += np.asarray(part.toarray() if sp.issparse(part) else part, dtype=np.float64)
            start += n
        means = sums / np.maximum(sizes, 1)[:, None]
        self._ctrl_expr = {x: means[i] for i, x in enumerate(contexts)}
        points = []
        for k, (c, _) in enumerate(target_conds):
            ctrl = self._ctrl_expr[c.context_id]
            for j in self._measured_targets(c):
                points.append((c, j, float(means[len(contexts) + k, j] - ctrl[j]), float(ctrl[j])))
        return points

    @staticmethod
    def _learn(points) -> dict[str, float]:
        """The effect of each form from ``points`` (observed Δ and control means of measured targets)."""
        if not points:
            return {}
        delta = np.array([p[2] for p in points])
        ctrl = np.array([p[3] for p in points])
        denom = float(ctrl @ ctrl)
        return {"absolute": float(delta.mean()), "proportional": float(delta @ ctrl / denom) if denom > 0 else 0.0}

    # ---------------------------------------------------------------- the model

    def _direction(self, j: int) -> np.ndarray:
        """The move of the evaluation space for +1 in gene ``j``'s log-expression (through ``space.transform``)."""
        if j not in self._directions:
            base = np.asarray(self._space.mean, dtype=np.float64)[None, :]
            moved = base.copy()
            moved[0, j] += 1.0
            self._directions[j] = (self._space.transform(moved) - self._space.transform(base))[0]
        return self._directions[j]

    def _target_move(self, condition: Condition, form: str, weight: float) -> np.ndarray:
        move = np.zeros(self._train.z.shape[1])
        effect = self._effects.get(form)
        if effect is None or weight == 0.0 or condition.perturbation_id in self._shifts:
            return move
        ctrl = self._ctrl_expr.get(condition.context_id)
        if ctrl is None:  # a context without control cells in the data read: no control expression to start from
            return move
        for j in self._measured_targets(condition):
            delta = weight * (effect if form == "absolute" else effect * ctrl[j])
            move = move + max(delta, -float(ctrl[j])) * self._direction(j)
        return move

    def _shift_with(self, condition: Condition, form: str, weight: float) -> np.ndarray:
        return MeanShift.predict_shift(self, condition) + self._target_move(condition, form, weight)

    def predict_shift(self, condition: Condition) -> np.ndarray:
        return self._shift_with(condition, self.form_, self.weight_)

    def covers(self, condition: Condition) -> bool:
        return (
            bool(self._effects)
            and bool(condition.tokens)
            and all(C.token_kind(t) == "gene" and C.token_name(t) in self._gene_pos for t in condition.tokens)
        )

    def _setup(self, train: TrainData) -> bool:
        """The space's genes and their source columns; False when the model has no gene data to learn from."""
        self._directions: dict[int, np.ndarray] = {}
        self._gene_pos: dict[str, int] = {}
        self._ctrl_expr, self._points, self._effects = {}, [], {}
        space, source = train.space, train.source
        if space is None or source is None or train.positions is None:
            self.note_ = "no evaluation space or source data: the mean shift alone"
            return False
        lookup = {str(g): i for i, g in enumerate(map(str, source.var_names))}
        genes = [str(g) for g in space.genes]
        if any(g not in lookup for g in genes):
            self.note_ = "the evaluation space's genes are not all in the source data: the mean shift alone"
            return False
        self._space = space
        self._gene_pos = {g: i for i, g in enumerate(genes)}
        self._columns = np.array([lookup[g] for g in genes], dtype=np.int64)
        return True

    def fit(self, train: TrainData, *, refit: bool = True) -> TargetShift:
        MeanShift.fit(self, train, refit=False)  # the shift of the training conditions, for tuning
        self.note_ = ""
        self.form_, self.weight_, self.val_edistance_ = self.forms[0], 0.0, float("nan")
        if not self._setup(train):
            MeanShift.fit(self, train, refit=refit)
            return self
        # refit=False reads the training conditions' cells only (and the control cells): never a validation cell
        points = self._read(train, train.fitting_conditions(refit))
        in_train = {id(c) for c, _ in train.train_conditions}  # by identity (a NaN dose is never == itself)
        train_points = [p for p in points if id(p[0]) in in_train]
        self._effects = self._learn(train_points)
        covered = [
            (c, r)
            for c, r in train.val_conditions
            if self.covers(c) and c.perturbation_id not in self._shifts and len(r) >= 2
        ]
        if self._effects and covered:
            best = (np.inf, self.forms[0], 0.0)
            for form in self.forms:
                for w in self.weights:
                    if w == 0.0 and form != self.forms[0]:
                        continue  # w = 0 is the mean shift whatever the form
                    err = validation_edistance(
                        train,
                        lambda c, f=form, w=w: self._train.control_cells(c.context_id) + self._shift_with(c, f, w),
                        covered,
                    )
                    if err < best[0]:
                        best = (err, form, w)
            self.val_edistance_, self.form_, self.weight_ = best
        if self._effects and not np.isfinite(self.val_edistance_):  # nothing to tune on (or too few cells)
            self.form_, self.weight_ = "absolute" if "absolute" in self.forms else self.forms[0], 1.0
            self.val_edistance_ = float("nan")
            self.note_ = "no covered validation condition: the learned effect as is"
        if refit:
            MeanShift.fit(self, train, refit=True)
            self._effects = self._learn(points)
        self._points = points if refit else train_points
        return self

    def params(self) -> dict:
        """The chosen form and weight, the learned effect of each form and the data it was learned from.

        ``effect`` is the chosen form's (log units for ``absolute``, a fraction of the control mean for
        ``proportional``); ``n_perturbations`` / ``n_targets`` count the perturbations and (condition, target)
        pairs it was learned from; ``mean_observed_change`` and ``share_down`` describe their observed Δ. Values
        that do not exist (no measured target, nothing to tune on) are None.
        """
        deltas = np.array([p[2] for p in self._points])
        return {
            "form": self.form_,
            "weight": self.weight_,
            "effect": self._effects.get(self.form_),
            "effect_unit": "log1p units" if self.form_ == "absolute" else "fraction of the control mean",
            "effects": dict(self._effects),
            "n_perturbations": len({p[0].perturbation_id for p in self._points}),
            "n_targets": len(self._points),
            "mean_observed_change": float(deltas.mean()) if deltas.size else None,
            "share_down": float((deltas < 0).mean()) if deltas.size else None,
            "val_edistance": self.val_edistance_ if np.isfinite(self.val_edistance_) else None,
            "note": self.note_,
        }


_FEATURE_SETS = ("tokens", "tokens+context", "tokens+context+dose_time")


class RidgeShift(_RidgeOnFeatures):
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

    def fit(self, train: TrainData, *, refit: bool = True) -> RidgeShift:
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
        conds = train.fitting_conditions(refit)
        y = np.array([train.shift(c, r) for c, r in conds])
        self._model = Ridge(alpha=self.alpha_).fit(self._features([c for c, _ in conds], self.feature_set_), y)
        return self

    def params(self) -> dict:
        return {"alpha": self.alpha_, "feature_set": self.feature_set_, "val_mse": self.val_mse_}


class LinearGWP(ShiftModel):
    """Linear model ``Y ≈ G·W·Pᵀ + b`` for unseen gene perturbations (Ahlmann-Eltze et al. 2025).

    ``G`` are the genes' loadings in the training PCA (the evaluation space's components), ``P`` the
    perturbation embeddings (here the perturbed gene's own loading, summed over a combination's genes;
    zero for genes outside the space and for non-gene tokens), ``Y`` the training mean shifts in HVG
    expression and ``b`` their average. ``W = (GᵀG + λI)⁻¹ Gᵀ (Y − b) P (PᵀP + λI)⁻¹``: ridge on both
    sides, ``λ`` chosen on validation conditions. Predictions are mapped back to the evaluation space.

    The training-PCA loadings exist only for the space's HVGs, so a perturbed gene outside them has no
    embedding: :meth:`covers` says which conditions the model really predicts (the others get ``b``).
    """

    name = "linear_gwp"

    def __init__(self, lambdas=(1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0)):
        self.lambdas = tuple(lambdas)

    # the perturbation-embedding source; subclasses replace these two
    def _setup_embedding(self, train: TrainData) -> None:
        self._vectors = train.gene_embedding
        self._dim = train.z.shape[1]

    def _gene_vector(self, gene: str) -> np.ndarray | None:
        return self._vectors.get(gene)

    def _embed(self, cond: Condition) -> np.ndarray:
        vec = np.zeros(self._dim)
        for t in cond.tokens:
            if C.token_kind(t) == "gene":
                v = self._gene_vector(C.token_name(t))
                if v is not None:
                    vec = vec + v
        return vec

    def covers(self, condition: Condition) -> bool:
        return bool(condition.tokens) and all(
            C.token_kind(t) == "gene" and self._gene_vector(C.token_name(t)) is not None for t in condition.tokens
        )

    def _solve(self, conds, lam: float, b: np.ndarray) -> np.ndarray:
        # In the evaluation space G has orthonormal columns, so Gᵀ(Y − b) is the shift in PCA coordinates.
        ys = np.array([self._train.shift(c, r) for c, r in conds]) - b  # (n_cond, k) = ((Y−b)ᵀ G)
        p = np.array([self._embed(c) for c, _ in conds])  # (n_cond, L)
        k = ys.shape[1]
        left = np.eye(k) / (1.0 + lam)  # (GᵀG + λI)⁻¹ with GᵀG = I
        right = np.linalg.solve(p.T @ p + lam * np.eye(p.shape[1]), np.eye(p.shape[1]))
        return left @ ys.T @ p @ right  # W: (k, L)

    def fit(self, train: TrainData, *, refit: bool = True) -> LinearGWP:
        self._train = train
        self._setup_embedding(train)
        tr, va = train.train_conditions, train.val_conditions
        b_tr = np.mean([train.shift(c, r) for c, r in tr], axis=0)
        best = (np.inf, self.lambdas[len(self.lambdas) // 2])
        if va:
            y_va = np.array([train.shift(c, r) for c, r in va])
            for lam in self.lambdas:
                w = self._solve(tr, lam, b_tr)
                pred = b_tr + np.array([w @ self._embed(c) for c, _ in va])
                err = float(np.mean((pred - y_va) ** 2))
                if err < best[0]:
                    best = (err, lam)
        self.val_mse_, self.lambda_ = best
        conds = train.fitting_conditions(refit)
        self._b = np.mean([train.shift(c, r) for c, r in conds], axis=0)
        self._w = self._solve(conds, self.lambda_, self._b)
        self.coverage_ = float(np.mean([self.covers(c) for c, _ in conds]))
        return self

    def predict_shift(self, condition: Condition) -> np.ndarray:
        return self._b + self._w @ self._embed(condition)

    def params(self) -> dict:
        return {"lambda": self.lambda_, "val_mse": self.val_mse_, "gene_embedding_coverage": self.coverage_}


class LinearGO(LinearGWP):
    """The linear model ``G·W·Pᵀ + b`` with a perturbation embedding for every gene, from Gene Ontology.

    ``P`` comes from :func:`celljepa.data.go.go_gene_embedding`: the genes' biological-process
    annotations (shipped with the package, derived from org.Hs.eg.db 2022-09), TF-IDF weighted and
    reduced by truncated SVD. Unlike :class:`LinearGWP` it does not depend on which genes the dataset
    measures, so an unseen perturbed gene outside the HVGs still has an embedding. Gene names are
    matched to symbols without regard to case.
    """

    name = "linear_go"

    def __init__(self, lambdas=(1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0), n_components: int = 64):
        super().__init__(lambdas)
        self.n_components = int(n_components)

    def _setup_embedding(self, train: TrainData) -> None:
        from ..data.go import go_gene_embedding

        self._go = go_gene_embedding(self.n_components)
        self._dim = self._go.matrix.shape[1]

    def _gene_vector(self, gene: str) -> np.ndarray | None:
        return self._go.vector(gene)

    def params(self) -> dict:
        return {**super().params(), "n_components": self._dim}


class ContextRidge(_RidgeOnFeatures):
    """The shift as a ridge function of the context's control mean (for unseen contexts, S2).

    ``shift(condition) = a + Σ_tokens β_t + B · (μ_context − μ̄) / s``: ``μ_context`` is the mean of the
    context's control cells in the evaluation space, centred and scaled over the training contexts,
    so a context never seen in training gets a shift of its own. Feature set (with or without the
    perturbation tokens) and ``alpha`` are chosen by the shift MSE on the validation conditions.
    """

    name = "context_ridge"
    feature_sets = ("context", "tokens+context")

    def __init__(self, alphas=RIDGE_ALPHAS):
        self.alphas = tuple(alphas)

    def _prepare(self, train: TrainData, conds) -> None:
        contexts = sorted({c.context_id for c, _ in conds})
        means = np.array([train.control_mean(x) for x in contexts])
        self._centre = means.mean(axis=0)
        spread = float(np.sqrt(np.mean((means - self._centre) ** 2))) if len(contexts) > 1 else 0.0
        self._scale = spread if spread > 0 else 1.0

    def _context_block(self, rows: np.ndarray) -> np.ndarray:
        return (np.atleast_2d(rows) - self._centre) / self._scale

    def _token_block(self, conds: list[Condition]) -> np.ndarray:
        return np.array([[t in c.tokens for t in self._tokens] for c in conds], dtype=float).reshape(len(conds), -1)

    def _features(self, conds: list[Condition], feature_set: str, states: np.ndarray | None = None) -> np.ndarray:
        if states is None:
            states = np.array([self._train.control_mean(c.context_id) for c in conds])
        cols = [self._context_block(states)]
        if feature_set.startswith("tokens"):
            cols.insert(0, self._token_block(conds))
        return np.hstack(cols)

    def _fit_on(self, conds, feature_set: str, alpha: float) -> Ridge:
        self._prepare(self._train, conds)
        y = np.array([self._train.shift(c, r) for c, r in conds])
        return Ridge(alpha=alpha).fit(self._features([c for c, _ in conds], feature_set), y)

    def _candidates(self):
        return [(fs, a) for fs in self.feature_sets for a in self.alphas]

    def _tune_score(self, va) -> float:
        """Validation loss of the current fit (shift MSE; per-cell models override it)."""
        return _shift_mse(self._train, self.predict_shift, va)

    def fit(self, train: TrainData, *, refit: bool = True) -> ContextRidge:
        self._train = train
        tr, va = train.train_conditions, train.val_conditions
        self._tokens = sorted({t for c, _ in tr + va for t in c.tokens})
        best = (np.inf, *self._candidates()[len(self.alphas) // 2])
        if va:
            for fs, alpha in self._candidates():
                self.feature_set_, self._model = fs, self._fit_on(tr, fs, alpha)
                err = self._tune_score(va)
                if err < best[0]:
                    best = (err, fs, alpha)
        self.val_loss_, self.feature_set_, self.alpha_ = best
        self._model = self._fit_on(train.fitting_conditions(refit), self.feature_set_, self.alpha_)
        return self

    def params(self) -> dict:
        return {"alpha": self.alpha_, "feature_set": self.feature_set_, "val_loss": self.val_loss_}


class CellLinear(ContextRidge):
    """The map of :class:`ContextRidge` applied to every control cell: each cell gets its own shift.

    A control cell ``x`` of the context becomes ``x + a + Σ β_t + B · (x − μ̄) / s``; the predicted
    mean equals :class:`ContextRidge`'s, but the cloud is transformed linearly (``(I + B/s)``), so a
    context-dependent response of the cell state is carried to every cell. Tuned by the validation
    E-distance, since the map changes the predicted spread.
    """

    name = "cell_linear"

    def _tune_score(self, va) -> float:
        return validation_edistance(self._train, self.predict, va)

    def predict(self, condition: Condition) -> np.ndarray:
        cells = self._train.control_cells(condition.context_id)
        x = self._features([condition] * len(cells), self.feature_set_, states=cells)
        return cells + self._model.predict(x)


class NearestContext(ShiftModel):
    """The shift of the training context(s) whose control mean is nearest.

    For a condition ``(context, perturbation)``, the training contexts where the perturbation (same
    dose and time when known, else any) was observed are ranked by the Euclidean distance between
    their control mean and the context's; the prediction is the context's controls plus the average
    shift of the ``k`` nearest. An unseen perturbation uses the contexts' average shift over all their
    training perturbations. ``k`` is chosen by the shift MSE on the validation conditions.
    """

    name = "nearest_context"

    def __init__(self, ks=(1, 2, 3, 5)):
        self.ks = tuple(ks)

    def _index(self, conds) -> None:
        by_key: dict[tuple, dict[str, list]] = {}
        by_pid: dict[str, dict[str, list]] = {}
        every: dict[str, list] = {}
        for c, r in conds:
            s = self._train.shift(c, r)
            by_key.setdefault((c.perturbation_id, c.dose, c.time_hours), {}).setdefault(c.context_id, []).append(s)
            by_pid.setdefault(c.perturbation_id, {}).setdefault(c.context_id, []).append(s)
            every.setdefault(c.context_id, []).append(s)

        def avg(d):
            return {ctx: np.mean(v, axis=0) for ctx, v in d.items()}

        self._by_key = {k: avg(v) for k, v in by_key.items()}
        self._by_pid = {k: avg(v) for k, v in by_pid.items()}
        self._every = avg(every)
        self._means = {ctx: self._train.control_mean(ctx) for ctx in self._every}

    def _key(self, c: Condition) -> tuple:
        return (c.perturbation_id, c.dose, c.time_hours)

    def _shift(self, condition: Condition, k: int) -> np.ndarray:
        pool = self._by_key.get(self._key(condition)) or self._by_pid.get(condition.perturbation_id) or self._every
        target = self._train.control_mean(condition.context_id)
        ctxs = sorted(pool, key=lambda x: (float(np.linalg.norm(self._means[x] - target)), x))[:k]
        return np.mean([pool[x] for x in ctxs], axis=0)

    def fit(self, train: TrainData, *, refit: bool = True) -> NearestContext:
        self._train = train
        tr, va = train.train_conditions, train.val_conditions
        best = (np.inf, self.ks[0])
        if va:
            self._index(tr)
            for k in self.ks:
                err = _shift_mse(train, lambda c, k=k: self._shift(c, k), va)
                if err < best[0]:
                    best = (err, k)
        self.val_mse_, self.k_ = best
        self._index(train.fitting_conditions(refit))
        return self

    def predict_shift(self, condition: Condition) -> np.ndarray:
        return self._shift(condition, self.k_)

    def params(self) -> dict:
        return {"k": self.k_, "val_mse": self.val_mse_}


class _Spread:
    """Per-component spread ratio ``sd(perturbed) / sd(context controls)`` learned from training conditions.

    The log ratio of a condition comes from the training conditions of the same perturbation when there
    are any, else of the same context, else all; it is shrunk towards 0 by a weight chosen on validation.
    """

    def _fit_spread(self, train: TrainData, conds) -> None:
        by_pid: dict[str, list] = {}
        by_ctx: dict[str, list] = {}
        every = []
        for c, r in conds:
            if len(r) < MIN_SPREAD_CELLS:
                continue
            ctrl = train.control_cells(c.context_id)
            ratio = np.log(
                np.maximum(train.z[r].std(axis=0, ddof=1), 1e-8) / np.maximum(ctrl.std(axis=0, ddof=1), 1e-8)
            )
            ratio = np.clip(ratio, -3.0, 3.0)
            by_pid.setdefault(c.perturbation_id, []).append(ratio)
            by_ctx.setdefault(c.context_id, []).append(ratio)
            every.append(ratio)
        self._log_pid = {k: np.mean(v, axis=0) for k, v in by_pid.items()}
        self._log_ctx = {k: np.mean(v, axis=0) for k, v in by_ctx.items()}
        self._log_all = np.mean(every, axis=0) if every else np.zeros(train.z.shape[1])

    def _log_ratio(self, condition: Condition) -> np.ndarray:
        if condition.perturbation_id in self._log_pid:
            return self._log_pid[condition.perturbation_id]
        return self._log_ctx.get(condition.context_id, self._log_all)

    def _spread_cells(self, condition: Condition, shift: np.ndarray, weight: float) -> np.ndarray:
        cells = self._train.control_cells(condition.context_id)
        mu = cells.mean(axis=0)
        ratio = np.exp(weight * self._log_ratio(condition))
        return mu + shift + (cells - mu) * ratio

    #: The shift model whose prediction the spread ratio rescales (set by each subclass).
    _shift_model: type
    tunes_on_validation = True  # the spread weight (a MeanShift alone tunes nothing)

    def fit(self, train: TrainData, *, refit: bool = True):
        base = self._shift_model
        base.fit(self, train, refit=False)  # the shift tuned and fitted on training conditions
        self._tune_spread(train, train.train_conditions, train.val_conditions)
        base.fit(self, train, refit=refit)
        self._fit_spread(train, train.fitting_conditions(refit))
        return self

    def predict(self, condition: Condition) -> np.ndarray:
        return self._spread_cells(condition, self.predict_shift(condition), self.spread_weight_)

    def params(self) -> dict:
        return {
            **self._shift_model.params(self),
            "spread_weight": self.spread_weight_,
            "val_edistance": self.val_edistance_,
        }

    def _tune_spread(self, train: TrainData, tr, va) -> None:
        best = (np.inf, 0.0)
        if va:
            self._fit_spread(train, tr)
            for w in SPREAD_WEIGHTS:
                err = validation_edistance(train, lambda c, w=w: self._spread_cells(c, self.predict_shift(c), w), va)
                if err < best[0]:
                    best = (err, w)
        self.val_edistance_, self.spread_weight_ = best


class ShiftScale(_Spread, MeanShift):
    """Mean shift plus a per-component spread ratio that matches the perturbed cells' spread.

    ``x ↦ μ + shift + r ⊙ (x − μ)`` for the context's control cells ``x`` (mean ``μ``), with ``shift`` the
    mean shift of :class:`MeanShift` and ``r = exp(w · log ratio)`` (see :class:`_Spread`); ``w`` is chosen
    by the validation E-distance.
    """

    name = "shift_scale"
    _shift_model = MeanShift


class ContextShiftScale(_Spread, ContextRidge):
    """The context-aware form of :class:`ShiftScale`: the shift of :class:`ContextRidge` plus the spread ratio."""

    name = "context_shift_scale"
    _shift_model = ContextRidge


def default_baselines(*, combos: bool, gene_perturbations: bool, contexts: bool = False) -> list[PerturbationModel]:
    """The baselines of evaluation.md that apply to a split.

    Parameters
    ----------
    combos
        The test conditions include combinations (adds ``additive``).
    gene_perturbations
        Some perturbations are genes (adds ``target_shift``, ``linear_gwp`` and ``linear_go``).
    contexts
        The training data hold more than one context (adds the context-aware models ``context_ridge``,
        ``cell_linear``, ``nearest_context`` and ``context_shift_scale``; with a single context they
        reduce to the context-free ones).
    """
    out: list[PerturbationModel] = [NoChange(), MeanShift(), RidgeShift(), ShiftScale()]
    if combos:
        out.append(Additive())
    if gene_perturbations:
        out += [TargetShift(), LinearGWP(), LinearGO()]
    if contexts:
        out += [ContextRidge(), CellLinear(), NearestContext(), ContextShiftScale()]
    return out
