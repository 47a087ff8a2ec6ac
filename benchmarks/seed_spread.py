"""How reliably do the transition models train? Model-seed spread and folds that never left their start.

Reads finished ``celljepa benchmark`` runs (their ``metrics_combined.json`` and, where the fold folders are
kept, each fold's ``metrics.json``) and tabulates, per dataset × split:

- the mean E-distance (conditions with a detectable effect) of each model seed of ``jepa_set`` and ``pca_set``,
  their standard deviation over model seeds, and the target: SD ≤ 1/3 of the smallest |primary − comparator|
  difference the run's verdict reports on a claimable row;
- the share of fold × model-seed fits in which a trained transition model kept its starting map (early stopping
  chose step 0: the mean training shift or no change), from the folds' ``never_left_start`` records.

Usage::

    python benchmarks/seed_spread.py benchmarks/results/final-v3/demo_gears runs/demo \\
        --out benchmarks/results/reliability/before
    python benchmarks/seed_spread.py --sweep runs/reliability --out benchmarks/results/reliability/after

With ``--sweep`` (a ``celljepa sweep`` folder, e.g. of ``configs/sweeps/reliability.yaml``) the kept starts are
counted per ablation; the spread over model seeds on validation conditions is in the sweep's ``ablation.md``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

MODELS = ("jepa_set", "pca_set", "jepa_prototype")


def spread_rows(run: Path) -> tuple[list[dict], float | None]:
    """Seed means and their SD per dataset × split, and the smallest claimable |primary − comparator|."""
    combined = json.loads((run / "metrics_combined.json").read_text())
    rows, diffs = [], []
    for key, res in combined["results"].items():
        v = res.get("verdict") or {}
        if (
            v.get("claimable")
            and isinstance(v.get("edistance"), dict)
            and np.isfinite(v["edistance"].get("diff", np.nan))
        ):
            diffs.append(abs(v["edistance"]["diff"]))
        for model in MODELS:
            seeds = (v.get("seed_means") or {}).get(model)
            if not seeds or len(seeds) < 2:
                continue
            values = np.array([seeds[s] for s in sorted(seeds)], dtype=float)
            rows.append(
                {
                    "run": run.name,
                    "row": key,
                    "model": model,
                    "claimable": bool(v.get("claimable")),
                    "seed_means": values.round(4).tolist(),
                    "sd": float(values.std(ddof=1)),
                    "range": float(values.max() - values.min()),
                }
            )
    return rows, (min(diffs) if diffs else None)


def start_rows(run: Path, name: str | None = None) -> list[dict]:
    """Per dataset × split and model: fits that kept their start, out of all fits (fold × model seed).

    ``run`` is a benchmark run folder, or one ablation of a ``celljepa sweep`` (its ``seed*/[fold*/]`` task
    folders are read together); ``name`` labels the rows (default: the folder's name).
    """
    counts: dict[tuple[str, str], list[int]] = {}
    folds = sorted(
        {
            *run.glob("*/*/split_seed*/fold*/metrics.json"),
            *run.glob("seed*/*/*/split_seed*/fold*/metrics.json"),
            *run.glob("seed*/fold*/*/*/split_seed*/fold*/metrics.json"),
        }
    )
    for f in folds:
        m = json.loads(f.read_text())
        split = f"{f.parts[-5]}/{f.parts[-4]}"
        stuck = _find(m, "never_left_start") or {}
        seeds = len(m.get("model_seeds") or _find(m, "model_seeds") or [0])
        for model in MODELS:
            c = counts.setdefault((split, model), [0, 0])
            c[1] += seeds
            if model in stuck:
                c[0] += int(stuck[model].get("n_seeds", seeds))
    return [
        {
            "run": name or run.name,
            "row": split,
            "model": model,
            "kept_start": k,
            "fits": n,
            "share": k / n if n else np.nan,
        }
        for (split, model), (k, n) in sorted(counts.items())
    ]


def _find(obj, key):
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        for v in obj.values():
            found = _find(v, key)
            if found is not None:
                return found
    return None


def markdown(spread: list[dict], smallest: dict, starts: list[dict]) -> str:
    lines = ["# Transition-model reliability", ""]
    if spread:
        lines += [
            "Mean E-distance per model seed (conditions with an effect; mean over split seeds), its standard "
            "deviation over model seeds, and the target SD ≤ 1/3 of the smallest claimable |primary − comparator|.",
            "",
            "| run | dataset/split | model | claimable | per model seed | SD | range | target | met |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in spread:
            target = smallest.get(r["run"])
            bound = None if target is None else target / 3
            met = "–" if bound is None else ("yes" if r["sd"] <= bound else "**no**")
            lines.append(
                f"| {r['run']} | {r['row']} | {r['model']} | {'yes' if r['claimable'] else 'no'} | "
                f"{' / '.join(f'{x:.3f}' for x in r['seed_means'])} | {r['sd']:.4f} | {r['range']:.4f} | "
                f"{'–' if bound is None else f'≤ {bound:.4f}'} | {met} |"
            )
    if starts:
        lines += [
            "",
            "Fits (fold × model seed) in which the model kept its starting map (early stopping chose step 0):",
            "",
            "| run | dataset/split | model | kept start | fits | share |",
            "|---|---|---|---|---|---|",
        ]
        for r in starts:
            lines.append(
                f"| {r['run']} | {r['row']} | {r['model']} | {r['kept_start']} | {r['fits']} | {r['share']:.0%} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from celljepa._io import write_json_atomic, write_text_atomic

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", type=Path, help="finished benchmark run folders")
    p.add_argument(
        "--sweep",
        type=Path,
        action="append",
        default=[],
        help="a `celljepa sweep` output folder: kept starts per ablation (its seed spread is in ablation.md)",
    )
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if not args.runs and not args.sweep:
        p.error("give benchmark run folders or --sweep OUT")
    spread, smallest, starts = [], {}, []
    for sweep in args.sweep:
        for ablation in sorted(d for d in sweep.iterdir() if d.is_dir() and any(d.glob("seed*"))):
            starts += start_rows(ablation)
    for run in args.runs:
        if (run / "metrics_combined.json").exists():
            rows, s = spread_rows(run)
            spread += rows
            smallest[run.name] = s
        starts += start_rows(run)
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {"spread": spread, "smallest_claimable_difference": smallest, "kept_start": starts}
    write_json_atomic(args.out / "seed_spread.json", payload)
    text = markdown(spread, smallest, starts)
    write_text_atomic(args.out / "seed_spread.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
