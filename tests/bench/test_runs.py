"""eval-baselines on real data (Kang S2, Papalexi S1) and the demo benchmark, end to end."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from celljepa.bench import DEMO_PLAN, benchmark, demo_datasets
from celljepa.cli import main

FILES = (
    "config.json",
    "metrics.json",
    "per_condition.csv",
    "split.json",
    "eval_space.npz",
    "report.md",
    "figures/metrics_ci.png",
    "figures/edistance_heatmap.png",
)


def check_run(run, *, split, figures=True):
    for name in FILES if figures else [f for f in FILES if not f.startswith("figures/")]:
        assert (run / name).exists(), name
    m = json.loads((run / "metrics.json").read_text())
    assert m["split"] == split and m["n_test_conditions"] >= 1
    for method, stats in m["methods"].items():
        assert set(stats["edistance"]) == {"mean", "ci_low", "ci_high", "n"}, method
        assert stats["edistance"]["n"] == m["n_test_conditions"]
    # the comparator is the eligible non-JEPA method with the lowest mean validation E-distance
    val = pd.read_csv(run / "validation.csv")
    assert set(val["method"]) == set(m["methods"])
    choice = m["comparator_choice"]["validation"]
    eligible = [k for k, e in choice.items() if e["eligible"]]
    assert eligible and not any(m["roles"][k] == "jepa" for k in eligible)
    means = val.groupby("method")["edistance"].mean()
    assert m["comparator"] == min(eligible, key=lambda k: means[k])
    assert all(k.endswith(f" vs {m['comparator']}") for k in m["comparisons"])
    per = pd.read_csv(run / "per_condition.csv")
    assert len(per) == len(m["methods"]) * m["n_test_conditions"]
    assert {"effect_se", "etest_p_adj", "has_effect", "covered", "role"} <= set(per.columns)
    assert m["n_effect_conditions"] == int(per.drop_duplicates("condition")["has_effect"].sum())
    report = (run / "report.md").read_text()
    assert "## Methods" in report and f"**{m['comparator']}** (comparator)" in report
    assert "## Comparator (chosen on the validation conditions)" in report and "Effect filter:" in report
    if figures:
        assert "figures/metrics_ci.png" in report and (run / "figures/metrics_ci.png").stat().st_size > 5000
    return m, per


def test_eval_baselines_kang_unseen_cell_type(ingested, tmp_path):
    run = tmp_path / "kang_s2"
    assert (
        main(
            [
                "eval-baselines",
                str(ingested["kang2018"]),
                "--split",
                "S2_unseen_context",
                "--fold",
                "0",
                "--folds",
                "7",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    m, per = check_run(run, split="S2_unseen_context")
    split = json.loads((run / "split.json").read_text())
    assert len(split["test_groups"]) == 1
    # The held-out cell type's controls are inputs (test cells), never training cells.
    assert set(per["context_id"]) == set(split["test_groups"])
    context_aware = {"context_ridge", "cell_linear", "nearest_context", "context_shift_scale"}
    assert set(m["methods"]) == {"no_change", "mean_shift", "ridge", "shift_scale"} | context_aware
    e = {k: v["edistance"]["mean"] for k, v in m["methods"].items()}
    # one shift for every cell type misses the held-out one; the context-aware baselines do not
    assert min(e[k] for k in context_aware) <= 0.6 < 1.0 < e["mean_shift"]
    assert m["comparator"] in context_aware


def test_eval_baselines_papalexi_unseen_perturbation(ingested, tmp_path):
    run = tmp_path / "pap_s1"
    assert (
        main(
            [
                "eval-baselines",
                str(ingested["papalexi2021"]),
                "--split",
                "S1_unseen_perturbation",
                "--fold",
                "1",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    m, per = check_run(run, split="S1_unseen_perturbation")
    assert {"linear_gwp", "linear_go", "shift_scale"} <= set(m["methods"])
    # GO embeddings exist for nearly every perturbed gene; the training-PCA loadings only for HVGs
    assert m["coverage"]["linear_go"] > 0.8 and m["coverage"]["linear_go"] > m["coverage"]["linear_gwp"]
    config = json.loads((run / "config.json").read_text())
    assert config["methods"]["ridge"]["alpha"] > 0 and config["evaluation"]["cap"] == 256
    # The fold written is the one `celljepa splits` writes.
    assert (
        main(
            [
                "splits",
                str(ingested["papalexi2021"]),
                "--split",
                "S1_unseen_perturbation",
                "--out",
                str(tmp_path / "splits"),
            ]
        )
        == 0
    )
    assert json.loads(
        (tmp_path / "splits/papalexi2021.S1_unseen_perturbation.seed0.fold1.json").read_text()
    ) == json.loads((run / "split.json").read_text())


def test_eval_baselines_errors(ingested, tmp_path, capsys):
    code = main(
        [
            "eval-baselines",
            str(ingested["kang2018"]),
            "--split",
            "S2_unseen_context",
            "--fold",
            "9",
            "--folds",
            "7",
            "--out",
            str(tmp_path / "bad"),
        ]
    )
    assert code == 1 and "--fold 9 does not exist" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


@pytest.mark.extended
def test_benchmark_workflow_on_part_of_the_demo(tmp_path):
    datasets = demo_datasets()
    assert {d: a.n_obs for d, a in datasets.items()} == {"norman2019": 3375, "sciplex_gxe": 2586}
    assert set(DEMO_PLAN) == {"norman2019", "sciplex_gxe"}
    combined = benchmark(
        {"sciplex_gxe": datasets["sciplex_gxe"]},
        {"sciplex_gxe": {"S2_unseen_context": 3}},
        out=tmp_path,
        progress=False,
    )
    m = combined["sciplex_gxe/S2_unseen_context"]
    assert m["n_test_conditions"] == 27 and m["n_folds"] == 3
    for fold in range(3):
        check_run(
            tmp_path / "sciplex_gxe" / "S2_unseen_context" / "split_seed0" / f"fold{fold}",
            split="S2_unseen_context",
            figures=False,
        )
    pooled = pd.read_csv(tmp_path / "sciplex_gxe" / "S2_unseen_context" / "per_condition.csv")
    assert len(pooled) == 27 * len(m["methods"]) and "verdict" not in m  # baselines only: nothing to judge
    report = (tmp_path / "report.md").read_text()
    assert "### S2_unseen_context (3 folds × 1 split seed, 27 test conditions)" in report
    assert json.loads((tmp_path / "metrics_combined.json").read_text())["results"].keys() == {
        "sciplex_gxe/S2_unseen_context"
    }


@pytest.mark.slow
def test_benchmark_cli_on_the_whole_demo(tmp_path):
    assert main(["benchmark", "--data", "demo", "--out", str(tmp_path), "--no-progress"]) == 0
    results = json.loads((tmp_path / "metrics_combined.json").read_text())["results"]
    assert set(results) == {
        "norman2019/S1_unseen_perturbation",
        "norman2019/S3_unseen_combo",
        "sciplex_gxe/S1_unseen_perturbation",
        "sciplex_gxe/S2_unseen_context",
    }


@pytest.mark.extended
def test_benchmark_with_jepa_embeddings(tmp_path):
    from celljepa.train.config import load_config

    datasets = demo_datasets()
    jepa = load_config(
        overrides={
            "train": {"max_steps": 12, "batch_size": 64, "log_every": 4},
            "model": {"n_hidden": 32, "predictor_hidden": 32, "n_latent": 16},
        }
    )
    benchmark(
        {"sciplex_gxe": datasets["sciplex_gxe"]},
        {"sciplex_gxe": {"S2_unseen_context": 3}},
        out=tmp_path,
        progress=False,
        jepa_knn=jepa,
    )
    emb = json.loads((tmp_path / "metrics_combined.json").read_text())["jepa_embeddings"]["sciplex_gxe"]
    assert emb["diagnostics"]["dims"] == 16 and emb["knn"]["cell_type"]["X_pca"]["n_classes"] == 3
    assert (tmp_path / "sciplex_gxe" / "jepa" / "model" / "model.pt").is_file()
    assert (tmp_path / "sciplex_gxe" / "jepa" / "checkpoints" / "last.pt").is_file()
    report = (tmp_path / "report.md").read_text()
    section = report.split("## JEPA embeddings", 1)[1].split("## Every fold", 1)[0]
    row = next(line for line in section.splitlines() if line.startswith("| sciplex_gxe |"))
    assert f"{emb['knn']['cell_type']['X_jepa']['accuracy']:.3f}" in row and "| 12 |" in row


@pytest.mark.extended
def test_benchmark_cli_split_seeds_and_the_transductive_flag(ingested, tmp_path, capsys):
    out = tmp_path / "kang"
    assert (
        main(
            [
                "benchmark",
                "--data",
                str(ingested["kang2018"]),
                "--splits",
                "S2_unseen_context:7",
                "--max-folds",
                "2",
                "--no-jepa",
                "--split-seeds",
                "0,1",
                "--transductive",
                "--no-progress",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    data = json.loads((out / "metrics_combined.json").read_text())
    assert data["split_seeds"] == [0, 1] and data["transductive"] is True
    m = data["results"]["kang2018/S2_unseen_context"]
    assert m["n_folds_per_seed"] == {"0": 2, "1": 2} and m["provisional"].startswith("2 split seeds")
    for s in (0, 1):
        for f in (0, 1):
            conf = json.loads(
                (out / "kang2018/S2_unseen_context" / f"split_seed{s}" / f"fold{f}" / "config.json").read_text()
            )
            assert conf["seed"] == s and conf["evaluation"]["transductive"] is True
    # a condition tested under both split seeds is pooled to one row per method, its mean over the seeds
    raw = pd.read_csv(out / "kang2018/S2_unseen_context/per_condition_all_folds.csv")
    pooled = pd.read_csv(out / "kang2018/S2_unseen_context/per_condition.csv")
    assert len(pooled) == raw.groupby(["method", "condition"]).ngroups
    both = raw.groupby(["method", "condition"])["edistance"].agg(["mean", "count"]).reset_index()
    merged = pooled.merge(both, on=["method", "condition"])
    np.testing.assert_allclose(merged["edistance"], merged["mean"])
    assert set(m["seeds"]["split_seeds"]) == {"0", "1"}
    report = (out / "report.md").read_text()
    assert "transductive (held-out contexts' unlabeled controls were fitted on by every method)" in report
    with pytest.raises(SystemExit) as exc:
        main(["benchmark", "--split-seeds", "0,0", "--out", str(tmp_path / "x")])
    assert exc.value.code == 2 and "distinct integers" in capsys.readouterr().err
