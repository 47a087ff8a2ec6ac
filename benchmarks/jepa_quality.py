"""JEPA embedding quality on real data: seeds, ablations, kNN against PCA, collapse diagnostics.

Runs ``celljepa pretrain`` (default config unless an ablation changes one switch) on processed files
(``celljepa ingest``) and collects every run's ``eval.json`` into one table (markdown + JSON).

Usage::

    python benchmarks/jepa_quality.py --data kang2018=data/processed/kang2018/lognorm-v1.h5ad \
        --data norman2019=runs/demo/data/norman2019/lognorm-v1.h5ad --seeds 0 1 2 \
        --ablations kang2018 --out benchmarks/results/jepa --jobs 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ABLATIONS = {
    "ema-off": ["--set", "train.ema=off"],
    "anticollapse-off": ["--set", "train.anticollapse=off"],
    "ema-off+anticollapse-off": ["--set", "train.ema=off", "--set", "train.anticollapse=off"],
    "module-mask": ["--set", "mask.kind=module"],
    "block-mask": ["--set", "mask.kind=block"],
    "target-cell": ["--set", "train.target=cell"],
}


def _run(job: tuple[str, str, Path, list[str]], runs: Path, env: dict) -> dict:
    name, h5ad, _, extra = job
    out = runs / name
    cmd = [sys.executable, "-m", "celljepa.cli", "pretrain", str(h5ad), "--out", str(out), "--no-progress", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"run": name, "error": proc.stderr[-2000:]}
    result = json.loads((out / "eval.json").read_text())
    row = {
        "run": name,
        "wall_s": round(time.perf_counter() - t0, 1),
        "train_s": result["train_seconds"],
        "effective_rank": result["diagnostics"]["effective_rank"],
        "rank_fraction": result["diagnostics"]["effective_rank_fraction"],
        "std_min": result["diagnostics"]["std_min"],
        "mean_cosine": result["diagnostics"]["mean_cosine"],
        "collapsed": result["collapsed"],
        "final_loss": (result["final"] or {}).get("loss"),
    }
    for label, by_emb in result["knn"].items():
        for emb in ("X_jepa", "X_pca"):
            if emb in by_emb:
                row[f"knn_{label}_{emb}"] = by_emb[emb]["accuracy"]
                row[f"knn_{label}_{emb}_sd"] = by_emb[emb]["accuracy_sd"]
    return row


def _acc(row: dict, key: str) -> str:
    v = row.get(key)
    return "–" if v is None else f"{v:.3f} ± {row.get(key + '_sd', 0):.3f}"


def _markdown(rows: list[dict]) -> str:
    head = (
        "| run | eff. rank (/128) | min std | mean cos | collapsed | kNN cell_type JEPA | PCA | "
        "kNN perturbation JEPA | PCA | train s |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['run']} | failed | | | | | | | | |")
            continue
        lines.append(
            f"| {r['run']} | {r['effective_rank']:.1f} | {r['std_min']:.3f} | {r['mean_cosine']:.3f} | "
            f"{'yes' if r['collapsed'] else 'no'} | {_acc(r, 'knn_cell_type_X_jepa')} | "
            f"{_acc(r, 'knn_cell_type_X_pca')} | {_acc(r, 'knn_perturbation_id_X_jepa')} | "
            f"{_acc(r, 'knn_perturbation_id_X_pca')} | {r['train_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", action="append", required=True, help="NAME=PATH of a processed .h5ad")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--ablations", nargs="*", default=[], help="dataset names to run the ablations on (seed 0)")
    p.add_argument("--runs", type=Path, default=Path("runs/jepa_quality"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="config override applied to every run (e.g. mask.kind=module)",
    )
    p.add_argument("--tag", default="", help="suffix of the run names, e.g. -module")
    p.add_argument("--feature-set", help="map the data onto this gene list first (e.g. genome-v1)")
    p.add_argument("--name", default="quality", help="stem of the output files (OUT/NAME.json, OUT/NAME.md)")
    args = p.parse_args()
    common = [x for s in args.sets for x in ("--set", s)]
    if args.feature_set:
        common += ["--feature-set", args.feature_set]
    data = dict(item.split("=", 1) for item in args.data)
    jobs = [
        (f"{d}/seed{s}{args.tag}", path, args.runs, ["--seed", str(s), *common])
        for d, path in data.items()
        for s in args.seeds
    ]
    jobs += [
        (f"{d}/{a}{args.tag}", data[d], args.runs, ["--seed", "0", *common, *extra])
        for d in args.ablations
        for a, extra in ABLATIONS.items()
    ]
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // max(1, args.jobs)))
    env = {**os.environ, "OMP_NUM_THREADS": threads}
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda j: _run(j, args.runs, env), jobs))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(rows, indent=2) + "\n")
    (args.out / f"{args.name}.md").write_text(_markdown(rows))
    print(_markdown(rows))


if __name__ == "__main__":
    main()
