"""Post-hoc check of the split-seed-7 verdict: the JEPA set model against the non-JEPA method that is best
*on the test conditions* (a choice no rule could make before seeing them, so it is an upper bound on the
comparator's strength, never a claim). Reads the stored ``per_condition.csv`` files of this folder.

    python benchmarks/results/final/hindsight.py > benchmarks/results/final/hindsight.md
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from celljepa.bench.evaluate import MIN_COVERAGE
from celljepa.eval.bootstrap import paired_bootstrap_diff

HERE = Path(__file__).parent


def main() -> None:
    print("| run | dataset | split | n | best non-JEPA on test | its E-distance | jepa_set | jepa_set − it [95% CI] |")
    print("|---|---|---|---|---|---|---|---|")
    for csv in sorted(HERE.glob("*/*/*/per_condition.csv")):
        split, dataset, run = csv.parent.name, csv.parent.parent.name, csv.parents[2].name
        df = pd.read_csv(csv)
        df = df[df["has_effect"].astype(bool)]
        wide = df.pivot_table(index="condition", columns="method", values="edistance")
        roles = df.drop_duplicates("method").set_index("method")["role"]
        covered = df.groupby("method")["covered"].mean()  # a peer answers what it cannot predict with no change
        others = [m for m in wide.columns if roles[m] != "jepa" and covered[m] >= MIN_COVERAGE]
        means = wide[others].mean().sort_values()
        best = means.index[0]
        d = paired_bootstrap_diff(wide["jepa_set"].to_numpy(), wide[best].to_numpy())
        print(
            f"| {run} | {dataset} | {split} | {d['n']} | {best} | {means[best]:.3f} | "
            f"{wide['jepa_set'].mean():.3f} | {d['diff']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] |"
        )


if __name__ == "__main__":
    main()
