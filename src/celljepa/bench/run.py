"""Runs on disk: ``eval-baselines`` for one fold and the demo ``benchmark`` over datasets, splits and folds."""

from __future__ import annotations

import dataclasses
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from anndata import AnnData
from tqdm.auto import tqdm

from .. import __version__
from .._errors import InputError
from .._io import remove_tree_quietly, write_json_atomic, write_text_atomic
from .._logging import logger
from .._settings import settings
from ..data.ingest import ingest_anndata
from ..eval import report as R
from ..splits import check_split_name, make_split_folds
from ..train.distributed import is_main
from .evaluate import EvalConfig, FoldResult, fold_encoder, prepare_fold, score_fold, summarize

FigureMaker = Callable[[FoldResult, Path], list[Path]]


def _versions() -> dict:
    from importlib.metadata import version

    import sklearn
    import torch

    return {"celljepa": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "anndata": version("anndata"), "scanpy": version("scanpy"), "scikit-learn": sklearn.__version__,
            "kernel_backend": settings.kernel_backend, "device": "cpu", "machine": platform.machine(),
            "cpus": os.cpu_count()}


def _fold_report(result: FoldResult, adata: AnnData, figures: list[Path], out: Path) -> str:
    m = result.metrics
    lines = [f"# {m['dataset_id']} · {m['split']} · fold {m['fold']} · seed {m['seed']}", "",
             "## Dataset", "", R.dataset_summary(adata.obs, adata.n_vars), "",
             "## Split", "", R.split_summary(result.fold), "",
             "## Evaluation space", "",
             f"{result.space.describe()['n_genes']} HVGs and {result.space.n_pcs} PCs fitted on the training cells "
             "only (`eval_space.npz`). Every method hands in predicted cells; metrics are means over "
             f"{m['n_test_conditions']} test conditions with 95% bootstrap CIs (1,000 resamples over conditions).", "",
             "## Methods", "", R.methods_table(m), "",
             f"## Paired comparisons against the best baseline (`{m['best_baseline']}`)", "",
             "Difference (method − best baseline) with its 95% paired bootstrap CI; a claim needs the CI to "
             "exclude 0.", "", R.comparisons_table(m), "", *R.verdict_lines(m), "",
             *([R.verdict_sentence(f"{m['dataset_id']} {m['split']} fold {m['fold']}", m), ""]
               if "verdict" in m else []),
             *(_embedding_space_lines(m)),
             "## Chosen hyperparameters (validation groups only)", ""]
    for name, params in result.params.items():
        if params:
            lines.append(f"- `{name}`: " + ", ".join(f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}"
                                                    for k, v in params.items() if not k.startswith("config.")))
    compute = f"Wall time {result.timings['total_s']:.1f} s on CPU ({os.cpu_count()} cores)"
    if "jepa_encoder" in result.params:
        enc = result.params["jepa_encoder"]
        trans = {k: v for k, v in result.params.items() if k.startswith("jepa_") and k != "jepa_encoder"}
        compute += (f": JEPA pretraining {result.timings.get('jepa_pretrain_s', 0.0):.1f} s "
                    f"({enc['n_parameters']:,} parameters), "
                    + ", ".join(f"{k} {v.get('train_seconds', 0):.1f} s ({v.get('n_parameters', 0):,} parameters)"
                                for k, v in trans.items())
                    + "; the baselines' only fitted parameters are ridge / linear coefficients.")
    else:
        compute += "; baselines have no trained parameters beyond the ridge coefficients."
    lines += ["", "## Compute", "", compute, ""]
    if figures:
        lines += ["## Figures", ""] + [f"![{p.stem}]({p.relative_to(out).as_posix()})" for p in figures] + [""]
    return "\n".join(lines)


def _embedding_space_lines(metrics: dict) -> list[str]:
    diag = metrics.get("embedding_space", {}).get("edistance_mean")
    if not diag:
        return []
    cells = ", ".join(f"`{k}` {v:.3f}" for k, v in diag.items())
    return ["## Diagnostics in the JEPA embedding space (secondary)", "",
            f"Mean E-distance between predicted and observed cells in the fold encoder's own space: {cells}. Not "
            "a headline: a model can shrink its own space; the evaluation-space numbers above are the result.", ""]


def write_fold_run(result: FoldResult, adata: AnnData, out: Path, *, config: dict,
                   figure_maker: FigureMaker | None = None) -> list[Path]:
    """Write config.json, metrics.json, per_condition.csv, split.json, eval_space.npz, figures, report.md."""
    out.mkdir(parents=True, exist_ok=True)
    written = [write_json_atomic(out / "config.json", config),
               write_json_atomic(out / "metrics.json", result.metrics),
               write_text_atomic(out / "per_condition.csv", result.per_condition.to_csv(index=False)),
               write_json_atomic(out / "split.json", result.fold),
               result.space.save(out / "eval_space.npz")]
    figures = figure_maker(result, out) if figure_maker else []
    written.append(write_text_atomic(out / "report.md", _fold_report(result, adata, figures, out)))
    return written + figures


def _run_config(adata: AnnData, fold: dict, cfg: EvalConfig, result: FoldResult | None, **extra) -> dict:
    conf = {"dataset_id": fold["dataset_id"], "split": fold["split_name"], "fold": fold["fold"],
            "seed": fold["seed"], "n_folds": fold["n_folds"], "evaluation": dataclasses.asdict(cfg),
            "versions": _versions(), "source": str(adata.uns.get("source", "")), **extra}
    if result is not None:
        conf["methods"] = result.params
        conf["timings_s"] = result.timings
    return conf


def eval_baselines(adata: AnnData, *, split: str, fold: int, seed: int = 0, n_folds: int = 5,
                   val_fraction: float = 0.15, out: str | os.PathLike, config: EvalConfig | None = None,
                   figure_maker: FigureMaker | None = None, source: str | None = None) -> FoldResult:
    """Evaluate every applicable baseline on one fold and write the run folder ``out``.

    The fold is derived from the split name, seed and number of folds exactly as ``celljepa splits``
    does (so ``split.json`` equals that command's file for the fold).
    """
    split = check_split_name(split)
    cfg = config or EvalConfig(seed=seed)
    dataset_id = str(adata.uns.get("dataset_id", "dataset"))
    folds = make_split_folds(adata.obs, split, dataset_id=dataset_id, n_folds=n_folds, seed=seed,
                             val_fraction=val_fraction)
    if not 0 <= fold < len(folds):
        raise InputError(f"--fold {fold} does not exist: {split} has folds 0..{len(folds) - 1} with --folds {n_folds}.")
    out = Path(out)
    created = not out.exists()
    try:
        result = score_fold(adata, folds[fold], config=cfg)
        write_fold_run(result, adata, out, config=_run_config(adata, folds[fold], cfg, result,
                                                                val_fraction=val_fraction, input=source or ""),
                       figure_maker=figure_maker)
    except BaseException:
        if created:
            remove_tree_quietly(out)
        raise
    return result


# The demo benchmark: the two studies of the bundled file, each with its own dataset id and splits.
DEMO_PLAN = {
    "norman2019": {"filter": "norman19", "splits": {"S1_unseen_perturbation": 3, "S3_unseen_combo": 3}},
    "sciplex_gxe": {"filter": "mcfaline23", "splits": {"S1_unseen_perturbation": 3, "S2_unseen_context": 3}},
}


def demo_datasets() -> dict[str, AnnData]:
    """The bundled demo ingested as its two studies (``norman2019``, ``sciplex_gxe``)."""
    from ..datasets import demo

    raw = demo(preprocessed=False)
    out = {}
    for dataset_id, plan in DEMO_PLAN.items():
        part = raw[raw.obs["dataset"].astype(str) == plan["filter"]].copy()
        out[dataset_id] = ingest_anndata(part, dataset_id=dataset_id, source=f"celljepa demo ({plan['filter']})",
                                         format="perturbench")
    return out


def benchmark(datasets: dict[str, AnnData], plan: dict[str, dict[str, int]], *, out: str | os.PathLike,
              seed: int = 0, config: EvalConfig | None = None, figure_maker: FigureMaker | None = None,
              combined_figure_maker: Callable[[dict, Path], list[Path]] | None = None,
              progress: bool = True, jepa=None, transition=None, jepa_knn=None, max_folds: int | None = None,
              title: str | None = None, pca_twin: bool = True, folds=None) -> dict:
    """Run baselines (and JEPA models) on every dataset × split × fold; one run folder each and a combined report.

    ``plan`` maps dataset id → {split name: number of folds}. Returns the combined metrics
    (per dataset × split, conditions pooled over folds).

    Parameters
    ----------
    jepa
        A :class:`~celljepa.train.config.JEPAConfig`: per fold, a CellJEPA encoder is pretrained on the
        cells the predictors may see (never the test fold's perturbed cells) and the prototype and set
        transition models are trained on it and scored beside the baselines; the report gains the
        verdict (best JEPA model vs best baseline, paired CIs) and the encoders' collapse diagnostics.
    transition
        A :class:`~celljepa.models.transition.TransitionConfig` for both transition models.
    jepa_knn
        A JEPAConfig: also pretrain one encoder on all cells of each dataset (labels unseen) and report
        kNN accuracy of ``cell_type`` and ``perturbation_id`` on it against PCA (``OUT/<dataset>/jepa/``).
    max_folds
        Score only the first ``max_folds`` folds of each split (quick sweeps).
    folds
        Score only these fold indices of each split (one fold per Slurm array task); a split with fewer
        folds contributes the ones it has.
    pca_twin
        With ``jepa``, also score ``pca_set``: the set model on the evaluation space's PCA instead of the
        JEPA embedding (a control: is a gain due to the JEPA space or to the set-level model?).
    """
    cfg = config or EvalConfig(seed=seed)
    out = Path(out)
    t0 = time.perf_counter()
    jobs = []
    for dataset_id, splits in plan.items():
        adata = datasets[dataset_id]
        for split, k in splits.items():
            split_folds = make_split_folds(adata.obs, split, dataset_id=dataset_id, n_folds=k, seed=seed)
            for fold in split_folds[:max_folds]:
                if folds is None or fold["fold"] in folds:
                    jobs.append((dataset_id, split, fold))
    combined: dict[str, dict] = {}
    pooled: dict[tuple[str, str], list[pd.DataFrame]] = {}
    per_fold: list[dict] = []
    bar = tqdm(jobs, desc="benchmark", unit="fold", disable=not progress)
    for dataset_id, split, fold in bar:
        bar.set_postfix_str(f"{dataset_id} {split} fold {fold['fold']}")
        adata = datasets[dataset_id]
        run_dir = out / dataset_id / split / f"fold{fold['fold']}"
        result = score_fold(adata, fold, config=cfg, jepa=jepa, transition=transition, pca_twin=pca_twin)
        extra = {"jepa": jepa.to_dict(), "transition": _transition_dict(transition)} if jepa is not None else {}
        write_fold_run(result, adata, run_dir, config=_run_config(adata, fold, cfg, result, **extra),
                       figure_maker=figure_maker)
        frame = result.per_condition.copy()
        frame["fold"] = fold["fold"]
        pooled.setdefault((dataset_id, split), []).append(frame)
        per_fold.append({"dataset_id": dataset_id, "split": split, "fold": fold["fold"],
                         "n_test_conditions": result.metrics["n_test_conditions"],
                         "best_baseline": result.metrics["best_baseline"],
                         **{f"edistance_{m}": v["edistance"]["mean"] for m, v in result.metrics["methods"].items()},
                         **({"encoder": result.params["jepa_encoder"]} if "jepa_encoder" in result.params else {}),
                         "timings": result.timings})
    for (dataset_id, split), frames in pooled.items():
        frame = pd.concat(frames, ignore_index=True)
        frame["condition"] = frame["fold"].astype(str) + ":" + frame["condition"]
        metrics = summarize(frame, n_boot=cfg.n_bootstrap, seed=seed)
        metrics.update({"dataset_id": dataset_id, "split": split, "fold": "all", "seed": seed,
                        "n_folds": len(frames)})
        combined[f"{dataset_id}/{split}"] = metrics
        write_text_atomic(out / dataset_id / split / "per_condition_all_folds.csv", frame.to_csv(index=False))
        write_json_atomic(out / dataset_id / split / "metrics_all_folds.json", metrics)
    embeddings = ({d: _jepa_embedding(datasets[d], jepa_knn, out / d / "jepa", progress) for d in plan}
                  if jepa_knn is not None else {})
    elapsed = time.perf_counter() - t0
    write_json_atomic(out / "metrics_combined.json", {"seed": seed, "wall_time_s": elapsed, "results": combined,
                                                      "per_fold": per_fold, "jepa_embeddings": embeddings,
                                                      "versions": _versions()})
    figures = combined_figure_maker(combined, out) if combined_figure_maker else []
    report = _combined_report(datasets, plan, combined, per_fold, elapsed, figures, out, title=title,
                              jepa=jepa, transition=transition)
    if embeddings:
        report = report.replace("## Every fold (mean E-distance per method)", _jepa_section(embeddings)
                                + "## Every fold (mean E-distance per method)")
    write_text_atomic(out / "report.md", report)
    logger.info("benchmark: %d folds in %.1f s; report at %s", len(jobs), elapsed, out / "report.md")
    return combined


def _jepa_embedding(adata: AnnData, cfg, run_dir: Path, progress: bool) -> dict:
    """Pretrain CellJEPA on all cells of ``adata`` (labels unseen) and score its embedding."""
    import numpy as np

    from ..models import CellJEPA
    from ..train.run import embedding_eval

    t0 = time.perf_counter()
    model = CellJEPA(adata, config=cfg)
    model.train(run_dir=run_dir, progress=progress)
    model.save(run_dir / "model", overwrite=True)
    result = embedding_eval(model, adata, train_rows=np.arange(adata.n_obs))
    result["train_seconds"] = round(time.perf_counter() - t0, 2)
    result["config"] = cfg.to_dict()
    write_json_atomic(run_dir / "eval.json", result)
    return result


def _jepa_section(embeddings: dict[str, dict]) -> str:
    def acc(r, label, emb):
        entry = r["knn"].get(label, {})
        return f"{entry[emb]['accuracy']:.3f} ± {entry[emb]['accuracy_sd']:.3f}" if emb in entry else "–"

    lines = ["## JEPA embeddings", "",
             "A CellJEPA encoder pretrained on every cell of each dataset (no labels; `<dataset>/jepa/`). kNN "
             "accuracy (k = 15, stratified 5-fold, mean ± sd over folds) on X_jepa and on 50 PCs of the same genes; "
             "an embedding counts as collapsed below 25% effective rank or with a dimension of std < 1e-3.", "",
             "| dataset | steps | effective rank | min std | mean cosine | collapsed | kNN cell_type JEPA | PCA | "
             "kNN perturbation JEPA | PCA | train s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for dataset_id, r in embeddings.items():
        d = r["diagnostics"]
        steps = r["config"]["train"]["max_steps"]
        lines.append(f"| {dataset_id} | {steps} | {d['effective_rank']:.1f} / {d['dims']} | "
                     f"{d['std_min']:.3f} | {d['mean_cosine']:.3f} | {'yes' if r['collapsed'] else 'no'} | "
                     f"{acc(r, 'cell_type', 'X_jepa')} | {acc(r, 'cell_type', 'X_pca')} | "
                     f"{acc(r, 'perturbation_id', 'X_jepa')} | {acc(r, 'perturbation_id', 'X_pca')} | "
                     f"{r['train_seconds']:.0f} |")
    return "\n".join(lines) + "\n\n"


def _transition_dict(transition) -> dict:
    from ..models.transition import TransitionConfig

    return (transition or TransitionConfig()).to_dict()


def _encoder_table(per_fold: list[dict]) -> str:
    rows = {}
    for r in per_fold:
        if "encoder" in r:
            rows.setdefault((r["dataset_id"], r["split"]), []).append(r)
    lines = ["| dataset | split | folds | steps | effective rank (mean, min) | min std (min) | collapsed folds | "
             "pretrain s / fold | transition s / fold |", "|---|---|---|---|---|---|---|---|---|"]
    for (d, split), rs in rows.items():
        enc = [r["encoder"] for r in rs]
        ranks = [e["effective_rank"] for e in enc]
        pre = sum(r["timings"].get("jepa_pretrain_s", 0.0) for r in rs) / len(rs)
        trans = sum(v for r in rs for k, v in r["timings"].items() if k.startswith("jepa_") and k != "jepa_pretrain_s")
        lines.append(f"| {d} | {split} | {len(rs)} | {enc[0]['steps']} | {sum(ranks) / len(ranks):.1f}, "
                     f"{min(ranks):.1f} / {enc[0]['dims']} | {min(e['std_min'] for e in enc):.3f} | "
                     f"{sum(e['collapsed'] for e in enc)} | {pre:.1f} | {trans / len(rs):.1f} |")
    return "\n".join(lines)


def _combined_report(datasets, plan, combined, per_fold, elapsed, figures, out: Path, *, title=None, jepa=None,
                     transition=None) -> str:
    head = title or ("celljepa benchmark: baselines and JEPA transition models" if jepa is not None
                     else "celljepa benchmark: baselines")
    lines = [f"# {head}", "",
             "Every number follows the evaluation protocol (`docs/evaluation.md`): one evaluation space per "
             "split (HVGs + PCA on training cells), predictions are sets of cells, "
             "E-distance is the primary metric (lower is better), 95% bootstrap CIs over test conditions "
             "pooled across folds, paired bootstrap CIs for comparisons.", ""]
    if any("verdict" in m for m in combined.values()):
        lines += ["## Verdict: best JEPA model against the best tuned baseline", "",
                  "Per dataset × split, the JEPA model and the baseline with the lowest mean E-distance over the "
                  "test conditions; the difference (JEPA − baseline) with its paired 95% bootstrap CI. JEPA *wins* "
                  "only when the E-distance CI lies below 0. The last column compares the JEPA model with its "
                  "control `pca_set`, the same set model on the evaluation space's PCA instead of JEPA embeddings: "
                  "is a gain due to the JEPA space or to the set-level model?", "", R.verdict_table(combined), "",
                  *R.verdict_sentences(combined), "",
                  "JEPA encoders (one per fold, pretrained on the cells the predictors may see; collapse = "
                  "effective rank < 25% of the dimension or a dimension with std < 1e-3):", "",
                  _encoder_table(per_fold), ""]
    for dataset_id, splits in plan.items():
        adata = datasets[dataset_id]
        lines += [f"## {dataset_id}", "", R.dataset_summary(adata.obs, adata.n_vars), ""]
        for split in splits:
            m = combined[f"{dataset_id}/{split}"]
            lines += [f"### {split} ({m['n_folds']} folds, {m['n_test_conditions']} test conditions)", "",
                      f"Held out: {R.HELD_OUT.get(split, 'groups')}; every group is a test group in exactly one "
                      "fold, validation groups are carved from the training groups.", "",
                      R.methods_table(m), "", f"Paired comparisons against the best baseline (`{m['best_baseline']}`):",
                      "", R.comparisons_table(m, ["edistance", "delta_pearson", "mse"]), "", *R.verdict_lines(m), ""]
    lines += ["## Every fold (mean E-distance per method)", ""]
    table = pd.DataFrame(per_fold)
    cols = [c for c in table.columns if c.startswith("edistance_")]
    lines.append("| dataset | split | fold | n | best | " + " | ".join(c[len("edistance_"):] for c in cols) + " |")
    lines.append("|---|---|---|---|---|" + "---|" * len(cols))
    for _, r in table.iterrows():
        cells = " | ".join("n/a" if pd.isna(r[c]) else f"{r[c]:.3f}" for c in cols)
        lines.append(f"| {r['dataset_id']} | {r['split']} | {r['fold']} | {r['n_test_conditions']} | "
                     f"{r['best_baseline']} | {cells} |")
    lines += ["", "## Compute", "", f"{len(per_fold)} folds in {elapsed:.1f} s on CPU ({os.cpu_count()} cores), "
              f"celljepa {__version__}. Per-fold runs (config.json, metrics.json, per_condition.csv, report.md, "
              "figures) are in `<dataset>/<split>/fold<k>/`.", ""]
    if jepa is not None:
        pre = sum(r["timings"].get("jepa_pretrain_s", 0.0) for r in per_fold)
        trans = sum(v for r in per_fold for k, v in r["timings"].items()
                    if k.startswith("jepa_") and k != "jepa_pretrain_s")
        enc = next((r["encoder"] for r in per_fold if "encoder" in r), None)
        lines += [f"JEPA pretraining {pre:.0f} s and transition training {trans:.0f} s of the total"
                  + (f"; encoder {enc['n_parameters']:,} parameters" if enc else "") + ".", "",
                  "JEPA config (`jepa`) and transition config (`transition`) are in every fold's `config.json`:", "",
                  "```", f"jepa: {jepa.to_dict()}", f"transition: {_transition_dict(transition)}", "```", ""]
    if figures:
        lines += ["## Figures", ""] + [f"![{p.stem}]({p.relative_to(out).as_posix()})" for p in figures] + [""]
    return "\n".join(lines)


def _encoder_split(jepa_run: Path) -> dict | None:
    """The split a pretraining run was trained on (its eval.json), or None when unknown / unsplit."""
    import json

    for folder in (jepa_run, jepa_run.parent):
        path = folder / "eval.json"
        if path.is_file():
            return json.loads(path.read_text()).get("split") or None
    return None


def train_transition(adata: AnnData, *, jepa_run: str | os.PathLike, split: str | os.PathLike,
                     out: str | os.PathLike, config=None, kinds=("prototype", "set"), drug_metadata=None,
                     source: str | None = None, allow_unsplit_encoder: bool = False,
                     figure_maker: FigureMaker | None = None) -> FoldResult:
    """Train transition models on one fold with a pretrained encoder, score them beside the baselines.

    The encoder must have been pretrained on this fold's training cells (``celljepa pretrain --split``);
    otherwise it has seen the test cells and the run is refused unless ``allow_unsplit_encoder``.
    Writes the fold run folder plus ``models/<name>/transition.pt`` for every model.

    Under torch.distributed (``torchrun``/``srun``) every rank trains the transition models with
    DistributedDataParallel; rank 0 alone fits the baselines, scores and writes, and the other ranks
    return ``None``.
    """
    from ..data.drugs import read_drug_metadata
    from ..models import CellJEPA
    from ..models.transition import JEPATransition, TransitionConfig
    from ..splits import read_split

    jepa_run, out = Path(jepa_run), Path(out)
    fold = read_split(split)
    enc_split = _encoder_split(jepa_run)
    same = enc_split is not None and all(enc_split.get(k) == fold.get(k)
                                         for k in ("dataset_id", "split_name", "seed", "fold", "n_folds"))
    if not same and not allow_unsplit_encoder:
        seen = ("was pretrained without a split" if enc_split is None else
                f"was pretrained on split {enc_split.get('split_name')} fold {enc_split.get('fold')} "
                f"(seed {enc_split.get('seed')}) of {enc_split.get('dataset_id')}")
        raise InputError(f"the encoder {jepa_run} {seen}, so it has seen cells of this fold's test set. Fix: run "
                         f"`celljepa pretrain ... --split {split}` first, or pass --allow-unsplit-encoder to "
                         "accept it.")
    encoder = CellJEPA.load(jepa_run)
    cfg = config or TransitionConfig()
    drugs = read_drug_metadata(drug_metadata) if drug_metadata else None
    eval_cfg = EvalConfig(seed=fold["seed"])
    models = [JEPATransition(k, cfg, drug_metadata=drugs) for k in kinds]
    if not is_main():
        # the other ranks only take their share of the transition models' training
        _, train, _ = prepare_fold(adata, fold, eval_cfg)
        train.encoder, train.embedding = fold_encoder(adata, train, fold, encoder)
        for m in models:
            m.fit(train)
        return None
    created = not out.exists()
    try:
        result = score_fold(adata, fold, config=eval_cfg, jepa=encoder, extra_methods=models)
        write_fold_run(result, adata, out, config=_run_config(
            adata, fold, eval_cfg, result, input=source or "", jepa_run=str(jepa_run.resolve()),
            encoder_split_matches=same, transition=cfg.to_dict(), kinds=list(kinds),
            drug_metadata=str(drug_metadata or "")), figure_maker=figure_maker)
        model_dir = jepa_run / "model" if (jepa_run / "model").is_dir() else jepa_run
        for m in result.methods:
            if isinstance(m, JEPATransition):
                m.save(out / "models" / m.name, encoder_path=str(model_dir.resolve()))
    except BaseException:
        if created:
            remove_tree_quietly(out)
        raise
    return result
