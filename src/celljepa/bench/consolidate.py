"""One report from many runs: ``celljepa report --runs RUN [RUN ...] --out OUT``.

Merges benchmark runs (``metrics_combined.json``), single fold runs of ``eval-baselines`` /
``train-transition`` (``metrics.json`` + ``config.json``) and sweep folders (``ablation.json``) into
``OUT/report.md``, ``OUT/report.json`` and ``OUT/figures/where_jepa_helps.png``.

Nothing is re-estimated: every mean, CI, paired difference and p-value is copied from the runs' own
metrics files, which follow the evaluation protocol (``docs/evaluation.md``).

Run kinds are pluggable: :data:`KIND_FILES` names the files that mark a kind (checked in order) and
:data:`LOADERS` maps the kind to a function ``loader(path) -> run`` returning the keys of
:func:`new_run`. A future kind (for example cross-dataset holdout runs) adds one entry to each and
fills ``run["holdout"]``; the report's sections read only the normalised run dicts.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

from .._errors import InputError
from .._io import write_text_atomic
from .._logging import logger
from .._version import __version__
from ..eval import report as R

__all__ = ["KIND_FILES", "LOADERS", "SCHEMA", "consolidate", "detect_kind", "load_run", "new_run"]

#: Version tag of the report.json layout.
SCHEMA = "celljepa.report/2"
FIGURE = "where_jepa_helps.png"
#: Metrics of the per-dataset tables, in column order (those a run holds are shown).
TABLE_METRICS = ("edistance", "mse", "delta_pearson", "delta_pearson_top20_de", "top1", "mrr")

#: Files that mark each kind of run folder, checked in this order; the first kind with all its files wins.
KIND_FILES: dict[str, tuple[str, ...]] = {
    "holdout": ("holdout.json",),
    "benchmark": ("metrics_combined.json",),
    "sweep": ("ablation.json",),
    "fold": ("metrics.json", "config.json"),
}


# --------------------------------------------------------------------------------------------- loading


def new_run(path: Path, kind: str) -> dict:
    """An empty normalised run: the keys every loader fills.

    Parameters
    ----------
    path
        The run folder.
    kind
        The run kind (a key of :data:`KIND_FILES`).

    Returns
    -------
    dict
        ``path``, ``kind``, ``label`` (set by :func:`consolidate`), ``versions`` (as recorded),
        ``date`` and ``date_source``, ``wall_time_s`` (None when not recorded), ``summary`` (one line),
        ``results`` (``"dataset/split"`` → metrics in the metrics.json layout, with ``n_folds`` or ``fold``),
        ``per_fold`` (``{"dataset_id", "split", "fold", "timings", "task"}`` per timed fold; ``task``: the sweep
        task folder or None),
        ``ablations`` (ablation.json rows), ``missing`` (unfinished sweep tasks) and ``holdout``
        (``{"train_datasets", "test_dataset", "split", "metrics"}`` per cross-dataset result).
    """
    return {"path": str(path), "kind": kind, "label": "", "versions": {}, "date": None, "date_source": None,
            "wall_time_s": None, "summary": "", "results": {}, "per_fold": [], "ablations": [], "missing": [],
            "holdout": []}


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read {path}: {err}. Fix: rerun the command that wrote it, or leave this run "
                         "out of --runs.") from None


def _recorded(data: Mapping) -> dict:
    """Versions and provenance (commit, date, host, threads, command) as a run recorded them."""
    return {**dict(data.get("versions") or {}), **dict(data.get("provenance") or {})}


def _date(versions: Mapping, marker: Path) -> tuple[str, str]:
    for key in ("date", "finished", "started"):
        if versions.get(key):
            return str(versions[key]), "recorded"
    stamp = datetime.fromtimestamp(marker.stat().st_mtime, tz=timezone.utc)
    return stamp.strftime("%Y-%m-%d %H:%M UTC"), "file time"


def _load_benchmark(path: Path) -> dict:
    run = new_run(path, "benchmark")
    marker = path / "metrics_combined.json"
    data = _read_json(marker)
    if not isinstance(data.get("results"), dict):
        raise InputError(f"{marker} has no 'results': not a benchmark's metrics_combined.json. Fix: point --runs "
                         "at the folder `celljepa benchmark --out` wrote.")
    bad = [k for k, m in data["results"].items() if not isinstance(m, dict) or "methods" not in m]
    if bad:
        raise InputError(f"{marker}: results {bad} have no 'methods'. Fix: rerun the benchmark that wrote it.")
    run["versions"] = _recorded(data)
    run["date"], run["date_source"] = _date(run["versions"], marker)
    run["wall_time_s"] = data.get("wall_time_s")
    run["results"] = dict(data["results"])
    run["per_fold"] = [{"dataset_id": r["dataset_id"], "split": r["split"], "fold": r["fold"],
                        "timings": dict(r.get("timings") or {}), "task": None}
                       for r in data.get("per_fold", [])]
    n = len(data.get("per_fold", []))
    run["summary"] = f"{len(run['results'])} dataset × split, {n} fold{'' if n == 1 else 's'}"
    return run


def _load_fold(path: Path) -> dict:
    run = new_run(path, "fold")
    metrics = _read_json(path / "metrics.json")
    config = _read_json(path / "config.json")
    missing = [k for k in ("methods", "dataset_id", "split") if k not in metrics]
    if missing:
        raise InputError(f"{path / 'metrics.json'} lacks {missing}: not a run folder's metrics.json. Fix: point "
                         "--runs at a folder written by `celljepa eval-baselines` or `celljepa train-transition`.")
    run["versions"] = _recorded(config)
    run["date"], run["date_source"] = _date(run["versions"], path / "metrics.json")
    timings = dict(metrics.get("timings") or config.get("timings_s") or {})
    run["wall_time_s"] = timings.get("total_s")
    fold, n_folds = metrics.get("fold", config.get("fold")), config.get("n_folds")
    run["results"] = {f"{metrics['dataset_id']}/{metrics['split']}": {**metrics, "fold": fold,
                                                                       "n_folds_split": n_folds}}
    if timings:
        run["per_fold"] = [{"dataset_id": metrics["dataset_id"], "split": metrics["split"], "fold": fold,
                            "timings": timings, "task": None}]
    run["summary"] = f"{metrics['dataset_id']} {metrics['split']} fold {fold}" + (f" of {n_folds}" if n_folds else "")
    return run


def _sweep_tasks(path: Path) -> list[Path]:
    """Task folders of a sweep (``<ablation>/seed<k>[/fold<f>]/metrics_combined.json``) that are present."""
    return sorted(p.parent for p in list(path.glob("*/seed*/metrics_combined.json"))
                  + list(path.glob("*/seed*/fold*/metrics_combined.json")))


def _load_sweep(path: Path) -> dict:
    run = new_run(path, "sweep")
    marker = path / "ablation.json"
    data = _read_json(marker)
    if not isinstance(data.get("rows"), list):
        raise InputError(f"{marker} has no 'rows': not a sweep's ablation.json. Fix: run `celljepa sweep --grid "
                         f"GRID --out {path} --collect` first.")
    run["ablations"] = list(data["rows"])
    run["missing"] = list(data.get("missing") or [])
    tasks = _sweep_tasks(path)
    walls = []
    for task in tasks:
        combined = _read_json(task / "metrics_combined.json")
        name = task.relative_to(path).as_posix()
        run["versions"] = run["versions"] or _recorded(combined)
        if combined.get("wall_time_s") is not None:
            walls.append(float(combined["wall_time_s"]))
        run["per_fold"] += [{"dataset_id": r["dataset_id"], "split": r["split"], "fold": r["fold"],
                             "timings": dict(r.get("timings") or {}), "task": name}
                            for r in combined.get("per_fold", [])]
    run["date"], run["date_source"] = _date(run["versions"], marker)
    run["wall_time_s"] = sum(walls) if walls else None
    run["task_folders"] = len(tasks)
    finished, total = data.get("finished", len(run["ablations"])), data.get("tasks", "?")
    run["summary"] = (f"{finished}/{total} sweep tasks, {len(run['ablations'])} rows"
                      + (f"; {len(tasks)} task folder(s) timed" if tasks else "; task folders not present"))
    return run


#: Run kind → loader ``loader(path) -> run`` (the keys of :func:`new_run`).
def _load_holdout(path: Path) -> dict:
    """A ``celljepa holdout`` folder: its prediction metrics (as results) and one holdout entry per split."""
    run = new_run(path, "holdout")
    marker = path / "holdout.json"
    data = _read_json(marker)
    missing = [k for k in ("holdout", "pretrained_on", "prediction", "transfer") if k not in data]
    if missing:
        raise InputError(f"{marker} lacks {missing}: not a holdout.json of `celljepa holdout`. Fix: rerun it.")
    run["versions"] = _recorded(data)
    run["date"], run["date_source"] = _date(run["versions"], marker)
    run["wall_time_s"] = data.get("wall_time_s")
    for split, m in data["prediction"].items():
        run["results"][f"{data['holdout']}/{split}"] = m
        run["holdout"].append({"train_datasets": list(data["pretrained_on"]), "test_dataset": data["holdout"],
                               "split": split, "metrics": m, "others_vs_self": m.get("others_vs_self", {}),
                               "transfer": data["transfer"]["knn"]})
    run["per_fold"] = [{"dataset_id": data["holdout"], "split": "S4_holdout_dataset", "fold": "all",
                        "timings": dict(data.get("timings") or {}), "task": None}]
    run["summary"] = f"{data['holdout']} held out, encoder pretrained on {', '.join(data['pretrained_on'])}"
    return run


LOADERS: dict[str, Callable[[Path], dict]] = {"holdout": _load_holdout, "benchmark": _load_benchmark,
                                              "sweep": _load_sweep, "fold": _load_fold}


def detect_kind(path: str | os.PathLike) -> str:
    """The kind of a run folder, from the files it holds (see :data:`KIND_FILES`).

    Parameters
    ----------
    path
        A run folder (or one of its marker files).

    Returns
    -------
    str
        ``"benchmark"``, ``"sweep"``, ``"fold"`` or another registered kind.
    """
    folder = Path(path)
    if not folder.is_dir():
        what = "does not exist" if not folder.exists() else "is a file, not a run folder"
        raise InputError(f"run '{folder}' {what}. Fix: pass run folders to --runs (a benchmark, a fold run or a "
                         "sweep folder).")
    for kind, files in KIND_FILES.items():
        if all((folder / f).is_file() for f in files):
            return kind
    looked = "; ".join(f"{' + '.join(files)} ({kind})" for kind, files in KIND_FILES.items())
    raise InputError(f"'{folder}' is not a run folder: none of {looked} is in it. Fix: pass the folder that "
                     "`celljepa benchmark`, `eval-baselines`, `train-transition` or `sweep` wrote.")


def load_run(path: str | os.PathLike) -> dict:
    """Detect the kind of a run folder and load it as a normalised run (:func:`new_run`).

    Parameters
    ----------
    path
        A run folder, or its marker file (``metrics_combined.json``, ``ablation.json``, ``metrics.json``).

    Returns
    -------
    dict
        The normalised run.
    """
    path = Path(path)
    if path.is_file() and any(path.name in files for files in KIND_FILES.values()):
        path = path.parent
    return LOADERS[detect_kind(path)](path)


def _labels(paths: Sequence[Path]) -> list[str]:
    """Short unique labels: the folder names, with parent folders added until they differ."""
    parts = [p.resolve().parts for p in paths]
    depth = 1
    while True:
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels) or depth > max(len(p) for p in parts):
            return labels
        depth += 1


# ------------------------------------------------------------------------------------------ collecting


def _clean(obj):
    """JSON-safe copy: non-finite floats become None (report.json is plain JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _folds_text(m: Mapping) -> str:
    if m.get("fold") not in (None, "all"):
        total = m.get("n_folds_split")
        return f"fold {m['fold']}" + (f" of {total}" if total else "")
    n = m.get("n_folds", "?")
    return f"{n} fold" if n == 1 else f"{n} folds"


def _twin_row(v: Mapping) -> dict | None:
    twin = v.get("vs_pca_twin")
    return dict(twin) if twin else None


def _verdict_rows(runs: list[dict]) -> list[dict]:
    """One row per run × dataset × split with a verdict; the report's claims are Holm-corrected together.

    Each row keeps the run's own comparison (CI, sign-flip p, n); ``p_holm`` and ``outcome`` are recomputed
    here over every verdict row of this report (primary vs comparator, and vs the PCA twin where it is not
    the comparator), since the family is now the whole report. Rows of runs from before the pre-registered
    protocol (no p-value; comparator picked on test) are kept as *old protocol* and are never a claim.
    """
    rows = []
    for run in runs:
        for key, m in run["results"].items():
            if "verdict" not in m:
                continue
            v, means = m["verdict"], {k: s["edistance"]["mean"] for k, s in m["methods"].items()}
            old = _old_protocol(m)
            rows.append({"run": run["label"], "dataset_id": m.get("dataset_id", key.split("/")[0]),
                         "split": m.get("split", key.split("/")[-1]), "folds": _folds_text(m), "n": v["n"],
                         "n_without_effect": v.get("n_without_effect"),
                         "split_seeds": m.get("split_seeds"), "model_seeds": m.get("model_seeds"),
                         "provisional": m.get("provisional"),
                         "baseline": v["baseline"], "baseline_edistance": (v.get("means") or {}).get("baseline",
                                                                                                    means[v["baseline"]]),
                         "comparator_reason": v.get("comparator_reason"),
                         "model": v["model"], "model_edistance": (v.get("means") or {}).get("model", means[v["model"]]),
                         "edistance": dict(v["edistance"]), "delta_pearson": dict(v["delta_pearson"]),
                         "outcome": "old protocol" if old else v["outcome"], "old_protocol": old,
                         "vs_pca_twin": _twin_row(v), "methods": sorted(m["methods"]), "superseded_by": None})
    _mark_superseded(rows)
    return rows


_SAME_TEST = ("dataset_id", "split", "folds", "split_seeds", "model_seeds", "model")


def _mark_superseded(rows: list[dict]) -> None:
    """A row another run repeats on the same folds and seeds with a larger method pool is *superseded*.

    Adding peers to a finished run (``--reuse``) repeats its verdict on the same test conditions with the
    peers in the comparator pool: the two rows are one hypothesis, and the report keeps the later one as the
    claim (the one whose pool holds the other's; with equal pools, the run listed last). A superseded row stays
    in the table, marked, and is not in the Holm family.
    """
    for i, row in enumerate(rows):
        if row["old_protocol"]:
            continue
        pool = set(row["methods"])
        for j, other in enumerate(rows):
            if j == i or other["old_protocol"] or other["superseded_by"]:
                continue
            if all(row[k] == other[k] for k in _SAME_TEST) and pool <= set(other["methods"]) \
                    and (pool < set(other["methods"]) or j > i):
                row["superseded_by"], row["outcome"] = other["run"], "superseded"
                break


def _holm_report(verdicts: list[dict], holdout: list[dict]) -> int:
    """Holm over every claim of the report: verdict rows, twin rows and holdout elsewhere-vs-own rows."""
    from ..eval.verdict import apply_holm

    family = []
    for r in verdicts:
        if r["old_protocol"] or r.get("superseded_by"):
            continue
        family.append(r["edistance"])
        if r["vs_pca_twin"] and not r["vs_pca_twin"].get("same_as_comparator"):
            family.append(r["vs_pca_twin"])
    for h in holdout:
        family += [d for d in h["others_vs_self"].values() if "p" in d]
    apply_holm(family)
    for r in verdicts:
        if r.get("superseded_by"):
            if r["vs_pca_twin"]:
                r["vs_pca_twin"]["outcome"] = "superseded"
        elif not r["old_protocol"]:
            r["outcome"] = r["edistance"]["outcome"]
            twin = r["vs_pca_twin"]
            if twin and twin.get("same_as_comparator"):
                twin.update({k: r["edistance"][k] for k in ("p_holm", "outcome", "family_size")})
        elif r["vs_pca_twin"]:
            r["vs_pca_twin"]["outcome"] = "old protocol"
    for h in holdout:
        for d in h["others_vs_self"].values():
            d["outcome"] = ({"wins": "helps", "loses": "hurts", "ties": "no difference"}.get(d["outcome"], d["outcome"])
                            if "p" in d else "old protocol")
    return len(family)


def _role(m: Mapping, method: str) -> str:
    roles = m.get("roles")
    if roles and method in roles:
        return {"baseline": "baseline", "pca_twin": "PCA twin", "peer": "peer", "jepa": "JEPA"}.get(roles[method],
                                                                                                   roles[method])
    if method in m.get("baselines", []):
        return "baseline"
    if method.startswith("pca_"):
        return "PCA twin"
    return "JEPA"


def _dataset_tables(runs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for run in runs:
        for key, m in run["results"].items():
            dataset = m.get("dataset_id", key.split("/")[0])
            methods = []
            for name, stats in m["methods"].items():
                entry = {"method": name, "role": _role(m, name), "comparator": name == R.comparator_of(m),
                         "coverage": m.get("coverage", {}).get(name)}
                entry.update({k: {s: stats[k].get(s) for s in ("mean", "ci_low", "ci_high", "n")}
                              for k in TABLE_METRICS if k in stats})
                methods.append(entry)
            out.setdefault(dataset, []).append({
                "run": run["label"], "split": m.get("split", key.split("/")[-1]), "folds": _folds_text(m),
                "n_test_conditions": m.get("n_test_conditions"), "comparator": R.comparator_of(m),
                "verdict": (("old protocol" if _old_protocol(m) else m["verdict"]["outcome"])
                            if "verdict" in m else None),
                "old_protocol": _old_protocol(m), "methods": methods})
    return out


def _peer_rows(runs: list[dict]) -> list[dict]:
    """One row per run × dataset × split × peer: its scores with CIs, coverage, compute time and the split's verdict."""
    rows = []
    for run in runs:
        for key, m in run["results"].items():
            roles = m.get("roles") or {}
            peers = [name for name, role in roles.items() if role == "peer" and name in m["methods"]]
            if not peers:
                continue
            dataset, split = m.get("dataset_id", key.split("/")[0]), m.get("split", key.split("/")[-1])
            folds = [f for f in run["per_fold"] if f["dataset_id"] == dataset and f["split"] == split]
            v = m.get("verdict") or {}
            for name in peers:
                stats = m["methods"][name]
                seconds = [float(f["timings"][f"{name}_s"]) for f in folds if f["timings"].get(f"{name}_s") is not None]
                rows.append({"run": run["label"], "dataset_id": dataset, "split": split, "peer": name,
                             "folds": _folds_text(m), "n_test_conditions": m.get("n_test_conditions"),
                             "coverage": m.get("coverage", {}).get(name),
                             **{k: {s: stats[k].get(s) for s in ("mean", "ci_low", "ci_high", "n")}
                                for k in ("edistance", "delta_pearson") if k in stats},
                             "compute_s": sum(seconds) if seconds else None, "timed_folds": len(seconds),
                             "comparator": R.comparator_of(m), "model": v.get("model"),
                             "verdict": ("old protocol" if _old_protocol(m) else v.get("outcome")) if v else None,
                             "verdict_edistance": dict(v["edistance"]) if v else None})
    return rows


def _with_report_verdicts(peer_rows: list[dict], verdicts: list[dict]) -> list[dict]:
    """Peer rows with their split's verdict as this report states it (Holm over the report).

    The rows of a superseded verdict are left out: the run that supersedes it holds the same peers on the same
    folds.
    """
    by_key = {(v["run"], v["dataset_id"], v["split"]): v for v in verdicts}
    out = []
    for row in peer_rows:
        v = by_key.get((row["run"], row["dataset_id"], row["split"]))
        if v is not None and v.get("superseded_by"):
            continue
        if v is not None:
            row = {**row, "verdict": v["outcome"]}
        out.append(row)
    return out


def _old_protocol(m: Mapping) -> bool:
    """A metrics dict written before the pre-registered protocol: comparator picked on test, no p-value."""
    v = m.get("verdict")
    return "comparator" not in m or (v is not None and "p" not in v.get("edistance", {}))


def _holdout_rows(runs: list[dict]) -> list[dict]:
    rows = []
    for run in runs:
        for h in run["holdout"]:
            m = h["metrics"]
            v = m.get("verdict")
            rows.append({"run": run["label"], "train_datasets": list(h.get("train_datasets", [])),
                         "test_dataset": h.get("test_dataset"), "split": h.get("split"),
                         "n": v["n"] if v else m.get("n_test_conditions"), "comparator": R.comparator_of(m),
                         "model": v["model"] if v else None, "edistance": dict(v["edistance"]) if v else None,
                         "outcome": ("old protocol" if _old_protocol(m) else v["outcome"]) if v else None,
                         "old_protocol": _old_protocol(m),
                         "methods": {k: s["edistance"] for k, s in m["methods"].items()},
                         "others_vs_self": {k: dict(d) for k, d in (h.get("others_vs_self") or {}).items()},
                         "transfer": dict(h.get("transfer") or {})})
    return rows


def _compute(runs: list[dict]) -> dict:
    folds, by_step = [], {}
    for run in runs:
        for f in run["per_fold"]:
            folds.append({"run": run["label"], "task": f["task"], "dataset_id": f["dataset_id"],
                          "split": f["split"], "fold": f["fold"], "timings": f["timings"]})
    for k in _step_columns(folds):
        if k != "total_s":
            by_step[k] = sum(float(f["timings"][k]) for f in folds if f["timings"].get(k) is not None)
    walls = [r["wall_time_s"] for r in runs if r["wall_time_s"] is not None]
    return {"runs": [{"run": r["label"], "kind": r["kind"], "wall_time_s": r["wall_time_s"],
                      "timed_folds": len(r["per_fold"]), "versions": r["versions"]} for r in runs],
            "folds": folds,
            "totals": {"wall_time_s": sum(walls), "runs_timed": len(walls),
                       "runs_without_wall_time": [r["label"] for r in runs if r["wall_time_s"] is None],
                       "fold_total_s": sum(float(f["timings"].get("total_s") or 0.0) for f in folds),
                       "by_step_s": by_step}}


# ------------------------------------------------------------------------------------------- markdown


def _f(x, digits: int = 3) -> str:
    return R._fmt(x, digits)


def _ci(d: Mapping | None, key: str = "diff") -> str:
    if not d:
        return "–"
    if d.get(key) is None:
        return "n/a"
    return f"{_f(d[key])} [{_f(d['ci_low'])}, {_f(d['ci_high'])}]"


def _secs(x) -> str:
    if x is None:
        return "–"
    x = float(x)
    return f"{x:,.0f}" if x >= 100 else (f"{x:.1f}" if x >= 1 else f"{x:.2f}")


def _runs_section(report: dict) -> list[str]:
    lines = ["## Runs merged", "", "| run | kind | path | contents | celljepa | commit | date | wall time |",
             "|---|---|---|---|---|---|---|---|"]
    for r in report["runs"]:
        v = r["versions"]
        commit = v.get("commit") or v.get("git_commit") or "–"
        date = f"{r['date']} ({r['date_source']})" if r["date"] else "–"
        wall = f"{_secs(r['wall_time_s'])} s" if r["wall_time_s"] is not None else "not recorded"
        lines.append(f"| {r['label']} | {r['kind']} | `{r['path']}` | {r['summary']} | {v.get('celljepa', '–')} | "
                     f"{commit} | {date} | {wall} |")
    return lines + [""]


def _verdict_section(report: dict) -> list[str]:
    rows = report["verdicts"]
    lines = ["## Verdict per dataset × split: the pre-registered JEPA model against the comparator chosen on "
             "validation", ""]
    if not rows:
        return lines + ["No run holds a verdict: the runs merged have no JEPA models (baseline-only runs).", ""]
    family = report.get("holm_family_size", "all")
    lines += ["Per run and dataset × split: the primary model named in the run config against the non-JEPA method "
              "(baselines, the PCA twin, peers) with the best *validation* score, on the test conditions with a "
              "detectable effect (n; conditions without one in parentheses). Each row keeps its run's paired 95% "
              "bootstrap CI and sign-flip p-value; the Holm correction is redone here over the "
              f"{family} claims of this report. *wins* needs the CI below 0, Holm p < 0.05 and n ≥ 10; *loses* the "
              "same above 0; fewer conditions give *insufficient evidence*. The last columns ask whether the JEPA "
              "space itself helps: the same comparison against the PCA twin `pca_set`. A dataset × split present "
              "in several runs has one row per run; where a run repeats another's test on the same folds and seeds "
              "with more methods in the pool (peers added with `--reuse`), the other row is *superseded*: shown, "
              "not a claim, not in the Holm family.", "",
              "| run | dataset | split | seeds (split × model) | n (no effect) | comparator | E-dist comparator | "
              "primary | E-dist primary | Δ E-distance [95% CI] | p (Holm) | verdict | JEPA − PCA twin [95% CI] | "
              "p (Holm) | JEPA space vs PCA |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for v in rows:
        seeds = (f"{len(v['split_seeds'] or [0])} × {len(v['model_seeds'] or [0])}" if v.get("split_seeds")
                 else "–")
        if v.get("provisional"):
            seeds += " (provisional)"
        twin = v["vs_pca_twin"] or {}
        claim = not v.get("superseded_by")  # a superseded row has no p-value of this report's family
        lines.append(f"| {v['run']} | {v['dataset_id']} | {v['split']} | {seeds} | {v['n']} "
                     f"({v['n_without_effect'] if v['n_without_effect'] is not None else '–'}) | {v['baseline']} | "
                     f"{_f(v['baseline_edistance'])} | {v['model']} | {_f(v['model_edistance'])} | "
                     f"{_ci(v['edistance'])} | {R._p(v['edistance'].get('p_holm')) if claim else '–'} | "
                     f"**{v['outcome']}** | {_ci(twin)} | {R._p(twin.get('p_holm')) if claim else '–'} | "
                     f"{twin.get('outcome', '–')} |")
    counts = {o: sum(v["outcome"] == o for v in rows)
              for o in ("wins", "ties", "loses", "insufficient evidence", "undetermined", "old protocol",
                        "superseded")}
    lines += ["", "Outcomes: " + ", ".join(f"{n} {o}" for o, n in counts.items() if n) + f" ({len(rows)} rows).", ""]
    lines += ["In words, per dataset × split: does the JEPA space beat its PCA twin?", ""]
    for v in rows:
        if v.get("superseded_by"):
            lines.append(f"- {v['dataset_id']} {v['split']} ({v['run']}): superseded by {v['superseded_by']} "
                         "(the same test with more methods in the pool), not a claim.")
            continue
        lines.append(f"- {v['dataset_id']} {v['split']} ({v['run']}): "
                     + R.twin_sentence({"vs_pca_twin": v["vs_pca_twin"]}) if not v["old_protocol"] else
                     f"- {v['dataset_id']} {v['split']} ({v['run']}): old protocol, not a claim.")
    lines.append("")
    if report["figures"]:
        lines += [f"![where JEPA helps]({report['figures'][0]})", ""]
        old = [v["old_protocol"] for v in report["verdicts"]]
        if any(old) and not all(old):
            lines += ["The figure leaves out the rows of the old protocol (no claim).", ""]
    return lines


def _peers_section(report: dict) -> list[str]:
    rows = report.get("peers") or []
    if not rows:
        return []
    lines = ["## Peers: published tools on the same folds", "",
             "Each peer trained with its own code and published defaults on every fold's training conditions, its "
             "predicted cells projected into the fold's evaluation space and scored like every other method (mean "
             "over test conditions, 95% bootstrap CI; a condition a peer cannot predict is answered with no change "
             "and counts against its coverage). Compute: the peer's fit and prediction summed over the folds. The "
             "last columns are the split's verdict (as the verdict table above states it): the primary JEPA model "
             "against the best non-JEPA method (baselines, PCA twin and these peers) chosen on validation. A run "
             "superseded by another holding the same peers on the same folds is not repeated here.", "",
             "| run | dataset | split | peer | coverage | E-distance [95% CI] | Pearson-Δ [95% CI] | "
             "compute s (folds) | comparator | primary − comparator [95% CI] | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cov = f"{r['coverage']:.0%}" if r.get("coverage") is not None else "–"
        comp = f"**{r['comparator']}**" if r["comparator"] == r["peer"] else str(r["comparator"])
        lines.append(f"| {r['run']} | {r['dataset_id']} | {r['split']} | {r['peer']} | {cov} | "
                     f"{R.ci_cell(r['edistance']) if r.get('edistance') else '–'} | "
                     f"{R.ci_cell(r['delta_pearson']) if r.get('delta_pearson') else '–'} | "
                     f"{_secs(r['compute_s'])} ({r['timed_folds']}) | {comp} | "
                     f"{_ci(r['verdict_edistance']) if r.get('verdict_edistance') else '–'} | "
                     f"{r['verdict'] or 'no JEPA model'} |")
    return lines + [""]


def _methods_table(entry: Mapping) -> str:
    shown = [k for k in TABLE_METRICS
             if any(m.get(k, {}).get("mean") is not None for m in entry["methods"])]
    lines = ["| method | role | " + " | ".join(R._NAMES.get(k, k) for k in shown) + " |",
             "|---|---|" + "---|" * len(shown)]
    for m in entry["methods"]:
        name = f"**{m['method']}** (comparator)" if m.get("comparator", m.get("best_baseline")) else m["method"]
        if m.get("coverage") is not None and m["coverage"] < 0.5:  # near-0 coverage: not posing as a baseline
            name += f" (covers {m['coverage']:.0%} of test conditions)"
        cells = [R.ci_cell(m[k]) if k in m else "–" for k in shown]
        lines.append(f"| {name} | {m['role']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _datasets_section(report: dict) -> list[str]:
    lines = ["## Results per dataset", "",
             "Every method of every split: mean over the test conditions with its 95% bootstrap CI (conditions "
             "pooled over the run's folds), in the split's evaluation space. E-distance is the primary metric. "
             "Metrics no method has a value for (e.g. retrieval with a single test condition per fold) are left out.",
             ""]
    for dataset, entries in report["datasets"].items():
        lines += [f"### {dataset}", ""]
        for e in entries:
            verdict = f"; verdict **{e['verdict']}**" if e["verdict"] else "; no JEPA model"
            how = ("best baseline on the test mean, old protocol: not a claim" if e.get("old_protocol")
                   else "chosen on validation")
            lines += [f"#### {e['split']} · run {e['run']} ({e['folds']}, {e['n_test_conditions']} test conditions)",
                      "", f"Comparator `{e.get('comparator', e.get('best_baseline'))}` ({how})"
                      f"{verdict}.", "", _methods_table(e), ""]
    return lines


def _holdout_section(report: dict) -> list[str]:
    rows = report["holdout"]
    if not rows:
        return []
    lines = ["## Cross-dataset holdout", "",
             "Trained on some datasets, scored on a dataset none of them contains: the primary model on the encoder "
             "pretrained elsewhere against the comparator chosen on validation (its verdict row is above).", "",
             "| run | trained on | tested on | split | n | comparator | primary | Δ E-distance [95% CI] | "
             "verdict |", "|---|---|---|---|---|---|---|---|---|"]
    for h in rows:
        lines.append(f"| {h['run']} | {', '.join(h['train_datasets'])} | {h['test_dataset']} | {h['split'] or '–'} | "
                     f"{h['n']} | {h.get('comparator', h.get('best_baseline'))} | {h['model'] or '–'} | "
                     f"{_ci(h['edistance'])} | {h['outcome'] or '–'} |")
    pairs = [h for h in rows if h.get("others_vs_self")]
    if pairs:
        lines += ["", "Does more, different data help? The transition models on the encoder pretrained on the other "
                  "datasets minus the same models on the held-out dataset's own encoder (mean test E-distance on the "
                  "conditions with an effect, paired 95% CI, sign-flip p Holm-corrected with the claims above; "
                  "*helps* needs the CI below 0, Holm p < 0.05 and n ≥ 10).", "",
                  "| tested on | split | n | elsewhere − own, jepa_set [95% CI] | p (Holm) | outcome | "
                  "elsewhere − own, jepa_prototype | p (Holm) | outcome |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for h in pairs:
            o = h["others_vs_self"]
            st, pr = o.get("set", {}), o.get("prototype", {})
            lines.append(f"| {h['test_dataset']} | {h['split']} | {st.get('n', '–')} | {_ci(st)} | "
                         f"{R._p(st.get('p_holm'))} | {st.get('outcome', '–')} | {_ci(pr)} | "
                         f"{R._p(pr.get('p_holm'))} | {pr.get('outcome', '–')} |")
    transfer = {h["test_dataset"]: h["transfer"] for h in rows if h.get("transfer")}
    if transfer:
        lines += ["", "Embedding transfer: kNN accuracy of the held-out dataset's labels on the encoder pretrained "
                  "elsewhere, on a JEPA pretrained on the dataset alone, and on its own PCA.", "",
                  "| tested on | label | classes | JEPA elsewhere | JEPA alone | PCA alone |",
                  "|---|---|---|---|---|---|"]
        for test, knn in transfer.items():
            for label, by in knn.items():
                if "skipped" in by:
                    continue
                lines.append(f"| {test} | {label} | {by['X_pca_self']['n_classes']} | "
                             f"{by['X_jepa_others']['accuracy']:.3f} | {by['X_jepa_self']['accuracy']:.3f} | "
                             f"{by['X_pca_self']['accuracy']:.3f} |")
    return lines + [""]


def _ablation_section(report: dict) -> list[str]:
    rows = report["ablations"]
    if not rows and not report["ablations_missing"]:
        return []
    lines = ["## Ablations", "",
             "The rows of each sweep's `ablation.json`: per ablation, model seed and dataset × split, the mean test "
             "E-distance of the JEPA set and prototype models [95% CI], their paired difference with the comparator "
             "chosen on validation [95% CI, all conditions], the task's verdict (the report rule within the task) "
             "and the encoders' mean effective rank and collapsed folds.", "",
             "| run | ablation | seed | dataset / split | n | comparator | jepa_set | jepa_set − comparator | "
             "jepa_prototype | jepa_prototype − comparator | verdict | effective rank | collapsed folds |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def pair(r, name):
        mean, ci = r.get(name), r.get(f"{name}_ci")
        if mean is None:
            return "–", "–"
        cell = f"{_f(mean)} [{_f(ci[0])}, {_f(ci[1])}]" if ci else _f(mean)
        dci = r.get(f"{name}_diff_ci")
        diff = f"{_f(r[f'{name}_diff'])} [{_f(dci[0])}, {_f(dci[1])}]" if dci else "–"
        return cell, diff

    for r in rows:
        s, sd = pair(r, "jepa_set")
        p, pd_ = pair(r, "jepa_prototype")
        collapsed = f"{r['collapsed_folds']}/{r['folds']}" if "collapsed_folds" in r else "–"
        head = " | ".join(str(r.get(k, "–")) for k in ("run", "ablation", "seed", "dataset_split", "n"))
        comp = r.get("comparator", r.get("best_baseline", "–"))
        comp_e = r.get("comparator_edistance", r.get("baseline_edistance"))
        verdict = r.get("verdict", "–") if "comparator" in r else "old protocol"
        lines.append(f"| {head} | {comp} {_f(comp_e)} | {s} | "
                     f"{sd} | {p} | {pd_} | "
                     f"{verdict} | {_f(r.get('effective_rank'), 1)} | {collapsed} |")
    if report["ablations_missing"]:
        lines += ["", "Missing or failed sweep tasks:", ""]
        lines += [f"- {m['run']}: task {m.get('index')} ({m.get('ablation')}, seed {m.get('seed')}): "
                  f"{m.get('state', 'missing')}" for m in report["ablations_missing"]]
    return lines + [""]


def _step_columns(folds: Iterable[Mapping]) -> list[str]:
    keys = list(dict.fromkeys(k for f in folds for k in f["timings"]))
    head = [k for k in ("evaluation_space_s", "jepa_pretrain_s") if k in keys]
    return head + [k for k in keys if k not in head and k != "total_s"] + (["total_s"] if "total_s" in keys else [])


def _compute_section(report: dict) -> list[str]:
    c = report["compute"]
    t = c["totals"]
    lines = ["## Compute", "",
             f"Total wall time {_secs(t['wall_time_s'])} s over {t['runs_timed']} run(s) (the runs' own wall times; "
             f"timed folds {_secs(t['fold_total_s'])} s)."
             + (f" Not recorded for: {', '.join(t['runs_without_wall_time'])}." if t["runs_without_wall_time"] else ""),
             "", "| run | kind | wall time s | timed folds |", "|---|---|---|---|"]
    lines += [f"| {r['run']} | {r['kind']} | {_secs(r['wall_time_s'])} | {r['timed_folds']} |" for r in c["runs"]]
    if t["by_step_s"]:
        lines += ["", "Summed over every timed fold (seconds; a method's time is its fit and prediction on the fold):",
                  "", "| step | seconds |", "|---|---|"]
        lines += [f"| {k.removesuffix('_s')} | {_secs(v)} |" for k, v in t["by_step_s"].items()]
    if c["folds"]:
        cols = _step_columns(c["folds"])
        lines += ["", "Per fold (seconds): evaluation space, JEPA pretraining, each method's fit + predict, total.", "",
                  "| run | dataset | split | fold | " + " | ".join(k.removesuffix("_s") for k in cols) + " |",
                  "|---|---|---|---|" + "---|" * len(cols)]
        for f in c["folds"]:
            where = f["run"] if f["task"] is None else f"{f['run']} · {f['task']}"
            lines.append(f"| {where} | {f['dataset_id']} | {f['split']} | {f['fold']} | "
                         + " | ".join(_secs(f["timings"].get(k)) for k in cols) + " |")
    keys = ["celljepa", "commit", "python", "torch", "anndata", "scanpy", "scikit-learn", "kernel_backend", "device",
            "machine", "cpus"]
    lines += ["", "Machine and versions as recorded by each run:", "",
              "| run | " + " | ".join(keys) + " | other |", "|---|" + "---|" * (len(keys) + 1)]
    for r in c["runs"]:
        v = r["versions"]
        other = ", ".join(f"{k} {v[k]}" for k in v if k not in keys) or "–"
        lines.append(f"| {r['run']} | " + " | ".join(str(v.get(k, "–")) for k in keys) + f" | {other} |")
    return lines + [""]


def render_markdown(report: Mapping) -> str:
    """The markdown of a consolidated report (the dict :func:`consolidate` returns / report.json holds).

    Parameters
    ----------
    report
        A consolidated report.

    Returns
    -------
    str
        report.md's text.
    """
    lines = [f"# {report['title']}", "",
             f"{len(report['runs'])} run(s) merged by `celljepa report` (celljepa {report['celljepa']}). Every number "
             "is copied from the runs' own metrics files, which follow the evaluation protocol "
             "(`docs/evaluation.md`): one evaluation space per split fitted on training cells, predictions are sets "
             "of cells, E-distance is the primary metric (lower is better), 95% bootstrap CIs over test conditions, "
             "paired bootstrap CIs and sign-flip p-values for comparisons. Only the Holm correction is redone, over "
             "the claims of this report. `report.json` holds the same numbers.", ""]
    for section in (_runs_section, _verdict_section, _peers_section, _datasets_section, _holdout_section,
                    _ablation_section, _compute_section):
        lines += section(report)
    return "\n".join(lines).rstrip("\n") + "\n"


# ------------------------------------------------------------------------------------------ the entry


def consolidate(runs: Sequence[str | os.PathLike], out: str | os.PathLike, *, title: str | None = None,
                figure_maker: Callable[[list[dict], Path], Path] | None = None) -> dict:
    """Merge benchmark, fold and sweep runs into one report: ``OUT/report.md``, ``report.json``, ``figures/``.

    Parameters
    ----------
    runs
        Run folders: a benchmark run (``metrics_combined.json``), a fold run of ``eval-baselines`` /
        ``train-transition`` (``metrics.json`` + ``config.json``) or a sweep folder (``ablation.json``).
        The kind is detected from the files (:data:`KIND_FILES`); a folder given twice is merged once.
    out
        Output folder (created).
    title
        The report's title.
    figure_maker
        ``figure_maker(verdict_rows, path)`` draws ``figures/where_jepa_helps.png`` (``celljepa report`` passes
        :func:`celljepa.pl.where_jepa_helps`); without it the report has no figure.

    Returns
    -------
    dict
        The report as written to report.json: ``runs``, ``verdicts`` (one row per run × dataset × split with
        a verdict), ``datasets`` (dataset → per split and run, every method's metrics), ``holdout``,
        ``ablations``, ``compute`` and ``figures``.

    Examples
    --------
    >>> from celljepa.bench.consolidate import consolidate
    >>> report = consolidate(["runs/demo", "runs/kang2018"], "reports/all")  # doctest: +SKIP
    >>> [(v["dataset_id"], v["split"], v["outcome"]) for v in report["verdicts"]]  # doctest: +SKIP
    """
    if isinstance(runs, (str, os.PathLike)):
        runs = [runs]
    if not runs:
        raise InputError("no runs given. Fix: pass one or more run folders, e.g. --runs runs/demo runs/kang2018.")
    paths, seen = [], set()
    for r in runs:
        p = Path(r)
        if p.is_file() and any(p.name in files for files in KIND_FILES.values()):
            p = p.parent
        key = p.resolve()
        if key in seen:
            logger.info("report: %s given twice; merged once", p)
            continue
        seen.add(key)
        paths.append(p)
    loaded = [load_run(p) for p in paths]
    for run, label in zip(loaded, _labels(paths), strict=True):
        run["label"] = label
    out = Path(out)
    verdicts = _verdict_rows(loaded)
    holdout = _holdout_rows(loaded)
    family = _holm_report(verdicts, holdout)
    report = {
        "schema": SCHEMA, "celljepa": __version__,
        "title": title or "celljepa report: " + ", ".join(r["label"] for r in loaded),
        "runs": [{k: r[k] for k in ("label", "path", "kind", "summary", "versions", "date", "date_source",
                                    "wall_time_s")} for r in loaded],
        "verdicts": verdicts,
        "datasets": _dataset_tables(loaded),
        "peers": _with_report_verdicts(_peer_rows(loaded), verdicts),
        "holdout": holdout, "holm_family_size": family,
        "ablations": [{"run": r["label"], **row} for r in loaded for row in r["ablations"]],
        "ablations_missing": [{"run": r["label"], **m} for r in loaded for m in r["missing"]],
        "compute": _compute(loaded),
        "figures": [f"figures/{FIGURE}"] if verdicts and figure_maker is not None else [],
    }
    report = _clean(report)
    figure = out / "figures" / FIGURE
    if report["figures"]:
        figure_maker([v for v in report["verdicts"] if not v.get("superseded_by")] or report["verdicts"], figure)
    elif figure.is_file():
        figure.unlink()  # a stale figure of an earlier report in the same folder
    # key order kept (not sorted): render_markdown(json.load(report.json)) gives report.md again
    write_text_atomic(out / "report.json", json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    write_text_atomic(out / "report.md", render_markdown(report))
    logger.info("report: %d runs, %d verdict rows; %s", len(loaded), len(report["verdicts"]), out / "report.md")
    return report
