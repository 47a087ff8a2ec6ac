"""Pretraining on several datasets at once: balanced batches, absent genes, one feature set (real data)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from _realdata import read_quiet

import celljepa as cj
from celljepa.cli import main
from celljepa.nn.modules import CSRBatch
from celljepa.train.config import JEPAConfig
from celljepa.train.data import BalancedBatchPlan
from celljepa.train.loop import _mask, build_modules, step_losses

TINY = [
    "--set",
    "model.n_latent=16",
    "--set",
    "model.n_hidden=32",
    "--set",
    "model.predictor_hidden=32",
    "--set",
    "model.pointer_dim=8",
    "--set",
    "train.batch_size=64",
    "--no-progress",
    "--fast-dev",
]


def test_balanced_plan_gives_every_group_an_equal_share_and_is_a_function_of_the_step():
    groups = np.array(["big"] * 900 + ["small"] * 30 + ["mid"] * 70)
    rows = np.arange(1000)
    plan = BalancedBatchPlan(rows, groups, batch_size=60, seed=3)
    for step in (0, 1, 7, 123):
        batch = plan.rows_for_step(step)
        counts = {g: int((groups[batch] == g).sum()) for g in ("big", "mid", "small")}
        assert counts == {"big": 20, "mid": 20, "small": 20}
    again = BalancedBatchPlan(rows, groups, batch_size=60, seed=3)
    np.testing.assert_array_equal(again.rows_for_step(123), plan.rows_for_step(123))  # no state carried
    # the small group is cycled through completely, each cell once per pass
    seen = np.concatenate([plan.rows_for_step(s) for s in range(3)])
    small = seen[groups[seen] == "small"]  # 60 = two passes over the 30 small-group cells
    assert sorted(small[:30].tolist()) == sorted(small[30:].tolist()) == list(range(900, 930))
    # only the given rows are used (a split's training cells)
    sub = BalancedBatchPlan(np.arange(0, 1000, 2), groups, batch_size=30, seed=0)
    assert (sub.rows_for_step(5) % 2 == 0).all()
    with pytest.raises(cj.InputError, match="cannot hold one cell of each"):
        BalancedBatchPlan(rows, groups, batch_size=2, seed=0)


def test_absent_genes_are_never_prediction_targets():
    cfg = JEPAConfig().replace(
        model={"n_latent": 8, "n_hidden": 16, "predictor_hidden": 16, "pointer_dim": 4},
        mask={"kind": "random", "ratio": 0.9},
    )
    modules = build_modules(40, cfg, seed=0)
    x = CSRBatch.from_scipy(sp.random(6, 40, density=0.5, format="csr", dtype="float32", random_state=0))
    present = torch.ones(6, 40, dtype=torch.bool)
    present[:3, 20:] = False  # the first three cells' dataset does not measure genes 20..39
    seen = {}
    pointer = modules["pointer"]
    original = pointer.forward
    pointer.forward = lambda hidden: (seen.setdefault("hidden", hidden.clone()), original(hidden))[1]
    step_losses(modules, x, _mask(cfg, 7, None), cfg, present=present)
    hidden = seen["hidden"]
    assert not hidden[:3, 20:].any() and hidden[:3, :20].any() and hidden[3:, 20:].any()
    seen.clear()
    step_losses(modules, x, _mask(cfg, 7, None), cfg)
    assert seen["hidden"][:3, 20:].any()  # without the presence mask they would have been targets


def test_pretrain_on_two_real_datasets_with_one_feature_set(ingested, tmp_path, capsys):
    out = tmp_path / "multi"
    kang, pap = ingested["kang2018"], ingested["papalexi2021"]
    assert main(["pretrain", str(kang), str(pap), "--out", str(out), *TINY]) == 0
    assert "effective rank" in capsys.readouterr().out
    fs = cj.datasets.load_feature_set(out / "feature_set.txt")
    assert fs == cj.datasets.load_feature_set("foundation-v1")
    result = json.loads((out / "eval.json").read_text())
    assert result["dataset_id"] == "kang2018+papalexi2021" and result["n_obs"] == 1975 + 20729
    assert result["feature_set"]["id"] == "foundation-v1" and result["feature_set"]["sha256"] == fs.sha256
    absent = result["feature_set"]["absent_genes"]
    assert absent["kang2018"] == len(fs.genes) - 3925 and absent["papalexi2021"] == len(fs.genes) - 171
    assert "balance_key: dataset_id" in (out / "config.yaml").read_text()
    model = cj.models.CellJEPA.load(out)
    assert list(model.var_names) == list(fs.genes)
    # a dataset is embedded after mapping it onto the same list (its absent genes add nothing)
    papalexi = cj.pp.harmonize_genes(read_quiet(pap), fs)
    z = model.get_latent_representation(papalexi[:200].copy(), progress=False)
    assert z.shape == (200, 16) and np.isfinite(z).all()
    with np.load(out / "embeddings.npz") as f:
        np.testing.assert_allclose(f["X_jepa"][1975:2175], z, atol=1e-5)


def test_intersection_feature_set_is_built_from_the_training_files(ingested, tmp_path):
    out = tmp_path / "inter"
    kang, demo = ingested["kang2018"], ingested["perturbench_devel"]
    assert main(["pretrain", str(kang), str(demo), "--feature-set", "intersection", "--out", str(out), *TINY]) == 0
    fs = cj.datasets.load_feature_set(out / "feature_set.txt")
    kang_genes = {g.upper() for g in read_quiet(kang).var_names}
    demo_genes = {g.upper() for g in read_quiet(demo).var_names}
    assert {g.upper() for g in fs.genes} == kang_genes & demo_genes
    assert fs.strategy == "intersection" and fs.sources == ("kang2018", "perturbench_devel")
    result = json.loads((out / "eval.json").read_text())
    assert result["feature_set"]["absent_genes"] == {"kang2018": 0, "perturbench_devel": 0}
    assert (
        main(
            [
                "pretrain",
                str(kang),
                "--split-file",
                "x.json",
                "--feature-set",
                "foundation-v1",
                "--out",
                str(tmp_path / "no"),
            ]
        )
        == 1
    )


def test_dataset_covariate_is_learned_per_training_dataset_and_none_for_an_unseen_one(tmp_path):
    from celljepa.bench import demo_datasets

    d = demo_datasets()
    both = cj.pp.combine_datasets({"norman": d["norman2019"], "sciplex": d["sciplex_gxe"]}, "foundation-v1")
    cfg = JEPAConfig().replace(
        model={"n_latent": 16, "n_hidden": 32, "predictor_hidden": 32, "pointer_dim": 8, "dataset_covariate": True},
        train={"max_steps": 20, "batch_size": 64},
        data={"balance_key": "dataset_id"},
    )
    model = cj.models.CellJEPA(both, config=cfg).train(progress=False)
    assert model.covariate_names_ == ["norman", "sciplex"] and model.covariate_key_ == "dataset_id"
    weight = model.module_["student"].covariate.weight.detach()
    assert weight.shape == (3, 32) and torch.count_nonzero(weight[0]) == 0 and torch.count_nonzero(weight[1:]) > 0
    z = model.get_latent_representation(both[:50].copy())
    unseen = both[:50].copy()
    unseen.obs["dataset_id"] = "another_screen"  # a dataset the model has not seen: no covariate
    z_none = model.get_latent_representation(unseen)
    assert not np.allclose(z, z_none)
    model.save(tmp_path / "m")
    again = cj.models.CellJEPA.load(tmp_path / "m")
    assert again.covariate_names_ == ["norman", "sciplex"]
    np.testing.assert_allclose(again.get_latent_representation(both[:50].copy()), z, atol=1e-6)
    plain = cj.models.CellJEPA(both, config=cfg.replace(model={"dataset_covariate": False}))
    plain.train(max_steps=2, progress=False)
    assert plain.module_["student"].covariate is None
    with pytest.raises(cj.InputError, match="dataset_covariate needs obs"):
        cj.models.CellJEPA(d["norman2019"], config=cfg.replace(data={"balance_key": None})).train(progress=False)
