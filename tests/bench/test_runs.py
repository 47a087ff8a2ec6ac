"""eval-baselines on real data (Kang S2, Papalexi S1) and the demo benchmark, end to end."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from celljepa.bench import DEMO_PLAN, benchmark, demo_datasets
from celljepa.cli import main

FILES = ("config.json", "metrics.json", "per_condition.csv", "split.json", "eval_space.npz", "report.md",
         "figures/metrics_ci.png", "figures/edistance_heatmap.png")


def check_run(run, *, split, figures=True):
    for name in FILES if figures else [f for f in FILES if not f.startswith("figures/")]:
        assert (run / name).exists(), name
    m = json.loads((run / "metrics.json").read_text())
    assert m["split"] == split and m["n_test_conditions"] >= 1
    for method, stats in m["methods"].items():
        assert set(stats["edistance"]) == {"mean", "ci_low", "ci_high", "n"}, method
        assert stats["edistance"]["n"] == m["n_test_conditions"]
    best = m["best_baseline"]
    assert best in m["baselines"] and not any(b.startswith("jepa_") for b in m["baselines"])
    assert m["methods"][best]["edistance"]["mean"] == min(m["methods"][b]["edistance"]["mean"] for b in m["baselines"])
    assert all(k.endswith(f" vs {best}") for k in m["comparisons"])
    per = pd.read_csv(run / "per_condition.csv")
    assert len(per) == len(m["methods"]) * m["n_test_conditions"]
    report = (run / "report.md").read_text()
    assert "## Methods" in report and f"**{best}** (best baseline)" in report
    if figures:
        assert "figures/metrics_ci.png" in report and (run / "figures/metrics_ci.png").stat().st_size > 5000
    return m, per


def test_eval_baselines_kang_unseen_cell_type(ingested, tmp_path):
    run = tmp_path / "kang_s2"
    assert main(["eval-baselines", str(ingested["kang2018"]), "--split", "S2_unseen_context", "--fold", "0",
                 "--folds", "7", "--out", str(run)]) == 0
    m, per = check_run(run, split="S2_unseen_context")
    split = json.loads((run / "split.json").read_text())
    assert len(split["test_groups"]) == 1
    # The held-out cell type's controls are inputs (test cells), never training cells.
    assert set(per["context_id"]) == set(split["test_groups"])
    assert set(m["methods"]) == {"no_change", "mean_shift", "ridge"}


def test_eval_baselines_papalexi_unseen_perturbation(ingested, tmp_path):
    run = tmp_path / "pap_s1"
    assert main(["eval-baselines", str(ingested["papalexi2021"]), "--split", "S1_unseen_perturbation",
                 "--fold", "1", "--out", str(run)]) == 0
    m, per = check_run(run, split="S1_unseen_perturbation")
    assert "linear_gwp" in m["methods"]
    config = json.loads((run / "config.json").read_text())
    assert config["methods"]["ridge"]["alpha"] > 0 and config["evaluation"]["cap"] == 256
    # The fold written is the one `celljepa splits` writes.
    assert main(["splits", str(ingested["papalexi2021"]), "--split", "S1_unseen_perturbation",
                 "--out", str(tmp_path / "splits")]) == 0
    assert json.loads((tmp_path / "splits/papalexi2021.S1_unseen_perturbation.seed0.fold1.json").read_text()) \
        == json.loads((run / "split.json").read_text())


def test_eval_baselines_errors(ingested, tmp_path, capsys):
    code = main(["eval-baselines", str(ingested["kang2018"]), "--split", "S2_unseen_context", "--fold", "9",
                 "--folds", "7", "--out", str(tmp_path / "bad")])
    assert code == 1 and "--fold 9 does not exist" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_benchmark_workflow_on_part_of_the_demo(tmp_path):
    datasets = demo_datasets()
    assert {d: a.n_obs for d, a in datasets.items()} == {"norman2019": 3375, "sciplex_gxe": 2586}
    assert set(DEMO_PLAN) == {"norman2019", "sciplex_gxe"}
    combined = benchmark({"sciplex_gxe": datasets["sciplex_gxe"]}, {"sciplex_gxe": {"S2_unseen_context": 3}},
                         out=tmp_path, progress=False)
    m = combined["sciplex_gxe/S2_unseen_context"]
    assert m["n_test_conditions"] == 27 and m["n_folds"] == 3
    for fold in range(3):
        check_run(tmp_path / "sciplex_gxe" / "S2_unseen_context" / f"fold{fold}", split="S2_unseen_context",
                  figures=False)
    report = (tmp_path / "report.md").read_text()
    assert "### S2_unseen_context (3 folds, 27 test conditions)" in report
    assert json.loads((tmp_path / "metrics_combined.json").read_text())["results"].keys() == {
        "sciplex_gxe/S2_unseen_context"}


@pytest.mark.slow
def test_benchmark_cli_on_the_whole_demo(tmp_path):
    assert main(["benchmark", "--dataset", "demo", "--out", str(tmp_path), "--no-progress"]) == 0
    results = json.loads((tmp_path / "metrics_combined.json").read_text())["results"]
    assert set(results) == {"norman2019/S1_unseen_perturbation", "norman2019/S3_unseen_combo",
                            "sciplex_gxe/S1_unseen_perturbation", "sciplex_gxe/S2_unseen_context"}


def test_benchmark_with_jepa_embeddings(tmp_path):
    from celljepa.train.config import load_config

    datasets = demo_datasets()
    jepa = load_config(overrides={"train": {"max_steps": 12, "batch_size": 64, "log_every": 4},
                                  "model": {"n_hidden": 32, "predictor_hidden": 32, "n_latent": 16}})
    benchmark({"sciplex_gxe": datasets["sciplex_gxe"]}, {"sciplex_gxe": {"S2_unseen_context": 3}}, out=tmp_path,
              progress=False, jepa_knn=jepa)
    emb = json.loads((tmp_path / "metrics_combined.json").read_text())["jepa_embeddings"]["sciplex_gxe"]
    assert emb["diagnostics"]["dims"] == 16 and emb["knn"]["cell_type"]["X_pca"]["n_classes"] == 3
    assert (tmp_path / "sciplex_gxe" / "jepa" / "model" / "model.pt").is_file()
    assert (tmp_path / "sciplex_gxe" / "jepa" / "checkpoints" / "last.pt").is_file()
    report = (tmp_path / "report.md").read_text()
    section = report.split("## JEPA embeddings", 1)[1].split("## Every fold", 1)[0]
    row = next(line for line in section.splitlines() if line.startswith("| sciplex_gxe |"))
    assert f"{emb['knn']['cell_type']['X_jepa']['accuracy']:.3f}" in row and "| 12 |" in row
