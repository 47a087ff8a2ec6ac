"""cj.tl.jepa_embed: scanpy-style writes into obsm/uns, copy semantics, reuse of a trained model."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
import scanpy as sc

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


def test_logs_like_scanpy(k562_small, caplog):
    adata = k562_small[:200].copy()
    with caplog.at_level(logging.INFO, logger="celljepa"):
        cj.tl.jepa_embed(adata, **FAST)
    messages = [r.getMessage() for r in caplog.records if r.name == "celljepa"]
    assert messages[0] == "computing JEPA embedding"
    done = messages[-1]
    assert re.match(r"    finished \(\d+:\d\d:\d\d\): added\n", done), done
    assert "'X_jepa', JEPA cell embeddings (adata.obsm)" in done and "'jepa'," in done and "(adata.uns)" in done


def test_scaled_demo_is_refused_with_where_to_look(demo_processed):
    """The bundled demo after sc.pp.scale, as a scanpy user has it: the error names adata.raw and the layers."""
    adata = demo_processed[:300].copy()
    adata.raw = adata
    adata.layers["lognorm"] = adata.X.copy()
    sc.pp.scale(adata)
    with pytest.raises(InputError, match="negative values") as err:
        cj.tl.jepa_embed(adata, **FAST)
    text = str(err.value)
    assert "adata.raw holds log-normalised values" in text and "adata.raw.to_adata()" in text
    assert "adata.layers holds 'lognorm' (log-normalised); pass layer=<name>" in text
    # adata.raw.to_adata() is the fix: it embeds.
    fixed = adata.raw.to_adata()
    cj.tl.jepa_embed(fixed, **FAST)
    assert fixed.obsm["X_jepa"].shape == (300, 16)
    # Without adata.raw the message says how to keep it; a trained model refuses the scaled data as well.
    del adata.raw
    model = cj.models.CellJEPA(fixed, n_latent=16, mask="random").train(max_steps=2, batch_size=64, progress=False)
    with pytest.raises(InputError, match=r"adata.raw is not set .*adata.raw = adata"):
        cj.tl.jepa_embed(adata, model, progress=False)
