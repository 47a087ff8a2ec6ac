"""Runs on disk: ``eval-baselines`` for one fold and the demo ``benchmark`` over datasets, splits and folds."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from anndata import AnnData
from tqdm.auto import tqdm

from .._errors import InputError
from .._io import (
    LOCK_NAME,
    folder_lock,
    refuse_beside_holder,
    refuse_other_kind,
    remove_tree_quietly,
    staged_folder,
    write_json_atomic,
    write_text_atomic,
)
from .._logging import logger
from .._version import __version__
from ..data._ingest import ingest_anndata
from ..eval import report as R
from ..eval.predictions import write_predictions
from ..eval.verdict import MIN_CONDITIONS, holm_over
from ..splits import make_split_folds
from ..train.distributed import is_main
from .claims import CLAIMS_FILE, CLAIMS_LOCK, check_claims, claims_family, fixed_claims  # noqa: F401
from .config import RunConfig
from .evaluate import (
    EvalConfig,
    FoldResult,
    fit_views,
    fold_encoder,
    prepare_fold,
    score_fold,
    validation_parts,
)
from .pooling import CLAIMS_RULE, pool_conditions, seed_summary, summarize
from .provenance import provenance, tree_state, versions
from .reuse import reuse_fold
from .tasks import (
    FRAMES_FILE,
    config_digest,
    data_fingerprint,
    load_finished_fold,
    locks_out,
    other_run,
    refuse_other_runs,
    stop_on_signals,
    task_indices,
    write_frames,
)

FigureMaker = Callable[[FoldResult, Path], list[Path]]

#: A fold's predicted and observed cells (``benchmark(..., predictions=True)``, ``--predictions``).
PREDICTIONS_FILE = "predictions.h5ad"
#: Per dataset × split: every score by method, split seed, fold, model seed and condition (the units of the
#: hierarchical bootstrap behind every CI; re-check any verdict from it).
SEEDS_FILE = "per_seed_all_folds.csv"


def _fold_report_record(result: FoldResult, adata: AnnData, figures: list[Path], out: Path) -> dict:
    """What a fold's ``report.md`` shows, as plain data (rendered by :func:`celljepa.eval.report.fold_report`)."""
    return {
        "metrics": result.metrics,
        "dataset": R.dataset_summary(adata.obs, adata.n_vars),
        "split": result.fold,
        "space": {"n_genes": result.space.describe()["n_genes"], "n_pcs": result.space.n_pcs},
        "params": result.params,
        "timings": result.timings,
        "cpus": os.cpu_count(),
        "figures": [p.relative_to(out).as_posix() for p in figures],
    }


def write_fold_run(
    result: FoldResult, adata: AnnData, out: Path, *, config: dict, figure_maker: FigureMaker | None = None
) -> list[Path]:
    """Write config.json, per_condition.csv, split.json, eval_space.npz, figures, report.md, then metrics.json.

    With predictions kept (``--predictions``): ``predictions.h5ad`` and the cell-eval pairs in ``cell_eval/``
    (:func:`celljepa.eval.predictions.write_cell_eval_pairs`).

    Callers write into the staging folder of :func:`celljepa._io.staged_folder`, so the run folder appears whole
    or not at all. ``metrics.json`` is written last and carries the digest of ``config``
    (:func:`.tasks.config_digest`), so a folder with it is a finished fold that a restarted run reads back
    instead of recomputing.
    """
    out.mkdir(parents=True, exist_ok=True)
    digest = config_digest(config)
    written = [
        write_json_atomic(out / "config.json", {**config, "config_digest": digest, "provenance": provenance()}),
        write_text_atomic(out / "per_condition.csv", result.per_condition.to_csv(index=False)),
        write_json_atomic(out / "split.json", result.fold),
        result.space.save(out / "eval_space.npz"),
    ]
    if result.validation is not None:
        written.append(write_text_atomic(out / "validation.csv", result.validation.to_csv(index=False)))
    if result.predictions is not None:
        from ..eval.predictions import CELL_EVAL_DIR, write_cell_eval_pairs

        written.append(write_predictions(out / PREDICTIONS_FILE, result.predictions))
        # the (pred, real) pairs `cell-eval run -ap cell_eval/<method>/pred.h5ad -ar cell_eval/real.h5ad` reads
        written += write_cell_eval_pairs(result.predictions, out / CELL_EVAL_DIR)
    if result.per_seed is not None and result.per_seed["model_seed"].nunique() > 1:
        written.append(write_text_atomic(out / "per_condition_seeds.csv", result.per_seed.to_csv(index=False)))
    figures = figure_maker(result, out) if figure_maker else []
    written.append(
        write_text_atomic(out / "report.md", R.fold_report(_fold_report_record(result, adata, figures, out)))
    )
    written.append(write_frames(result, out / FRAMES_FILE))
    written.append(write_json_atomic(out / "metrics.json", {**result.metrics, "config_digest": digest}))
    return written + figures


def _run_config(adata: AnnData, fold: dict, cfg: EvalConfig, result: FoldResult | None, *, data: str, **extra) -> dict:
    conf = {
        "dataset_id": fold["dataset_id"],
        "split": fold["split_name"],
        "fold": fold["fold"],
        "seed": fold["seed"],
        "n_folds": fold["n_folds"],
        "evaluation": dataclasses.asdict(cfg),
        "versions": versions(),
        "source": str(adata.uns.get("source", "")),
        "data": data,
        **extra,
    }
    if result is not None:
        conf["methods"] = result.params
        conf["timings_s"] = result.timings
    return conf


def _empty(out: Path) -> bool:
    """Whether a run folder holds nothing yet but its lock (so a failed run may remove it)."""
    return not out.exists() or not any(p.name != LOCK_NAME for p in out.iterdir())


@locks_out
def eval_baselines(
    adata: AnnData,
    *,
    split: str,
    fold: int,
    seed: int = 0,
    n_folds: int = 5,
    val_fraction: float = 0.15,
    out: str | os.PathLike,
    config: EvalConfig | None = None,
    figure_maker: FigureMaker | None = None,
    source: str | None = None,
    overwrite: bool = False,
) -> FoldResult:
    """Evaluate every applicable baseline on one fold and write the run folder ``out``.

    The fold is derived from the split name, seed and number of folds exactly as ``celljepa splits``
    does (so ``split.json`` equals that command's file for the fold).
    """
    cfg = config or EvalConfig(seed=seed)
    dataset_id = str(adata.uns.get("dataset_id", "dataset"))
    folds = make_split_folds(
        adata.obs, split, dataset_id=dataset_id, n_folds=n_folds, seed=seed, val_fraction=val_fraction
    )  # checks the split name (did-you-mean) once
    if not 0 <= fold < len(folds):
        raise InputError(
            f"--fold {fold} does not exist: {folds[0]['split_name']} has folds 0..{len(folds) - 1} with "
            f"--folds {n_folds}."
        )
    out = Path(out)
    created = _empty(out)
    inputs = _run_config(
        adata, folds[fold], cfg, None, data=data_fingerprint(adata), val_fraction=val_fraction, input=source or ""
    )
    refuse_other_kind(out, "fold")
    if not overwrite:
        refuse_other_runs({out: c} if (c := other_run(out, inputs)) else {})
    try:
        result = score_fold(adata, folds[fold], config=cfg)
        with staged_folder(out) as stage:
            write_fold_run(
                result,
                adata,
                stage,
                config=_run_config(
                    adata, folds[fold], cfg, result, data=inputs["data"], val_fraction=val_fraction, input=source or ""
                ),
                figure_maker=figure_maker,
            )
    except BaseException:
        if created:
            remove_tree_quietly(out)
        raise
    return result


# The demo benchmark: the two studies of the bundled file, each with its own dataset id and splits.
DEMO_PLAN = {
    "norman2019": {
        "filter": "norman19",
        "splits": {"S1_unseen_perturbation": 3, "S1g_unseen_genes": 3, "S3_unseen_combo": 3},
    },
    "sciplex_gxe": {"filter": "mcfaline23", "splits": {"S1_unseen_perturbation": 3, "S2_unseen_context": 3}},
}


def demo_datasets() -> dict[str, AnnData]:
    """The bundled demo ingested as its two studies (``norman2019``, ``sciplex_gxe``)."""
    from ..datasets import demo

    raw = demo(preprocessed=False)
    out = {}
    for dataset_id, plan in DEMO_PLAN.items():
        part = raw[raw.obs["dataset"].astype(str) == plan["filter"]].copy()
        out[dataset_id] = ingest_anndata(
            part, dataset_id=dataset_id, source=f"celljepa demo ({plan['filter']})", format="perturbench"
        )
    return out


def load_data_args(items, *, backed: bool = False) -> dict[str, AnnData]:
    """The datasets of the ``--data`` options of ``celljepa benchmark`` and ``holdout``, in order.

    Each item is ``demo`` (the demo's two studies, :func:`demo_datasets`), ``NAME=H5AD`` (a processed file
    under that name) or ``H5AD`` (named by its ``uns['dataset_id']``, else the file name). ``backed=True``
    leaves the files' ``X`` on disk (the demo is small and always in memory).

    Examples
    --------
    >>> from celljepa.bench.run import load_data_args
    >>> list(load_data_args(["demo"]))
    ['norman2019', 'sciplex_gxe']
    """
    from ..data.readers import read_source

    datasets: dict[str, AnnData] = {}
    for item in items:
        item = str(item).strip()
        if item == "demo":
            new = demo_datasets()
        else:
            name, sep, path = item.partition("=")
            if sep and not (name.strip() and path.strip()):
                raise InputError(f"--data expects demo, NAME=H5AD or H5AD, got {item!r}.")
            adata = read_source(Path(path.strip() if sep else item), backed=backed)
            new = {name.strip() if sep else str(adata.uns.get("dataset_id", Path(item).stem)): adata}
        twice = sorted(set(new) & set(datasets))
        if twice:
            raise InputError(f"dataset {twice[0]!r} is given twice in --data. Fix: name each file, NAME=H5AD.")
        datasets.update(new)
    if not datasets:
        raise InputError("no dataset given. Fix: --data demo, --data NAME=H5AD or --data H5AD.")
    return datasets


def benchmark_tasks(
    datasets: dict[str, AnnData],
    plan: dict[str, dict[str, int]],
    *,
    run: RunConfig | None = None,
    max_folds: int | None = None,
    folds=None,
) -> list[tuple[str, str, int, dict]]:
    """The fold tasks of a benchmark, in the order task indices count them: ``(dataset, split, split seed, fold)``.

    Examples
    --------
    >>> from celljepa.bench.run import benchmark_tasks, demo_datasets
    >>> d = demo_datasets()
    >>> tasks = benchmark_tasks(d, {"sciplex_gxe": {"S2_unseen_context": 3}})
    >>> [(t[0], t[2], t[3]["fold"]) for t in tasks]
    [('sciplex_gxe', 0, 0), ('sciplex_gxe', 0, 1), ('sciplex_gxe', 0, 2)]
    """
    run = run or RunConfig()
    if max_folds is not None and int(max_folds) < 1:
        raise InputError(
            f"max_folds={max_folds} scores no fold at all (CLI: --max-folds). Fix: pass 1 or more, or "
            "None for every fold."
        )
    jobs = []
    for dataset_id, splits in plan.items():
        adata = datasets[dataset_id]
        for split, k in splits.items():
            for s in run.split_seeds:
                split_folds = make_split_folds(adata.obs, split, dataset_id=dataset_id, n_folds=k, seed=s)
                for fold in split_folds[:max_folds]:
                    if folds is None or fold["fold"] in folds:
                        jobs.append((dataset_id, split, s, fold))
    return jobs


def task_dir(out: str | os.PathLike, dataset_id: str, split: str, split_seed: int, fold: int) -> Path:
    """The run folder of one fold task: ``OUT/<dataset>/<split>/split_seed<s>/fold<k>``."""
    return Path(out) / dataset_id / split / f"split_seed{split_seed}" / f"fold{fold}"


def benchmark(
    datasets: dict[str, AnnData],
    plan: dict[str, dict[str, int]],
    *,
    out: str | os.PathLike,
    run: RunConfig | None = None,
    figure_maker: FigureMaker | None = None,
    combined_figure_maker: Callable[[dict, Path], list[Path]] | None = None,
    progress: bool = True,
    jepa_knn=None,
    max_folds: int | None = None,
    title: str | None = None,
    pca_twin: bool = True,
    folds=None,
    tasks=None,
    collect: bool = False,
    predictions: bool = False,
    reuse: str | os.PathLike | None = None,
    final: bool = False,
    held_out_datasets=(),
    overwrite: bool = False,
    models=None,
) -> dict:
    """Run baselines (and JEPA models) on every dataset × split × split seed × fold; one report.

    ``plan`` maps dataset id → {split name: number of folds}. One run folder per fold
    (``OUT/<dataset>/<split>/split_seed<s>/fold<k>/``); per dataset × split the conditions of every fold
    and split seed are pooled (a condition's score is its mean over split seeds and model seeds), the
    comparator is chosen on the pooled validation conditions and the verdict rows of the whole report
    are Holm-corrected together. Returns the combined metrics.

    Parameters
    ----------
    run
        The :class:`~celljepa.bench.config.RunConfig`: split seeds (folds are drawn per seed), model seeds,
        the evaluation settings (``primary``, ``transductive``, ...), and with ``run.jepa`` the JEPA models:
        per fold and model seed a CellJEPA encoder is pretrained on the cells the methods may fit on (never
        a test fold's perturbed cells, nor a held-out context's controls unless ``transductive``) and the
        prototype and set transition models (``run.transition``) are trained on it and scored beside the
        baselines. Default: ``RunConfig()`` (split seed 0, baselines only).
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
        JEPA embedding (in the comparator pool, and the control of the JEPA space).
    tasks
        Run only these fold tasks (indices into :func:`benchmark_tasks`; one Slurm array task each) and write
        their run folders, nothing combined; each holds its own folder's lock, so tasks run in parallel. A
        finished task is skipped. SIGUSR1/SIGTERM stop the task (:class:`TaskInterrupted`): finished folds are
        kept, the fold in progress is redone when the task runs again.
    collect
        Compute nothing: read every fold task back and write the combined metrics and report; unfinished
        tasks are an error that lists them.
    reuse
        A finished run of the same plan, seeds and settings: score only the baselines and ``run.peers`` here,
        check the baselines equal the stored ones, merge the peers' rows with every stored method's and redo
        each fold's comparator choice and verdict (:mod:`celljepa.bench.reuse`); no encoder is retrained.
    predictions
        Write each fold's predicted and observed cells as ``predictions.h5ad`` in its run folder (cell-eval's
        layout, :mod:`celljepa.eval.predictions`; every method, model seed and test condition).
    final
        A final verdict: refuse a checkout with uncommitted or untracked files, and before the first fold write
        ``final.json`` (the commit, a digest of the full configuration, the datasets declared unseen during
        development); a resumed task or collect must find the same commit and digest (:func:`freeze_final`).
    held_out_datasets
        With ``final``: the datasets of this run that were never seen while celljepa's models and defaults were
        developed (the user's declaration, recorded and stated in the report). Split seeds hold nothing out.
    overwrite
        Replace what ``out`` holds finished from a run with other inputs (other data, settings, seeds or plan).
        Without it such a run is refused before anything is written, naming what changed. A whole run is built
        in a staging folder and replaces the old one when complete (the old run stays whole until then); fold
        tasks replace their folds one by one, after removing the old run's combined files.
    models
        The user's own models, added to ``run.models`` / ``run.model_options`` (``docs/bring-your-own-model.md``):
        each a ``"package.module:Class"`` string, a :class:`~celljepa.models.base.PerturbationModel` subclass, or
        ``(spec_or_class, {option: value})``. Per fold and model seed each is made (``seed=`` when its
        constructor takes it), fitted like every other method (validation scores out of sample) and scored
        beside the baselines; it joins the comparator pool unless ``run.evaluation.primary`` names it, and then
        the verdict compares it with the best of the pool (chosen on validation). Its class, options and source
        digest are in every fold's config: a changed model or option refuses a finished fold (``overwrite``).

    Notes
    -----
    Every fold is written into a staging folder and swapped in whole (:func:`celljepa._io.staged_folder`), under
    the fold folder's lock; a full run or ``collect`` also holds ``out``'s lock, and a fold task is refused while
    one does (see ``docs/reliability.md``).

    Returns
    -------
    The combined metrics (``metrics_combined.json``'s ``results``); with ``tasks``, ``{"tasks": {index: "done"
    | "computed"}}``.

    Examples
    --------
    Score your own model beside the baselines of the demo (``docs/examples`` on ``sys.path``), named primary:

    >>> import celljepa as cj                                                      # doctest: +SKIP
    >>> run = cj.bench.RunConfig(evaluation=cj.bench.EvalConfig(primary="shrunk_mean_shift"))  # doctest: +SKIP
    >>> combined = cj.bench.benchmark(                                             # doctest: +SKIP
    ...     cj.bench.demo_datasets(), {"sciplex_gxe": {"S2_unseen_context": 3}}, out="runs/mine",
    ...     models=[("my_model:ShrunkMeanShift", {"shrinkage": 0.5})], run=run)
    >>> combined["sciplex_gxe/S2_unseen_context"]["verdict"]["baseline"]          # doctest: +SKIP
    """
    run = _with_models(run or RunConfig(), models)
    out = Path(out)
    if tasks is not None and collect:
        raise InputError(
            "tasks= runs fold tasks and collect= merges them: pass one of the two (CLI: --task or --collect)."
        )
    refuse_other_kind(out, "benchmark")
    jobs = benchmark_tasks(datasets, plan, run=run, max_folds=max_folds, folds=folds)
    fold_result = _FoldTasks(datasets, plan, out, run, figure_maker, pca_twin, predictions, reuse, overwrite)
    if final:
        freeze_final(
            out, datasets, plan, run, fold_result, held_out_datasets=held_out_datasets, max_folds=max_folds, folds=folds
        )
    elif held_out_datasets:
        raise InputError(
            "--held-out-datasets declares data unseen during development for a final verdict: add --final."
        )
    if tasks is not None:
        tasks = task_indices(tasks, len(jobs), "benchmark")
        refuse_beside_holder(out, "a fold task")
        fold_result.check_inputs([jobs[i] for i in tasks], whole=False)
        # the first task fixes the claims family before any model is fitted; the others read it
        _, fold_result.effects = fixed_claims(
            out,
            datasets,
            jobs,
            run,
            progress=progress,
            when="before the first fold task fitted a model",
            fingerprints=fold_result.fingerprints,
        )
        states = {}
        with stop_on_signals():
            for i in tasks:
                dataset_id, split, s, fold = jobs[i]
                states[i] = fold_result(dataset_id, split, s, fold)[1]
                logger.info(
                    "benchmark task %d (%s %s split seed %d fold %d): %s",
                    i,
                    dataset_id,
                    split,
                    s,
                    fold["fold"],
                    states[i],
                )
        return {"tasks": states}
    with folder_lock(out):
        kw = dict(
            collect=collect,
            combined_figure_maker=combined_figure_maker,
            progress=progress,
            jepa_knn=jepa_knn,
            title=title,
        )
        if fold_result.check_inputs(jobs) and not collect:
            # --overwrite of a whole run: built in a staging folder and swapped in when complete, so the old run
            # stays whole (combined result included) until then, and a killed run leaves it as it was
            with staged_folder(out) as stage:
                if (out / FINAL_FILE).is_file():
                    shutil.copy2(out / FINAL_FILE, stage / FINAL_FILE)
                fold_result.out = stage
                return _combined_run(datasets, plan, stage, run, jobs, fold_result, **kw)
        return _combined_run(datasets, plan, out, run, jobs, fold_result, **kw)


def _with_models(run: RunConfig, models) -> RunConfig:
    """``run`` with the user models of ``benchmark(models=...)`` added (specs, classes or ``(model, options)``).

    The primary model must then name a method of the run (:meth:`RunConfig.check_primary`).
    """
    if not models:
        run.check_primary()
        return run
    one = isinstance(models, tuple) and len(models) == 2 and isinstance(models[1], dict)  # (model, options)
    if isinstance(models, (str, type)) or one:
        models = [models]
    specs, options = list(run.models), dict(run.model_options)
    for item in models:
        model, opts = item if isinstance(item, tuple) else (item, None)
        if isinstance(item, tuple) and (len(item) != 2 or not isinstance(opts, dict)):
            raise InputError(
                f"models item {item!r}: expected a spec, a class or (spec_or_class, {{option: value}}). Fix: pass "
                "('my_model:ShrunkMeanShift', {'shrinkage': 0.5})."
            )
        model = model.strip() if isinstance(model, str) else model
        specs.append(model)
        if opts:
            options[model if isinstance(model, str) else f"{model.__module__}:{model.__qualname__}"] = dict(opts)
    return dataclasses.replace(run, models=tuple(specs), model_options=options)


class _FoldTasks:
    """Scores a fold task, or reads it back when its folder holds a finished run with the same inputs."""

    def __init__(
        self,
        datasets,
        plan,
        out: Path,
        run: RunConfig,
        figure_maker,
        pca_twin: bool,
        predictions: bool = False,
        reuse: Path | None = None,
        overwrite: bool = False,
    ):
        self.overwrite = overwrite
        self.datasets, self.out, self.run, self.figure_maker, self.pca_twin = datasets, out, run, figure_maker, pca_twin
        self.predictions, self.reuse = predictions, None if reuse is None else Path(reuse)
        if self.reuse is not None and not run.peers:
            raise InputError("--reuse adds methods to a finished run: name them with --peers.")
        if self.reuse is not None and run.models:
            raise InputError(
                "--reuse adds peers to a finished run, not user models (--model): their rows would be checked as "
                "the run's baselines. Fix: run the benchmark in full with --model, or drop --reuse."
            )
        if self.reuse is not None and self.reuse.resolve() == Path(out).resolve():
            raise InputError("--reuse must name another run folder than --out (the reused run is only read).")
        m_seeds = list(run.model_seeds)
        self.jepa = run.jepa_for(m_seeds[0]) if run.jepa is not None else None  # score_fold seeds per model seed
        self.transition = run.transition_for(m_seeds[0])
        self.fingerprints = {d: data_fingerprint(datasets[d]) for d in plan}
        self.extra = (
            {"jepa": self.jepa.to_dict(), "transition": _transition_dict(self.transition), "model_seeds": m_seeds}
            if self.jepa is not None
            else {}
        )
        if run.peers:
            self.extra["peers"] = {
                p: {"seeds": list(run.seeds_of_peer(p)), "params": run.peer_params.get(p, {})} for p in run.peers
            }
        if run.models:  # a changed model class, option or source refuses a finished fold (not read back)
            records = run.model_records()
            self.extra["models"] = {
                name: {"class": r["class"], "spec": r["spec"], "role": r["role"]} for name, r in records.items()
            }
            self.extra["model_options"] = {name: r["options"] for name, r in records.items()}
            self.extra["model_sources"] = {name: r["source_digest"] for name, r in records.items()}
        if predictions:  # a finished fold without its predictions file is scored again
            self.extra["predictions"] = PREDICTIONS_FILE
        if self.reuse is not None:
            self.extra["reused_from"] = str(self.reuse)
        self.effects: dict = {}  # (dataset, split, split seed, fold) -> the effect filter the claims pass computed

    def _peers(self, folder: Path):
        """``seed -> the peers trained with that model seed`` for a fold (exchange files under ``folder/peers``)."""
        return lambda seed: self.run.peer_models(folder / "peers", seed=seed)

    def _seeded_methods(self, folder: Path):
        """``seed -> the peers and user models of that model seed``: each is made and fitted once per model seed."""
        if not self.run.models:
            return self._peers(folder)
        return lambda seed: (
            self.run.peer_models(folder / "peers", seed=seed)
            + self.run.user_models(self.run.model_seeds[0] if seed is None else seed)
        )

    def config(self, dataset_id: str, split_seed: int, fold: dict, result: FoldResult | None) -> dict:
        return _run_config(
            self.datasets[dataset_id],
            fold,
            self.run.evaluation_for(split_seed),
            result,
            data=self.fingerprints[dataset_id],
            **self.extra,
        )

    def check_inputs(self, jobs, *, whole: bool = True) -> bool:
        """Refuse, before anything is written, folds that ``out`` holds finished from a run with other inputs.

        With ``overwrite`` they are replaced instead and this returns True: a whole run is then built in a staging
        folder (:func:`benchmark`); fold tasks (``whole=False``) replace their folds one by one, and the old run's
        combined files, which describe them, are removed now, so the folder never shows a finished run while it
        mixes two.
        """
        conflicts = {}
        for dataset_id, split, s, fold in jobs:
            folder = task_dir(self.out, dataset_id, split, s, fold["fold"])
            changes = other_run(folder, self.config(dataset_id, s, fold, None))
            if changes:
                conflicts[folder] = changes
        combined = self.out / "metrics_combined.json"
        if whole and not conflicts and combined.is_file():
            try:
                stored = json.loads(combined.read_text(encoding="utf-8")).get("run_digest")
            except (OSError, ValueError):
                stored = None
            if stored is not None and stored != self.run_digest(jobs):
                conflicts[self.out] = [
                    "the plan (datasets, splits, split seeds or folds) of the combined run differs from this run's"
                ]
        if conflicts and self.overwrite:
            if not whole:
                for name in ("metrics_combined.json", "report.md"):
                    (self.out / name).unlink(missing_ok=True)
            logger.warning(
                "--overwrite: %d finished fold(s) of another run in %s are replaced%s",
                len(conflicts),
                self.out,
                "" if whole else " one by one",
            )
            return True
        refuse_other_runs(conflicts)
        return False

    def run_digest(self, jobs) -> str:
        """Digest of a whole run: the inputs of every fold it combines (plan, seeds, settings, data)."""
        digests = [config_digest(self.config(d, s, fold, None)) for d, _split, s, fold in jobs]
        return config_digest({"folds": digests})

    def finished(self, dataset_id: str, split: str, split_seed: int, fold: dict) -> FoldResult | None:
        digest = config_digest(self.config(dataset_id, split_seed, fold, None))
        return load_finished_fold(task_dir(self.out, dataset_id, split, split_seed, fold["fold"]), fold, digest)

    def __call__(
        self, dataset_id: str, split: str, split_seed: int, fold: dict, *, compute: bool = True
    ) -> tuple[FoldResult | None, str]:
        result = self.finished(dataset_id, split, split_seed, fold)
        if result is not None:
            return result, "done"
        if not compute:
            return None, "missing"
        adata = self.datasets[dataset_id]
        folder = task_dir(self.out, dataset_id, split, split_seed, fold["fold"])
        with folder_lock(folder, option="fold folder"):
            result = self.finished(dataset_id, split, split_seed, fold)  # another process may have finished it
            if result is not None:
                return result, "done"
            if not self.overwrite:
                changes = other_run(folder, self.config(dataset_id, split_seed, fold, None))
                refuse_other_runs({folder: changes} if changes else {})
            with staged_folder(folder) as stage:
                result = self._score(adata, dataset_id, split, split_seed, fold, stage)
                write_fold_run(
                    result,
                    adata,
                    stage,
                    config=self.config(dataset_id, split_seed, fold, result),
                    figure_maker=self.figure_maker,
                )
        return result, "computed"

    def _score(self, adata, dataset_id, split, split_seed, fold, stage: Path) -> FoldResult:
        if self.reuse is not None:
            return reuse_fold(
                adata,
                fold,
                task_dir(self.reuse, dataset_id, split, split_seed, fold["fold"]),
                config=self.config(dataset_id, split_seed, fold, None),
                evaluation=self.run.evaluation_for(split_seed),
                new_methods=self._peers(stage),
                keep_predictions=self.predictions,
            )
        return score_fold(
            adata,
            fold,
            config=self.run.evaluation_for(split_seed),
            jepa=self.jepa,
            transition=self.transition,
            model_seeds=list(self.run.model_seeds),
            pca_twin=self.pca_twin,
            peers=self._seeded_methods(stage),
            keep_predictions=self.predictions,
            effects=self.effects.get((dataset_id, split, split_seed, fold["fold"])),
        )


def _run_provenance(started: dict, skipped: int) -> dict:
    """Provenance of a combined run: the checkout it started from, the date and host it finished on."""
    end = provenance()
    out = {**end, "git_commit": started["git_commit"], "started": started["date"], "folds_resumed": skipped}
    if end["git_commit"] != started["git_commit"]:
        out["git_commit_at_end"] = end["git_commit"]
    return out


def _combined_run(
    datasets,
    plan,
    out: Path,
    run: RunConfig,
    jobs,
    fold_result: _FoldTasks,
    *,
    collect: bool,
    combined_figure_maker,
    progress: bool,
    jepa_knn,
    title,
) -> dict:
    base = run.evaluation
    s_seeds = list(run.split_seeds)
    m_seeds = list(run.model_seeds)
    jepa = fold_result.jepa
    t0 = time.perf_counter()
    started = provenance()  # the code the folds run with: a commit made during a long run is not it
    frames: dict[tuple[str, str], list[pd.DataFrame]] = {}
    vals: dict[tuple[str, str], list[pd.DataFrame]] = {}
    seeds_frames: dict[tuple[str, str], list[pd.DataFrame]] = {}
    per_fold: list[dict] = []
    skipped, missing = 0, []
    claims = None
    if not collect:  # the claims family from the data alone, before any model is fitted (its effects feed the folds)
        claims, fold_result.effects = fixed_claims(
            out, datasets, jobs, run, progress=progress, fingerprints=fold_result.fingerprints
        )
    bar = tqdm(jobs, desc="benchmark", unit="fold", disable=not progress)
    from .evaluate import FoldStepsBar, reporting_steps

    on_step = FoldStepsBar(progress)
    for i, (dataset_id, split, s, fold) in enumerate(bar):
        bar.set_postfix_str(f"{dataset_id} {split} split seed {s} fold {fold['fold']}")
        with reporting_steps(on_step):  # the steps inside the fold (score_fold names them)
            result, state = fold_result(dataset_id, split, s, fold, compute=not collect)
        if state == "missing":
            missing.append(i)
            continue
        skipped += state == "done"
        key = (dataset_id, split)
        for store, frame in (
            (frames, result.per_condition),
            (vals, result.validation),
            (seeds_frames, result.per_seed),
        ):
            frame = frame.copy()
            frame["split_seed"], frame["fold"] = s, fold["fold"]
            store.setdefault(key, []).append(frame)
        per_fold.append(
            {
                "dataset_id": dataset_id,
                "split": split,
                "split_seed": s,
                "fold": fold["fold"],
                "n_test_conditions": result.metrics["n_test_conditions"],
                "n_effect_conditions": result.metrics["n_effect_conditions"],
                "comparator": result.metrics["comparator"],
                **{f"edistance_{m}": v["edistance"]["mean"] for m, v in result.metrics["methods"].items()},
                **({"encoder": result.params["jepa_encoder"]} if "jepa_encoder" in result.params else {}),
                **(
                    {"never_left_start": result.metrics["never_left_start"]}
                    if result.metrics.get("never_left_start")
                    else {}
                ),
                "timings": result.timings,
            }
        )
    on_step.close()
    if missing:
        raise InputError(
            f"{len(missing)} of {len(jobs)} fold tasks are not finished in {out}: task(s) "
            f"{', '.join(map(str, missing[:20]))}{' ...' if len(missing) > 20 else ''}. Fix: run them "
            "(celljepa benchmark ... --task I), then --collect again; nothing combined was written."
        )
    if collect:  # written by the first fold task; fold tasks of a version that did not write it: the same pass, now
        claims, _ = fixed_claims(
            out,
            datasets,
            jobs,
            run,
            progress=progress,
            fingerprints=fold_result.fingerprints,
            when="at collect (no fold task recorded it): from the data alone, as before fitting",
        )
    if skipped and not collect:
        logger.info(
            "benchmark: %d of %d folds were finished in %s already: read back, not recomputed", skipped, len(jobs), out
        )
    combined = {}
    for (dataset_id, split), parts in frames.items():
        key = (dataset_id, split)
        combined[f"{dataset_id}/{split}"] = _pooled_metrics(
            parts,
            vals[key],
            seeds_frames[key],
            base,
            s_seeds,
            m_seeds,
            dataset_id=dataset_id,
            split=split,
            jepa=jepa is not None,
        )
    check_claims(claims, combined)
    final_rec = json.loads((out / FINAL_FILE).read_text(encoding="utf-8")) if (out / FINAL_FILE).is_file() else None
    family = holm_over(combined.values())  # this run's claims family, one per verdict metric
    for (dataset_id, split), parts in frames.items():
        folder = out / dataset_id / split
        metrics = combined[f"{dataset_id}/{split}"]
        metrics["holm_family_size"] = family["edistance"]
        raw = pd.concat(parts, ignore_index=True)
        write_text_atomic(folder / "per_condition_all_folds.csv", raw.to_csv(index=False))
        write_text_atomic(
            folder / SEEDS_FILE, pd.concat(seeds_frames[(dataset_id, split)], ignore_index=True).to_csv(index=False)
        )
        write_text_atomic(folder / "per_condition.csv", metrics.pop("_pooled").to_csv(index=False))
        write_text_atomic(
            folder / "validation_all_folds.csv",
            pd.concat(vals[(dataset_id, split)], ignore_index=True).to_csv(index=False),
        )
        write_json_atomic(folder / "metrics_all_folds.json", metrics)
    embeddings = (
        {d: _jepa_embedding(datasets[d], jepa_knn, out / d / "jepa", progress) for d in plan}
        if jepa_knn is not None
        else {}
    )
    # collecting: the folds' own compute time (they ran elsewhere, e.g. as array tasks)
    elapsed = sum(f["timings"].get("total_s", 0.0) for f in per_fold) if collect else time.perf_counter() - t0
    figures = combined_figure_maker(combined, out) if combined_figure_maker else []
    report = R.benchmark_report(
        {
            "title": title,
            "plan": plan,
            "datasets": {d: R.dataset_summary(datasets[d].obs, datasets[d].n_vars) for d in plan},
            "combined": combined,
            "per_fold": per_fold,
            "transductive": base.transductive,
            "final": final_rec,
            "jepa": None if jepa is None else jepa.to_dict(),
            "transition": None if jepa is None else _transition_dict(fold_result.transition),
            "jepa_embeddings": embeddings,
            "elapsed_s": elapsed,
            "cpus": os.cpu_count(),
            "celljepa": __version__,
            "figures": [p.relative_to(out).as_posix() for p in figures],
        }
    )
    write_text_atomic(out / "report.md", report)
    # last: a folder with metrics_combined.json holds a finished combined run (a reader's marker)
    write_json_atomic(
        out / "metrics_combined.json",
        {
            "seed": s_seeds[0],
            "split_seeds": s_seeds,
            "model_seeds": m_seeds,
            "primary": base.primary,
            "transductive": base.transductive,
            "wall_time_s": elapsed,
            "results": combined,
            "claims": claims_record(combined, family, fixed=claims.get("computed")),
            "final": final_rec,
            "per_fold": per_fold,
            "jepa_embeddings": embeddings,
            "versions": versions(),
            "run_digest": fold_result.run_digest(jobs),
            "provenance": _run_provenance(started, skipped),
        },
    )
    logger.info("benchmark: %d folds in %.1f s; report at %s", len(jobs), elapsed, out / "report.md")
    return combined


FINAL_FILE = "final.json"


def _final_config(datasets, plan, run: RunConfig, fold_result: _FoldTasks, held_out, max_folds, folds) -> dict:
    """Everything that decides a final run's numbers, for its digest."""
    return {
        "plan": plan,
        "split_seeds": list(run.split_seeds),
        "model_seeds": list(run.model_seeds),
        "evaluation": dataclasses.asdict(run.evaluation),
        "data": {d: fold_result.fingerprints[d] for d in plan},
        "jepa": fold_result.extra.get("jepa"),
        "transition": fold_result.extra.get("transition"),
        "peers": fold_result.extra.get("peers", {}),
        "max_folds": max_folds,
        "folds": None if folds is None else sorted(int(f) for f in folds),
        "held_out_datasets": sorted(held_out),
        "celljepa": __version__,
    }


def freeze_final(
    out: Path,
    datasets,
    plan,
    run: RunConfig,
    fold_result: _FoldTasks,
    *,
    held_out_datasets=(),
    max_folds=None,
    folds=None,
) -> dict:
    """Freeze a final run: a clean checkout, and its commit and configuration digest in ``OUT/final.json``.

    Refuses a checkout with modified, staged or untracked files (a final verdict must name the code it ran), and
    an install that is not a git checkout (``pip install -e .`` from the checkout). The first call writes
    ``final.json`` before any fold is computed; a later call on the same folder (a resumed run, a fold task, a
    collect) must find the same commit and digest, so a final run's configuration cannot change half-way.
    """
    held = [str(d) for d in held_out_datasets]
    unknown = [d for d in held if d not in plan]
    if unknown:
        raise InputError(f"--held-out-datasets {unknown}: not datasets of this run ({', '.join(plan)}).")
    tree = tree_state()
    if tree is None:
        raise InputError(
            "--final records the commit of the code it runs, but celljepa does not run from a git "
            "checkout here. Fix: run it from a clone installed with `pip install -e .`."
        )
    if tree["changed"]:
        shown = ", ".join(tree["changed"][:10]) + (" ..." if len(tree["changed"]) > 10 else "")
        raise InputError(
            f"--final refuses a dirty tree: {len(tree['changed'])} file(s) differ from commit "
            f"{tree['commit'][:12]} in {tree['root']} ({shown}). Fix: commit or remove them, then run "
            "again."
        )
    config = _final_config(datasets, plan, run, fold_result, held, max_folds, folds)
    record = {
        "commit": tree["commit"],
        "config_digest": config_digest(config),
        "config": config,
        "frozen": provenance()["date"],
        "held_out": (
            f"datasets declared unseen during development: {', '.join(held)}"
            if held
            else "no dataset of this run is declared unseen during development"
        ),
        "not_held_out": (
            "split seeds reshuffle the same conditions into folds: they hold nothing out. Data "
            "never seen in development means a whole dataset."
        ),
    }
    path = out / FINAL_FILE
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old.get("commit") != record["commit"] or old.get("config_digest") != record["config_digest"]:
            raise InputError(
                f"{path} froze this final run at commit {str(old.get('commit'))[:12]} with "
                f"configuration {str(old.get('config_digest'))[:12]}; this call runs commit "
                f"{record['commit'][:12]} with {record['config_digest'][:12]}. A final run's "
                "configuration cannot change: use a new --out."
            )
        return old
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, record)
    logger.info(
        "final run frozen: commit %s, configuration %s (%s)", record["commit"][:12], record["config_digest"][:12], path
    )
    return record


def claims_record(combined: dict, family: dict[str, int], *, fixed: str | None = None) -> dict:
    """The run's claims family: per dataset × split, its conditions with an effect and whether it is claimable.

    ``fixed`` says when the family was fixed (``claims.json``'s ``computed``: before any model was fitted).
    """
    return {
        "rule": CLAIMS_RULE,
        "family_sizes": family,
        "fixed": fixed,
        "rows": {
            key: {
                "n_effect": m["n_effect_conditions"],
                "claimable": bool(m.get("verdict", {}).get("claimable", m["n_effect_conditions"] >= MIN_CONDITIONS)),
            }
            for key, m in combined.items()
        },
    }


def provisional_reason(split_seeds, model_seeds, *, jepa: bool) -> str | None:
    """Why a verdict is provisional (fewer than 3 split seeds, or 3 model seeds with JEPA models), or None."""
    why = []
    if len(split_seeds) < 3:
        why.append(f"{len(split_seeds)} split seed{'s' if len(split_seeds) != 1 else ''}")
    n_model = len(model_seeds) if model_seeds else 1
    if jepa and n_model < 3:
        why.append(f"{n_model} model seed{'s' if n_model != 1 else ''}")
    return None if not why else " and ".join(why) + " (headline results use at least 3 of each)"


def _pooled_metrics(
    parts, val_parts, seed_parts, cfg: EvalConfig, split_seeds, model_seeds, *, dataset_id: str, split: str, jepa: bool
) -> dict:
    """One dataset × split: conditions pooled over folds and split seeds, comparator on pooled validation."""
    pooled = pool_conditions(parts, effect_alpha=cfg.effect_alpha)
    validation = pd.concat(val_parts, ignore_index=True)
    per_seed = pd.concat(seed_parts, ignore_index=True)
    metrics = summarize(
        pooled,
        validation,
        per_seed=per_seed,
        primary=cfg.primary,
        n_boot=cfg.n_bootstrap,
        seed=split_seeds[0],
        min_conditions=cfg.min_conditions,
    )
    first = pooled.drop_duplicates("condition")
    effect = first.loc[first["has_effect"].astype(bool), "condition"] if "has_effect" in first else first["condition"]
    metrics["seeds"] = seed_summary(per_seed, metrics, effect, n_boot=cfg.n_bootstrap, seed=split_seeds[0])
    n_folds = {s: sum(int(p["split_seed"].iloc[0]) == s for p in parts) for s in split_seeds}
    metrics.update(
        {
            "dataset_id": dataset_id,
            "split": split,
            "fold": "all",
            "seed": split_seeds[0],
            "split_seeds": list(split_seeds),
            "model_seeds": model_seeds,
            "n_folds": max(n_folds.values()),
            "n_folds_per_seed": n_folds,
            "transductive": bool(cfg.transductive),
        }
    )
    reason = provisional_reason(split_seeds, model_seeds, jepa=jepa)
    if reason:
        metrics["provisional"] = reason
    metrics["_pooled"] = pooled
    return metrics


def _jepa_embedding(adata: AnnData, cfg, run_dir: Path, progress: bool) -> dict:
    """Pretrain CellJEPA on all cells of ``adata`` (labels unseen) and score its embedding."""
    import numpy as np

    from ..models import CellJEPA
    from .pretrain import embedding_eval

    t0 = time.perf_counter()
    model = CellJEPA(adata, config=cfg)
    model.train(run_dir=run_dir, progress=progress)
    model.save(run_dir / "model", overwrite=True)
    result = embedding_eval(model, adata, train_rows=np.arange(adata.n_obs))
    result["train_seconds"] = round(time.perf_counter() - t0, 2)
    result["config"] = cfg.to_dict()
    write_json_atomic(run_dir / "eval.json", result)
    return result


def _transition_dict(transition) -> dict:
    from ..models.transition import TransitionConfig

    return (transition or TransitionConfig()).to_dict()


def _encoder_split(jepa_run: Path) -> dict | None:
    """The split a pretraining run was trained on (its eval.json), or None when unknown / unsplit."""
    import json

    for folder in (jepa_run, jepa_run.parent):
        path = folder / "eval.json"
        if path.is_file():
            return json.loads(path.read_text()).get("split") or None
    return None


@locks_out
def train_transition(
    adata: AnnData,
    *,
    jepa_run: str | os.PathLike,
    split: str | os.PathLike,
    out: str | os.PathLike,
    config=None,
    kinds=("prototype", "set"),
    drug_metadata=None,
    source: str | None = None,
    allow_unsplit_encoder: bool = False,
    figure_maker: FigureMaker | None = None,
    overwrite: bool = False,
) -> FoldResult:
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
    same = enc_split is not None and all(
        enc_split.get(k) == fold.get(k) for k in ("dataset_id", "split_name", "seed", "fold", "n_folds")
    )
    if not same and not allow_unsplit_encoder:
        seen = (
            "was pretrained without a split"
            if enc_split is None
            else f"was pretrained on split {enc_split.get('split_name')} fold {enc_split.get('fold')} "
            f"(seed {enc_split.get('seed')}) of {enc_split.get('dataset_id')}"
        )
        raise InputError(
            f"the encoder {jepa_run} {seen}, so it has seen cells of this fold's test set. Fix: run "
            f"`celljepa pretrain ... --split-file {split}` first, or pass --allow-unsplit-encoder to "
            "accept it."
        )
    encoder = CellJEPA.load(jepa_run)
    cfg = config or TransitionConfig()
    drugs = read_drug_metadata(drug_metadata) if drug_metadata else None
    eval_cfg = EvalConfig(seed=fold["seed"], primary="jepa_set" if "set" in kinds else f"jepa_{kinds[0]}")
    models = [JEPATransition(k, cfg, drug_metadata=drugs) for k in kinds]
    if not is_main():
        # the other ranks only take their share of the transition models' training: the same fits, in order
        _, train, test = prepare_fold(adata, fold, eval_cfg)
        train.encoder, train.embedding = fold_encoder(adata, train, fold, encoder)
        parts = validation_parts(train.val_conditions, seed=fold["seed"], fold=fold["fold"])
        scored = {c for c, r in train.val_conditions if len(r) >= eval_cfg.min_cells}
        for m in models:
            for view, refit, _ in fit_views(m, train, parts, scored):
                m.fit(view, refit=refit)
        return None
    refuse_other_kind(out, "fold")
    inputs = _run_config(
        adata,
        fold,
        eval_cfg,
        None,
        data=data_fingerprint(adata),
        input=source or "",
        jepa_run=str(jepa_run.resolve()),
        encoder_split_matches=same,
        transition=cfg.to_dict(),
        kinds=list(kinds),
        drug_metadata=str(drug_metadata or ""),
    )
    if not overwrite:
        refuse_other_runs({out: c} if (c := other_run(out, inputs)) else {})
    created = _empty(out)
    try:
        result = score_fold(adata, fold, config=eval_cfg, jepa=encoder, extra_methods=models)
        with staged_folder(out) as stage:
            write_fold_run(
                result,
                adata,
                stage,
                config=_run_config(
                    adata,
                    fold,
                    eval_cfg,
                    result,
                    data=inputs["data"],
                    input=source or "",
                    jepa_run=str(jepa_run.resolve()),
                    encoder_split_matches=same,
                    transition=cfg.to_dict(),
                    kinds=list(kinds),
                    drug_metadata=str(drug_metadata or ""),
                ),
                figure_maker=figure_maker,
            )
            model_dir = jepa_run / "model" if (jepa_run / "model").is_dir() else jepa_run
            for m in result.methods:
                if isinstance(m, JEPATransition):
                    m.save(stage / "models" / m.name, encoder_path=str(model_dir.resolve()))
    except BaseException:
        if created:
            remove_tree_quietly(out)
        raise
    return result


def task_status(
    datasets: dict[str, AnnData],
    plan: dict[str, dict[str, int]],
    *,
    out: str | os.PathLike,
    run: RunConfig | None = None,
    max_folds: int | None = None,
    predictions: bool = False,
    reuse: str | os.PathLike | None = None,
) -> list[dict]:
    """The fold tasks of a benchmark with their state: what ``celljepa benchmark --list`` prints.

    A task is ``"done"`` when its folder holds a finished fold of these very inputs (data, split, settings, seeds:
    the digest :func:`benchmark` checks before it reads a fold back), else ``"to do"``. Nothing is written.

    Parameters
    ----------
    datasets, plan, run, max_folds, predictions, reuse
        As for :func:`benchmark` (the same values give the same task indices and digests).
    out
        The benchmark's run folder.

    Returns
    -------
    list of dict
        One per task, in task index order: ``index``, ``dataset``, ``split``, ``split_seed``, ``fold`` (its
        index), ``state`` (``"done"`` or ``"to do"``) and ``folder`` (:func:`task_dir`).

    Examples
    --------
    >>> from celljepa.bench.run import demo_datasets, task_status
    >>> rows = task_status(demo_datasets(), {"sciplex_gxe": {"S2_unseen_context": 3}}, out="no/such/run")
    >>> [(r["index"], r["fold"], r["state"]) for r in rows]
    [(0, 0, 'to do'), (1, 1, 'to do'), (2, 2, 'to do')]
    """
    run = run or RunConfig()
    state = _FoldTasks(datasets, plan, Path(out), run, None, True, predictions, reuse)
    rows = []
    for i, (dataset_id, split, s, fold) in enumerate(benchmark_tasks(datasets, plan, run=run, max_folds=max_folds)):
        done = state.finished(dataset_id, split, s, fold) is not None
        rows.append(
            {
                "index": i,
                "dataset": dataset_id,
                "split": split,
                "split_seed": s,
                "fold": fold["fold"],
                "state": "done" if done else "to do",
                "folder": task_dir(out, dataset_id, split, s, fold["fold"]),
            }
        )
    return rows
