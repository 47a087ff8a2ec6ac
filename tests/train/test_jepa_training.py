"""CellJEPA training on real cells: determinism, exact resume after a signal, backed streaming, save/load."""

from __future__ import annotations

import os
import signal
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import celljepa as cj
from celljepa import CelljepaWarning, InputError
from celljepa.train.checkpoint import TrainingInterrupted, load_checkpoint

SMALL = {
    "model": {"n_latent": 16, "n_hidden": 32, "predictor_hidden": 32, "pointer_dim": 8},
    "mask": {"kind": "random"},
    "train": {
        "max_steps": 24,
        "batch_size": 64,
        "warmup_steps": 4,
        "log_every": 4,
        "eval_every": 8,
        "checkpoint_every": 8,
    },
    "data": {"eval_cells": 128},
}


def _cfg(**sections):
    from celljepa.train.config import JEPAConfig

    cfg = JEPAConfig.from_dict(SMALL)
    return cfg.replace(**sections) if sections else cfg


@pytest.fixture(scope="module")
def cells(demo_processed):
    """The demo's K562 cells (Norman 2019), 3,375 × 500 real log-normalised profiles."""
    return demo_processed[demo_processed.obs["context_id"] == "k562"].copy()


def _weights(model) -> dict[str, torch.Tensor]:
    return {f"{k}.{n}": t for k, m in model.module_.items() for n, t in m.state_dict().items()}


def _assert_same_weights(a, b):
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def test_same_seed_same_embedding_other_seed_differs(cells):
    z1 = cj.models.CellJEPA(cells, config=_cfg()).train(progress=False).get_latent_representation()
    z2 = cj.models.CellJEPA(cells, config=_cfg()).train(progress=False).get_latent_representation()
    z3 = cj.models.CellJEPA(cells, config=_cfg()).train(seed=1, progress=False).get_latent_representation()
    assert z1.shape == (cells.n_obs, 16) and z1.dtype == np.float32
    assert np.array_equal(z1, z2)
    assert not np.allclose(z1, z3)


def test_signal_checkpoints_and_resume_equals_uninterrupted_run(cells, tmp_path):
    full = cj.models.CellJEPA(cells, config=_cfg()).train(progress=False, run_dir=tmp_path / "full")

    def send_usr1(step, record):
        if step == 11:  # not a checkpoint step: the signal handler must write one
            os.kill(os.getpid(), signal.SIGUSR1)

    run = tmp_path / "interrupted"
    with pytest.raises(TrainingInterrupted) as stop:
        cj.models.CellJEPA(cells, config=_cfg()).train(progress=False, run_dir=run, callback=send_usr1)
    assert stop.value.step == 11 and stop.value.signame == "SIGUSR1"
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 11
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # handlers restored
    resumed = cj.models.CellJEPA(cells, config=_cfg()).train(progress=False, run_dir=run)
    assert resumed.train_info_["resumed_from"] == 11
    _assert_same_weights(full, resumed)
    steps = [r["step"] for r in resumed.history_ if r.get("split") != "eval"]
    assert steps == [r["step"] for r in full.history_ if r.get("split") != "eval"] == list(range(4, 25, 4))
    ckpt = load_checkpoint(run / "checkpoints" / "best.pt")
    assert ckpt["best"]["step"] in (8, 16, 24)


def test_resume_refuses_another_config(cells, tmp_path):
    run = tmp_path / "r"
    cj.models.CellJEPA(cells, config=_cfg(train={"max_steps": 8})).train(progress=False, run_dir=run)
    with pytest.raises(InputError, match="different config"):
        cj.models.CellJEPA(cells, config=_cfg(train={"max_steps": 8, "lr": 1e-4})).train(progress=False, run_dir=run)


def test_backed_streaming_trains_exactly_like_memory(cells, tmp_path):
    import anndata as ad

    path = tmp_path / "k562.h5ad"
    on_disk = cells.copy()
    on_disk.X = sp.csr_matrix(on_disk.X, dtype=np.float32)
    on_disk.write_h5ad(path)
    cfg = _cfg(data={"chunk_size": 500})
    mem = cj.models.CellJEPA(on_disk, config=cfg).train(progress=False)
    backed = ad.read_h5ad(path, backed="r")
    try:
        streamed = cj.models.CellJEPA(backed, config=cfg).train(progress=False)
        z = streamed.get_latent_representation()
    finally:
        backed.file.close()
    _assert_same_weights(mem, streamed)
    assert np.array_equal(z, mem.get_latent_representation())


def test_save_load_and_gene_alignment(cells, tmp_path):
    model = cj.models.CellJEPA(cells, config=_cfg()).train(progress=False)
    z = model.get_latent_representation()
    folder = model.save(tmp_path / "jepa")
    with pytest.raises(InputError, match="exists"):
        model.save(folder)
    payload = torch.load(folder / "model.pt", weights_only=True)  # plain tensors and containers only
    assert payload["var_names"] == list(cells.var_names)
    loaded = cj.models.CellJEPA.load(folder, adata=cells)
    assert np.array_equal(loaded.get_latent_representation(), z)
    # genes in another order: aligned by name
    perm = np.random.default_rng(0).permutation(cells.n_vars)
    assert np.allclose(loaded.get_latent_representation(cells[:, perm].copy()), z, atol=1e-5)
    # 10% of genes missing: they count as zero expression, with a warning
    keep = np.ones(cells.n_vars, dtype=bool)
    keep[::10] = False
    zeroed = cells.copy()
    zeroed.X = (sp.csr_matrix(zeroed.X) @ sp.diags(keep.astype(np.float32))).tocsr()
    zeroed.X.eliminate_zeros()
    with pytest.warns(CelljepaWarning, match="50 of the model's 500 genes are missing"):
        z_missing = loaded.get_latent_representation(cells[:, keep].copy())
    assert np.allclose(z_missing, loaded.get_latent_representation(zeroed), atol=1e-5)
    with pytest.raises(InputError, match="at least 50% are needed"):
        loaded.get_latent_representation(cells[:, :200].copy())
    with pytest.raises(InputError, match="at least 50% are needed"):
        cj.models.CellJEPA.load(folder, adata=cells[:, :200].copy())


@pytest.mark.parametrize(
    "change",
    [
        {"train": {"ema": False}},
        {"train": {"anticollapse": False}},
        {"train": {"target": "cell", "loss": "l2"}},
        {"train": {"loss": "smooth_l1"}},
        {"model": {"expander_dim": 24}},
        {"mask": {"kind": "block", "block_size": 16}},
        {"mask": {"kind": "module", "gene_sets": "hallmark"}},
    ],
)
def test_ablation_switches_train(cells, change):
    model = cj.models.CellJEPA(cells, config=_cfg(**change)).train(progress=False)
    record = model.history_[-1]
    assert np.isfinite(record["loss"])
    if change.get("train", {}).get("anticollapse") is False:
        assert "var_loss" not in record
    if not change.get("train", {}).get("ema", True):
        assert "teacher" not in model.module_
    if change.get("model", {}).get("expander_dim"):
        assert "expander" in model.module_
    if change.get("mask", {}).get("kind") == "module":
        assert model.module_names_[-1] == "unassigned" and len(model.module_names_) > 10


def test_module_masks_need_matching_gene_names(cells):
    renamed = cells.copy()
    renamed.var_names = [f"ENSG{i:011d}" for i in range(renamed.n_vars)]
    with pytest.raises(InputError, match="module masks need genes in at least 2 gene sets"):
        cj.models.CellJEPA(renamed, mask="module")
    cj.models.CellJEPA(renamed, mask="random")  # the fix the message names


def test_train_indices_and_errors(cells):
    model = cj.models.CellJEPA(cells, config=_cfg(train={"max_steps": 4}))
    with pytest.raises(InputError, match="not trained yet"):
        model.get_latent_representation()
    with pytest.raises(InputError, match="not in adata.obs_names"):
        model.train(train_indices=["no-such-cell"], progress=False)
    names = cells.obs_names[:300]
    model.train(train_indices=names, progress=False)
    assert model.train_info_["n_train_cells"] == 300 and model.train_info_["n_eval_cells"] == 128
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert model.get_latent_representation(cells[:10].copy()).shape == (10, 16)
