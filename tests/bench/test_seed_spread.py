"""benchmarks/seed_spread.py reads the frozen final-v3 results and a fold folder's never_left_start records."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
FINAL = REPO / "benchmarks" / "results" / "final-v3" / "demo_gears"


@pytest.fixture(scope="module")
def spread():
    spec = importlib.util.spec_from_file_location("seed_spread", REPO / "benchmarks" / "seed_spread.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_seed_means_and_target_match_the_frozen_report(spread):
    rows, smallest = spread.spread_rows(FINAL)
    # the verdict's claimable rows: Norman S1 +0.081 and S1g +0.053 against ridge
    assert smallest == pytest.approx(0.0529, abs=1e-3)
    s1g = next(r for r in rows if r["row"] == "norman2019/S1g_unseen_genes" and r["model"] == "jepa_set")
    assert s1g["seed_means"] == pytest.approx([0.743, 0.735, 0.798], abs=1e-3)  # report.md, per model seed
    assert s1g["sd"] == pytest.approx(np.std([0.7429, 0.7349, 0.7983], ddof=1), abs=2e-3)
    assert s1g["sd"] > smallest / 3  # the target is not met here before any change


def test_kept_start_counts_fits_per_model(spread, tmp_path):
    fold = tmp_path / "run" / "norman2019" / "S1_unseen_perturbation" / "split_seed0"
    for k, stuck in enumerate(
        [{"jepa_set": {"n_seeds": 2}}, {}, {"jepa_set": {"n_seeds": 1}, "pca_set": {"n_seeds": 2}}]
    ):
        (fold / f"fold{k}").mkdir(parents=True)
        (fold / f"fold{k}" / "metrics.json").write_text(json.dumps({"model_seeds": [0, 1], "never_left_start": stuck}))
    rows = {r["model"]: r for r in spread.start_rows(tmp_path / "run")}
    assert (rows["jepa_set"]["kept_start"], rows["jepa_set"]["fits"]) == (3, 6)
    assert (rows["pca_set"]["kept_start"], rows["jepa_prototype"]["kept_start"]) == (2, 0)
    text = spread.markdown([], {}, list(rows.values()))
    assert "| run | norman2019/S1_unseen_perturbation | jepa_set | 3 | 6 | 50% |" in text


def test_kept_start_counts_per_ablation_of_a_sweep(spread, tmp_path):
    # a sweep with fold tasks: OUT/<ablation>/seed<k>/fold<f>/<dataset>/<split>/split_seed0/fold<f>/metrics.json
    for ablation, stuck in (("default", {"jepa_set": {"n_seeds": 1}}), ("warmup_cosine", {})):
        for seed in (0, 1):
            for f in (0, 1):
                fold = tmp_path / "sweep" / ablation / f"seed{seed}" / f"fold{f}" / "norman2019" / "S1g_unseen_genes"
                fold = fold / "split_seed0" / f"fold{f}"
                fold.mkdir(parents=True)
                (fold / "metrics.json").write_text(
                    json.dumps({"model_seeds": [seed], "never_left_start": stuck if f == 0 else {}})
                )
    out = tmp_path / "after"
    assert spread.main(["--sweep", str(tmp_path / "sweep"), "--out", str(out)]) == 0
    rows = {(r["run"], r["model"]): r for r in json.loads((out / "seed_spread.json").read_text())["kept_start"]}
    assert (rows[("default", "jepa_set")]["kept_start"], rows[("default", "jepa_set")]["fits"]) == (2, 4)
    assert rows[("warmup_cosine", "jepa_set")]["kept_start"] == 0
    assert "| default | norman2019/S1g_unseen_genes | jepa_set | 2 | 4 | 50% |" in (out / "seed_spread.md").read_text()
