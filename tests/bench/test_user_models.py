"""Bring your own model: a PerturbationModel named "module:Class" is scored in the benchmark beside the baselines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from celljepa import InputError
from celljepa.bench import EvalConfig, RunConfig, benchmark, demo_datasets
from celljepa.bench.config import parse_model_options
from celljepa.bench.run import task_dir
from celljepa.models import PerturbationModel, load_model_class, make_model, model_identity
from celljepa.models.baselines import MeanShift

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
ME = __name__  # this module, importable by its name while the tests run
PLAN = {"sciplex_gxe": {"S2_unseen_context": 3}}
SPLIT = ("sciplex_gxe", "S2_unseen_context")


class SeededShift(MeanShift):
    """The mean shift plus a small seeded offset: a model whose constructor takes the model seed."""

    name = "seeded_shift"
    fits: list = []  # (seed, refit) of every fit, for the test

    def __init__(self, seed: int = 0, scale: float = 1e-3):
        self.seed, self.scale = seed, scale

    def fit(self, train, *, refit=True):
        SeededShift.fits.append((self.seed, refit))
        super().fit(train, refit=refit)
        self._offset = np.random.default_rng(self.seed).normal(scale=self.scale, size=train.z.shape[1])
        return self

    def predict_shift(self, condition):
        return super().predict_shift(condition) + self._offset


class Unnamed(MeanShift):
    name = PerturbationModel.name  # the base class's default: named after the class


class NamedLikeABaseline(MeanShift):
    pass  # keeps the name "mean_shift"


class SameName(MeanShift):
    name = "seeded_shift"


class JepaRole(MeanShift):
    name = "my_jepa"
    role = "jepa"


class NotAModel:
    pass


@pytest.fixture
def examples(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))


@pytest.fixture(scope="module")
def sciplex():
    return {"sciplex_gxe": demo_datasets()["sciplex_gxe"]}


def test_a_model_is_found_by_its_spec_and_every_bad_spec_says_the_fix(examples):
    from my_model import ShrunkMeanShift

    assert load_model_class("my_model:ShrunkMeanShift") is ShrunkMeanShift
    assert load_model_class(f"{ME}:SeededShift") is SeededShift
    with pytest.raises(InputError, match=r"module 'no_such_module' is not importable.*PYTHONPATH"):
        load_model_class("no_such_module:Model")
    with pytest.raises(InputError, match=r"has no attribute 'ShrunkMeanShfit'\. Did you mean 'ShrunkMeanShift'\?"):
        load_model_class("my_model:ShrunkMeanShfit")
    with pytest.raises(InputError, match="not a subclass of celljepa.models.PerturbationModel"):
        load_model_class(f"{ME}:NotAModel")
    with pytest.raises(InputError, match="is abstract: it does not implement fit, predict"):
        load_model_class("celljepa.models.base:PerturbationModel")
    with pytest.raises(InputError, match="not of the form 'package.module:Class'"):
        load_model_class("my_model.ShrunkMeanShift")


def test_options_seed_name_and_role_are_checked(examples):
    m = make_model(f"{ME}:SeededShift", seed=7, options={"scale": 0.5})
    assert (m.seed, m.scale, m.name) == (7, 0.5, "seeded_shift")
    shrunk = make_model("my_model:ShrunkMeanShift", seed=7, options={"shrinkage": 0.5})  # no seed parameter
    assert shrunk.shrinkage == 0.5 and not shrunk.tunes_on_validation
    assert make_model(Unnamed, seed=0, options={}).name == "Unnamed"
    with pytest.raises(
        InputError, match=r"has no option 'shrink'\. Did you mean 'shrinkage'\?.*takes: shrinkage, grid"
    ):
        make_model("my_model:ShrunkMeanShift", seed=0, options={"shrink": 0.5})
    with pytest.raises(InputError, match="'seed' is not an option"):
        make_model(f"{ME}:SeededShift", seed=0, options={"seed": 3})
    with pytest.raises(InputError, match=r"raised ValueError: shrinkage must lie in \[0, 1\]"):
        make_model("my_model:ShrunkMeanShift", seed=0, options={"shrinkage": 2})
    with pytest.raises(InputError, match="role 'jepa' is not one a user model may take"):
        make_model(JepaRole, seed=0, options={})
    ident = model_identity("my_model:ShrunkMeanShift", {"shrinkage": 0.5})
    assert ident["class"] == "my_model:ShrunkMeanShift" and ident["name"] == "shrunk_mean_shift"
    assert ident["role"] == "baseline" and ident["options"] == {"shrinkage": 0.5} and len(ident["source_digest"]) == 16


def test_the_run_config_loads_its_models_before_any_fold(examples):
    run = RunConfig(
        model_seeds=(0, 1),
        models=["my_model:ShrunkMeanShift", SeededShift],
        model_options={"ShrunkMeanShift": {"shrinkage": 0.25}, "seeded_shift": {"scale": 0.1}},
    )
    # options keyed by class name or model name are stored under the model's spec
    assert run.model_options == {
        "my_model:ShrunkMeanShift": {"shrinkage": 0.25},
        f"{ME}:SeededShift": {"scale": 0.1},
    }
    made = run.user_models(1)
    assert [m.name for m in made] == ["shrunk_mean_shift", "seeded_shift"] and made[1].seed == 1
    assert made[0] is not run.user_models(1)[0]  # a fresh instance per call (per fold and model seed)
    with pytest.raises(InputError, match="the name of a built-in method"):
        RunConfig(models=[NamedLikeABaseline])
    with pytest.raises(InputError, match="are both named 'seeded_shift'"):
        RunConfig(models=[SeededShift, SameName])
    with pytest.raises(InputError, match="a model is named twice"):
        RunConfig(models=[SeededShift, f"{ME}:SeededShift"])
    with pytest.raises(InputError, match="model_options key 'Shrunk' is not a model of this run"):
        RunConfig(models=["my_model:ShrunkMeanShift"], model_options={"Shrunk": {}})
    with pytest.raises(InputError, match="primary model 'shrunk_mean_shfit' is not a method.*Did you mean"):
        RunConfig(models=["my_model:ShrunkMeanShift"], evaluation=EvalConfig(primary="shrunk_mean_shfit"))
    with pytest.raises(InputError, match="has no option 'shrink'"):
        RunConfig(models=["my_model:ShrunkMeanShift"], model_options={"ShrunkMeanShift": {"shrink": 1}})


def test_command_line_options_are_parsed_per_model(examples):
    one = ["my_model:ShrunkMeanShift"]
    assert parse_model_options(one, ["shrinkage=0.5", "grid=[0, 1]"]) == {
        "my_model:ShrunkMeanShift": {"shrinkage": 0.5, "grid": [0, 1]}
    }
    two = ["my_model:ShrunkMeanShift", f"{ME}:SeededShift"]
    got = parse_model_options(two, ["ShrunkMeanShift.shrinkage=0.5", "seeded_shift.scale=1e-2"])
    assert got == {"my_model:ShrunkMeanShift": {"shrinkage": 0.5}, f"{ME}:SeededShift": {"scale": 0.01}}
    with pytest.raises(InputError, match="this run has 2 models; say whose option it is"):
        parse_model_options(two, ["shrinkage=0.5"])
    with pytest.raises(
        InputError, match=r"'ShrunkMeanShfit' is not a model of this run\. Did you mean 'ShrunkMeanShift'"
    ):
        parse_model_options(two, ["ShrunkMeanShfit.shrinkage=0.5"])
    with pytest.raises(InputError, match="expected KEY=VALUE"):
        parse_model_options(one, ["shrinkage"])
    with pytest.raises(InputError, match="given twice"):
        parse_model_options(one, ["shrinkage=0.5", "shrinkage=0.2"])
    with pytest.raises(InputError, match="no --model"):
        parse_model_options([], ["shrinkage=0.5"])


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_user_model_is_scored_beside_the_baselines_and_judged_as_primary(examples, sciplex, tmp_path):
    out = tmp_path / "mine"
    SeededShift.fits.clear()
    run = RunConfig(
        model_seeds=(0, 1),
        evaluation=EvalConfig(primary="shrunk_mean_shift", n_bootstrap=1000, n_permutations=200),
    )
    models = [("my_model:ShrunkMeanShift", {"shrinkage": 0.5}), SeededShift]
    combined = benchmark(sciplex, PLAN, out=out, run=run, models=models, max_folds=1, progress=False)
    # each user model is made and fitted once per model seed (training fit for validation, refit for the test)
    assert SeededShift.fits == [(0, False), (0, True), (1, False), (1, True)]
    fold = task_dir(out, *SPLIT, 0, 0)
    per = pd.read_csv(fold / "per_condition.csv")
    methods = set(per["method"])
    assert {"shrunk_mean_shift", "seeded_shift", "mean_shift", "no_change"} <= methods
    assert (per.loc[per["method"] == "shrunk_mean_shift", "role"] == "baseline").all()
    assert per.loc[per["method"] == "shrunk_mean_shift", "edistance"].notna().all()
    seeds = pd.read_csv(fold / "per_condition_seeds.csv")
    assert set(seeds.loc[seeds["method"] == "seeded_shift", "model_seed"]) == {0.0, 1.0}
    config = json.loads((fold / "config.json").read_text())
    assert config["models"]["shrunk_mean_shift"]["class"] == "my_model:ShrunkMeanShift"
    assert config["model_options"] == {"shrunk_mean_shift": {"shrinkage": 0.5}, "seeded_shift": {}}
    assert config["evaluation"]["primary"] == "shrunk_mean_shift"
    assert config["methods"]["shrunk_mean_shift"]["shrinkage"] == 0.5

    m = combined["/".join(SPLIT)]
    assert {"shrunk_mean_shift", "seeded_shift"} <= set(m["methods"])
    # the verdict: the user primary against the best of the rest of the pool, chosen on validation scores
    table = m["comparator_choice"]["validation"]
    assert not table["shrunk_mean_shift"]["eligible"] and "primary" in table["shrunk_mean_shift"]["why"]
    eligible = {k: e["edistance"] for k, e in table.items() if e["eligible"]}
    assert "seeded_shift" in eligible  # a user model that is not the primary joins the pool like any method
    best = min(eligible, key=eligible.get)
    v = m["verdict"]
    assert v["model"] == "shrunk_mean_shift" and v["baseline"] == best == m["comparator"]
    assert v["chosen_on"] == "validation (out-of-sample)" and "vs_pca_twin" not in v  # no PCA twin was scored
    report = (out / "report.md").read_text()
    assert "**shrunk_mean_shift** (primary)" in report  # the methods table marks it
    assert f"On sciplex_gxe S2_unseen_context, `shrunk_mean_shift` cannot be compared with `{best}`" in report
    rows = [line for line in report.splitlines() if line.startswith("| ")]
    for name in ("shrunk_mean_shift", "seeded_shift", "mean_shift", "no_change"):
        assert any(line.split("|")[1].strip().strip("*").startswith(name) for line in rows), name

    # the same inputs: the finished fold is read back; a changed option refuses it, naming what changed
    benchmark(sciplex, PLAN, out=out, run=run, models=models, max_folds=1, progress=False)
    assert json.loads((out / "metrics_combined.json").read_text())["provenance"]["folds_resumed"] == 1
    before = _tree(out)
    changed = [("my_model:ShrunkMeanShift", {"shrinkage": 0.25}), SeededShift]
    with pytest.raises(InputError, match="holds a finished run made with other inputs") as err:
        benchmark(sciplex, PLAN, out=out, run=run, models=changed, max_folds=1, progress=False)
    assert 'model_options.shrunk_mean_shift: {"shrinkage": 0.5} → {"shrinkage": 0.25}' in str(err.value)
    assert "--overwrite" in str(err.value) and _tree(out) == before
