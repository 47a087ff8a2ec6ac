"""Sweeps over transition settings: the model-seed spread on validation conditions and the seed-spread rule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _grids import tiny_grid

from celljepa._errors import InputError
from celljepa.bench.sweep import SweepGrid, ablation_configs, load_grid, seed_spread_choice
from celljepa.cli import main
from celljepa.models.transition import TransitionConfig

REPO = Path(__file__).resolve().parents[2]
KEYS = ["n/S1", "n/S1g", "n/S3", "s/S1", "s/S2"]


def _grid(*ablations: str) -> SweepGrid:
    return SweepGrid(
        seeds=(0, 1, 2),
        split_seeds=(0,),
        max_folds=None,
        jepa={},
        transition={},
        datasets={},
        ablations={a: {} for a in ablations},
        rule="seed_spread",
    )


def _rows(ablation: str, per_key: dict[str, list[float]]) -> list[dict]:
    return [
        {
            "ablation": ablation,
            "dataset_split": key,
            "model_seeds": [0, 1, 2],
            "methods": {
                "jepa_set": {
                    "edistance": float(np.mean(means)),
                    "seed_sd": float(np.std(means, ddof=1)),
                    "seed_means": dict(enumerate(means)),
                }
            },
        }
        for key, means in per_key.items()
    ]


def test_seed_spread_rule_on_constructed_cases():
    default = _rows("default", {k: [0.50, 0.60, 0.70] for k in KEYS})  # SD 0.1 everywhere
    steady = {k: [0.58, 0.60, 0.62] for k in KEYS}  # SD 0.02, the same mean
    # four of five lower, none worse: chosen
    four = {**steady, "s/S2": [0.40, 0.60, 0.80]}
    choice = seed_spread_choice(_grid("default", "four"), default + _rows("four", four))
    assert choice["chosen"] == "four" and len(choice["ablations"]["four"]["lower_sd"]) == 4
    # three of five lower: not enough
    three = {**four, "s/S1": [0.40, 0.60, 0.80]}
    assert seed_spread_choice(_grid("default", "three"), default + _rows("three", three))["chosen"] == "default"
    # steadier but worse on one dataset/split by more than its own SD (0.02): refused
    worse = {**steady, "n/S3": [0.68, 0.70, 0.72]}
    choice = seed_spread_choice(_grid("default", "worse"), default + _rows("worse", worse))
    assert choice["chosen"] == "default" and choice["ablations"]["worse"]["worse_mean"] == ["n/S3"]
    # better means are never held against a candidate
    better = {k: [0.28, 0.30, 0.32] for k in KEYS}
    assert seed_spread_choice(_grid("default", "better"), default + _rows("better", better))["chosen"] == "better"
    # two that qualify: the first in the grid's order (the cheapest) wins, not the steadier one
    steadier = {k: [0.599, 0.60, 0.601] for k in KEYS}
    rows = default + _rows("cheap", steady) + _rows("costly", steadier)
    assert seed_spread_choice(_grid("default", "cheap", "costly"), rows)["chosen"] == "cheap"
    # a candidate missing a dataset/split (a task not finished) is incomplete, never chosen
    partial = _rows("partial", {k: v for k, v in steady.items() if k != "n/S1"})
    choice = seed_spread_choice(_grid("default", "partial"), default + partial)
    assert choice["chosen"] == "default" and choice["ablations"]["partial"] == {
        "complete": False,
        "dataset_splits": 4,
        "of": 5,
    }


def test_transition_keys_of_an_ablation_change_the_transition_config_only():
    jepa, transition = ablation_configs(
        {"train.max_steps": 400}, {"set_size": 64}, {"transition.lr_warmup": 100, "mask.ratio": 0.5}, 2
    )
    assert (transition.lr_warmup, transition.set_size, transition.seed) == (100, 64, 2)
    assert (jepa.train.max_steps, jepa.mask.ratio, jepa.train.seed) == (400, 0.5, 2)
    with pytest.raises(InputError, match="lr_warmpu.*Did you mean 'lr_warmup'"):
        ablation_configs({}, {}, {"transition.lr_warmpu": 1}, 0)


def test_the_reliability_grid_loads_with_its_candidates_cheapest_first(tmp_path):
    grid = load_grid(REPO / "configs" / "sweeps" / "reliability.yaml")
    assert grid.rule == "seed_spread" and grid.reference == "default" and grid.seeds == (0, 1, 2)
    assert list(grid.ablations) == ["default", "warmup_cosine", "longer", "ensemble3"]
    assert len(grid.tasks) == 4 * 3 * 3  # ablation × model seed × fold (3 folds per demo split)
    configs = {a: ablation_configs(grid.jepa, grid.transition, o, 0)[1] for a, o in grid.ablations.items()}
    assert (configs["warmup_cosine"].lr_warmup, configs["warmup_cosine"].lr_schedule) == (100, "cosine")
    assert (configs["longer"].max_steps, configs["longer"].patience) == (1600, 12)
    # every candidate starts from the default the sweep ran with: one network (the ensemble of 3 is the default now)
    assert configs["ensemble3"].ensemble == 3 and configs["default"] == TransitionConfig().replace(seed=0, ensemble=1)
    assert configs["longer"].ensemble == configs["warmup_cosine"].ensemble == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text((REPO / "configs" / "sweeps" / "reliability.yaml").read_text().replace("ensemble: 3", "ensembel: 3"))
    with pytest.raises(InputError, match="ablation ensemble3.*ensembel"):
        load_grid(bad)
    bad.write_text("rule: lowest\ndatasets: {demo: {sciplex_gxe: [S2_unseen_context]}}\nablations: {default: {}}\n")
    with pytest.raises(InputError, match="rule='lowest' is not one of validation_mean, seed_spread"):
        load_grid(bad)


GRID = tiny_grid(
    "seeds: [0, 1]",
    "max_folds: 1",
    "rule: seed_spread",
    ablations=("default: {}", "warmup: {transition.lr_warmup: 10, transition.lr_schedule: cosine}"),
)


@pytest.mark.extended
def test_a_transition_sweep_records_each_seeds_validation_mean_and_applies_the_rule(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID)
    out = tmp_path / "sweep"
    assert main(["sweep", "--grid", str(grid), "--out", str(out), "--no-progress"]) == 0
    task = json.loads((out / "warmup" / "seed1" / "task.json").read_text())
    assert task["transition"]["lr_warmup"] == 10 and task["transition"]["lr_schedule"] == "cosine"
    assert task["jepa"]["train"]["seed"] == 1 and task["transition"]["seed"] == 1
    assert "lr_warmup" not in json.loads((out / "default" / "seed0" / "task.json").read_text())["transition"]
    table = json.loads((out / "ablation.json").read_text())
    for ablation in ("default", "warmup"):
        row = next(r for r in table["validation"] if r["ablation"] == ablation)
        means = []
        for seed in (0, 1):
            v = pd.read_csv(
                out / ablation / f"seed{seed}" / "sciplex_gxe" / "S2_unseen_context" / "validation_all_folds.csv"
            )
            means.append(v.loc[v["method"] == "jepa_set", "edistance"].mean())
        got = row["methods"]["jepa_set"]
        assert [got["seed_means"][str(s)] for s in (0, 1)] == pytest.approx(means)
        assert got["seed_sd"] == pytest.approx(np.std(means, ddof=1))
        assert row["methods"]["pca_set"]["seed_sd"] is not None
    choice = table["choice"]
    assert choice["model"] == "jepa_set" and choice["ablations"]["warmup"]["complete"]
    wins = choice["ablations"]["warmup"]["wins"]
    assert choice["chosen"] == ("warmup" if wins else "default")
    md = (out / "ablation.md").read_text()
    assert "## Model-seed spread on validation" in md and "| sciplex_gxe/S2_unseen_context | warmup |" in md
    assert "seed SD lower on" in md
