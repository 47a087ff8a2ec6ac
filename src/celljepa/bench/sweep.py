"""Config grids (ablations × seeds) of JEPA benchmarks: expand into tasks, run one or all, collect one table.

A grid is a YAML file (see ``configs/sweeps/ablations.yaml``)::

    seeds: [0, 1, 2]            # model seeds (JEPA encoder and transition models); splits keep split_seed
    split_seed: 0               # or split_seeds: [0, 1, 2] (every split seed draws its own folds)
    max_folds: 2                # first K folds of every split (null: all)
    jepa: {train.max_steps: 500}          # base JEPA overrides, SECTION.KEY: VALUE
    transition: {}                        # base transition settings
    datasets:
      demo: {norman2019: [S1_unseen_perturbation, S3_unseen_combo], sciplex_gxe: [S1_unseen_perturbation]}
      kang2018: {h5ad: data/kang2018/lognorm-v1.h5ad, splits: {S2_unseen_context: 7}}
    ablations:
      default: {}
      ema_off: {train.ema: false}
      warmup: {transition.lr_warmup: 100}   # transition.KEY: a transition setting (configs/transition/)

Task ``i`` of the grid is ``(ablation, seed)`` in row-major order; each writes its own benchmark run
folder ``OUT/<ablation>/seed<k>/``, so tasks can run as a Slurm array and ``collect`` merges them.
``collect`` reports the test E-distances and, for choosing a configuration, the *validation* E-distances
(the validation conditions of every fold, never a test condition) with bootstrap CIs and paired
differences to the PCA twin and to the comparator.
With ``fold_tasks: true`` every fold is a task of its own, ``(ablation, seed, fold)``, writing
``OUT/<ablation>/seed<k>/fold<f>/`` (fold ``f`` of every split that has it); ``collect`` pools the folds
of an ``(ablation, seed)`` pair as one benchmark run would (``celljepa slurm sweep`` turns the tasks into
one job array).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._errors import InputError
from .._io import folder_lock, folder_name, load_yaml, write_json_atomic, write_text_atomic
from .._logging import logger
from ..data._keys import suggest
from ..eval import report as R

__all__ = [
    "SweepGrid",
    "ablation_configs",
    "collect_sweep",
    "load_grid",
    "load_sweep_datasets",
    "parse_data_args",
    "seed_spread_choice",
    "run_sweep_task",
]


#: The choice rules of a grid (its ``rule:`` key). ``validation_mean``: an ablation replaces the first one when its
#: ``jepa_set`` is closer on validation (:func:`_choice`); ``seed_spread``: when it trains more reliably over model
#: seeds without a worse validation score, the cheapest such ablation first (:func:`seed_spread_choice`).
RULES = ("validation_mean", "seed_spread")


@dataclass(frozen=True)
class SweepGrid:
    """A parsed grid file."""

    seeds: tuple[int, ...]
    split_seeds: tuple[int, ...]
    max_folds: int | None
    jepa: dict
    transition: dict
    datasets: dict
    ablations: dict
    source: str = ""
    #: 0: each task runs every fold of an (ablation, seed); K > 0: folds 0..K-1 are tasks of their own
    fold_tasks: int = 0
    #: how ``collect`` chooses among the ablations (:data:`RULES`)
    rule: str = "validation_mean"

    @property
    def reference(self) -> str:
        """The grid's first ablation: the current default, which the others are compared with."""
        return next(iter(self.ablations))

    @property
    def split_seed(self) -> int:
        """The first split seed (the bootstrap seed of the pooled summaries)."""
        return self.split_seeds[0]

    @property
    def tasks(self) -> list[tuple[str, int, int | None]]:
        """``(ablation, seed, fold)`` of every task in row-major order (``fold`` is None without fold tasks)."""
        folds = range(self.fold_tasks) if self.fold_tasks else [None]
        return [(a, s, f) for a in self.ablations for s in self.seeds for f in folds]

    def task_dir(self, out: Path, ablation: str, seed: int, fold: int | None = None) -> Path:
        base = Path(out) / ablation / f"seed{seed}"
        return base if fold is None else base / f"fold{fold}"


def _nested(flat: dict, where: str) -> dict:
    out: dict = {}
    for key, value in (flat or {}).items():
        section, dot, name = str(key).partition(".")
        if not dot:
            raise InputError(f"{where}: expected SECTION.KEY keys (e.g. train.ema), got {key!r}.")
        out.setdefault(section, {})[name] = value
    return out


def ablation_configs(jepa: dict, transition: dict, ablation: dict, seed: int, *, where: str = "ablation"):
    """The JEPA and transition configs of one ablation at one model seed.

    ``jepa`` holds the grid's SECTION.KEY overrides of the JEPA config, ``transition`` its transition settings;
    an ablation's ``transition.KEY`` entries change a transition setting, every other SECTION.KEY a JEPA one.
    Unknown sections or settings raise :class:`~celljepa.InputError` (``load_grid`` checks every ablation).
    """
    from ..models.transition import TransitionConfig
    from ..train.config import JEPAConfig

    jepa_over = _nested(jepa, "jepa")
    transition_over = dict(transition or {})
    for section, values in _nested(ablation, where).items():
        if section == "transition":
            transition_over.update(values)
        else:
            jepa_over.setdefault(section, {}).update(values)
    jepa_over.setdefault("train", {})["seed"] = seed
    return JEPAConfig().replace(**jepa_over), TransitionConfig().replace(**{**transition_over, "seed": seed})


def parse_data_args(items) -> dict[str, str]:
    """``["NAME=H5AD", ...]`` (the ``--data`` options of ``celljepa sweep``) → ``{NAME: H5AD}``."""
    data = {}
    for item in items:
        name, sep, path = str(item).partition("=")
        if not sep:
            raise InputError(f"--data expects NAME=H5AD, got {item!r}.")
        data[name.strip()] = path.strip()
    return data


def load_grid(path: str | os.PathLike, data: dict[str, str] | None = None) -> SweepGrid:
    """Read and check a grid file; ``data`` maps dataset ids to processed .h5ad paths (overrides ``h5ad:``)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"sweep grid {path} does not exist.")
    g = load_yaml(path.read_text(), source=f"sweep grid {path}") or {}
    if not isinstance(g, dict):
        raise InputError(
            f"sweep grid {path} must be a mapping of keys (datasets, ablations, ...), got {type(g).__name__}."
        )
    keys = (
        "seeds",
        "split_seed",
        "split_seeds",
        "max_folds",
        "jepa",
        "transition",
        "datasets",
        "ablations",
        "fold_tasks",
        "rule",
    )
    unknown = sorted(set(g) - set(keys), key=str)
    if unknown:
        raise InputError(
            f"{path}: unknown key {unknown[0]!r}.{suggest(str(unknown[0]), keys)} Keys: {', '.join(keys)}."
        )
    if g.get("max_folds") is not None and (not isinstance(g["max_folds"], int) or g["max_folds"] < 1):
        raise InputError(f"{path}: max_folds={g['max_folds']!r} must be a whole number of at least 1.")
    if not g.get("datasets") or not g.get("ablations"):
        raise InputError(f"{path}: a grid needs 'datasets' and 'ablations'.")
    datasets = {}
    for name, spec in g["datasets"].items():
        if name == "demo":
            datasets[name] = {d: {s: None for s in splits} for d, splits in spec.items()}
            continue
        spec = dict(spec or {})
        h5ad = (data or {}).get(name, spec.get("h5ad"))
        if not h5ad:
            raise InputError(f"{path}: dataset {name!r} needs h5ad: PATH (or --data {name}=PATH).")
        splits = spec.get("splits") or {"S1_unseen_perturbation": 5}
        if isinstance(splits, list):
            splits = {s: None for s in splits}
        datasets[name] = {"h5ad": str(h5ad), "splits": splits}
    for name in (*g["datasets"], *g["ablations"]):  # each names a folder under --out
        folder_name(name, f"{path}: {'dataset' if name in g['datasets'] else 'ablation'}")
    _nested(g.get("jepa") or {}, f"{path}: jepa")
    for name, over in g["ablations"].items():
        try:
            ablation_configs(
                g.get("jepa") or {}, g.get("transition") or {}, over or {}, 0, where=f"{path}: ablation {name}"
            )
        except (InputError, TypeError, ValueError) as e:
            raise InputError(f"{path}: ablation {name}: {e}") from None
    max_folds = g.get("max_folds")
    fold_tasks = 0
    if g.get("fold_tasks"):
        counts = [k for splits in _fold_counts(datasets).values() for k in splits.values()]
        fold_tasks = max(min(k, max_folds or k) for k in counts)
    if "split_seed" in g and "split_seeds" in g:
        raise InputError(f"{path}: give split_seed or split_seeds, not both.")
    rule = g.get("rule", "validation_mean")
    if rule not in RULES:
        raise InputError(f"{path}: rule={rule!r} is not one of {', '.join(RULES)}.{suggest(str(rule), RULES)}")
    split_seeds = g.get("split_seeds", [g.get("split_seed", 0)])
    if not isinstance(split_seeds, list) or not split_seeds:
        raise InputError(f"{path}: split_seeds must be a non-empty list of integers, got {split_seeds!r}.")
    return SweepGrid(
        seeds=tuple(int(s) for s in g.get("seeds", [0])),
        split_seeds=tuple(int(s) for s in split_seeds),
        max_folds=max_folds,
        jepa=dict(g.get("jepa") or {}),
        transition=dict(g.get("transition") or {}),
        datasets=datasets,
        ablations={k: dict(v or {}) for k, v in g["ablations"].items()},
        source=str(path),
        fold_tasks=fold_tasks,
        rule=rule,
    )


def _fold_counts(datasets: dict) -> dict[str, dict[str, int]]:
    """Folds of every split of a grid's datasets (the demo's from its plan)."""
    from .run import DEMO_PLAN

    plan = {}
    for name, spec in datasets.items():
        if name == "demo":
            for d, splits in spec.items():
                if d not in DEMO_PLAN:
                    raise InputError(f"the demo has datasets {sorted(DEMO_PLAN)}, not {d!r}.")
                plan[d] = {s: DEMO_PLAN[d]["splits"].get(s, 5) for s in splits}
        else:
            plan[name] = {s: (k or 5) for s, k in spec["splits"].items()}
    return plan


def load_sweep_datasets(grid: SweepGrid) -> tuple[dict, dict]:
    """The datasets of a grid, read once for all its tasks, and their fold counts.

    Parameters
    ----------
    grid
        A parsed grid (:func:`load_grid`).

    Returns
    -------
    tuple
        ``(datasets, plan)``: ``{dataset id: AnnData}`` (the demo's studies, or each grid dataset's ``h5ad``) and
        ``{dataset id: {split: number of folds}}``; ``run_sweep_task(..., datasets=)`` takes the pair.
    """
    from ..data.readers import read_source
    from .run import demo_datasets

    plan = _fold_counts(grid.datasets)
    datasets = {}
    for name, spec in grid.datasets.items():
        if name == "demo":
            demo = demo_datasets()
            datasets.update({d: demo[d] for d in spec})
        else:
            datasets[name] = read_source(spec["h5ad"])
    return datasets, plan


_load_datasets = load_sweep_datasets  # the former private name, for callers not yet moved


def run_sweep_task(
    grid: SweepGrid, index: int, out: str | os.PathLike, *, progress: bool = True, datasets=None
) -> Path:
    """Run task ``index`` (``(ablation, seed[, fold])``) as a benchmark into its own folder; skip if done."""
    from .config import RunConfig
    from .run import benchmark

    tasks = grid.tasks
    if not 0 <= index < len(tasks):
        raise InputError(f"task {index} does not exist: the grid has tasks 0..{len(tasks) - 1}.")
    ablation, seed, fold = tasks[index]
    run_dir = grid.task_dir(Path(out), ablation, seed, fold)
    if (run_dir / "metrics_combined.json").is_file() and (run_dir / "task.json").is_file():
        logger.info("sweep task %d (%s, seed %d) is done already: %s", index, ablation, seed, run_dir)
        return run_dir
    jepa, transition = ablation_configs(grid.jepa, grid.transition, grid.ablations[ablation], seed, where=ablation)
    if datasets is None:
        datasets = load_sweep_datasets(grid)
    data, plan = datasets
    run = RunConfig(split_seeds=grid.split_seeds, model_seeds=(seed,), jepa=jepa, transition=transition)
    benchmark(
        data,
        plan,
        out=run_dir,
        run=run,
        progress=progress,
        max_folds=grid.max_folds,
        pca_twin=True,
        folds=None if fold is None else [fold],
        title=f"celljepa sweep task {index}: ablation {ablation}, model seed {seed}"
        + ("" if fold is None else f", fold {fold}"),
    )
    write_json_atomic(
        run_dir / "task.json",
        {
            "index": index,
            "ablation": ablation,
            "seed": seed,
            "fold": fold,
            "jepa": jepa.to_dict(),
            "transition": transition.to_dict(),
            "grid": grid.source,
        },
    )
    return run_dir


def _pooled_folds(grid: SweepGrid, folders: list[Path]) -> dict:
    """One ``metrics_combined.json``-like dict for the fold tasks of one (ablation, seed): folds pooled."""
    import pandas as pd

    from ..eval.verdict import holm_over
    from .evaluate import EvalConfig
    from .pooling import pool_conditions, summarize
    from .run import SEEDS_FILE

    frames: dict[str, list[pd.DataFrame]] = {}
    vals: dict[str, list[pd.DataFrame]] = {}
    seeds: dict[str, list[pd.DataFrame]] = {}
    per_fold: list[dict] = []
    for folder in folders:
        combined = json.loads((folder / "metrics_combined.json").read_text())
        per_fold += combined["per_fold"]
        for key in combined["results"]:
            frames.setdefault(key, []).append(
                pd.read_csv(folder / key / "per_condition_all_folds.csv", float_precision="round_trip")
            )
            vals.setdefault(key, []).append(
                pd.read_csv(folder / key / "validation_all_folds.csv", float_precision="round_trip")
            )
            seeds.setdefault(key, []).append(pd.read_csv(folder / key / SEEDS_FILE, float_precision="round_trip"))
    cfg = EvalConfig(seed=grid.split_seed)
    results = {}
    for key, parts in frames.items():
        pooled = pool_conditions(parts, effect_alpha=cfg.effect_alpha)
        results[key] = summarize(
            pooled,
            pd.concat(vals[key], ignore_index=True),
            per_seed=pd.concat(seeds[key], ignore_index=True),
            primary=cfg.primary,
            n_boot=cfg.n_bootstrap,
            seed=grid.split_seed,
        )
        results[key]["n_folds"] = len(parts)
    holm_over(results.values())
    return {"results": results, "per_fold": per_fold}


def _task_state(folder: Path) -> str:
    return "started, not finished (failed or still running)" if folder.is_dir() else "not started"


def collect_sweep(grid: SweepGrid, out: str | os.PathLike) -> dict:
    """Merge finished tasks into ``OUT/ablation.json`` and ``OUT/ablation.md``; list missing or failed tasks.

    With fold tasks, the folds of an ``(ablation, seed)`` are pooled once all of them have finished
    (the same numbers as one task running every fold); until then the pair is left out of the table.
    """
    out = Path(out)
    rows, missing = [], []
    groups: dict[tuple[str, int], list[tuple[int, Path]]] = {}
    for index, (ablation, seed, fold) in enumerate(grid.tasks):
        groups.setdefault((ablation, seed), []).append((index, grid.task_dir(out, ablation, seed, fold)))
    for (ablation, seed), tasks in groups.items():
        absent = [(i, f) for i, f in tasks if not (f / "metrics_combined.json").is_file()]
        missing += [
            {"index": i, "ablation": ablation, "seed": seed, "folder": str(f), "state": _task_state(f)}
            for i, f in absent
        ]
        if absent:
            continue
        if grid.fold_tasks:
            combined = _pooled_folds(grid, [f for _, f in tasks])
        else:
            combined = json.loads((tasks[0][1] / "metrics_combined.json").read_text())
        encoders: dict[str, list[dict]] = {}
        for r in combined["per_fold"]:
            if "encoder" in r:
                encoders.setdefault(f"{r['dataset_id']}/{r['split']}", []).append(r["encoder"])
        for key, m in combined["results"].items():
            comparator = m["comparator"]
            row = {
                "ablation": ablation,
                "seed": seed,
                "dataset_split": key,
                "n": m["n_test_conditions"],
                "n_effect": m.get("n_effect_conditions"),
                "comparator": comparator,
                "comparator_edistance": m["methods"][comparator]["edistance"]["mean"],
            }
            for name in ("jepa_set", "jepa_prototype", "pca_set"):
                if name in m["methods"]:
                    e = m["methods"][name]["edistance"]
                    row[name] = e["mean"]
                    row[f"{name}_ci"] = [e["ci_low"], e["ci_high"]]
                    comp = m["comparisons"].get(f"{name} vs {comparator}", {}).get("edistance")
                    if comp:
                        row[f"{name}_diff"] = comp["diff"]
                        row[f"{name}_diff_ci"] = [comp["ci_low"], comp["ci_high"]]
            if "verdict" in m:
                row["verdict"] = m["verdict"]["outcome"]
                row["verdict_n"] = m["verdict"]["n"]
            enc = encoders.get(key, [])
            if enc:
                row["effective_rank"] = float(np.mean([e["effective_rank"] for e in enc]))
                row["collapsed_folds"] = int(sum(e["collapsed"] for e in enc))
                row["folds"] = len(enc)
            rows.append(row)
    validation = _validation_rows(grid, groups, missing)
    result = {
        "grid": grid.source,
        "tasks": len(grid.tasks),
        "finished": len(grid.tasks) - len(missing),
        "missing": missing,
        "rows": rows,
        "validation": validation,
        "choice": seed_spread_choice(grid, validation) if grid.rule == "seed_spread" else _choice(grid, validation),
    }
    with folder_lock(out):  # ablation.json last: the marker of a collected sweep
        write_text_atomic(
            out / "ablation.md", R.ablation_markdown(_grid_record(grid), rows, missing, validation, result["choice"])
        )
        write_json_atomic(out / "ablation.json", result)
    return result


def _grid_record(grid: SweepGrid) -> dict:
    """What ``ablation.md`` states about the grid, as plain data (:func:`celljepa.eval.report.ablation_markdown`)."""
    return {
        "source": grid.source,
        "ablations": list(grid.ablations),
        "reference": grid.reference,
        "seeds": list(grid.seeds),
        "split_seeds": list(grid.split_seeds),
        "max_folds": grid.max_folds,
        "rule": grid.rule,
    }


def _validation_rows(grid: SweepGrid, groups: dict, missing: list[dict]) -> list[dict]:
    """Per ablation and dataset/split: validation E-distances pooled over model seeds, with bootstrap CIs.

    A validation condition is one ``(split seed, fold, condition)``; its score is the mean over the model
    seeds. The comparator is chosen as in a benchmark (the best non-JEPA method on these same conditions).
    Only the validation conditions are read, so a configuration chosen on this table never saw a test score.
    """
    import pandas as pd

    from ..eval.bootstrap import bootstrap_ci
    from ..eval.verdict import paired_comparison
    from .pooling import choose_comparator

    incomplete = {(m["ablation"], m["seed"]) for m in missing}
    reference = grid.reference
    frames: dict[tuple[str, str], list[pd.DataFrame]] = {}
    for (ablation, seed), tasks in groups.items():
        if (ablation, seed) in incomplete:
            continue
        for _, folder in tasks:
            for csv in sorted(Path(folder).glob("*/*/validation_all_folds.csv")):
                key = f"{csv.parent.parent.name}/{csv.parent.name}"
                frame = pd.read_csv(csv, float_precision="round_trip")
                frame["model_seed"] = seed
                frames.setdefault((ablation, key), []).append(frame)
    out = []
    primary: dict[tuple[str, str], pd.Series] = {}
    for (ablation, key), parts in frames.items():
        v = pd.concat(parts, ignore_index=True)
        v["unit"] = v["split_seed"].astype(str) + "/" + v["fold"].astype(str) + "/" + v["condition"].astype(str)
        roles = dict(zip(v["method"], v["role"], strict=False))
        per_unit = (
            v.groupby(["method", "unit"], sort=True)
            .agg(edistance=("edistance", "mean"), covered=("covered", "all"))
            .reset_index()
        )
        choice = choose_comparator(roles, per_unit.assign(role=per_unit["method"].map(roles)))
        wide = per_unit.pivot(index="unit", columns="method", values="edistance")
        row = {
            "ablation": ablation,
            "dataset_split": key,
            "n_validation": int(len(wide)),
            "model_seeds": sorted({int(x) for x in v["model_seed"]}),
            "comparator": choice["comparator"],
            "methods": {},
        }
        for m in wide.columns:
            ci = bootstrap_ci(wide[m].dropna().to_numpy(), seed=grid.split_seed)
            row["methods"][m] = {
                "edistance": ci["mean"],
                "ci_low": ci["ci_low"],
                "ci_high": ci["ci_high"],
                "role": roles.get(m),
            }
        for name in ("jepa_set", "jepa_prototype"):
            if name not in wide:
                continue
            for other, label in (("pca_set", "pca_twin"), (choice["comparator"], "comparator")):
                if other in wide and other != name:
                    row[f"{name}_vs_{label}"] = paired_comparison(
                        wide[name].to_numpy(), wide[other].to_numpy(), seed=grid.split_seed
                    )
        if "jepa_set" in wide:
            primary[(ablation, key)] = wide["jepa_set"]
        # the spread over model seeds: each seed's mean over the same validation conditions, and their SD
        per_seed = v.groupby(["method", "model_seed", "unit"], sort=True)["edistance"].mean().reset_index()
        seed_means = per_seed.groupby(["method", "model_seed"])["edistance"].mean()
        for m, info in row["methods"].items():
            if m in seed_means.index.get_level_values(0):
                means = seed_means.loc[m]
                info["seed_means"] = {int(k): float(x) for k, x in means.items()}
                info["seed_sd"] = float(np.std(means.to_numpy(), ddof=1)) if len(means) > 1 else None
        out.append(row)
    for row in out:  # every configuration against the grid's first one, on the same validation conditions
        ref = primary.get((reference, row["dataset_split"]))
        mine = primary.get((row["ablation"], row["dataset_split"]))
        if row["ablation"] != reference and ref is not None and mine is not None:
            both = pd.concat([mine.rename("a"), ref.rename("b")], axis=1, join="inner")
            row["jepa_set_vs_reference"] = {
                **paired_comparison(both["a"].to_numpy(), both["b"].to_numpy(), seed=grid.split_seed),
                "reference": reference,
            }
    return out


def _choice(grid: SweepGrid, validation: list[dict]) -> dict:
    """Which configuration the validation table supports as the default (the rule is stated in the result).

    A configuration replaces the grid's first one (the current default) only if its ``jepa_set`` has the
    lower mean validation E-distance on a majority of the dataset/splits, its paired CI against the
    default lies below 0 on at least one and above 0 on none.
    """
    reference = grid.reference
    keys = sorted({r["dataset_split"] for r in validation})
    seeds = sorted(grid.seeds)
    ref_done = all(r["model_seeds"] == seeds for r in validation if r["ablation"] == reference)
    summary = {}
    for ablation in grid.ablations:
        if ablation == reference:
            continue
        comps = {
            r["dataset_split"]: r["jepa_set_vs_reference"]
            for r in validation
            if r["ablation"] == ablation and "jepa_set_vs_reference" in r and r["model_seeds"] == seeds
        }
        if len(comps) < len(keys) or not keys or not ref_done:
            summary[ablation] = {"complete": False, "dataset_splits": len(comps), "of": len(keys)}
            continue
        lower = sum(c["diff"] < 0 for c in comps.values())
        better = sorted(k for k, c in comps.items() if c["ci_high"] < 0)
        worse = sorted(k for k, c in comps.items() if c["ci_low"] > 0)
        summary[ablation] = {
            "complete": True,
            "lower_mean": lower,
            "of": len(keys),
            "better_ci": better,
            "worse_ci": worse,
            "wins": lower > len(keys) / 2 and bool(better) and not worse,
        }
    winners = [a for a, v in summary.items() if v.get("wins")]
    best = max(winners, key=lambda a: summary[a]["lower_mean"]) if winners else reference
    return {
        "reference": reference,
        "rule": "a configuration replaces the first one only if its jepa_set has the lower "
        "mean validation E-distance on a majority of the dataset/splits, and its paired 95% CI against the first "
        "one lies below 0 on at least one and above 0 on none",
        "ablations": summary,
        "chosen": best,
    }


def seed_spread_choice(grid: SweepGrid, validation: list[dict], model: str = "jepa_set") -> dict:
    """Which ablation makes ``model`` train more reliably over model seeds, judged on validation conditions.

    Per dataset/split, each model seed's mean validation E-distance (the same validation conditions for every
    seed) and their standard deviation over the seeds. An ablation replaces the grid's first one (the default)
    only if its SD is lower on all dataset/splits but at most one, and on none its mean validation E-distance
    is higher than the first one's by more than its own seed SD; the grid lists the ablations from the
    cheapest, and the first that qualifies is chosen. No test condition is read.

    Examples
    --------
    >>> from celljepa.bench.sweep import SweepGrid, seed_spread_choice
    >>> grid = SweepGrid(seeds=(0, 1), split_seeds=(0,), max_folds=None, jepa={}, transition={},
    ...                  datasets={}, ablations={"default": {}, "steady": {}}, rule="seed_spread")
    >>> def row(ablation, key, means):
    ...     sd = float(np.std(means, ddof=1))
    ...     return {"ablation": ablation, "dataset_split": key, "model_seeds": [0, 1],
    ...             "methods": {"jepa_set": {"edistance": float(np.mean(means)), "seed_sd": sd,
    ...                                      "seed_means": dict(enumerate(means))}}}
    >>> rows = [row("default", "a/S1", [0.5, 0.7]), row("steady", "a/S1", [0.55, 0.6])]
    >>> seed_spread_choice(grid, rows)["chosen"]
    'steady'
    """
    reference = grid.reference
    keys = sorted({r["dataset_split"] for r in validation})
    seeds = sorted(grid.seeds)
    need = max(1, len(keys) - 1)

    def spread(ablation: str) -> dict:
        found = {}
        for r in validation:
            m = r["methods"].get(model)
            if r["ablation"] == ablation and m and r["model_seeds"] == seeds and m.get("seed_sd") is not None:
                found[r["dataset_split"]] = (m["edistance"], m["seed_sd"])
        return found

    ref = spread(reference)
    summary = {}
    for ablation in grid.ablations:
        if ablation == reference:
            continue
        mine = spread(ablation)
        if not keys or len(mine) < len(keys) or len(ref) < len(keys):
            summary[ablation] = {"complete": False, "dataset_splits": min(len(mine), len(ref)), "of": len(keys)}
            continue
        lower_sd = sorted(k for k in keys if mine[k][1] < ref[k][1])
        worse = sorted(k for k in keys if mine[k][0] - ref[k][0] > mine[k][1])
        summary[ablation] = {
            "complete": True,
            "lower_sd": lower_sd,
            "of": len(keys),
            "worse_mean": worse,
            "sd": {k: [ref[k][1], mine[k][1]] for k in keys},
            "mean": {k: [ref[k][0], mine[k][0]] for k in keys},
            "wins": len(lower_sd) >= need and not worse,
        }
    chosen = next((a for a in grid.ablations if summary.get(a, {}).get("wins")), reference)
    return {
        "reference": reference,
        "model": model,
        "rule": f"an ablation replaces the first one only if {model}'s model-seed SD of the mean validation "
        f"E-distance is lower on at least {need} of the {len(keys)} dataset/splits and its mean validation "
        "E-distance is higher on none by more than its own seed SD; the first such ablation in the grid's "
        "order (cheapest first)",
        "ablations": summary,
        "chosen": chosen,
    }
