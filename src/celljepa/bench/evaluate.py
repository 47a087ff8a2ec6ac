"""Score perturbation predictors on one split fold: evaluation space, baselines, per-condition metrics, verdict.

The comparison is pre-registered (``docs/evaluation.md``): the primary model is named in the run config
(:attr:`EvalConfig.primary`, default ``jepa_set``); its comparator is the non-JEPA method (every baseline,
the PCA twin, any peer) with the best score on the *validation* conditions. Test scores never choose a
method. Conditions whose observed cells do not differ detectably from their controls (E-test) are kept
out of the verdict, and a claim needs a paired bootstrap CI, a Holm-corrected sign-flip p-value and at
least :data:`~celljepa.eval.verdict.MIN_CONDITIONS` conditions (:mod:`celljepa.eval.verdict`).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._errors import InputError
from .._logging import logger
from ..data import contract as C
from ..eval import metrics as M
from ..eval.bootstrap import bootstrap_ci, paired_bootstrap_diff
from ..eval.edistance import DEFAULT_CAP, DEFAULT_RESAMPLES, edistance_sets
from ..eval.effects import condition_effects
from ..eval.predictions import predictions_anndata
from ..eval.space import DEFAULT_N_HVG, DEFAULT_N_PCS, EvaluationSpace, iter_blocks
from ..eval.verdict import ALPHA, MIN_CONDITIONS, holm_over, paired_comparison
from ..models.base import Condition, PerturbationModel, TrainData, conditions_of
from ..models.baselines import default_baselines
from ..peers import PeerModel

# Metric name -> True when larger is better.
METRICS: dict[str, bool] = {
    "edistance": False,
    "mse": False,
    "cosine_distance": False,
    "delta_pearson": True,
    "delta_pearson_top20_de": True,
    "top1": True,
    "mrr": True,
}
PRIMARY = "edistance"
#: The model a report's verdict is about, unless the run config names another.
DEFAULT_PRIMARY = "jepa_set"
#: Roles of the methods that compete to be the comparator.
NON_JEPA_ROLES = ("baseline", "pca_twin", "peer")
#: A method must cover at least this share of the validation conditions to be the comparator.
MIN_COVERAGE = 0.5
#: The comparator when no method has a validation score (no validation conditions): declared in advance.
FALLBACK_COMPARATOR = "mean_shift"


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
        Bootstrap resamples of every CI.
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
    n_bootstrap: int = 1000
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


def prepare_fold(adata: AnnData, fold: dict, config: EvalConfig, *,
                 require_test: bool = True) -> tuple[EvaluationSpace, TrainData, list]:
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
    train = TrainData(z=z_visible, obs=obs_visible.reset_index(drop=True), train_conditions=train_conds,
                      val_conditions=val_conds, gene_embedding=gene_embedding, space=space, positions=visible,
                      fit_rows=None if config.transductive else roles != "input", source=adata)
    test_perturbed = test_pos[~is_ctrl[test_pos]]
    test = [(c, test_perturbed[r]) for c, r in conditions_of(adata.obs.iloc[test_perturbed])
            if len(r) >= config.min_cells]
    if not test and require_test:
        raise InputError(f"fold {fold['fold']} of {fold['split_name']} has no test condition with "
                         f">= {config.min_cells} cells.")
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
        encoder.train(train_indices=train.positions[fit],
                      eval_indices=val_pos if val_pos.size >= 2 else None,
                      run_dir=run_dir, progress=progress, handle_signals=False,
                      action_indices=train.positions[np.unique(action_rows.astype(np.int64))])
    return encoder, encoder.get_latent_representation(adata[train.positions])


def encoder_summary(encoder, embedding) -> dict:
    """Steps, parameter count and collapse diagnostics of a fold's encoder on the cells it may see."""
    from ..eval.embedding import collapse_diagnostics, is_collapsed

    diag = collapse_diagnostics(embedding)
    n_params = sum(p.numel() for p in encoder.module_.parameters()) if encoder.module_ is not None else 0
    return {"steps": int(encoder.train_info_.get("steps", 0)), "n_parameters": int(n_params),
            "effective_rank": float(diag["effective_rank"]), "dims": int(diag["dims"]),
            "std_min": float(diag["std_min"]), "collapsed": bool(is_collapsed(diag)),
            "mask": encoder.config.mask.kind, "ema": bool(encoder.config.train.ema),
            "anticollapse": bool(encoder.config.train.anticollapse)}


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


def default_methods(test: list, *, jepa: bool, transition=None, pca_twin: bool = False,
                    contexts: bool = False) -> list[PerturbationModel]:
    """The baselines that apply to the test conditions, plus both JEPA transition models when ``jepa``.

    ``pca_twin`` adds ``pca_set``: the set model on the evaluation space's PCA instead of the JEPA
    embedding. It is a non-JEPA method (in the comparator pool) and the control that tells a gain of
    the JEPA space from a gain of the set-level model itself. ``contexts`` (more than one training
    context) adds the context-aware baselines.
    """
    methods = default_baselines(**_applicable(test, contexts))
    if jepa:
        methods += _jepa_methods(transition, pca_twin)
    return methods


def _applicable(test: list, contexts: bool) -> dict:
    return {"combos": any(c.is_combo for c, _ in test),
            "gene_perturbations": any(C.token_kind(t) == "gene" for c, _ in test for t in c.tokens),
            "contexts": contexts}


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


def _fit_and_predict(method: PerturbationModel, train: TrainData, test: list, val: list):
    """Fit ``method``; predictions of the test conditions and honest ones of the validation conditions.

    A method that refits on validation conditions is fitted once on training conditions alone to predict
    them; an early-stopped one predicts each validation condition with the checkpoint chosen without it
    (``predict_validation``).
    """
    val_preds = {}
    if val and method.refits_on_validation:
        method.fit(train, refit=False)
        val_preds = {c: np.asarray(x, dtype=np.float64) for c, x in method.predict_many([c for c, _ in val]).items()}
        method.fit(train, refit=True)
    elif hasattr(method, "predict_validation"):
        method.fit(train)
        val_preds = {c: np.asarray(method.predict_validation(c), dtype=np.float64) for c, _ in val}
    else:  # fitted on training conditions only: one call predicts the validation and test conditions
        method.fit(train)
        both = method.predict_many([c for c, _ in val] + [c for c, _ in test])
        val_preds = {c: np.asarray(both[c], dtype=np.float64) for c, _ in val}
    preds = {c: np.asarray(x, dtype=np.float64) for c, x in method.predict_many([c for c, _ in test]).items()}
    covers = {c: bool(method.covers(c)) for c, _ in test + val}
    return preds, val_preds, covers


def score_fold(adata: AnnData, fold: dict, methods: list[PerturbationModel] | None = None,
               config: EvalConfig | None = None, *, jepa=None, transition=None, model_seeds=None,
               jepa_run_dir=None, progress: bool = False, pca_twin: bool = False, extra_methods=None,
               peers=None, keep_predictions: bool = False) -> FoldResult:
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
        Peer tools (:class:`~celljepa.peers.PeerModel`) scored beside the baselines, fitted once (when
        ``methods`` is None).
    keep_predictions
        Also return every method's predicted cells beside the observed ones as an AnnData in cell-eval's layout
        (``FoldResult.predictions``, :func:`celljepa.eval.predictions.predictions_anndata`).

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
    space, train, test = prepare_fold(adata, fold, config)
    timings = {"evaluation_space_s": time.perf_counter() - t0}
    val = [(c, r) for c, r in train.val_conditions if len(r) >= config.min_cells]
    multi_context = len({c.context_id for c, _ in train.train_conditions + train.val_conditions}) > 1

    # (seed label or None for seed-independent methods, method, the TrainData it sees)
    runs: list[tuple[int | None, PerturbationModel, TrainData]] = []
    params: dict = {}
    encoders: list[dict] = []
    diagnostics: list[dict] = []
    first_encoder = None
    if methods is not None:
        fixed, seeded_factory = list(methods), None
    else:
        fixed = default_baselines(**_applicable(test, multi_context)) + list(extra_methods or []) + list(peers or [])
        seeded_factory = (lambda tcfg: _jepa_methods(tcfg, pca_twin)) if (jepa is not None
                                                                          and extra_methods is None) else None
    seeds = list(model_seeds) if model_seeds else [None]
    if jepa is None:
        seeds = [None]
    for seed in seeds:
        jcfg, tcfg = _seeded(jepa, transition, seed)
        view = train
        if jepa is not None:
            t1 = time.perf_counter()
            encoder, embedding = fold_encoder(adata, train, fold, jcfg, run_dir=jepa_run_dir, progress=progress)
            timings["jepa_pretrain_s"] = timings.get("jepa_pretrain_s", 0.0) + time.perf_counter() - t1
            view = dataclasses.replace(train, encoder=encoder, embedding=embedding)
            encoders.append(encoder_summary(encoder, embedding))
            if first_encoder is None:
                first_encoder = encoder
        label = _seed_label(jcfg, tcfg, seed)
        if seed == seeds[0]:
            runs += [(None, m, view) for m in fixed]
        if seeded_factory is not None:
            runs += [(label, m, view) for m in seeded_factory(tcfg)]
    if encoders:
        params["jepa_encoder"] = _merge_encoder_summaries(encoders)

    preds: dict[tuple[str, int | None, Condition], np.ndarray] = {}
    val_preds: dict[tuple[str, int | None, Condition], np.ndarray] = {}
    covers: dict[tuple[str, Condition], bool] = {}
    role: dict[str, str] = {}
    selection: dict[str, str] = {}
    fitted: list[PerturbationModel] = []
    for seed, method, view in runs:
        t1 = time.perf_counter()
        p, vp, cov = _fit_and_predict(method, view, test, val)
        preds.update({(method.name, seed, c): x for c, x in p.items()})
        val_preds.update({(method.name, seed, c): x for c, x in vp.items()})
        covers.update({(method.name, c): v for c, v in cov.items()})
        timings[f"{method.name}_s"] = timings.get(f"{method.name}_s", 0.0) + time.perf_counter() - t1
        if method.name not in params:
            params[method.name] = method.params()
        role[method.name] = method.role
        selection.setdefault(method.name, getattr(method, "val_selection_",
                                                  "fitted on training conditions, tuned on validation"))
        fitted.append(method)
    views = {id(v): v for _, _, v in runs if v.encoder is not None}
    for key, view in views.items():  # one encoder per model seed: its JEPA models in its own space
        diag = embedding_space_diagnostics(adata, view, test, [m for _, m, v in runs if id(v) == key], config)
        if diag:
            diagnostics.append(diag)

    observed = _read_test_cells(adata, space, test, keep_genes=keep_predictions)
    per_seed = _score_test(space, train, test, observed, preds, covers, role, config)
    per_condition = _average_seeds(per_seed)
    effects = _effects(train, test, observed, config)
    per_condition = per_condition.join(effects, on="condition")
    validation = _score_validation(train, val, val_preds, covers, role, config)
    validation["val_selection"] = validation["method"].map(selection)
    metrics = summarize(per_condition, validation, primary=config.primary, n_boot=config.n_bootstrap,
                        seed=config.seed, min_conditions=config.min_conditions)
    metrics.update({"dataset_id": fold["dataset_id"], "split": fold["split_name"], "fold": fold["fold"],
                    "seed": fold["seed"], "model_seeds": [s for s in seeds if s is not None],
                    "transductive": bool(config.transductive)})
    if diagnostics:
        metrics["embedding_space"] = _merge_diagnostics(diagnostics)
    timings["total_s"] = time.perf_counter() - t0
    logger.info("fold %s/%s: %d test conditions (%d with an effect), comparator %s (validation)",
                fold["split_name"], fold["fold"], metrics["n_test_conditions"], metrics["n_effect_conditions"],
                metrics["comparator"])
    unique = list({m.name: m for m in fitted}.values())
    kept = _fold_predictions(space, test, observed, preds, unique, role) if keep_predictions else None
    return FoldResult(fold=fold, space=space, per_condition=per_condition, metrics=metrics, params=params,
                      timings=timings, methods=unique, encoder=first_encoder, validation=validation,
                      per_seed=per_seed, predictions=kept)


def _fold_predictions(space: EvaluationSpace, test: list, observed: _TestCells, preds: dict, methods: list,
                      role: dict) -> AnnData:
    """The fold's predicted cells (every method and model seed) beside the observed test and control cells."""
    native = {(m.name, None, c.key): x for m in methods for c, x in getattr(m, "native_", {}).items()
              if c.key in observed.genes}
    return predictions_anndata(space, observed=observed.genes, controls=observed.control_genes,
                               predicted={(name, seed, c.key): x for (name, seed, c), x in preds.items()},
                               native=native, roles=role,
                               conditions={c.key: {"context_id": c.context_id, "perturbation_id": c.perturbation_id}
                                           for c, _ in test})


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
    return np.vstack([np.asarray(b.toarray() if sp.issparse(b) else b, dtype=np.float64)
                      for b in iter_blocks(adata, rows, gene_idx)])


def _read_test_cells(adata: AnnData, space: EvaluationSpace, test: list, *, keep_genes: bool = False) -> _TestCells:
    """Read each test condition's observed cells (gene space of ``space``) once, block by block."""
    gene_idx = space.gene_indices(adata.var_names)
    out = _TestCells(z={}, mean_genes={}, control_mean_genes={}, genes={} if keep_genes else None,
                     control_genes={} if keep_genes else None)
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


def _score_test(space, train: TrainData, test, observed: _TestCells, preds, covers, role,
                config: EvalConfig) -> pd.DataFrame:
    """Metrics of every (method, model seed, test condition) in the evaluation space."""
    obs_z, obs_mean_genes, ctrl_mean_genes = observed.z, observed.mean_genes, observed.control_mean_genes
    ctrl_mean_z = {ctx: train.control_mean(ctx) for ctx in {c.context_id for c, _ in test}}
    keys = list(preds)
    cond_index = {cond: i for i, (cond, _) in enumerate(test)}
    # Keyed by condition: every method and seed is scored on the same subsampled observed cells.
    e = edistance_sets([preds[k] for k in keys], [obs_z[k[2]] for k in keys], cap=config.cap,
                       n_resamples=config.n_resamples, seed=config.seed, pair_keys=[cond_index[k[2]] for k in keys])
    edist = dict(zip(keys, e, strict=True))
    obs_means = np.array([obs_z[c].mean(axis=0) for c, _ in test])
    rows_out = []
    for name, seed in dict.fromkeys((k[0], k[1]) for k in keys):
        pred_means = np.array([preds[(name, seed, c)].mean(axis=0) for c, _ in test])
        ranks = M.retrieval_ranks(pred_means, obs_means)
        for i, (cond, rows) in enumerate(test):
            pm, om = pred_means[i], obs_means[i]
            cz = ctrl_mean_z[cond.context_id]
            pred_genes = space.inverse_transform(pm) - space.inverse_transform(cz) + ctrl_mean_genes[cond.context_id]
            rows_out.append({
                "method": name, "role": role[name], "is_baseline": role[name] == "baseline",
                "model_seed": np.nan if seed is None else seed, "condition": cond.key,
                "context_id": cond.context_id, "perturbation_id": cond.perturbation_id, "dose": cond.dose,
                "time_hours": cond.time_hours, "n_tokens": len(cond.tokens), "n_cells_observed": len(rows),
                "n_cells_predicted": len(preds[(name, seed, cond)]), "covered": covers[(name, cond)],
                "edistance": edist[(name, seed, cond)], "mse": M.mse(pm, om),
                "cosine_distance": M.cosine_distance(pm, om), "delta_pearson": M.delta_pearson(pm, om, cz),
                "delta_pearson_top20_de": M.delta_pearson_top_de(pred_genes, obs_mean_genes[cond],
                                                                 ctrl_mean_genes[cond.context_id]),
                # Retrieval needs at least two candidates; with one test condition it is undefined.
                "top1": float(ranks[i] == 1) if len(test) > 1 else np.nan,
                "mrr": 1.0 / ranks[i] if len(test) > 1 else np.nan, "rank": int(ranks[i]),
            })
    return pd.DataFrame(rows_out)


_KEEP_FIRST = ("role", "is_baseline", "context_id", "perturbation_id", "dose", "time_hours", "n_tokens",
               "n_cells_observed", "n_cells_predicted", "covered")


def _average_seeds(per_seed: pd.DataFrame) -> pd.DataFrame:
    """One row per method × condition: metrics averaged over model seeds, with their spread."""
    groups = per_seed.groupby(["method", "condition"], sort=False, dropna=False)
    first = groups[list(_KEEP_FIRST)].first()
    means = groups[list(METRICS) + ["rank"]].mean()
    out = first.join(means)
    out["n_model_seeds"] = groups["model_seed"].count().clip(lower=1)
    out["edistance_sd_seeds"] = groups["edistance"].std(ddof=1)
    return out.reset_index()


def _effects(train: TrainData, test, observed: _TestCells, config: EvalConfig) -> pd.DataFrame:
    observed = [observed.z[c] for c, _ in test]
    # every control cell (the sets predictions start from may be a sample of them, see TrainData.control_cells)
    controls = {ctx: train.z[train.control_rows(ctx)] for ctx in {c.context_id for c, _ in test}}
    return condition_effects([c.key for c, _ in test], observed, [c.context_id for c, _ in test], controls,
                             cap=config.cap, n_resamples=config.n_resamples, n_permutations=config.n_permutations,
                             alpha=config.effect_alpha, seed=config.seed)


def _score_validation(train: TrainData, val, val_preds, covers, role, config: EvalConfig) -> pd.DataFrame:
    """Validation E-distance of every method (mean over model seeds) on every validation condition."""
    cols = ["method", "role", "condition", "context_id", "perturbation_id", "n_cells_observed", "covered",
            "edistance"]
    if not val_preds:
        return pd.DataFrame(columns=cols)
    keys = list(val_preds)
    index = {c: i for i, (c, _) in enumerate(val)}
    rows_of = dict(val)
    e = edistance_sets([val_preds[k] for k in keys], [train.z[rows_of[k[2]]] for k in keys], cap=config.cap,
                       n_resamples=config.n_resamples, seed=config.seed, pair_keys=[index[k[2]] for k in keys])
    frame = pd.DataFrame([{"method": k[0], "condition": k[2].key, "edistance": v} for k, v in zip(keys, e,
                                                                                               strict=True)])
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
    for name, sets in [("no_change", ctrl)] + [(m.name, {c: m.predict_embedding(c) for c in cond_keys})
                                               for m in models]:
        e = edistance_sets([sets[c] for c in cond_keys], [z_obs[c] for c in cond_keys], cap=config.cap,
                           n_resamples=config.n_resamples, seed=config.seed, pair_keys=list(range(len(cond_keys))))
        out[name] = float(np.mean(e))
    return {"edistance_mean": out, "note": "E-distance in the JEPA embedding space; a diagnostic, not comparable "
                                           "across encoders or with the evaluation space"}


def _merge_diagnostics(parts: list[dict]) -> dict:
    acc: dict[str, list[float]] = {}
    for p in parts:
        for k, v in p["edistance_mean"].items():
            acc.setdefault(k, []).append(v)
    return {"edistance_mean": {k: float(np.mean(v)) for k, v in acc.items()}, "note": parts[0]["note"]
            + " (mean over model seeds)"}


# ------------------------------------------------------------------------------------------ summaries


def method_roles(per_condition: pd.DataFrame) -> dict[str, str]:
    """``{method: role}`` from a per-condition frame (older frames: from their is_baseline / is_control flags)."""
    first = per_condition.drop_duplicates("method").set_index("method")
    if "role" in first:
        return {m: str(r) for m, r in first["role"].items()}
    out = {}
    for m, r in first.iterrows():
        if bool(r.get("is_baseline", False)):
            out[m] = "baseline"
        elif bool(r.get("is_control", False)) or str(m).startswith("pca_"):
            out[m] = "pca_twin"
        else:
            out[m] = "jepa"
    return out


def choose_comparator(roles: dict[str, str], validation: pd.DataFrame | None, *,
                      test_coverage: dict[str, float] | None = None) -> dict:
    """The non-JEPA method with the lowest mean validation E-distance, and why.

    Eligible: role ``baseline``, ``pca_twin`` or ``peer``, a validation score, and at least
    :data:`MIN_COVERAGE` of the validation conditions covered. Without validation scores the comparator
    is :data:`FALLBACK_COMPARATOR` (declared in advance), never a test score.

    Returns
    -------
    ``{"comparator", "reason", "rule", "validation": {method: {"edistance", "n", "coverage", "eligible", "why"}}}``
    """
    pool = [m for m, r in roles.items() if r in NON_JEPA_ROLES]
    table: dict[str, dict] = {}
    for m in roles:
        sel = validation[validation["method"] == m] if validation is not None and len(validation) else None
        e = sel["edistance"].to_numpy(dtype=float) if sel is not None else np.array([])
        e = e[np.isfinite(e)]
        coverage = float(sel["covered"].astype(bool).mean()) if sel is not None and len(sel) else float("nan")
        entry = {"edistance": float(e.mean()) if e.size else None, "n": int(e.size),
                 "coverage": coverage if np.isfinite(coverage) else None, "role": roles[m],
                 "test_coverage": (test_coverage or {}).get(m)}
        if sel is not None and "val_selection" in sel and len(sel):
            kinds = sel["val_selection"].dropna().astype(str)
            entry["selection"] = "; ".join(f"{k} ({n} of {len(sel)})" if len(kinds.unique()) > 1 else k
                                           for k, n in kinds.value_counts().items())
        if roles[m] == "peer":  # a peer is never tuned on validation conditions (folds stored before said so)
            entry["selection"] = PeerModel.val_selection_
        if roles[m] not in NON_JEPA_ROLES:
            entry.update(eligible=False, why="JEPA model (not a comparator)")
        elif not e.size:
            entry.update(eligible=False, why="no validation score")
        elif coverage < MIN_COVERAGE:
            entry.update(eligible=False, why=f"covers {coverage:.0%} of the validation conditions (< "
                                             f"{MIN_COVERAGE:.0%}): not a baseline for this split")
        else:
            entry.update(eligible=True, why="")
        table[m] = entry
    rule = ("lowest mean E-distance on the validation conditions among the non-JEPA methods (baselines, PCA twin, "
            f"peers) that cover at least {MIN_COVERAGE:.0%} of them")
    eligible = [m for m in pool if table[m]["eligible"]]
    if eligible:
        best = min(eligible, key=lambda m: (table[m]["edistance"], pool.index(m)))
        reason = (f"lowest validation E-distance ({table[best]['edistance']:.4g} over {table[best]['n']} validation "
                  f"conditions) of {len(eligible)} eligible non-JEPA methods")
    elif FALLBACK_COMPARATOR in pool:
        best, reason = FALLBACK_COMPARATOR, (f"no validation scores: the pre-declared fallback "
                                             f"{FALLBACK_COMPARATOR}")
    elif pool:
        best, reason = pool[0], "no validation scores: the first non-JEPA method"
    else:
        best, reason = None, "no non-JEPA method was scored"
    return {"comparator": best, "reason": reason, "rule": rule, "validation": table}


def _frame_by_method(per_condition: pd.DataFrame, methods: list[str]) -> dict[str, pd.DataFrame]:
    return {m: per_condition[per_condition["method"] == m].set_index("condition") for m in methods}


def summarize(per_condition: pd.DataFrame, validation: pd.DataFrame | None = None, *,
              primary: str = DEFAULT_PRIMARY, comparator: str | None = None, n_boot: int = 1000, seed: int = 0,
              min_conditions: int = MIN_CONDITIONS, alpha: float = ALPHA) -> dict:
    """Aggregate per-condition metrics into the metrics.json layout of evaluation.md, with the verdict.

    Means over conditions with 95% bootstrap CIs (seeded); the comparator chosen on ``validation``
    (:func:`choose_comparator`) unless ``comparator`` names it; paired differences of every method
    against it. When ``primary`` was scored, the verdict: primary vs comparator and primary vs its PCA
    twin on the conditions with a detectable effect (``has_effect``), each with a paired bootstrap CI and
    a sign-flip p-value, Holm-corrected over these rows (a report corrects over all of its rows again,
    :func:`celljepa.eval.verdict.holm_over`).
    """
    methods = list(dict.fromkeys(per_condition["method"]))
    roles = method_roles(per_condition)
    wide = _frame_by_method(per_condition, methods)
    conditions = wide[methods[0]].index
    if "has_effect" in per_condition:
        effect = wide[methods[0]]["has_effect"].astype(bool).to_numpy()
    else:
        effect = np.ones(len(conditions), dtype=bool)
    effect_conds = conditions[effect]
    test_coverage = {m: float(wide[m]["covered"].astype(bool).mean()) for m in methods
                     if "covered" in wide[m]}
    out = {"n_test_conditions": int(len(conditions)), "n_effect_conditions": int(effect.sum()),
           "conditions_without_effect": [str(c) for c in conditions[~effect]], "methods": {}, "roles": roles,
           "coverage": test_coverage, "comparisons": {}, "metric_higher_is_better": METRICS,
           "primary_metric": PRIMARY, "primary": primary}
    for m in methods:
        out["methods"][m] = {k: bootstrap_ci(wide[m].loc[conditions, k].to_numpy(), n_boot=n_boot, seed=seed)
                             for k in METRICS}
        out["methods"][m]["edistance_effect"] = bootstrap_ci(wide[m].loc[effect_conds, PRIMARY].to_numpy(),
                                                             n_boot=n_boot, seed=seed)
    if "noise_floor" in per_condition:
        nf = wide[methods[0]].loc[conditions, "noise_floor"].to_numpy(dtype=float)
        out["noise_floor"] = {**bootstrap_ci(nf, n_boot=n_boot, seed=seed),
                              "sd": float(np.nanstd(nf, ddof=1)) if np.isfinite(nf).sum() > 1 else None}
    choice = choose_comparator(roles, validation, test_coverage=test_coverage)
    if comparator is not None:
        if comparator not in methods:
            raise InputError(f"comparator {comparator!r} was not scored; methods: {methods}.")
        choice = {**choice, "comparator": comparator, "reason": choice["reason"] if comparator ==
                  choice["comparator"] else f"given by the caller ({choice['reason']} elsewhere)"}
    best = choice["comparator"]
    out["comparator"] = best
    out["comparator_choice"] = choice
    if best is None:
        return out
    for m in methods:
        if m == best:
            continue
        comp = {}
        for k in METRICS:
            d = paired_bootstrap_diff(wide[m].loc[conditions, k].to_numpy(),
                                      wide[best].loc[conditions, k].to_numpy(), n_boot=n_boot, seed=seed)
            comp[k] = {key: d[key] for key in ("diff", "ci_low", "ci_high")} | {"n": d["n"]}
        out["comparisons"][f"{m} vs {best}"] = comp
    if primary in methods and roles.get(primary) == "jepa":
        out["verdict"] = _verdict(wide, effect_conds, primary, best, roles, choice, n_boot=n_boot, seed=seed,
                                  n_without=int((~effect).sum()))
        holm_over([out], min_conditions=min_conditions, alpha=alpha)
    elif any(r == "jepa" for r in roles.values()):
        out["verdict_note"] = (f"the pre-registered primary model {primary!r} was not scored (JEPA models: "
                               f"{[m for m, r in roles.items() if r == 'jepa']}); no verdict")
    return out


def _verdict(wide, conds, primary: str, comparator: str, roles, choice, *, n_boot: int, seed: int,
             n_without: int) -> dict:
    def values(m, k=PRIMARY):
        return wide[m].loc[conds, k].to_numpy(dtype=float)

    e = paired_comparison(values(primary), values(comparator), n_boot=n_boot, seed=seed)
    e["scale"] = float(np.nanmean(values(comparator))) if len(conds) else 1.0
    dp = paired_bootstrap_diff(values(primary, "delta_pearson"), values(comparator, "delta_pearson"),
                               n_boot=n_boot, seed=seed)
    v = {"model": primary, "baseline": comparator, "chosen_on": "validation", "comparator_reason": choice["reason"],
         "conditions": "with a detectable effect (E-test vs control)", "n_without_effect": n_without,
         "edistance": e, "delta_pearson": dp, "n": e["n"],
         "means": {"model": float(np.nanmean(values(primary))) if len(conds) else None,
                   "baseline": float(np.nanmean(values(comparator))) if len(conds) else None}}
    twin = next((m for m, r in roles.items() if r == "pca_twin"), None)
    if twin is not None:
        t = paired_comparison(values(primary), values(twin), n_boot=n_boot, seed=seed)
        t.update(twin=twin, scale=float(np.nanmean(values(twin))) if len(conds) else 1.0,
                 twin_mean=float(np.nanmean(values(twin))) if len(conds) else None)
        if twin == comparator:
            t["same_as_comparator"] = True
        v["vs_pca_twin"] = t
    return v


# ------------------------------------------------------------------------------------- pooling seeds


def pool_conditions(frames: list[pd.DataFrame], *, effect_alpha: float = 0.05) -> pd.DataFrame:
    """One row per method × condition over several folds and split seeds (a condition's mean over them).

    Each frame is a fold's ``per_condition`` with ``split_seed`` and ``fold`` columns. A condition tested
    under several split seeds gets the mean of its metrics; it *has an effect* when the median of its
    adjusted E-test p-values is below ``effect_alpha``.
    """
    frame = pd.concat(frames, ignore_index=True)
    groups = frame.groupby(["method", "condition"], sort=False, dropna=False)
    keep = [c for c in _KEEP_FIRST if c in frame]
    out = groups[keep].first()
    numeric = [c for c in list(METRICS) + ["rank", "noise_floor", "etest_edistance", "edistance_sd_seeds"]
               if c in frame]
    out = out.join(groups[numeric].mean())
    if "etest_p_adj" in frame:
        out["etest_p_adj"] = groups["etest_p_adj"].median()
        out["has_effect"] = out["etest_p_adj"] < effect_alpha
    if "n_model_seeds" in frame:
        out["n_model_seeds"] = groups["n_model_seeds"].max()
    if "split_seed" in frame:
        out["n_split_seeds"] = groups["split_seed"].nunique()
    return out.reset_index()


def seed_summary(frames: dict[int, pd.DataFrame], per_seed: list[pd.DataFrame], metrics: dict, *,
                 n_boot: int = 1000, seed: int = 0) -> dict:
    """Every split seed's own numbers, and the spread over model seeds, beside a pooled verdict.

    ``frames`` maps split seed → that seed's per-condition rows (its folds pooled); the comparator is the
    pooled one. Returns ``{"split_seeds": {seed: {...}}, "model_seeds": {method: {...}}}``.
    """
    out: dict = {"split_seeds": {}, "model_seeds": {}}
    v = metrics.get("verdict")
    for s, frame in frames.items():
        m = summarize(frame, None, primary=metrics["primary"], comparator=metrics["comparator"], n_boot=n_boot,
                      seed=seed)
        entry = {"n": m["n_effect_conditions"], "n_test_conditions": m["n_test_conditions"],
                 "means": {k: m["methods"][k]["edistance_effect"]["mean"] for k in m["methods"]}}
        if v and "verdict" in m:
            e = m["verdict"]["edistance"]
            entry["vs_comparator"] = {k: e[k] for k in ("diff", "ci_low", "ci_high", "n", "p")}
            twin = m["verdict"].get("vs_pca_twin")
            if twin:
                entry["vs_pca_twin"] = {k: twin[k] for k in ("diff", "ci_low", "ci_high", "n", "p")}
        out["split_seeds"][int(s)] = entry
    if per_seed:
        frame = pd.concat(per_seed, ignore_index=True)
        frame = frame[frame["model_seed"].notna()]
        for method, sel in frame.groupby("method", sort=False):
            by_seed = sel.groupby("model_seed")["edistance"].mean()
            out["model_seeds"][method] = {"per_seed": {int(k): float(x) for k, x in by_seed.items()},
                                          "sd": float(by_seed.std(ddof=1)) if len(by_seed) > 1 else None}
    return out
