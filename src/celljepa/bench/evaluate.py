"""Score perturbation predictors on one split fold: evaluation space, fitting, per-condition metrics.

Every method is fitted on the fold's training data and predicts sets of cells in one evaluation space (HVGs +
PCA on training cells). Its **validation score** is out of sample (evaluation protocol v3): the validation
conditions are split into :data:`VALIDATION_PARTS` seeded parts, and each part is predicted by the method fitted
on training conditions with every choice it makes (hyperparameters, early stopping, decoder, initialisation)
tuned on the *other* part only; a method that tunes nothing on validation conditions is fitted once on training
conditions. The same rule holds for baselines, the JEPA models, the PCA twin and peers. The method that
predicts the test conditions is then fitted as it would be used: tuned on every validation condition (and
refitted on training + validation where the method does so). Pooling over folds and seeds, the comparator
choice and the verdict live in :mod:`celljepa.bench.pooling`.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._errors import InputError
from .._logging import logger
from ..data import contract as C
from ..eval import metrics as M
from ..eval.bootstrap import N_HIERARCHICAL
from ..eval.edistance import DEFAULT_CAP, DEFAULT_RESAMPLES, edistance_sets
from ..eval.effects import condition_effects
from ..eval.predictions import predictions_anndata
from ..eval.space import DEFAULT_N_HVG, DEFAULT_N_PCS, EvaluationSpace, iter_blocks
from ..eval.verdict import MIN_CONDITIONS
from ..models.base import Condition, PerturbationModel, TrainData, conditions_of
from ..models.baselines import default_baselines
from .pooling import DEFAULT_PRIMARY, KEEP_FIRST, METRICS, summarize

#: Seeded parts of a fold's validation conditions for the out-of-sample validation score (cross-fitting).
VALIDATION_PARTS = 2
#: How a method's validation score was obtained, by whether it tunes anything on validation conditions.
CROSS_FITTED = (
    "cross-fitted: tuned on the other part of the validation conditions, scored on this one "
    f"({VALIDATION_PARTS} seeded parts)"
)
UNTUNED = "fitted on training conditions; tunes nothing on validation conditions"

#: ``on_step(step, done, total)``: told the name of each step of a fold's scoring as it begins (see
#: :func:`reporting_steps`); ``done`` steps of ``total`` are finished, and a last call names ``"done"``.
StepCallback = Callable[[str, int, int], None]
_ON_STEP: contextvars.ContextVar[StepCallback | None] = contextvars.ContextVar("celljepa_fold_step", default=None)


@contextlib.contextmanager
def reporting_steps(on_step: StepCallback | None) -> Iterator[None]:
    """Within the block, every :func:`score_fold` names its steps to ``on_step`` (unless given its own).

    How a workflow that calls :func:`score_fold` through other code (a benchmark's fold tasks) shows progress
    inside a fold: ``on_step(step, done, total)`` hears ``"evaluation space"``, ``"encoder seed 0"``, each
    method's fit and prediction (``"ridge"``, ``"jepa_set seed 0"``), ``"embedding-space diagnostics"``,
    ``"scoring test"``, ``"effects"`` (when not given), ``"scoring validation + CIs"``, then ``"done"``. ``total``
    grows once the methods of the fold are known. None: nothing is told.

    Examples
    --------
    >>> heard = []
    >>> with reporting_steps(lambda step, done, total: heard.append(step)):
    ...     pass  # score_fold(adata, fold) here names its steps
    """
    token = _ON_STEP.set(on_step)
    try:
        yield
    finally:
        _ON_STEP.reset(token)


class FoldStepsBar:
    """A progress bar of the steps inside a fold: a :func:`reporting_steps` callback (a benchmark's second bar).

    It shows only on a terminal (tqdm's ``disable=None``), so a batch log gets no more lines than the fold bar
    writes, and never with ``progress=False``. Each fold starts it again; :meth:`close` when done.
    """

    def __init__(self, progress: bool, *, position: int = 1, file=None):
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=1,
            desc="fold",
            unit="step",
            position=position,
            leave=False,
            disable=None if progress else True,
            file=file,
        )

    def __call__(self, step: str, done: int, total: int) -> None:
        if done == 0:  # a new fold
            self.bar.reset(total=total)
        self.bar.total, self.bar.n = total, done
        self.bar.set_postfix_str(step)

    def close(self) -> None:
        self.bar.close()


class _Steps:
    """Counts a fold's steps and names each to the callback as it begins."""

    def __init__(self, on_step: StepCallback | None, total: int):
        self.on_step, self.done, self.total = on_step, 0, total

    def __call__(self, step: str) -> None:
        if self.on_step is not None:
            self.on_step(step, self.done, max(self.total, self.done + 1))
        self.done += 1

    def finish(self) -> None:
        self.total = self.done
        if self.on_step is not None:
            self.on_step("done", self.done, self.done)


def _seed_step(name: str, seed) -> str:
    return name if seed is None else f"{name} seed {seed}"


def never_left_start(records: list[tuple[str, int | None, dict]]) -> dict:
    """The methods whose kept model is the one they started from, from their own records (training data only).

    ``records`` holds ``(method, model seed, params)`` of every fit that predicts the test conditions. A method that
    early-stops (the transition models) reports ``left_start`` in :meth:`params`; False means validation kept the
    initial parameters (step 0), so its predictions are its starting map (no change or the mean training shift),
    not a trained model. Returns ``{method: {"model_seeds": [...], "n_seeds": k, "all_seeds": bool, "init":
    [...]}}`` for the methods that never left their start in at least one model seed.
    """
    out: dict = {}
    fits: dict = {}
    for name, seed, record in records:
        if "left_start" not in record:
            continue
        fits[name] = fits.get(name, 0) + 1
        if not record["left_start"]:
            entry = out.setdefault(name, {"model_seeds": [], "init": []})
            entry["model_seeds"].append(None if seed is None else int(seed))
            entry["init"].append(record.get("init"))
    for name, entry in out.items():
        entry["n_seeds"] = fits[name]
        entry["all_seeds"] = len(entry["model_seeds"]) == fits[name]
    return out


@dataclass
class EvalConfig:
    """Settings of one evaluation (all stored in config.json).

    Attributes
    ----------
    n_hvg, n_pcs
        The evaluation space (HVGs, then PCA, on training cells).
    cap, n_resamples
        E-distance set-size cap and resamples.
    n_bootstrap
        Resamples of the hierarchical bootstrap behind every CI (default 10,000).
    min_cells
        Fewest cells of a scored condition.
    seed
        The split seed (also seeds the E-distance subsampling and the bootstrap).
    primary
        The pre-registered primary model of the verdict.
    transductive
        Let every method fit on the unlabeled control cells of held-out contexts (default: inductive,
        they are only the inputs predictions start from).
    n_permutations, effect_alpha
        E-test of each test condition against its controls; conditions without an effect (Holm–Sidak
        adjusted p ≥ ``effect_alpha``) are kept out of the verdict.
    min_conditions
        Fewest conditions of a "wins" or "loses".
    """

    n_hvg: int = DEFAULT_N_HVG
    n_pcs: int = DEFAULT_N_PCS
    cap: int = DEFAULT_CAP
    n_resamples: int = DEFAULT_RESAMPLES
    n_bootstrap: int = N_HIERARCHICAL
    min_cells: int = 2
    seed: int = 0
    primary: str = DEFAULT_PRIMARY
    transductive: bool = False
    n_permutations: int = 1000
    effect_alpha: float = 0.05
    min_conditions: int = MIN_CONDITIONS


@dataclass
class FoldResult:
    """Everything one evaluated fold produced.

    ``per_condition`` has one row per method × test condition (metrics averaged over model seeds),
    ``per_seed`` one row per method × model seed × test condition, ``validation`` one row per method ×
    validation condition (E-distance averaged over model seeds).
    """

    fold: dict
    space: EvaluationSpace
    per_condition: pd.DataFrame
    metrics: dict
    params: dict
    timings: dict = field(default_factory=dict)
    methods: list = field(default_factory=list, repr=False)
    encoder: object | None = field(default=None, repr=False)
    validation: pd.DataFrame | None = None
    per_seed: pd.DataFrame | None = None
    predictions: AnnData | None = field(default=None, repr=False)


def _positions(obs_names: pd.Index, names) -> np.ndarray:
    pos = obs_names.get_indexer(pd.Index(names))
    if (pos < 0).any():
        raise InputError(
            f"{int((pos < 0).sum())} cell(s) of the split are not in the data; was the split made from this file?"
        )
    return np.sort(pos)


def _name_dropped(conditions, min_cells: int, what: str) -> None:
    """Say which conditions are left out of scoring for having fewer than ``min_cells`` cells (never silently)."""
    small = [(c, len(r)) for c, r in conditions if len(r) < min_cells]
    if small:
        shown = ", ".join(
            f"{c.perturbation_id} in {c.context_id} ({n} cell{'s' if n != 1 else ''})" for c, n in small[:5]
        )
        logger.warning(
            "%d of the %s have fewer than %d cells and are not scored: %s%s (EvalConfig.min_cells)",
            len(small),
            what,
            min_cells,
            shown,
            " ..." if len(small) > 5 else "",
        )


def prepare_fold(
    adata: AnnData, fold: dict, config: EvalConfig, *, require_test: bool = True
) -> tuple[EvaluationSpace, TrainData, list]:
    """Fit the evaluation space on training cells and assemble what predictors may see.

    Predictors see training and validation cells and the control cells of every context; the
    perturbed test cells are returned separately and used only to score. The control cells of a
    held-out context are inputs only (``TrainData.fit_rows`` leaves them out) unless
    ``config.transductive``.
    """
    train_pos = _positions(adata.obs_names, fold["train_cells"])
    val_pos = _positions(adata.obs_names, fold["val_cells"])
    test_pos = _positions(adata.obs_names, fold["test_cells"])
    space = EvaluationSpace.fit(adata, rows=train_pos, n_hvg=config.n_hvg, n_pcs=config.n_pcs, seed=config.seed)

    is_ctrl = adata.obs[C.IS_CONTROL].to_numpy(dtype=bool)
    inputs = test_pos[is_ctrl[test_pos]]
    visible = np.sort(np.concatenate([train_pos, val_pos, inputs]))
    z_visible = space.transform(adata, rows=visible)
    obs_visible = adata.obs.iloc[visible]
    roles = np.full(len(visible), "input", dtype=object)
    roles[np.isin(visible, train_pos)] = "train"
    roles[np.isin(visible, val_pos)] = "val"
    train_rows = np.flatnonzero(roles == "train")
    val_rows = np.flatnonzero(roles == "val")
    train_conds = [(c, train_rows[r]) for c, r in conditions_of(obs_visible.iloc[train_rows])]
    val_conds = [(c, val_rows[r]) for c, r in conditions_of(obs_visible.iloc[val_rows])]
    gene_embedding = {str(g): space.components[:, i] for i, g in enumerate(space.genes)}
    train = TrainData(
        z=z_visible,
        obs=obs_visible.reset_index(drop=True),
        train_conditions=train_conds,
        val_conditions=val_conds,
        gene_embedding=gene_embedding,
        space=space,
        positions=visible,
        fit_rows=None if config.transductive else roles != "input",
        source=adata,
    )
    test_perturbed = test_pos[~is_ctrl[test_pos]]
    all_test = [(c, test_perturbed[r]) for c, r in conditions_of(adata.obs.iloc[test_perturbed])]
    test = [(c, r) for c, r in all_test if len(r) >= config.min_cells]
    _name_dropped(all_test, config.min_cells, f"test conditions of {fold['split_name']} fold {fold['fold']}")
    _name_dropped(val_conds, config.min_cells, f"validation conditions of {fold['split_name']} fold {fold['fold']}")
    if not test and require_test:
        raise InputError(
            f"fold {fold['fold']} of {fold['split_name']} has no test condition with >= {config.min_cells} cells."
        )
    contexts = {c.context_id for c, _ in test}
    for ctx in sorted(contexts):
        try:
            train.control_cells(ctx)
        except KeyError:
            raise InputError(f"test context '{ctx}' has no control cells visible to the predictors.") from None
    return space, train, test


def fold_encoder(adata: AnnData, train: TrainData, fold: dict, jepa, *, run_dir=None, progress: bool = False):
    """The fold's JEPA encoder: ``jepa`` itself when it is a trained CellJEPA, else one pretrained now.

    A new encoder is pretrained on the cells a method may fit on (training and validation cells; in a
    transductive evaluation also the held-out contexts' control cells); the validation cells choose its
    best checkpoint. Returns the encoder and the embedding of ``train``'s rows.
    """
    from ..models import CellJEPA

    if isinstance(jepa, CellJEPA):
        encoder = jepa
    else:
        encoder = CellJEPA(adata, config=jepa)
        val_pos = _positions(adata.obs_names, fold["val_cells"])
        fit = train.fit_mask()
        # the action-conditioned objective learns from the training conditions and the control cells only,
        # never from a validation condition's labels (they choose checkpoints, comparators and configurations)
        is_ctrl = train.obs[C.IS_CONTROL].astype(bool).to_numpy()
        action_rows = np.concatenate([r for _, r in train.train_conditions] + [np.flatnonzero(fit & is_ctrl)])
        encoder.train(
            train_indices=train.positions[fit],
            eval_indices=val_pos if val_pos.size >= 2 else None,
            run_dir=run_dir,
            progress=progress,
            handle_signals=False,
            action_indices=train.positions[np.unique(action_rows.astype(np.int64))],
        )
    return encoder, encoder.get_latent_representation(adata[train.positions])


def encoder_summary(encoder, embedding) -> dict:
    """Steps, parameter count and collapse diagnostics of a fold's encoder on the cells it may see."""
    from ..eval.embedding import collapse_diagnostics, is_collapsed

    diag = collapse_diagnostics(embedding)
    n_params = sum(p.numel() for p in encoder.module_.parameters()) if encoder.module_ is not None else 0
    return {
        "steps": int(encoder.train_info_.get("steps", 0)),
        "n_parameters": int(n_params),
        "effective_rank": float(diag["effective_rank"]),
        "dims": int(diag["dims"]),
        "std_min": float(diag["std_min"]),
        "collapsed": bool(is_collapsed(diag)),
        "mask": encoder.config.mask.kind,
        "ema": bool(encoder.config.train.ema),
        "anticollapse": bool(encoder.config.train.anticollapse),
    }


def _merge_encoder_summaries(summaries: list[dict]) -> dict:
    """One fold's encoder summary over model seeds: mean effective rank, smallest std, collapsed seeds."""
    out = dict(summaries[0])
    out["effective_rank"] = float(np.mean([s["effective_rank"] for s in summaries]))
    out["effective_rank_min"] = float(min(s["effective_rank"] for s in summaries))
    out["std_min"] = float(min(s["std_min"] for s in summaries))
    out["collapsed_seeds"] = int(sum(s["collapsed"] for s in summaries))
    out["collapsed"] = out["collapsed_seeds"] > 0
    out["n_seeds"] = len(summaries)
    return out


def default_methods(
    test: list, *, jepa: bool, transition=None, pca_twin: bool = False, contexts: bool = False
) -> list[PerturbationModel]:
    """The baselines that apply to a fold, plus both JEPA transition models when ``jepa``.

    ``test`` holds the conditions the applicability is read from: pass all of the fold's (training, validation
    and test), as :func:`evaluate_fold` does, so that every fold of a split scores the same pool.

    ``pca_twin`` adds ``pca_set``: the set model on the evaluation space's PCA instead of the JEPA
    embedding. It is a non-JEPA method (in the comparator pool) and the control that tells a gain of
    the JEPA space from a gain of the set-level model itself. ``contexts`` (more than one training
    context) adds the context-aware baselines.
    """
    methods = default_baselines(**_applicable(test, contexts))
    if jepa:
        methods += _jepa_methods(transition, pca_twin)
    return methods


def _applicable(conditions: list, contexts: bool) -> dict:
    """Which baselines apply, from every condition of the fold (training, validation and test).

    Decided from the fold's whole data, not its test conditions alone, so that every fold of a split scores the
    same pool: a split whose test conditions are single genes in one fold and pairs in another (Norman S1g) runs
    ``additive`` in all of them (it predicts a single gene by its mean shift), and a comparator pooled over folds
    is scored on every fold's conditions.
    """
    return {
        "combos": any(c.is_combo for c, _ in conditions),
        "gene_perturbations": any(C.token_kind(t) == "gene" for c, _ in conditions for t in c.tokens),
        "contexts": contexts,
    }


def _jepa_methods(transition, pca_twin: bool) -> list[PerturbationModel]:
    from ..models.transition import JEPATransition

    out = [JEPATransition("prototype", transition), JEPATransition("set", transition)]
    if pca_twin:
        out.append(JEPATransition("set", transition, space="pca"))
    return out


def _seeded(jepa, transition, seed: int | None):
    """The JEPA config and transition config of one model seed (unchanged when ``seed`` is None)."""
    from ..models.transition import TransitionConfig

    if isinstance(jepa, dict):  # one trained encoder per model seed
        jepa = jepa[seed] if seed is not None else next(iter(jepa.values()))
    if seed is None:
        return jepa, transition
    if jepa is not None and not hasattr(jepa, "get_latent_representation"):
        jepa = jepa.replace(train={"seed": int(seed)})
    return jepa, (transition or TransitionConfig()).replace(seed=int(seed))


def _seed_label(jepa, transition, seed: int | None) -> int:
    if seed is not None:
        return int(seed)
    if transition is not None:
        return int(transition.seed)
    cfg = getattr(jepa, "config", jepa)
    return int(getattr(getattr(cfg, "train", None), "seed", 0))


def validation_parts(val: list, *, seed: int, fold: int, n_parts: int = VALIDATION_PARTS) -> list[list]:
    """The fold's validation conditions in ``n_parts`` seeded parts (fewer when there are fewer conditions).

    The same parts for every method of the fold (a function of the condition keys, the split seed and the fold).

    Examples
    --------
    >>> from celljepa.models.base import Condition
    >>> val = [(Condition("k562", p, (p,)), np.arange(3)) for p in "abcde"]
    >>> [len(p) for p in validation_parts(val, seed=0, fold=1)]
    [3, 2]
    """
    if not val:
        return []
    order = sorted(range(len(val)), key=lambda i: val[i][0].key)
    rng = np.random.default_rng([int(seed), int(fold), 0x7A11])
    perm = [order[i] for i in rng.permutation(len(order))]
    return [[val[i] for i in chunk] for chunk in np.array_split(perm, min(n_parts, len(val))) if len(chunk)]


def _as_cells(x) -> np.ndarray | None:
    """A prediction as float64 cells, or None where the method cannot predict the condition (n/a)."""
    return None if x is None else np.asarray(x, dtype=np.float64)


def tunes_on_validation(method: PerturbationModel) -> bool:
    """Whether ``method`` makes any choice on validation conditions (then its validation score is cross-fitted)."""
    return bool(getattr(method, "tunes_on_validation", True))


def fit_views(method: PerturbationModel, train: TrainData, parts: list[list], scored: set):
    """The fits :func:`_fit_and_predict` makes of ``method``, in order: ``(TrainData, refit, part)`` each.

    A method that tunes on validation conditions is fitted once per part (tuned on the other parts, to predict
    that part); one that tunes nothing once on training conditions (``part`` None: it predicts every scored
    validation condition); then the fit that predicts the test conditions (``part`` ``"test"``), unless the
    training-conditions fit already is that fit (a method that neither tunes nor refits). Ranks of a distributed
    run that share the training of a method make the same fits in the same order.
    """
    if scored and tunes_on_validation(method):
        for k, part in enumerate(parts):
            tune = [cr for j, other in enumerate(parts) if j != k for cr in other]
            yield dataclasses.replace(train, val_conditions=tune), False, part
    elif scored:
        yield train, False, None
        if not method.refits_on_validation:
            return
    yield train, True, "test"


def _fit_and_predict(method: PerturbationModel, train: TrainData, test: list, parts: list[list], scored: set):
    """Fit ``method``; predictions of the test conditions and out-of-sample ones of the validation conditions.

    ``parts`` are the fold's validation conditions in seeded parts (:func:`validation_parts`) and ``scored``
    the validation conditions that are scored (enough cells). A method that tunes on validation conditions
    predicts each part fitted on training conditions and tuned on the other parts only; one that tunes
    nothing predicts them fitted on training conditions. The test predictions come from the method fitted as
    it is used (:meth:`~celljepa.models.base.PerturbationModel.fit` with ``refit=True``: tuned on every
    validation condition, refitted on training + validation where the method does so). A prediction may be
    None: the method cannot predict that condition (n/a). The fits are :func:`fit_views`.

    Returns ``(test predictions, validation predictions, covers, validation fits' params)``.
    """
    val_preds: dict = {}
    covers: dict = {}
    fits: list[dict] = []
    both = None
    every = [c for part in parts for c, _ in part if c in scored]
    for view, refit, part in fit_views(method, train, parts, scored):
        method.fit(view, refit=refit)
        if part == "test":
            both = method.predict_many([c for c, _ in test])
            break
        want = every if part is None else [c for c, _ in part if c in scored]
        if part is None and not method.refits_on_validation:  # the same fit predicts the test conditions
            both = method.predict_many(want + [c for c, _ in test])
            got = {c: both[c] for c in want}
        else:
            got = method.predict_many(want) if want else {}
        val_preds.update({c: _as_cells(x) for c, x in got.items()})
        covers.update({c: bool(method.covers(c)) for c in want})
        if want:
            fits.append(method.params())
    preds = {c: _as_cells(both[c]) for c, _ in test}
    covers.update({c: bool(method.covers(c)) and preds[c] is not None for c, _ in test})
    covers.update({c: covers.get(c, True) and val_preds[c] is not None for c in val_preds})
    return preds, val_preds, covers, fits


def score_fold(
    adata: AnnData,
    fold: dict,
    methods: list[PerturbationModel] | None = None,
    config: EvalConfig | None = None,
    *,
    jepa=None,
    transition=None,
    model_seeds=None,
    jepa_run_dir=None,
    progress: bool = False,
    pca_twin: bool = False,
    extra_methods=None,
    peers=None,
    keep_predictions: bool = False,
    effects: pd.DataFrame | None = None,
    on_step: StepCallback | None = None,
) -> FoldResult:
    """Fit every method on the fold's training data and score its predictions on the test conditions.

    Parameters
    ----------
    methods
        Predictors to score (default: the applicable baselines, plus the JEPA prototype and set models
        when ``jepa`` is given).
    jepa
        A :class:`~celljepa.train.config.JEPAConfig` (an encoder is pretrained on the cells the methods
        may fit on), a trained :class:`~celljepa.models.CellJEPA`, or ``{model seed: CellJEPA}``; its
        embeddings go to ``TrainData.embedding``.
    transition
        A :class:`~celljepa.models.transition.TransitionConfig` for the default JEPA models.
    model_seeds
        Seeds of the JEPA encoder and transition models (each seed pretrains its own encoder); a
        condition's score is the mean over seeds. Deterministic baselines are fitted once. Default: the
        seeds the configs hold.
    extra_methods
        Predictors scored after the default ones (when ``methods`` is None).
    pca_twin
        With ``jepa``, also score ``pca_set`` (see :func:`default_methods`).
    peers
        Peer tools scored beside the baselines (when ``methods`` is None): a list of
        :class:`~celljepa.peers.PeerModel` (fitted once, with the first model seed) or ``peers(seed) -> list``
        giving the peers of one model seed (each trains once per model seed, like every other trained method).
    keep_predictions
        Also return every method's predicted cells beside the observed ones as an AnnData in cell-eval's layout
        (``FoldResult.predictions``, :func:`celljepa.eval.predictions.predictions_anndata`).
    effects
        The fold's effect filter as :func:`fold_effects` computed it before any model was fitted (it depends on
        the data alone); computed here when None.
    on_step
        Told each step as it begins, ``on_step(step, done, total)`` (progress inside the fold; see
        :func:`reporting_steps`, whose callback is used when None).

    Notes
    -----
    A transition model whose kept model is its starting point (early stopping kept step 0) is named in
    ``metrics["never_left_start"]`` (:func:`never_left_start`, from the models' own records).

    Examples
    --------
    >>> from celljepa.bench import demo_datasets                                  # doctest: +SKIP
    >>> from celljepa.splits import make_split_folds                              # doctest: +SKIP
    >>> adata = demo_datasets()["norman2019"]                                     # doctest: +SKIP
    >>> fold = make_split_folds(adata.obs, "S1_unseen_perturbation", dataset_id="norman2019")[0]  # doctest: +SKIP
    >>> result = score_fold(adata, fold)                                          # doctest: +SKIP
    >>> result.metrics["comparator"], result.metrics["comparator_choice"]["reason"]  # doctest: +SKIP
    """
    config = config or EvalConfig()
    t0 = time.perf_counter()
    seeds = list(model_seeds) if model_seeds else [None]
    # evaluation space, an encoder per model seed, scoring test, effects, scoring validation; methods added below
    step = _Steps(on_step or _ON_STEP.get(), 3 + (len(seeds) if jepa is not None else 0) + (effects is None))
    step("evaluation space")
    space, train, test = prepare_fold(adata, fold, config)
    timings = {"evaluation_space_s": time.perf_counter() - t0}
    parts = validation_parts(train.val_conditions, seed=fold["seed"], fold=fold["fold"])
    val = [(c, r) for c, r in train.val_conditions if len(r) >= config.min_cells]
    scored = {c for c, _ in val}
    multi_context = len({c.context_id for c, _ in train.train_conditions + train.val_conditions}) > 1

    # (seed label or None for seed-independent methods, method, the TrainData it sees)
    runs: list[tuple[int | None, PerturbationModel, TrainData]] = []
    params: dict = {}
    encoders: list[dict] = []
    diagnostics: list[dict] = []
    first_encoder = None
    peer_runs: list[tuple[int | None, PerturbationModel]] = []
    if methods is not None:
        fixed, seeded_factory = list(methods), None
    else:
        fixed = default_baselines(
            **_applicable(train.train_conditions + train.val_conditions + test, multi_context)
        ) + list(extra_methods or [])
        if peers is not None and not callable(peers):
            fixed += list(peers)
        seeded_factory = (
            (lambda tcfg: _jepa_methods(tcfg, pca_twin)) if (jepa is not None and extra_methods is None) else None
        )
    for seed in seeds:
        jcfg, tcfg = _seeded(jepa, transition, seed)
        view = train
        if jepa is not None:
            step(_seed_step("encoder", seed))
            t1 = time.perf_counter()
            encoder, embedding = fold_encoder(adata, train, fold, jcfg, run_dir=jepa_run_dir, progress=progress)
            timings["jepa_pretrain_s"] = timings.get("jepa_pretrain_s", 0.0) + time.perf_counter() - t1
            view = dataclasses.replace(train, encoder=encoder, embedding=embedding)
            encoders.append(encoder_summary(encoder, embedding))
            if first_encoder is None:
                first_encoder = encoder
        label = _seed_label(jcfg, tcfg, seed) if jepa is not None else seed
        if seed == seeds[0]:
            runs += [(None, m, view) for m in fixed]
        if methods is None and callable(peers):  # peers train once per model seed, like every trained method
            peer_runs += [(seed, m) for m in peers(seed)]
        if seeded_factory is not None:
            runs += [(label, m, view) for m in seeded_factory(tcfg)]
    if encoders:
        params["jepa_encoder"] = _merge_encoder_summaries(encoders)
    n_runs = pd.Series([m.name for _, m in peer_runs]).value_counts().to_dict() if peer_runs else {}
    # a peer trained with one model seed is scored like a seed-free method (the same for every model seed)
    runs += [(seed if n_runs[m.name] > 1 else None, m, train) for seed, m in peer_runs]
    views = {id(v): v for _, _, v in runs if v.encoder is not None}
    step.total += len(runs) + len(views)

    preds: dict[tuple[str, int | None, Condition], np.ndarray | None] = {}
    val_preds: dict[tuple[str, int | None, Condition], np.ndarray | None] = {}
    covers: dict[tuple[str, Condition], bool] = {}
    native: dict[tuple[str, int | None, str], np.ndarray] = {}  # a peer's own gene-space cells of the test fit
    role: dict[str, str] = {}
    selection: dict[str, str] = {}
    fitted: list[PerturbationModel] = []
    kept: list[tuple[str, int | None, dict]] = []  # the record of every fit that predicts the test conditions
    for seed, method, view in runs:
        step(_seed_step(method.name, seed))
        t1 = time.perf_counter()
        p, vp, cov, fits = _fit_and_predict(method, view, test, parts, scored)
        preds.update({(method.name, seed, c): x for c, x in p.items()})
        native.update({(method.name, seed, c.key): x for c, x in getattr(method, "native_", {}).items()})
        val_preds.update({(method.name, seed, c): x for c, x in vp.items()})
        for c, v in cov.items():  # covered when every model seed predicts it
            covers[(method.name, c)] = covers.get((method.name, c), True) and v
        timings[f"{method.name}_s"] = timings.get(f"{method.name}_s", 0.0) + time.perf_counter() - t1
        record = {**method.params(), **({"validation_fits": fits} if fits and method.role == "peer" else {})}
        kept.append((method.name, seed, record))
        if method.name not in params:  # the first seed's record, and every seed's under "per_seed"
            params[method.name] = dict(record)
        if seed is not None and len(seeds) > 1:
            params[method.name].setdefault("per_seed", {})[int(seed)] = record
        role[method.name] = method.role
        selection.setdefault(method.name, CROSS_FITTED if tunes_on_validation(method) else UNTUNED)
        fitted.append(method)
    for n, (key, view) in enumerate(views.items()):  # one encoder per model seed: its JEPA models in its own space
        step("embedding-space diagnostics" + (f" ({n + 1} of {len(views)})" if len(views) > 1 else ""))
        diag = embedding_space_diagnostics(adata, view, test, [m for _, m, v in runs if id(v) == key], config)
        if diag:
            diagnostics.append(diag)

    step("scoring test")
    observed = _read_test_cells(adata, space, test, keep_genes=keep_predictions)
    per_seed = _score_test(space, train, test, observed, preds, covers, role, config)
    per_seed["split_seed"], per_seed["fold"] = int(fold["seed"]), int(fold["fold"])
    per_condition = _average_seeds(per_seed)
    if effects is None:
        step("effects")
        effects = _effects(train, test, observed, config)
    per_condition = per_condition.join(effects, on="condition")
    step("scoring validation + CIs")
    validation = _score_validation(train, val, val_preds, covers, role, config)
    validation["val_selection"] = validation["method"].map(selection)
    metrics = summarize(
        per_condition,
        validation,
        per_seed=per_seed,
        primary=config.primary,
        n_boot=config.n_bootstrap,
        seed=config.seed,
        min_conditions=config.min_conditions,
    )
    metrics.update(
        {
            "dataset_id": fold["dataset_id"],
            "split": fold["split_name"],
            "fold": fold["fold"],
            "seed": fold["seed"],
            "model_seeds": [s for s in seeds if s is not None],
            "transductive": bool(config.transductive),
        }
    )
    if diagnostics:
        metrics["embedding_space"] = _merge_diagnostics(diagnostics)
    stuck = never_left_start(kept)
    if stuck:
        metrics["never_left_start"] = stuck
        logger.warning(
            "fold %s/%s: %s never left its start: early stopping kept the initial model (step 0)",
            fold["split_name"],
            fold["fold"],
            ", ".join(stuck),
        )
    timings["total_s"] = time.perf_counter() - t0
    logger.info(
        "fold %s/%s: %d test conditions (%d with an effect), comparator %s (validation)",
        fold["split_name"],
        fold["fold"],
        metrics["n_test_conditions"],
        metrics["n_effect_conditions"],
        metrics["comparator"],
    )
    unique = list({m.name: m for m in fitted}.values())
    predictions = _fold_predictions(space, test, observed, preds, native, role) if keep_predictions else None
    step.finish()
    return FoldResult(
        fold=fold,
        space=space,
        per_condition=per_condition,
        metrics=metrics,
        params=params,
        timings=timings,
        methods=unique,
        encoder=first_encoder,
        validation=validation,
        per_seed=per_seed,
        predictions=predictions,
    )


def _fold_predictions(
    space: EvaluationSpace, test: list, observed: _TestCells, preds: dict, native: dict, role: dict
) -> AnnData:
    """The fold's predicted cells (every method and model seed) beside the observed test and control cells.

    ``native`` holds a peer's own gene-space cells of each test condition, keyed ``(method, seed, condition key)``
    like ``preds``.
    """
    return predictions_anndata(
        space,
        observed=observed.genes,
        controls=observed.control_genes,
        predicted={(name, seed, c.key): x for (name, seed, c), x in preds.items() if x is not None},
        native={k: x for k, x in native.items() if k[2] in observed.genes},
        roles=role,
        conditions={c.key: {"context_id": c.context_id, "perturbation_id": c.perturbation_id} for c, _ in test},
    )


@dataclass
class _TestCells:
    """The observed cells of a fold's test conditions, read once.

    Their evaluation-space coordinates and gene means, the gene means of their contexts' controls, and the
    gene-space cells of both when predictions are kept.
    """

    z: dict
    mean_genes: dict
    control_mean_genes: dict
    genes: dict | None = None
    control_genes: dict | None = None


def _gene_block_rows(adata: AnnData, rows, gene_idx) -> np.ndarray:
    return np.vstack(
        [np.asarray(b.toarray() if sp.issparse(b) else b, dtype=np.float64) for b in iter_blocks(adata, rows, gene_idx)]
    )


def _read_test_cells(adata: AnnData, space: EvaluationSpace, test: list, *, keep_genes: bool = False) -> _TestCells:
    """Read each test condition's observed cells (gene space of ``space``) once, block by block."""
    gene_idx = space.gene_indices(adata.var_names)
    out = _TestCells(
        z={},
        mean_genes={},
        control_mean_genes={},
        genes={} if keep_genes else None,
        control_genes={} if keep_genes else None,
    )
    for cond, rows in test:
        x = _gene_block_rows(adata, rows, gene_idx)
        out.z[cond], out.mean_genes[cond] = space.transform(x), x.mean(axis=0)
        if keep_genes:
            out.genes[cond.key] = x
    is_ctrl = adata.obs[C.IS_CONTROL].to_numpy(dtype=bool)
    ctx_of = adata.obs[C.CONTEXT_ID].astype(str).to_numpy()
    for ctx in sorted({c.context_id for c, _ in test}):
        rows = np.flatnonzero(is_ctrl & (ctx_of == ctx))
        if adata.isbacked:
            out.control_mean_genes[ctx] = _column_means(adata, rows, gene_idx)
        else:
            out.control_mean_genes[ctx] = np.asarray(adata.X[rows][:, gene_idx].mean(axis=0)).ravel()
        if keep_genes:
            out.control_genes[ctx] = _gene_block_rows(adata, rows, gene_idx)
    return out


def _column_means(adata: AnnData, rows, columns) -> np.ndarray:
    """Mean of ``adata.X[rows][:, columns]``, accumulated block by block (backed data are never loaded whole)."""
    total = np.zeros(len(columns))
    for block in iter_blocks(adata, rows, columns):
        total += np.asarray(block.sum(axis=0), dtype=np.float64).ravel()
    return total / max(len(rows), 1)


def _score_test(
    space, train: TrainData, test, observed: _TestCells, preds, covers, role, config: EvalConfig
) -> pd.DataFrame:
    """Metrics of every (method, model seed, test condition) in the evaluation space.

    NaN where a method has no prediction (n/a: it cannot predict the condition).
    """
    obs_z, obs_mean_genes, ctrl_mean_genes = observed.z, observed.mean_genes, observed.control_mean_genes
    ctrl_mean_z = {ctx: train.control_mean(ctx) for ctx in {c.context_id for c, _ in test}}
    keys = [k for k, x in preds.items() if x is not None]
    cond_index = {cond: i for i, (cond, _) in enumerate(test)}
    # Keyed by condition: every method and seed is scored on the same subsampled observed cells.
    e = edistance_sets(
        [preds[k] for k in keys],
        [obs_z[k[2]] for k in keys],
        cap=config.cap,
        n_resamples=config.n_resamples,
        seed=config.seed,
        pair_keys=[cond_index[k[2]] for k in keys],
    )
    edist = dict(zip(keys, e, strict=True))
    obs_means = np.array([obs_z[c].mean(axis=0) for c, _ in test])
    nan = float("nan")
    rows_out = []
    for name, seed in dict.fromkeys((k[0], k[1]) for k in preds):
        sets = [preds[(name, seed, c)] for c, _ in test]
        has = np.array([x is not None for x in sets])
        pred_means = np.array([x.mean(axis=0) if x is not None else np.full(obs_means.shape[1], np.nan) for x in sets])
        ranks = np.full(len(test), np.nan)
        if has.any():  # the true condition ranked among every test condition, for the ones it predicts
            ranks[has] = M.retrieval_ranks(pred_means[has], obs_means, truth=np.flatnonzero(has))
        for i, (cond, rows) in enumerate(test):
            base = {
                "method": name,
                "role": role[name],
                "is_baseline": role[name] == "baseline",
                "model_seed": np.nan if seed is None else seed,
                "condition": cond.key,
                "context_id": cond.context_id,
                "perturbation_id": cond.perturbation_id,
                "dose": cond.dose,
                "time_hours": cond.time_hours,
                "n_tokens": len(cond.tokens),
                "n_cells_observed": len(rows),
                "n_cells_predicted": 0 if not has[i] else len(sets[i]),
                "covered": covers[(name, cond)],
            }
            if not has[i]:
                rows_out.append({**base, **{k: nan for k in METRICS}, "rank": nan})
                continue
            pm, om = pred_means[i], obs_means[i]
            cz = ctrl_mean_z[cond.context_id]
            pred_genes = space.inverse_transform(pm) - space.inverse_transform(cz) + ctrl_mean_genes[cond.context_id]
            rows_out.append(
                {
                    **base,
                    "edistance": edist[(name, seed, cond)],
                    "mse": M.mse(pm, om),
                    "cosine_distance": M.cosine_distance(pm, om),
                    "delta_pearson": M.delta_pearson(pm, om, cz),
                    "delta_pearson_top20_de": M.delta_pearson_top_de(
                        pred_genes, obs_mean_genes[cond], ctrl_mean_genes[cond.context_id]
                    ),
                    # Retrieval needs at least two candidates; with one test condition it is undefined.
                    "top1": float(ranks[i] == 1) if len(test) > 1 else nan,
                    "mrr": 1.0 / ranks[i] if len(test) > 1 else nan,
                    "rank": ranks[i],
                }
            )
    return pd.DataFrame(rows_out)


def _average_seeds(per_seed: pd.DataFrame) -> pd.DataFrame:
    """One row per method × condition: metrics averaged over model seeds, with their spread."""
    groups = per_seed.groupby(["method", "condition"], sort=False, dropna=False)
    first = groups[list(KEEP_FIRST) + ["covered"]].first()
    means = groups[list(METRICS) + ["rank"]].mean()
    out = first.join(means)
    out["n_model_seeds"] = groups["model_seed"].count().clip(lower=1)
    out["edistance_sd_seeds"] = groups["edistance"].std(ddof=1)
    return out.reset_index()


def fold_effects(adata: AnnData, fold: dict, config: EvalConfig | None = None) -> pd.DataFrame:
    """The effect filter of one fold's test conditions, from the data alone (no method is fitted).

    The evaluation space is fitted on the fold's training cells as :func:`score_fold` does; each test condition's
    observed cells are tested against its context's controls (:func:`celljepa.eval.effects.condition_effects`).
    The claims family of a run is known from these before any model is fitted.
    """
    config = config or EvalConfig(seed=fold["seed"])
    space, train, test = prepare_fold(adata, fold, config)
    observed = _read_test_cells(adata, space, test)
    return _effects(train, test, observed, config)


def _effects(train: TrainData, test, observed: _TestCells, config: EvalConfig) -> pd.DataFrame:
    observed = [observed.z[c] for c, _ in test]
    # every control cell (the sets predictions start from may be a sample of them, see TrainData.control_cells)
    controls = {ctx: train.z[train.control_rows(ctx)] for ctx in {c.context_id for c, _ in test}}
    return condition_effects(
        [c.key for c, _ in test],
        observed,
        [c.context_id for c, _ in test],
        controls,
        cap=config.cap,
        n_permutations=config.n_permutations,
        alpha=config.effect_alpha,
        seed=config.seed,
    )


def _score_validation(train: TrainData, val, val_preds, covers, role, config: EvalConfig) -> pd.DataFrame:
    """Validation E-distance of every method (mean over model seeds) on every validation condition."""
    cols = ["method", "role", "condition", "context_id", "perturbation_id", "n_cells_observed", "covered", "edistance"]
    if not val_preds:
        return pd.DataFrame(columns=cols)
    keys = [k for k, x in val_preds.items() if x is not None]
    index = {c: i for i, (c, _) in enumerate(val)}
    rows_of = dict(val)
    e = edistance_sets(
        [val_preds[k] for k in keys],
        [train.z[rows_of[k[2]]] for k in keys],
        cap=config.cap,
        n_resamples=config.n_resamples,
        seed=config.seed,
        pair_keys=[index[k[2]] for k in keys],
    )
    scores = dict(zip(keys, e, strict=True))  # n/a (no prediction): NaN
    frame = pd.DataFrame(
        [{"method": k[0], "condition": k[2].key, "edistance": scores.get(k, np.nan)} for k in val_preds]
    )
    frame = frame.groupby(["method", "condition"], sort=False)["edistance"].mean().reset_index()
    by_key = {c.key: (c, r) for c, r in val}
    frame["role"] = frame["method"].map(role)
    frame["context_id"] = [by_key[k][0].context_id for k in frame["condition"]]
    frame["perturbation_id"] = [by_key[k][0].perturbation_id for k in frame["condition"]]
    frame["n_cells_observed"] = [len(by_key[k][1]) for k in frame["condition"]]
    frame["covered"] = [covers[(m, by_key[k][0])] for m, k in zip(frame["method"], frame["condition"], strict=True)]
    return frame[cols]


def embedding_space_diagnostics(adata: AnnData, train: TrainData, test: list, methods, config: EvalConfig) -> dict:
    """Secondary diagnostics: mean E-distance in the encoder's own space, per JEPA model and for no change.

    Never a headline number (a model can shrink its own space); reported next to the no-change value
    in the same space for scale.
    """
    models = [m for m in methods if hasattr(m, "predict_embedding") and m.role == "jepa"]
    if not models:
        return {}
    z_obs = {c: train.encoder.get_latent_representation(adata[rows]) for c, rows in test}
    out = {}
    cond_keys = [c for c, _ in test]
    ctrl = {c: train.embedding[train.control_rows(c.context_id)] for c in cond_keys}
    for name, sets in [("no_change", ctrl)] + [
        (m.name, {c: m.predict_embedding(c) for c in cond_keys}) for m in models
    ]:
        e = edistance_sets(
            [sets[c] for c in cond_keys],
            [z_obs[c] for c in cond_keys],
            cap=config.cap,
            n_resamples=config.n_resamples,
            seed=config.seed,
            pair_keys=list(range(len(cond_keys))),
        )
        out[name] = float(np.mean(e))
    return {
        "edistance_mean": out,
        "note": "E-distance in the JEPA embedding space; a diagnostic, not comparable "
        "across encoders or with the evaluation space",
    }


def _merge_diagnostics(parts: list[dict]) -> dict:
    acc: dict[str, list[float]] = {}
    for p in parts:
        for k, v in p["edistance_mean"].items():
            acc.setdefault(k, []).append(v)
    return {
        "edistance_mean": {k: float(np.mean(v)) for k, v in acc.items()},
        "note": parts[0]["note"] + " (mean over model seeds)",
    }
