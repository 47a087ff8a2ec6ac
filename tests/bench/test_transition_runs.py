"""train-transition, sweep and the benchmark with JEPA models, end to end through the CLI on real data."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from _grids import tiny_grid

import celljepa as cj
from celljepa.bench import RunConfig, benchmark, demo_datasets
from celljepa.cli import main
from celljepa.eval.verdict import label
from celljepa.models.transition import JEPATransition, TransitionConfig
from celljepa.train.config import load_config

SMALL = [
    "--set",
    "train.batch_size=64",
    "--set",
    "model.n_hidden=32",
    "--set",
    "model.predictor_hidden=32",
    "--set",
    "model.n_latent=16",
]


@pytest.fixture(scope="module")
def kang_fold(ingested, tmp_path_factory):
    out = tmp_path_factory.mktemp("kang_splits")
    assert (
        main(["splits", str(ingested["kang2018"]), "--split", "S2_unseen_context", "--folds", "7", "--out", str(out)])
        == 0
    )
    return sorted(out.glob("kang2018.S2_unseen_context.seed0.fold*.json"))[0]


@pytest.fixture(scope="module")
def kang_pretrained(ingested, kang_fold, tmp_path_factory):
    run = tmp_path_factory.mktemp("kang_jepa")
    assert (
        main(
            [
                "pretrain",
                str(ingested["kang2018"]),
                "--split-file",
                str(kang_fold),
                "--out",
                str(run),
                "--fast-dev",
                "--no-progress",
                *SMALL,
            ]
        )
        == 0
    )
    return run


def test_train_transition_on_kang_unseen_cell_type(ingested, kang_fold, kang_pretrained, tmp_path, capsys):
    out = tmp_path / "tt"
    assert (
        main(
            [
                "train-transition",
                str(ingested["kang2018"]),
                "--jepa",
                str(kang_pretrained),
                "--split",
                str(kang_fold),
                "--out",
                str(out),
                "--set",
                "max_steps=30",
                "--set",
                "eval_every=10",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "kang2018 S2_unseen_context fold 0" in printed and "(chosen on validation)" in printed
    m = json.loads((out / "metrics.json").read_text())
    assert {"jepa_set", "jepa_prototype"} <= set(m["methods"]) and m["verdict"]["n"] == m["n_effect_conditions"]
    # one fold of Kang S2 has one test condition: never enough for a claim
    assert m["n_test_conditions"] == 1 and m["verdict"]["outcome"] in ("not claimable", "undetermined")
    assert "against `" in printed and m["primary"] == "jepa_set"
    conf = json.loads((out / "config.json").read_text())
    assert conf["transition"]["max_steps"] == 30 and conf["encoder_split_matches"] is True
    assert "jepa_set" in conf["methods"] and conf["methods"]["jepa_set"]["decoder_alpha"] > 0
    report = (out / "report.md").read_text()
    assert "## Methods" in report and "| jepa_set |" in report and "| jepa_prototype |" in report
    assert "## Diagnostics in the JEPA embedding space (secondary)" in report
    # the saved model predicts again, with its encoder and evaluation space
    model = JEPATransition.load(out / "models" / "jepa_set")
    adata = ad.read_h5ad(ingested["kang2018"])
    test_ctx = json.loads(kang_fold.read_text())["test_groups"][0]
    pred = cj.tl.predict_perturbation(adata, model, perturbation="stimulated", context=test_ctx)
    n_ctrl = int(((adata.obs["context_id"] == test_ctx) & adata.obs["is_control"]).sum())
    assert pred.n_obs == n_ctrl and pred.obsm["X_jepa"].shape[1] == 16 and np.isfinite(pred.X).all()


def test_train_transition_refuses_an_encoder_that_saw_the_test_cells(ingested, kang_fold, tmp_path, capsys):
    run = tmp_path / "unsplit"
    assert main(["pretrain", str(ingested["kang2018"]), "--out", str(run), "--fast-dev", "--no-progress", *SMALL]) == 0
    code = main(
        [
            "train-transition",
            str(ingested["kang2018"]),
            "--jepa",
            str(run),
            "--split-file",
            str(kang_fold),
            "--out",
            str(tmp_path / "tt"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "pretrained without a split" in err and "--allow-unsplit-encoder" in err
    assert not (tmp_path / "tt").exists()


@pytest.mark.extended
def test_sweep_runs_tasks_and_collects_the_ablation_table(tmp_path, capsys):
    grid = tmp_path / "grid.yaml"
    grid.write_text(
        tiny_grid(
            "seeds: [0, 1]",
            "split_seeds: [0, 1]",
            "max_folds: 1",
            ablations=("default: {}", "ema_off: {train.ema: false}"),
        )
    )
    out = tmp_path / "sweep"
    assert main(["sweep", "--grid", str(grid), "--out", str(out), "--list"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert len(listing) == 4 and listing[3].split("\t")[:3] == ["3", "ema_off", "seed1"]
    assert main(["sweep", "--grid", str(grid), "--out", str(out), "--task", "2", "--no-progress"]) == 0
    assert main(["sweep", "--grid", str(grid), "--out", str(out), "--collect"]) == 1
    printed = capsys.readouterr().out
    assert "1/4 tasks finished" in printed and "missing: task 0 (default, seed 0)" in printed
    task = json.loads((out / "ema_off" / "seed0" / "task.json").read_text())
    assert task["jepa"]["train"]["ema"] is False and task["jepa"]["train"]["seed"] == 0
    assert main(["sweep", "--grid", str(grid), "--out", str(out), "--no-progress"]) == 0
    table = json.loads((out / "ablation.json").read_text())
    assert table["finished"] == 4 and not table["missing"] and len(table["rows"]) == 4
    md = (out / "ablation.md").read_text()
    assert "| sciplex_gxe/S2_unseen_context |" in md and "ema_off: set" in md
    # a model seed changes the encoder; the baselines do not move
    rows = {(r["ablation"], r["seed"]): r for r in table["rows"]}
    assert rows[("default", 0)]["comparator_edistance"] == rows[("default", 1)]["comparator_edistance"]
    assert rows[("default", 0)]["effective_rank"] != rows[("default", 1)]["effective_rank"]
    combined = json.loads((out / "default" / "seed0" / "metrics_combined.json").read_text())
    assert combined["split_seeds"] == [0, 1]
    # the validation table: validation conditions only, averaged over model seeds, one row per ablation
    val = {r["ablation"]: r for r in table["validation"]}
    assert set(val) == {"default", "ema_off"} and val["default"]["model_seeds"] == [0, 1]
    frames = [
        pd.read_csv(out / "default" / f"seed{k}" / "sciplex_gxe" / "S2_unseen_context" / "validation_all_folds.csv")
        for k in (0, 1)
    ]
    v = pd.concat(frames)
    assert set(v["split_seed"]) == {0, 1}
    per_unit = v.groupby(["method", "split_seed", "fold", "condition"])["edistance"].mean()
    assert val["default"]["n_validation"] == len(per_unit["jepa_set"])
    assert np.isclose(val["default"]["methods"]["jepa_set"]["edistance"], per_unit["jepa_set"].mean())
    diff = val["default"]["jepa_set_vs_pca_twin"]
    assert np.isclose(diff["diff"], (per_unit["jepa_set"] - per_unit["pca_set"]).mean())
    assert diff["ci_low"] <= diff["diff"] <= diff["ci_high"]
    assert "## Validation (what a configuration is chosen on)" in md and "split seeds 0, 1" in md
    # every configuration against the first one on the same validation conditions, and the rule's choice
    frames_off = [
        pd.read_csv(out / "ema_off" / f"seed{k}" / "sciplex_gxe" / "S2_unseen_context" / "validation_all_folds.csv")
        for k in (0, 1)
    ]
    off = pd.concat(frames_off).groupby(["method", "split_seed", "fold", "condition"])["edistance"].mean()
    vs = val["ema_off"]["jepa_set_vs_reference"]
    assert vs["reference"] == "default" and np.isclose(vs["diff"], (off["jepa_set"] - per_unit["jepa_set"]).mean())
    choice = table["choice"]
    assert choice["reference"] == "default" and choice["ablations"]["ema_off"]["complete"]
    assert choice["chosen"] == ("ema_off" if choice["ablations"]["ema_off"]["wins"] else "default")
    assert "**Choice on validation**" in md
    grid.write_text(grid.read_text().replace("split_seeds: [0, 1]", "split_seeds: [0, 1]\nsplit_seed: 3"))
    assert main(["sweep", "--grid", str(grid), "--out", str(out), "--list"]) == 1
    assert "give split_seed or split_seeds, not both" in capsys.readouterr().err


@pytest.mark.extended
def test_sweep_fold_tasks_pool_to_the_numbers_of_one_task_running_every_fold(tmp_path, capsys):
    per_fold, whole = tmp_path / "per_fold.yaml", tmp_path / "whole.yaml"
    per_fold.write_text(tiny_grid("seeds: [0]", "max_folds: 2", "fold_tasks: true"))
    whole.write_text(tiny_grid("seeds: [0]", "max_folds: 2", "fold_tasks: false"))
    out_f, out_w = tmp_path / "f", tmp_path / "w"
    assert main(["sweep", "--grid", str(per_fold), "--out", str(out_f), "--list"]) == 0
    listing = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [row[:4] for row in listing] == [["0", "default", "seed0", "fold0"], ["1", "default", "seed0", "fold1"]]
    assert main(["sweep", "--grid", str(per_fold), "--out", str(out_f), "--task", "1", "--no-progress"]) == 0
    assert main(["sweep", "--grid", str(per_fold), "--out", str(out_f), "--collect"]) == 1
    printed = capsys.readouterr().out
    assert "1/2 tasks finished" in printed and "missing: task 0 (default, seed 0): not started" in printed
    assert json.loads((out_f / "ablation.json").read_text())["rows"] == []  # half a pair is not pooled
    (out_f / "default" / "seed0" / "fold0").mkdir(parents=True)  # a task that died before writing results
    assert main(["sweep", "--grid", str(per_fold), "--out", str(out_f), "--collect"]) == 1
    assert "started, not finished (failed or still running)" in capsys.readouterr().out
    assert main(["sweep", "--grid", str(per_fold), "--out", str(out_f), "--task", "0", "--no-progress"]) == 0
    assert main(["sweep", "--grid", str(per_fold), "--out", str(out_f), "--collect"]) == 0
    assert main(["sweep", "--grid", str(whole), "--out", str(out_w), "--no-progress"]) == 0
    (a,), (b,) = (json.loads((o / "ablation.json").read_text())["rows"] for o in (out_f, out_w))
    assert a["n"] == b["n"] > 0 and a["folds"] == b["folds"] == 2
    for key in (
        "comparator",
        "comparator_edistance",
        "jepa_set",
        "jepa_set_ci",
        "jepa_set_diff",
        "jepa_set_diff_ci",
        "verdict",
        "verdict_n",
    ):
        assert a[key] == b[key], key


@pytest.mark.extended
def test_benchmark_with_jepa_models_writes_the_verdict(tmp_path):
    datasets = demo_datasets()
    jepa = load_config(
        overrides={
            "train": {"max_steps": 12, "batch_size": 64},
            "model": {"n_hidden": 32, "predictor_hidden": 32, "n_latent": 16},
        }
    )
    combined = benchmark(
        {"sciplex_gxe": datasets["sciplex_gxe"]},
        {"sciplex_gxe": {"S2_unseen_context": 3}},
        out=tmp_path,
        progress=False,
        run=RunConfig(jepa=jepa, transition=TransitionConfig(max_steps=20), model_seeds=(0, 1)),
        max_folds=2,
    )
    m = combined["sciplex_gxe/S2_unseen_context"]
    assert m["n_folds"] == 2 and m["verdict"]["outcome"] in ("not claimable", "undetermined")
    # every model seed's record of a trained method, in the fold's config
    conf = json.loads(
        (tmp_path / "sciplex_gxe" / "S2_unseen_context" / "split_seed0" / "fold0" / "config.json").read_text()
    )
    assert set(conf["methods"]["jepa_set"]["per_seed"]) == {"0", "1"}
    assert "per_seed" not in conf["methods"]["jepa_set"]["per_seed"]["1"]
    assert set(m["verdict"]["seed_means"]["jepa_set"]) == {0, 1} and m["model_seeds"] == [0, 1]
    assert m["roles"]["pca_set"] == "pca_twin" and m["comparator_choice"]["validation"]["pca_set"]["eligible"]
    report = (tmp_path / "report.md").read_text()
    assert "## Verdict: the pre-registered JEPA model against the comparator chosen on validation" in report
    assert "**Provisional verdict**: 1 split seed and 2 model seeds" in report
    row = next(line for line in report.splitlines() if line.startswith("| sciplex_gxe | S2_unseen_context |"))
    assert f"**{label(m['verdict']['edistance'])}**" in row and "pca_set" in m["methods"]
    twin = m["verdict"]["vs_pca_twin"]
    assert f"{twin['diff']:.3f} [{twin['ci_low']:.3f}, {twin['ci_high']:.3f}]" in row
    assert "collapsed folds" in report and "JEPA pretraining" in report
    fold_conf = json.loads((tmp_path / "sciplex_gxe/S2_unseen_context/split_seed0/fold0/config.json").read_text())
    assert fold_conf["jepa"]["train"]["max_steps"] == 12 and fold_conf["transition"]["max_steps"] == 20
    assert fold_conf["methods"]["jepa_encoder"]["steps"] == 12


def _tensors(obj, prefix=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors(v, f"{prefix}{k}.")
    elif hasattr(obj, "dtype") and hasattr(obj, "shape"):
        yield prefix, obj


@pytest.mark.extended
@pytest.mark.skipif(not __import__("torch").distributed.is_available(), reason="torch without torch.distributed")
def test_train_transition_under_torchrun_matches_one_process(ingested, kang_fold, kang_pretrained, tmp_path):
    import os
    import subprocess
    import sys

    import torch

    args = [
        "train-transition",
        str(ingested["kang2018"]),
        "--jepa",
        str(kang_pretrained),
        "--split-file",
        str(kang_fold),
        "--set",
        "max_steps=30",
        "--set",
        "eval_every=10",
        "--kinds",
        "set",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run(
        [sys.executable, "-m", "celljepa.cli", *args, "--out", str(tmp_path / "one")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "celljepa.cli",
            *args,
            "--out",
            str(tmp_path / "two"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr
    assert "distributed: 2 ranks" in two.stderr
    a = torch.load(tmp_path / "one" / "models" / "jepa_set" / "transition.pt", weights_only=True)
    b = torch.load(tmp_path / "two" / "models" / "jepa_set" / "transition.pt", weights_only=True)
    ta, tb = dict(_tensors(a)), dict(_tensors(b))
    assert ta.keys() == tb.keys() and any("body" in k for k in ta)
    worst = max(float((ta[k].double() - tb[k].double()).abs().max()) for k in ta if ta[k].numel())
    print(f"transition set model, 2 ranks vs 1 process: largest weight difference {worst:.2e}")
    assert worst < 1e-5, f"largest difference {worst:.2e}"
    ma = json.loads((tmp_path / "one" / "metrics.json").read_text())["methods"]["jepa_set"]["edistance"]["mean"]
    mb = json.loads((tmp_path / "two" / "metrics.json").read_text())["methods"]["jepa_set"]["edistance"]["mean"]
    assert mb == pytest.approx(ma, rel=1e-3)


def test_the_choice_rule_needs_a_majority_a_ci_below_and_none_above():
    from types import SimpleNamespace

    from celljepa.bench.sweep import _choice

    grid = SimpleNamespace(reference="free", ablations={"free": {}, "a": {}, "b": {}, "c": {}}, seeds=[0, 1])

    def rows(ablation, diffs):
        out = []
        for k, (d, lo, hi) in enumerate(diffs):
            r = {"ablation": ablation, "dataset_split": f"d{k}", "model_seeds": [0, 1]}
            if ablation != "free":
                r["jepa_set_vs_reference"] = {"diff": d, "ci_low": lo, "ci_high": hi}
            out.append(r)
        return out

    val = (
        rows("free", [(0, 0, 0)] * 3)
        + rows("a", [(-0.1, -0.2, -0.05), (-0.01, -0.05, 0.03), (0.01, -0.02, 0.04)])  # 2 of 3 lower, 1 CI below
        + rows("b", [(-0.1, -0.2, -0.05), (-0.01, -0.05, 0.03), (0.05, 0.01, 0.09)])  # ... but one CI above
        + rows("c", [(-0.1, -0.2, 0.05), (-0.01, -0.05, 0.03), (0.01, -0.02, 0.04)])
    )  # no CI below
    choice = _choice(grid, val)
    assert [choice["ablations"][x]["wins"] for x in "abc"] == [True, False, False]
    assert choice["ablations"]["b"]["worse_ci"] == ["d2"] and choice["ablations"]["c"]["better_ci"] == []
    assert choice["chosen"] == "a"
    val[-1]["model_seeds"] = [0]  # a configuration missing a seed cannot be chosen, nor judged
    assert not _choice(grid, val)["ablations"]["c"]["complete"]
    assert _choice(grid, [r for r in val if r["ablation"] != "a"])["chosen"] == "free"
