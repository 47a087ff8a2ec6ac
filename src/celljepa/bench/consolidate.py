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

This module gathers the report dict (``report.json``); its markdown is
:func:`celljepa.eval.report.consolidated.render_markdown` of that dict (importable from here too).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

from .._errors import InputError
from .._io import LOCK_NAME, RUN_MARKERS, folder_lock, staged_folder, write_text_atomic
from .._logging import logger
from .._version import __version__
from ..eval import report as R
from ..eval.report.consolidated import TABLE_METRICS, render_markdown, step_columns

__all__ = ["KIND_FILES", "LOADERS", "SCHEMA", "consolidate", "detect_kind", "load_run", "new_run"]

#: Version tag of the report.json layout.
SCHEMA = "celljepa.report/2"
FIGURE = "where_jepa_helps.png"

#: Files that mark each kind of run folder, checked in this order; the first kind with all its files wins.
KIND_FILES: dict[str, tuple[str, ...]] = {k: RUN_MARKERS[k] for k in ("holdout", "benchmark", "sweep", "fold")}


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
    return {
        "path": str(path),
        "kind": kind,
        "label": "",
        "versions": {},
        "date": None,
        "date_source": None,
        "wall_time_s": None,
        "summary": "",
        "results": {},
        "per_fold": [],
        "ablations": [],
        "missing": [],
        "holdout": [],
    }


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(
            f"cannot read {path}: {err}. Fix: rerun the command that wrote it, or leave this run out of --runs."
        ) from None


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
        raise InputError(
            f"{marker} has no 'results': not a benchmark's metrics_combined.json. Fix: point --runs "
            "at the folder `celljepa benchmark --out` wrote."
        )
    bad = [k for k, m in data["results"].items() if not isinstance(m, dict) or "methods" not in m]
    if bad:
        raise InputError(f"{marker}: results {bad} have no 'methods'. Fix: rerun the benchmark that wrote it.")
    run["versions"] = _recorded(data)
    run["date"], run["date_source"] = _date(run["versions"], marker)
    run["wall_time_s"] = data.get("wall_time_s")
    run["results"] = dict(data["results"])
    run["per_fold"] = [
        {
            "dataset_id": r["dataset_id"],
            "split": r["split"],
            "fold": r["fold"],
            "timings": dict(r.get("timings") or {}),
            "task": None,
        }
        for r in data.get("per_fold", [])
    ]
    n = len(data.get("per_fold", []))
    run["summary"] = f"{len(run['results'])} dataset × split, {n} fold{'' if n == 1 else 's'}"
    return run


def _load_fold(path: Path) -> dict:
    run = new_run(path, "fold")
    metrics = _read_json(path / "metrics.json")
    config = _read_json(path / "config.json")
    missing = [k for k in ("methods", "dataset_id", "split") if k not in metrics]
    if missing:
        raise InputError(
            f"{path / 'metrics.json'} lacks {missing}: not a run folder's metrics.json. Fix: point "
            "--runs at a folder written by `celljepa eval-baselines` or `celljepa train-transition`."
        )
    run["versions"] = _recorded(config)
    run["date"], run["date_source"] = _date(run["versions"], path / "metrics.json")
    timings = dict(metrics.get("timings") or config.get("timings_s") or {})
    run["wall_time_s"] = timings.get("total_s")
    fold, n_folds = metrics.get("fold", config.get("fold")), config.get("n_folds")
    run["results"] = {
        f"{metrics['dataset_id']}/{metrics['split']}": {**metrics, "fold": fold, "n_folds_split": n_folds}
    }
    if timings:
        run["per_fold"] = [
            {
                "dataset_id": metrics["dataset_id"],
                "split": metrics["split"],
                "fold": fold,
                "timings": timings,
                "task": None,
            }
        ]
    run["summary"] = f"{metrics['dataset_id']} {metrics['split']} fold {fold}" + (f" of {n_folds}" if n_folds else "")
    return run


def _sweep_tasks(path: Path) -> list[Path]:
    """Task folders of a sweep (``<ablation>/seed<k>[/fold<f>]/metrics_combined.json``) that are present."""
    return sorted(
        p.parent
        for p in list(path.glob("*/seed*/metrics_combined.json"))
        + list(path.glob("*/seed*/fold*/metrics_combined.json"))
    )


def _load_sweep(path: Path) -> dict:
    run = new_run(path, "sweep")
    marker = path / "ablation.json"
    data = _read_json(marker)
    if not isinstance(data.get("rows"), list):
        raise InputError(
            f"{marker} has no 'rows': not a sweep's ablation.json. Fix: run `celljepa sweep --grid "
            f"GRID --out {path} --collect` first."
        )
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
        run["per_fold"] += [
            {
                "dataset_id": r["dataset_id"],
                "split": r["split"],
                "fold": r["fold"],
                "timings": dict(r.get("timings") or {}),
                "task": name,
            }
            for r in combined.get("per_fold", [])
        ]
    run["date"], run["date_source"] = _date(run["versions"], marker)
    run["wall_time_s"] = sum(walls) if walls else None
    run["task_folders"] = len(tasks)
    finished, total = data.get("finished", len(run["ablations"])), data.get("tasks", "?")
    run["summary"] = f"{finished}/{total} sweep tasks, {len(run['ablations'])} rows" + (
        f"; {len(tasks)} task folder(s) timed" if tasks else "; task folders not present"
    )
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
        run["holdout"].append(
            {
                "train_datasets": list(data["pretrained_on"]),
                "test_dataset": data["holdout"],
                "split": split,
                "metrics": m,
                "others_vs_self": m.get("others_vs_self", {}),
                "transfer": data["transfer"]["knn"],
            }
        )
    run["per_fold"] = [
        {
            "dataset_id": data["holdout"],
            "split": "S4_holdout_dataset",
            "fold": "all",
            "timings": dict(data.get("timings") or {}),
            "task": None,
        }
    ]
    run["summary"] = f"{data['holdout']} held out, encoder pretrained on {', '.join(data['pretrained_on'])}"
    return run


LOADERS: dict[str, Callable[[Path], dict]] = {
    "holdout": _load_holdout,
    "benchmark": _load_benchmark,
    "sweep": _load_sweep,
    "fold": _load_fold,
}


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
        raise InputError(
            f"run '{folder}' {what}. Fix: pass run folders to --runs (a benchmark, a fold run or a sweep folder)."
        )
    for kind, files in KIND_FILES.items():
        if all((folder / f).is_file() for f in files):
            return kind
    looked = "; ".join(f"{' + '.join(files)} ({kind})" for kind, files in KIND_FILES.items())
    raise InputError(
        f"'{folder}' is not a run folder: none of {looked} is in it. Fix: pass the folder that "
        "`celljepa benchmark`, `eval-baselines`, `train-transition` or `sweep` wrote."
    )


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
    """One row per run × dataset × split with a verdict, exactly as its run labelled it.

    Each row keeps its run's comparison (hierarchical CI, sign-flip p, Holm p within the run's own claims family,
    label): a report that merges runs never corrects again, so adding a run changes no verdict. Rows of runs from
    before the pre-registered protocol (no p-value; comparator picked on test) are kept as *old protocol*, rows
    labelled under protocol v2 (a report-wide Holm family, "ties") as *protocol v2*; neither is a v3 claim.
    """
    rows = []
    for run in runs:
        for key, m in run["results"].items():
            if "verdict" not in m:
                continue
            v, means = m["verdict"], {k: s["edistance"]["mean"] for k, s in m["methods"].items()}
            old = _old_protocol(m)
            rows.append(
                {
                    "run": run["label"],
                    "dataset_id": m.get("dataset_id", key.split("/")[0]),
                    "split": m.get("split", key.split("/")[-1]),
                    "folds": _folds_text(m),
                    "n": v["n"],
                    "n_without_effect": v.get("n_without_effect"),
                    "split_seeds": m.get("split_seeds"),
                    "model_seeds": m.get("model_seeds"),
                    "provisional": m.get("provisional"),
                    "baseline": v["baseline"],
                    "baseline_edistance": (v.get("means") or {}).get("baseline", means[v["baseline"]]),
                    "comparator_reason": v.get("comparator_reason"),
                    "model": v["model"],
                    "model_edistance": (v.get("means") or {}).get("model", means[v["model"]]),
                    "edistance": dict(v["edistance"]),
                    "secondary": _clean(v.get("secondary") or {}),
                    "claimable": v.get("claimable"),
                    "seed_means": dict(v.get("seed_means") or {}),
                    "outcome": old or v["outcome"],
                    "old_protocol": bool(old),
                    "vs_pca_twin": _twin_row(v),
                    "methods": sorted(m["methods"]),
                    "superseded_by": None,
                }
            )
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
            if (
                all(row[k] == other[k] for k in _SAME_TEST)
                and pool <= set(other["methods"])
                and (pool < set(other["methods"]) or j > i)
            ):
                row["superseded_by"], row["outcome"] = other["run"], "superseded"
                break


def _family_size(verdicts: list[dict]) -> int:
    """Claims of the merged runs on E-distance, each counted in its own run's family (not corrected again)."""
    return sum(
        1
        for r in verdicts
        if not r["old_protocol"] and not r.get("superseded_by") and r.get("claimable")
        for _ in (
            [r["edistance"]]
            + ([r["vs_pca_twin"]] if r["vs_pca_twin"] and not r["vs_pca_twin"].get("same_as_comparator") else [])
        )
    )


def _role(m: Mapping, method: str) -> str:
    roles = m.get("roles")
    if roles and method in roles:
        return {"baseline": "baseline", "pca_twin": "PCA twin", "peer": "peer", "jepa": "JEPA"}.get(
            roles[method], roles[method]
        )
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
                entry = {
                    "method": name,
                    "role": _role(m, name),
                    "comparator": name == R.comparator_of(m),
                    "coverage": m.get("coverage", {}).get(name),
                }
                entry.update(
                    {
                        k: {s: stats[k].get(s) for s in ("mean", "ci_low", "ci_high", "n")}
                        for k in TABLE_METRICS
                        if k in stats
                    }
                )
                methods.append(entry)
            out.setdefault(dataset, []).append(
                {
                    "run": run["label"],
                    "split": m.get("split", key.split("/")[-1]),
                    "folds": _folds_text(m),
                    "n_test_conditions": m.get("n_test_conditions"),
                    "comparator": R.comparator_of(m),
                    "verdict": ((_old_protocol(m) or m["verdict"]["outcome"]) if "verdict" in m else None),
                    "old_protocol": bool(_old_protocol(m)),
                    "methods": methods,
                }
            )
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
                rows.append(
                    {
                        "run": run["label"],
                        "dataset_id": dataset,
                        "split": split,
                        "peer": name,
                        "folds": _folds_text(m),
                        "n_test_conditions": m.get("n_test_conditions"),
                        "coverage": m.get("coverage", {}).get(name),
                        **{
                            k: {s: stats[k].get(s) for s in ("mean", "ci_low", "ci_high", "n")}
                            for k in ("edistance", "delta_pearson")
                            if k in stats
                        },
                        "compute_s": sum(seconds) if seconds else None,
                        "timed_folds": len(seconds),
                        "comparator": R.comparator_of(m),
                        "model": v.get("model"),
                        "verdict": (_old_protocol(m) or v.get("outcome")) if v else None,
                        "verdict_edistance": dict(v["edistance"]) if v else None,
                    }
                )
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


def _old_protocol(m: Mapping) -> str | None:
    """Which earlier protocol wrote a metrics dict, or None for protocol v3.

    ``"old protocol"``: comparator picked on test, no p-value; ``"protocol v2"``: a report-wide Holm family and
    "ties", no claims family.
    """
    v = m.get("verdict")
    if "comparator" not in m or (v is not None and "p" not in v.get("edistance", {})):
        return "old protocol"
    if v is not None and "claimable" not in v:
        return "protocol v2"
    return None


def _holdout_rows(runs: list[dict]) -> list[dict]:
    rows = []
    for run in runs:
        for h in run["holdout"]:
            m = h["metrics"]
            v = m.get("verdict")
            rows.append(
                {
                    "run": run["label"],
                    "train_datasets": list(h.get("train_datasets", [])),
                    "test_dataset": h.get("test_dataset"),
                    "split": h.get("split"),
                    "n": v["n"] if v else m.get("n_test_conditions"),
                    "comparator": R.comparator_of(m),
                    "model": v["model"] if v else None,
                    "edistance": dict(v["edistance"]) if v else None,
                    "outcome": (_old_protocol(m) or v["outcome"]) if v else None,
                    "old_protocol": bool(_old_protocol(m)),
                    "methods": {k: s["edistance"] for k, s in m["methods"].items()},
                    "others_vs_self": {k: dict(d) for k, d in (h.get("others_vs_self") or {}).items()},
                    "transfer": dict(h.get("transfer") or {}),
                }
            )
    return rows


def _compute(runs: list[dict]) -> dict:
    folds, by_step = [], {}
    for run in runs:
        for f in run["per_fold"]:
            folds.append(
                {
                    "run": run["label"],
                    "task": f["task"],
                    "dataset_id": f["dataset_id"],
                    "split": f["split"],
                    "fold": f["fold"],
                    "timings": f["timings"],
                }
            )
    for k in step_columns(folds):
        if k != "total_s":
            by_step[k] = sum(float(f["timings"][k]) for f in folds if f["timings"].get(k) is not None)
    walls = [r["wall_time_s"] for r in runs if r["wall_time_s"] is not None]
    return {
        "runs": [
            {
                "run": r["label"],
                "kind": r["kind"],
                "wall_time_s": r["wall_time_s"],
                "timed_folds": len(r["per_fold"]),
                "versions": r["versions"],
            }
            for r in runs
        ],
        "folds": folds,
        "totals": {
            "wall_time_s": sum(walls),
            "runs_timed": len(walls),
            "runs_without_wall_time": [r["label"] for r in runs if r["wall_time_s"] is None],
            "fold_total_s": sum(float(f["timings"].get("total_s") or 0.0) for f in folds),
            "by_step_s": by_step,
        },
    }


# ------------------------------------------------------------------------------------------ the entry


def _check_out(out: Path, paths: Sequence[Path]) -> None:
    """A merged report never writes into a run folder: its ``report.md`` would replace the run's own."""
    target = out.resolve()
    for p in paths:
        if p.resolve() == target:
            raise InputError(
                f"--out {out} is the run folder {p} given with --runs: the merged report.md would "
                "replace the run's own report. Fix: write the merged report to another folder, e.g. "
                "--out reports/merged."
            )
    marks = [f for files in KIND_FILES.values() if all((out / f).is_file() for f in files) for f in files]
    if marks:
        raise InputError(
            f"--out {out} holds a run ({', '.join(marks)}): the merged report.md would replace the "
            "run's own report. Fix: write the merged report to another folder, e.g. --out "
            "reports/merged."
        )
    other = sorted(p.name for p in out.iterdir() if p.name not in REPORT_ENTRIES) if out.is_dir() else []
    if other:
        raise InputError(
            f"--out {out} holds other files than a report ({', '.join(other[:5])}"
            f"{' ...' if len(other) > 5 else ''}): a report folder is replaced whole by each new report. "
            "Fix: pass a folder of its own, e.g. --out reports/merged."
        )


#: What a report folder holds; a new report replaces the folder whole (:func:`celljepa._io.staged_folder`).
REPORT_ENTRIES = frozenset({"report.md", "report.json", "figures", LOCK_NAME})


def consolidate(
    runs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    title: str | None = None,
    figure_maker: Callable[[list[dict], Path], Path] | None = None,
) -> dict:
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
    _check_out(Path(out), paths)
    loaded = [load_run(p) for p in paths]
    for run, label in zip(loaded, _labels(paths), strict=True):
        run["label"] = label
    out = Path(out)
    verdicts = _verdict_rows(loaded)
    holdout = _holdout_rows(loaded)
    family = _family_size(verdicts)
    report = {
        "schema": SCHEMA,
        "celljepa": __version__,
        "title": title or "celljepa report: " + ", ".join(r["label"] for r in loaded),
        "runs": [
            {k: r[k] for k in ("label", "path", "kind", "summary", "versions", "date", "date_source", "wall_time_s")}
            for r in loaded
        ],
        "verdicts": verdicts,
        "datasets": _dataset_tables(loaded),
        "peers": _with_report_verdicts(_peer_rows(loaded), verdicts),
        "holdout": holdout,
        "holm_family_size": family,
        "ablations": [{"run": r["label"], **row} for r in loaded for row in r["ablations"]],
        "ablations_missing": [{"run": r["label"], **m} for r in loaded for m in r["missing"]],
        "compute": _compute(loaded),
        "figures": [f"figures/{FIGURE}"] if verdicts and figure_maker is not None else [],
    }
    report = _clean(report)
    new = not out.exists()
    try:
        _write_report(report, out, paths, figure_maker)
    except BaseException:
        if new and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a failed report leaves no empty folder
        raise
    logger.info("report: %d runs, %d verdict rows; %s", len(loaded), len(report["verdicts"]), out / "report.md")
    return report


def _write_report(report: dict, out: Path, paths: Sequence[Path], figure_maker) -> None:
    with folder_lock(out), staged_folder(out) as stage:  # the old report stays until the new one is complete
        _check_out(out, paths)  # again, holding the folder
        if report["figures"]:
            figure_maker(
                [v for v in report["verdicts"] if not v.get("superseded_by")] or report["verdicts"],
                stage / "figures" / FIGURE,
            )
        # key order kept (not sorted): render_markdown(json.load(report.json)) gives report.md again
        write_text_atomic(
            stage / "report.json", json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
        )
        write_text_atomic(stage / "report.md", render_markdown(report))
