"""A trained model that never left its start (early stopping kept step 0) is flagged in metrics and reports.

On real demo folds: transition models with a learning rate of 0 cannot move, so validation keeps their initial
parameters; the same models with a learning rate move away from it and carry no flag.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from celljepa.bench import RunConfig, benchmark, demo_datasets
from celljepa.bench.evaluate import EvalConfig, score_fold
from celljepa.bench.run import write_fold_run
from celljepa.eval.report import NEVER_LEFT
from celljepa.models.baselines import MeanShift, NoChange
from celljepa.models.transition import JEPATransition, TransitionConfig
from celljepa.splits import make_split_folds
from celljepa.train.config import load_config

FAST = {"n_bootstrap": 200, "n_permutations": 100}
SMALL_NET = {"n_hidden": 32, "action_dim": 16, "set_size": 32, "eval_every": 5, "patience": 2}
#: a learning rate of 0: the network cannot move, so validation keeps the initial parameters (step 0)
STUCK = TransitionConfig(lr=0.0, max_steps=20, **SMALL_NET)


def _tiny_jepa():
    return load_config(
        overrides={
            "train": {"max_steps": 12, "batch_size": 64},
            "model": {"n_hidden": 32, "predictor_hidden": 32, "n_latent": 16},
        }
    )


@pytest.fixture(scope="module")
def sciplex():
    return demo_datasets()["sciplex_gxe"]


@pytest.fixture(scope="module")
def s2_fold(sciplex):
    return make_split_folds(sciplex.obs, "S2_unseen_context", dataset_id="sciplex_gxe", n_folds=3)[0]


@pytest.fixture(scope="module")
def stuck_fold(sciplex, s2_fold, tmp_path_factory):
    """The fold scored with a JEPA encoder, the primary jepa_set and its PCA twin, both unable to move."""
    methods = [
        NoChange(),
        MeanShift(),
        JEPATransition("set", STUCK),
        JEPATransition("set", STUCK, space="pca"),
    ]
    result = score_fold(sciplex, s2_fold, methods, EvalConfig(seed=0, **FAST), jepa=_tiny_jepa())
    out = tmp_path_factory.mktemp("stuck_fold")
    write_fold_run(result, sciplex, out, config={"methods": result.params})
    return result, out


def test_a_model_kept_at_step_0_is_flagged_in_params_metrics_and_the_fold_report(stuck_fold):
    result, out = stuck_fold
    for name in ("jepa_set", "pca_set"):
        p = result.params[name]
        assert p["best_step"] == 0 and p["left_start"] is False and p["steps_run"] > 0, p
    assert "left_start" not in result.params["no_change"]  # a baseline does not train: nothing to flag
    flags = json.loads((out / "metrics.json").read_text())["never_left_start"]
    assert set(flags) == {"jepa_set", "pca_set"}
    for entry in flags.values():
        assert entry["all_seeds"] and entry["n_seeds"] == 1 and entry["init"][0] in ("no_change", "mean_shift")
    assert json.loads((out / "config.json").read_text())["methods"]["jepa_set"]["left_start"] is False
    # the flag is honest: a model kept at its start predicts with its starting map (here: the context's controls)
    per = result.per_condition.pivot(index="condition", columns="method", values="edistance")
    for name, entry in flags.items():
        if entry["init"][0] == "no_change":
            np.testing.assert_allclose(per[name], per["no_change"], rtol=1e-6)
    report = (out / "report.md").read_text()
    assert "**Never left its start**" in report
    assert f"- `jepa_set` {NEVER_LEFT}" in report and f"- `pca_set` {NEVER_LEFT}" in report
    assert "| **jepa_set** (primary) (never left its start) |" in report  # its row of the methods table
    v = result.metrics["verdict"]
    assert v["model"] == "jepa_set" and v["vs_pca_twin"]["twin"] == "pca_set"
    assert (
        "primary − PCA twin**: `jepa_set` and `pca_set` both never left their start in 1 of 1 fold: early stopping "
        "kept both initial models (step 0)" in report
    )


def test_a_model_that_trains_carries_no_flag(tmp_path):
    # Norman 2019 S1, fold 0: the set model on PCA improves on its start on validation (best step 40 of 60)
    norman = demo_datasets()["norman2019"]
    fold = make_split_folds(norman.obs, "S1_unseen_perturbation", dataset_id="norman2019")[0]
    moving = TransitionConfig(lr=3e-3, max_steps=60, **{**SMALL_NET, "eval_every": 10, "patience": 3})
    result = score_fold(
        norman, fold, [MeanShift(), JEPATransition("set", moving, space="pca")], EvalConfig(seed=0, **FAST)
    )
    p = result.params["pca_set"]
    assert p["left_start"] is True and p["best_step"] > 0, p
    assert "never_left_start" not in result.metrics
    write_fold_run(result, norman, tmp_path, config={"methods": result.params})
    report = (tmp_path / "report.md").read_text()
    assert "never left its start" not in report.lower()


def test_the_benchmark_report_flags_the_fold_and_the_verdict_rows(sciplex, tmp_path, capsys):
    benchmark(
        {"sciplex_gxe": sciplex},
        {"sciplex_gxe": {"S2_unseen_context": 3}},
        out=tmp_path,
        progress=True,  # pytest's stderr is no terminal: the fold bar only, never the steps inside a fold
        run=RunConfig(jepa=_tiny_jepa(), transition=STUCK, model_seeds=(0,), evaluation=EvalConfig(**FAST)),
        max_folds=1,
    )
    per_fold = json.loads((tmp_path / "metrics_combined.json").read_text())["per_fold"]
    assert len(per_fold) == 1
    assert set(per_fold[0]["never_left_start"]) == {"jepa_prototype", "jepa_set", "pca_set"}
    fold_report = (tmp_path / "sciplex_gxe/S2_unseen_context/split_seed0/fold0/report.md").read_text()
    assert f"- `jepa_set` {NEVER_LEFT}" in fold_report
    report = (tmp_path / "report.md").read_text()
    table = report.split("## Every fold", 1)[1].split("## Compute", 1)[0]
    assert "| never left its start |" in table
    row = next(line for line in table.splitlines() if line.startswith("| sciplex_gxe |"))
    assert row.endswith("| jepa_prototype, jepa_set, pca_set |")
    verdict_row = next(line for line in report.splitlines() if line.startswith("| sciplex_gxe | S2_unseen_context |"))
    assert "(both sides never left their start in 1 of 1 fold)" in verdict_row
    assert "- **sciplex_gxe S2_unseen_context, primary − PCA twin**: `jepa_set` and `pca_set` both never left" in report
    err = capsys.readouterr().err
    assert "benchmark:" in err and "scoring test" not in err and "jepa_set seed 0" not in err
    # the per-fold table is the fold's own record, read back from its metrics
    fold_metrics = json.loads((tmp_path / "sciplex_gxe/S2_unseen_context/split_seed0/fold0/metrics.json").read_text())
    assert fold_metrics["never_left_start"] == per_fold[0]["never_left_start"]
