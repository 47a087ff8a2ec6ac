"""Score perturbation predictors on one split fold: evaluation space, baselines, per-condition metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from anndata import AnnData

from .._errors import InputError
from .._logging import logger
from ..data import contract as C
from ..eval import metrics as M
from ..eval.bootstrap import bootstrap_ci, paired_bootstrap_diff
from ..eval.edistance import DEFAULT_CAP, DEFAULT_RESAMPLES, edistance_sets
from ..eval.space import DEFAULT_N_HVG, DEFAULT_N_PCS, EvaluationSpace
from ..models.base import Condition, PerturbationModel, TrainData, conditions_of
from ..models.baselines import default_baselines

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
# Differences below this (relative to the baseline's E-distance) are rounding, not a result.
VERDICT_ATOL = 1e-6


@dataclass
class EvalConfig:
    """Settings of one evaluation (all stored in config.json)."""

    n_hvg: int = DEFAULT_N_HVG
    n_pcs: int = DEFAULT_N_PCS
    cap: int = DEFAULT_CAP
    n_resamples: int = DEFAULT_RESAMPLES
    n_bootstrap: int = 1000
    min_cells: int = 2
    seed: int = 0


@dataclass
class FoldResult:
    """Everything one evaluated fold produced."""

    fold: dict
    space: EvaluationSpace
    per_condition: pd.DataFrame
    metrics: dict
    params: dict
    timings: dict = field(default_factory=dict)
    methods: list = field(default_factory=list, repr=False)
    encoder: object | None = field(default=None, repr=False)


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
    perturbed test cells are returned separately and used only to score.
    """
    train_pos = _positions(adata.obs_names, fold["train_cells"])
    val_pos = _positions(adata.obs_names, fold["val_cells"])
    test_pos = _positions(adata.obs_names, fold["test_cells"])
    space = EvaluationSpace.fit(adata[train_pos], n_hvg=config.n_hvg, n_pcs=config.n_pcs, seed=config.seed)

    is_ctrl = adata.obs[C.IS_CONTROL].to_numpy(dtype=bool)
    visible = np.sort(np.concatenate([train_pos, val_pos, test_pos[is_ctrl[test_pos]]]))
    z_visible = space.transform(adata[visible])
    obs_visible = adata.obs.iloc[visible]
    train_set = set(train_pos.tolist())
    roles = np.array(["train" if p in train_set else "val" for p in visible])
    train_rows = np.flatnonzero(roles == "train")
    val_rows = np.flatnonzero(roles == "val")
    train_conds = [(c, train_rows[r]) for c, r in conditions_of(obs_visible.iloc[train_rows])]
    val_conds = [(c, val_rows[r]) for c, r in conditions_of(obs_visible.iloc[val_rows])]
    gene_embedding = {str(g): space.components[:, i] for i, g in enumerate(space.genes)}
    train = TrainData(z=z_visible, obs=obs_visible.reset_index(drop=True), train_conditions=train_conds,
                      val_conditions=val_conds, gene_embedding=gene_embedding, space=space, positions=visible)
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

    A new encoder sees only the cells the predictors may see (training and validation cells and the
    control cells of every context); the validation cells choose its best checkpoint. Returns the
    encoder and the embedding of ``train``'s rows.
    """
    from ..models import CellJEPA

    if isinstance(jepa, CellJEPA):
        encoder = jepa
    else:
        encoder = CellJEPA(adata, config=jepa)
        val_pos = _positions(adata.obs_names, fold["val_cells"])
        encoder.train(train_indices=train.positions, eval_indices=val_pos if val_pos.size >= 2 else None,
                      run_dir=run_dir, progress=progress, handle_signals=False)
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


def default_methods(test: list, *, jepa: bool, transition=None, pca_twin: bool = False) -> list[PerturbationModel]:
    """The baselines that apply to the test conditions, plus both JEPA transition models when ``jepa``.

    ``pca_twin`` adds the control ``pca_set``: the set model on the evaluation space's PCA instead of the
    JEPA embedding, which tells a gain of the JEPA space from a gain of the set-level model itself.
    """
    combos = any(c.is_combo for c, _ in test)
    genes = any(C.token_kind(t) == "gene" for c, _ in test for t in c.tokens)
    methods = default_baselines(combos=combos, gene_perturbations=genes)
    if jepa:
        from ..models.transition import JEPATransition

        methods += [JEPATransition("prototype", transition), JEPATransition("set", transition)]
        if pca_twin:
            methods.append(JEPATransition("set", transition, space="pca"))
    return methods


def score_fold(adata: AnnData, fold: dict, methods: list[PerturbationModel] | None = None,
               config: EvalConfig | None = None, *, jepa=None, transition=None, jepa_run_dir=None,
               progress: bool = False, pca_twin: bool = False, extra_methods=None) -> FoldResult:
    """Fit every method on the fold's training data and score its predictions on the test conditions.

    Parameters
    ----------
    methods
        Predictors to score (default: the applicable baselines, plus the JEPA prototype and set models
        when ``jepa`` is given).
    jepa
        A :class:`~celljepa.train.config.JEPAConfig` (an encoder is pretrained on the fold's visible
        cells) or a trained :class:`~celljepa.models.CellJEPA`; its embeddings go to ``TrainData.embedding``.
    transition
        A :class:`~celljepa.models.transition.TransitionConfig` for the default JEPA models.
    extra_methods
        Predictors scored after the default ones (when ``methods`` is None).
    """
    config = config or EvalConfig()
    t0 = time.perf_counter()
    space, train, test = prepare_fold(adata, fold, config)
    t_space = time.perf_counter() - t0
    timings = {"evaluation_space_s": t_space}
    if jepa is not None:
        t1 = time.perf_counter()
        train.encoder, train.embedding = fold_encoder(adata, train, fold, jepa, run_dir=jepa_run_dir,
                                                      progress=progress)
        timings["jepa_pretrain_s"] = time.perf_counter() - t1
        encoder_info = encoder_summary(train.encoder, train.embedding)
    if methods is None:
        methods = default_methods(test, jepa=jepa is not None and extra_methods is None, transition=transition,
                                  pca_twin=pca_twin) + list(extra_methods or [])
    gene_idx = space.gene_indices(adata.var_names)

    obs_z, obs_mean_genes, ctrl_mean_genes, ctrl_mean_z = {}, {}, {}, {}
    for cond, rows in test:
        x = adata.X[rows][:, gene_idx]
        x = np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float64)
        obs_z[cond] = space.transform(x)
        obs_mean_genes[cond] = x.mean(axis=0)
    for ctx in {c.context_id for c, _ in test}:
        mask = (adata.obs[C.IS_CONTROL].to_numpy(dtype=bool)
                & (adata.obs[C.CONTEXT_ID].astype(str).to_numpy() == ctx))
        xc = adata.X[np.flatnonzero(mask)][:, gene_idx]
        ctrl_mean_genes[ctx] = np.asarray(xc.mean(axis=0)).ravel()
        ctrl_mean_z[ctx] = train.control_mean(ctx)

    rows_out, params = [], ({"jepa_encoder": encoder_info} if jepa is not None else {})
    preds: dict[tuple[str, Condition], np.ndarray] = {}
    for method in methods:
        t1 = time.perf_counter()
        method.fit(train)
        for cond, _ in test:
            preds[(method.name, cond)] = np.asarray(method.predict(cond), dtype=np.float64)
        timings[f"{method.name}_s"] = time.perf_counter() - t1
        params[method.name] = method.params()

    keys = list(preds)
    cond_index = {cond: i for i, (cond, _) in enumerate(test)}
    # Keyed by condition: every method is scored on the same subsampled observed cells.
    e = edistance_sets([preds[k] for k in keys], [obs_z[k[1]] for k in keys], cap=config.cap,
                       n_resamples=config.n_resamples, seed=config.seed, pair_keys=[cond_index[k[1]] for k in keys])
    edist = dict(zip(keys, e, strict=True))
    obs_means = np.array([obs_z[c].mean(axis=0) for c, _ in test])
    for method in methods:
        pred_means = np.array([preds[(method.name, c)].mean(axis=0) for c, _ in test])
        ranks = M.retrieval_ranks(pred_means, obs_means)
        for i, (cond, rows) in enumerate(test):
            pm, om = pred_means[i], obs_means[i]
            cz = ctrl_mean_z[cond.context_id]
            pred_genes = space.inverse_transform(pm) - space.inverse_transform(cz) + ctrl_mean_genes[cond.context_id]
            rows_out.append({
                "method": method.name, "is_baseline": bool(method.is_baseline),
                "is_control": bool(getattr(method, "is_control", False)), "condition": cond.key,
                "context_id": cond.context_id,
                "perturbation_id": cond.perturbation_id, "dose": cond.dose, "time_hours": cond.time_hours,
                "n_tokens": len(cond.tokens), "n_cells_observed": len(rows),
                "n_cells_predicted": len(preds[(method.name, cond)]),
                "edistance": edist[(method.name, cond)], "mse": M.mse(pm, om),
                "cosine_distance": M.cosine_distance(pm, om), "delta_pearson": M.delta_pearson(pm, om, cz),
                "delta_pearson_top20_de": M.delta_pearson_top_de(pred_genes, obs_mean_genes[cond],
                                                                 ctrl_mean_genes[cond.context_id]),
                # Retrieval needs at least two candidates; with one test condition it is undefined.
                "top1": float(ranks[i] == 1) if len(test) > 1 else np.nan,
                "mrr": 1.0 / ranks[i] if len(test) > 1 else np.nan, "rank": int(ranks[i]),
            })
    per_condition = pd.DataFrame(rows_out)
    metrics = summarize(per_condition, n_boot=config.n_bootstrap, seed=config.seed)
    metrics.update({"dataset_id": fold["dataset_id"], "split": fold["split_name"], "fold": fold["fold"],
                    "seed": fold["seed"]})
    if train.encoder is not None:
        metrics["embedding_space"] = embedding_space_diagnostics(adata, train, test, methods, config)
    timings["total_s"] = time.perf_counter() - t0
    logger.info("fold %s/%s: %d test conditions, best baseline %s", fold["split_name"], fold["fold"],
                metrics["n_test_conditions"], metrics["best_baseline"])
    return FoldResult(fold=fold, space=space, per_condition=per_condition, metrics=metrics, params=params,
                      timings=timings, methods=list(methods), encoder=train.encoder)


def embedding_space_diagnostics(adata: AnnData, train: TrainData, test: list, methods, config: EvalConfig) -> dict:
    """Secondary diagnostics: mean E-distance in the encoder's own space, per JEPA model and for no change.

    Never a headline number (a model can shrink its own space); reported next to the no-change value
    in the same space for scale.
    """
    models = [m for m in methods if hasattr(m, "predict_embedding") and not getattr(m, "is_control", False)]
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


def summarize(per_condition: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0,
              baselines: list[str] | None = None) -> dict:
    """Aggregate per-condition metrics into the metrics.json layout of evaluation.md.

    Means over conditions with 95% bootstrap CIs (seeded), the best baseline by the primary metric
    (E-distance, lower is better), and paired bootstrap differences of every other method against it.
    """
    methods = list(dict.fromkeys(per_condition["method"]))
    if baselines is None and "is_baseline" in per_condition:
        flags = per_condition.drop_duplicates("method").set_index("method")["is_baseline"].astype(bool)
        baselines = [m for m in methods if flags[m]] or None
    wide = {m: per_condition[per_condition["method"] == m].set_index("condition") for m in methods}
    conditions = wide[methods[0]].index
    out = {"n_test_conditions": int(len(conditions)), "methods": {}, "comparisons": {},
           "metric_higher_is_better": METRICS, "primary_metric": PRIMARY}
    for m in methods:
        out["methods"][m] = {k: bootstrap_ci(wide[m].loc[conditions, k].to_numpy(), n_boot=n_boot, seed=seed)
                             for k in METRICS}
    candidates = baselines or methods
    best = min(candidates, key=lambda m: out["methods"][m][PRIMARY]["mean"])
    out["best_baseline"] = best
    out["baselines"] = list(candidates)
    controls = []
    if "is_control" in per_condition:
        flags = per_condition.drop_duplicates("method").set_index("method")["is_control"].astype(bool)
        controls = [m for m in methods if flags[m]]
    models = [m for m in methods if m not in candidates and m not in controls]
    for m in methods:
        if m == best:
            continue
        comp = {}
        for k in METRICS:
            d = paired_bootstrap_diff(wide[m].loc[conditions, k].to_numpy(),
                                      wide[best].loc[conditions, k].to_numpy(), n_boot=n_boot, seed=seed)
            comp[k] = {key: d[key] for key in ("diff", "ci_low", "ci_high")} | {"n": d["n"]}
        out["comparisons"][f"{m} vs {best}"] = comp
    if models:
        out["verdict"] = verdict(out, models)
        twin = next((c for c in controls if c.startswith("pca_")), None)
        if twin is not None:
            d = paired_bootstrap_diff(wide[out["verdict"]["model"]].loc[conditions, PRIMARY].to_numpy(),
                                      wide[twin].loc[conditions, PRIMARY].to_numpy(), n_boot=n_boot, seed=seed)
            out["verdict"]["vs_pca_twin"] = {"twin": twin, **{k: d[k] for k in ("diff", "ci_low", "ci_high", "n")}}
    return out


def verdict(metrics: dict, models: list[str]) -> dict:
    """The best model (lowest mean E-distance) against the best baseline, as win / tie / loss.

    Both are picked by the same rule (lowest mean primary metric over the test conditions). "wins"
    needs the paired 95% CI of the E-distance difference to lie below 0; "loses" above 0; a CI within
    ``VERDICT_ATOL`` of 0 (identical predictions up to rounding) is a tie.
    """
    best_model = min(models, key=lambda m: metrics["methods"][m][PRIMARY]["mean"])
    comp = metrics["comparisons"][f"{best_model} vs {metrics['best_baseline']}"]
    d = comp[PRIMARY]
    scale = abs(metrics["methods"][metrics["best_baseline"]][PRIMARY]["mean"])
    if d["n"] == 0 or not np.isfinite(d["diff"]):
        outcome = "undetermined"
    elif max(abs(d["ci_low"]), abs(d["ci_high"])) <= VERDICT_ATOL * max(scale, 1.0):
        outcome = "ties"  # identical predictions up to floating-point rounding
    elif d["ci_high"] < 0:
        outcome = "wins"
    elif d["ci_low"] > 0:
        outcome = "loses"
    else:
        outcome = "ties"
    return {"model": best_model, "baseline": metrics["best_baseline"], "outcome": outcome,
            "edistance": comp[PRIMARY], "delta_pearson": comp["delta_pearson"], "n": d["n"]}
