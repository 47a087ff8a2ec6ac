"""Count-aware views: the student encodes binomially thinned counts, the teacher the full cell."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from _realdata import SHARED_DATA

from celljepa._errors import InputError
from celljepa.nn.modules import CSRBatch
from celljepa.train.config import JEPAConfig
from celljepa.train.loop import thinned_view

CITEFUSE = SHARED_DATA / "multimodal" / "citefuse" / "mimitou2019_ctrl_vs_ctcl.h5ad"


@pytest.fixture(scope="module")
def citefuse() -> ad.AnnData:
    import scanpy as sc

    a = ad.read_h5ad(CITEFUSE)
    a.layers["counts"] = sp.csr_matrix(a.X, dtype=np.float32)
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    return a


def test_thinned_view_keeps_the_expected_share_and_normalises(citefuse):
    counts = CSRBatch.from_scipy(citefuse.layers["counts"][:300])
    view = thinned_view(counts, 0.05, seed=7)
    assert torch.equal(view.crow, counts.crow) and torch.equal(view.col, counts.col)
    # every cell with reads left sums to 10,000 after expm1, as a normalised full cell does
    rows = torch.repeat_interleave(torch.arange(300), counts.crow[1:] - counts.crow[:-1])
    totals = torch.zeros(300, dtype=torch.float64).index_add_(0, rows, torch.expm1(view.values.double()))
    assert torch.allclose(totals[totals > 0], torch.full_like(totals[totals > 0], 1e4), rtol=1e-4)
    # deeper thinning drops more of the stored counts to zero
    again = thinned_view(counts, 0.05, seed=7)
    assert torch.equal(view.values, again.values)
    assert not torch.equal(view.values, thinned_view(counts, 0.05, seed=8).values)
    zeros_deep = float((view.values == 0).float().mean())
    zeros_light = float((thinned_view(counts, 0.9, seed=7).values == 0).float().mean())
    assert zeros_deep > zeros_light + 0.1
    # almost nothing thinned: the normalised full cell itself, up to the few single reads dropped
    full = thinned_view(counts, 0.999, seed=1)
    x = torch.from_numpy(sp.csr_matrix(citefuse.X[:300]).data)
    assert float((full.values - x).abs().mean()) < 0.01


def test_thin_views_need_counts_and_stay_out_of_the_record_at_default():
    with pytest.raises(InputError, match="counts_layer"):
        JEPAConfig.from_dict({"train": {"thin_views": 0.1}})
    with pytest.raises(InputError, match="thin_views must be in"):
        JEPAConfig.from_dict({"train": {"thin_views": 1.0}, "data": {"counts_layer": "counts"}})
    d = JEPAConfig().to_dict()
    assert "thin_views" not in d["train"] and "counts_layer" not in d["data"]
    on = JEPAConfig.from_dict({"train": {"thin_views": 0.1}, "data": {"counts_layer": "counts"}})
    assert on.to_dict()["train"]["thin_views"] == 0.1 and on.digest() != JEPAConfig().digest()
    assert JEPAConfig.from_dict(on.to_dict()) == on


def test_cell_jepa_trains_on_count_aware_views(citefuse):
    from celljepa.models import CellJEPA

    config = {"train": {"thin_views": 0.05}, "data": {"counts_layer": "counts"}}
    model = CellJEPA(citefuse, n_latent=16, config=config)
    model.train(max_steps=15, batch_size=64, progress=False)
    z = model.get_latent_representation(progress=False)
    assert z.shape == (citefuse.n_obs, 16) and np.isfinite(z).all()
    plain = CellJEPA(citefuse, n_latent=16)
    plain.train(max_steps=15, batch_size=64, progress=False)
    assert not np.allclose(plain.get_latent_representation(progress=False), z)
    no_counts = citefuse.copy()
    del no_counts.layers["counts"]
    with pytest.raises(InputError, match="raw counts in adata.layers"):
        CellJEPA(no_counts, n_latent=16, config=config).train(max_steps=2, batch_size=64, progress=False)


def test_pretrain_cli_trains_on_thinned_views_in_memory_and_backed_alike(citefuse, tmp_path, capsys):
    from celljepa.cli import main

    path = tmp_path / "citefuse.h5ad"
    small = citefuse[:400].copy()
    small.X = sp.csr_matrix(small.X)
    small.write_h5ad(path)
    common = ["--fast-dev", "--no-progress", "--set", "train.thin_views=0.05", "--set", "data.counts_layer=counts"]
    assert main(["pretrain", str(path), "--out", str(tmp_path / "mem"), *common]) == 0
    assert main(["pretrain", str(path), "--out", str(tmp_path / "backed"), "--backed", *common]) == 0
    assert "thin_views: 0.05" in (tmp_path / "backed" / "config.yaml").read_text()
    # the same thinned views from disk as from memory: the same training losses, step by step
    mem, backed = (
        [json.loads(line) for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
        for d in ("mem", "backed")
    )
    losses = [[r["loss"] for r in run if "loss" in r] for run in (mem, backed)]
    assert len(losses[0]) > 0 and np.allclose(losses[0], losses[1], rtol=1e-4)
    assert np.load(tmp_path / "mem" / "embeddings.npz")["X_jepa"].shape[0] == 400
    capsys.readouterr()
    bad = ["--set", "train.thin_views=0.05", "--set", "data.counts_layer=raw"]
    assert main(["pretrain", str(path), "--out", str(tmp_path / "bad"), "--fast-dev", "--no-progress", *bad]) == 1
    assert "adata.layers['raw']" in capsys.readouterr().err and not (tmp_path / "bad" / "model").exists()
