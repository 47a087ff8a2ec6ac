"""cj.tl.jepa_embed: scanpy-style writes into obsm/uns, copy semantics, reuse of a trained model."""

from __future__ import annotations

import numpy as np
import pytest

import celljepa as cj
from celljepa import InputError

FAST = {"n_latent": 16, "max_steps": 12, "batch_size": 64, "mask": "random", "progress": False}


@pytest.fixture(scope="module")
def k562_small(demo_processed):
    return demo_processed[demo_processed.obs["context_id"] == "k562"][:800].copy()


def test_writes_obsm_and_uns_in_place(k562_small):
    adata = k562_small.copy()
    assert cj.tl.jepa_embed(adata, **FAST) is None
    z = adata.obsm["X_jepa"]
    assert z.shape == (800, 16) and z.dtype == np.float32 and np.isfinite(z).all()
    info = adata.uns["jepa"]
    assert info["params"]["model"]["n_latent"] == 16 and info["params"]["mask"]["kind"] == "random"
    assert info["diagnostics"]["dims"] == 16 and info["train_info"]["steps"] == 12
    assert "layer" not in info["params"]["data"]  # None values are dropped so the AnnData can be written


def test_copy_key_added_and_h5ad_round_trip(k562_small, tmp_path):
    adata = k562_small.copy()
    out = cj.tl.jepa_embed(adata, key_added="X_j2", copy=True, **FAST)
    assert "X_j2" not in adata.obsm and "X_j2" in out.obsm and "X_j2" in out.uns
    out.write_h5ad(tmp_path / "a.h5ad")


def test_trained_model_is_reused_and_matches(k562_small):
    model = cj.models.CellJEPA(k562_small, n_latent=16, mask="random").train(
        max_steps=12, batch_size=64, progress=False
    )
    other = k562_small[:100].copy()
    cj.tl.jepa_embed(other, model, progress=False)
    assert np.array_equal(other.obsm["X_jepa"], model.get_latent_representation()[:100])
    with pytest.raises(InputError, match="max_steps only apply when training a new model"):
        cj.tl.jepa_embed(other, model, max_steps=3)
    with pytest.raises(InputError, match="must be a celljepa.models.CellJEPA"):
        cj.tl.jepa_embed(other, "runs/x")


def test_same_seed_same_embedding(k562_small):
    a, b = k562_small.copy(), k562_small.copy()
    cj.tl.jepa_embed(a, seed=3, **FAST)
    cj.tl.jepa_embed(b, seed=3, **FAST)
    assert np.array_equal(a.obsm["X_jepa"], b.obsm["X_jepa"])
