"""The action-conditioned JEPA objective: condition sampling, gradients into the gene vectors, what a
benchmark fold lets it see (training conditions only), persistence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import celljepa as cj
from celljepa import InputError
from celljepa.bench import demo_datasets
from celljepa.data import contract as C
from celljepa.nn.modules import CSRBatch
from celljepa.splits import make_split_folds
from celljepa.train.action import ActionSampler
from celljepa.train.config import load_config
from celljepa.train.loop import action_loss, build_modules

CFG = {
    "model": {"n_hidden": 32, "n_latent": 8, "predictor_hidden": 32},
    "train": {
        "action_weight": 1.0,
        "action_conditions": 4,
        "action_cells": 16,
        "max_steps": 30,
        "batch_size": 64,
        "log_every": 5,
    },
}


@pytest.fixture(scope="module")
def norman():
    return demo_datasets()["norman2019"]


def test_sampler_draws_sets_of_one_condition_and_its_contexts_controls(norman):
    cfg = load_config(overrides=CFG)
    obs = norman.obs
    pid = obs[C.PERTURBATION_ID].astype(str).to_numpy()
    left_out = sorted(set(pid[~obs[C.IS_CONTROL].to_numpy(dtype=bool)]))[0]
    rows = np.flatnonzero(pid != left_out)
    s = ActionSampler.from_obs(obs, rows, list(norman.var_names), cfg=cfg)
    assert s.n_conditions > 5 and not any(n.endswith(f"|{left_out}") for n in s.names)
    assert not any(left_out in t for t in s.tokens)  # its label never enters the vocabulary
    b = s.sample(3)
    again = s.sample(3)
    assert all(np.array_equal(b[k], again[k]) for k in ("ctrl_rows", "pert_rows", "sizes", "token_idx"))
    assert len(b["conditions"]) == 4 and (b["sizes"] <= 16).all()
    assert obs[C.IS_CONTROL].to_numpy(dtype=bool)[b["ctrl_rows"]].all()
    start = 0
    for c, n in zip(b["conditions"], b["sizes"], strict=True):
        pert, ctrl = b["pert_rows"][start : start + n], b["ctrl_rows"][start : start + n]
        assert set(pid[pert]) == {s.names[c].split("|", 1)[1]}
        assert set(obs[C.CONTEXT_ID].astype(str).to_numpy()[ctrl]) == {s.names[c].split("|", 1)[0]}
        start += n
    # Norman's gene tokens point at the encoder's vector of the perturbed gene when it is measured
    measured = [i for i, n in enumerate(s.names) if (s.gene_col[i] >= 0).any()]
    assert measured


def test_action_loss_trains_the_predictor_the_encoder_and_the_perturbed_genes_vectors(norman):
    cfg = load_config(overrides={**CFG, "train": {**CFG["train"], "action_conditions": 64}})
    s = ActionSampler.from_obs(norman.obs, np.arange(norman.n_obs), list(norman.var_names), cfg=cfg)
    modules = build_modules(norman.n_vars, cfg, 0, n_action_tokens=len(s.tokens))
    b = s.sample(0)
    x = norman.X.tocsr()
    loss = action_loss(modules, CSRBatch.from_scipy(x[b["ctrl_rows"]]), CSRBatch.from_scipy(x[b["pert_rows"]]), b, s)
    assert torch.isfinite(loss) and float(loss.detach()) > 0
    loss.backward()
    assert modules["action"].net[-1].weight.grad.abs().sum() > 0
    assert modules["student"].mlp[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in modules["teacher"].parameters())  # the target has no gradient
    # (the zero-initialised head passes no gradient to its inputs at step 0; one step later it does)
    opt = torch.optim.SGD(modules.parameters(), lr=0.1)
    opt.step()
    opt.zero_grad()
    action_loss(
        modules, CSRBatch.from_scipy(x[b["ctrl_rows"]]), CSRBatch.from_scipy(x[b["pert_rows"]]), b, s
    ).backward()
    cols = np.unique(s.gene_col[b["conditions"]])
    cols = cols[cols >= 0]
    assert cols.size and modules["student"].gene_weight.grad[cols].abs().sum() > 0


def test_a_fold_encoder_learns_actions_from_training_conditions_only(norman, monkeypatch):
    from celljepa.bench.evaluate import EvalConfig, fold_encoder, prepare_fold

    seen = {}
    original = cj.models.CellJEPA.train

    def spy(self, *args, **kwargs):
        seen["rows"] = np.asarray(kwargs["action_indices"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cj.models.CellJEPA, "train", spy)
    fold = make_split_folds(norman.obs, "S1_unseen_perturbation", dataset_id="norman2019", n_folds=3, seed=0)[0]
    _, train, _ = prepare_fold(norman, fold, EvalConfig())
    jepa = load_config(overrides={**CFG, "train": {**CFG["train"], "max_steps": 5}})
    fold_encoder(norman, train, fold, jepa)
    names = np.asarray(norman.obs_names)[seen["rows"]]
    ctrl = set(np.asarray(norman.obs_names)[norman.obs[C.IS_CONTROL].to_numpy(dtype=bool)])
    assert not (set(names) - ctrl) & set(fold["val_cells"]) and not set(names) & set(fold["test_cells"])
    pid = norman.obs[C.PERTURBATION_ID].astype(str).to_numpy()[seen["rows"]]
    assert set(pid) - {C.CONTROL_ID} == {c.perturbation_id for c, _ in train.train_conditions}
    assert set(fold["val_groups"]).isdisjoint(pid) and set(fold["test_groups"]).isdisjoint(pid)


def test_the_action_objective_needs_perturbation_labels(norman):
    bare = norman.copy()
    del bare.obs[C.PERTURBATION_TOKENS]
    with pytest.raises(InputError, match="perturbation_tokens"):
        cj.models.CellJEPA(bare, config=CFG).train(progress=False)


def test_an_action_trained_encoder_saves_and_loads(norman, tmp_path):
    model = cj.models.CellJEPA(norman, config={**CFG, "model": {**CFG["model"], "gene_embedding": "go"}})
    model.train(progress=False)
    assert any("action_loss" in h for h in model.history_)
    model.save(tmp_path / "m")
    again = cj.models.CellJEPA.load(tmp_path / "m")
    assert again.action_tokens_ == model.action_tokens_ and "action" in again.module_
    np.testing.assert_allclose(
        again.get_latent_representation(norman), model.get_latent_representation(), rtol=1e-5, atol=1e-5
    )


def test_keep_best_returns_the_weights_of_the_best_validation_step(norman, tmp_path):
    cfg = {
        "model": {"n_hidden": 32, "n_latent": 8, "predictor_hidden": 32},
        "train": {"max_steps": 30, "batch_size": 64, "eval_every": 10, "keep": "best", "lr": 0.05},
    }
    rows = np.arange(norman.n_obs)
    model = cj.models.CellJEPA(norman, config=cfg)
    model.train(progress=False, train_indices=rows[::2], eval_indices=rows[1::2], run_dir=tmp_path / "run")
    evals = [h for h in model.history_ if h.get("split") == "eval"]
    best = min(evals, key=lambda h: h["loss"])
    assert model.train_info_["kept"] == "best" and model.train_info_["kept_step"] == best["step"]
    from_best = cj.models.CellJEPA.load(tmp_path / "run" / "checkpoints" / "best.pt")
    np.testing.assert_allclose(
        model.get_latent_representation(), from_best.get_latent_representation(norman), rtol=1e-5, atol=1e-5
    )
    if best["step"] != 30:  # the last step's weights differ from the kept ones
        last = cj.models.CellJEPA.load(tmp_path / "run" / "checkpoints" / "last.pt")
        assert not np.allclose(model.get_latent_representation(), last.get_latent_representation(norman))
