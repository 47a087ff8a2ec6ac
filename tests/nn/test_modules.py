"""The JEPA building blocks: encoder, mask pointer, predictor and the loss terms."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from celljepa import InputError
from celljepa.kernels import mask_for
from celljepa.nn.modules import (
    ActionPredictor,
    CSRBatch,
    JEPAPredictor,
    MaskedGeneEncoder,
    MaskParams,
    MaskPointer,
    covariance_loss,
    predictive_loss,
    variance_loss,
)


@pytest.fixture
def batch():
    x = sp.random(16, 40, density=0.3, format="csr", dtype=np.float32, random_state=0)
    return x, CSRBatch.from_scipy(x)


def test_encoder_first_layer_is_expression_weighted_gene_vectors(batch):
    x, xb = batch
    torch.manual_seed(0)
    enc = MaskedGeneEncoder(40, n_hidden=8, n_latent=4, n_layers=1)
    h = torch.from_numpy(x.toarray()) @ enc.gene_weight + enc.gene_bias
    expected = enc.mlp(torch.nn.functional.gelu(enc.norm(h)))
    torch.testing.assert_close(enc(xb), expected, rtol=1e-5, atol=1e-5)


def test_encoder_mask_hides_exactly_the_mask_for_genes(batch):
    x, xb = batch
    enc = MaskedGeneEncoder(40, n_hidden=8, n_latent=4, n_layers=0)
    mask = MaskParams(kind="random", ratio=0.5, seed=7)
    hidden = mask.hidden(16, 40, torch.device("cpu"))
    assert torch.equal(hidden, mask_for(7, 16, 40, kind="random", ratio=0.5))
    dense = torch.from_numpy(x.toarray()) * (~hidden)
    expected = enc.mlp(torch.nn.functional.gelu(enc.norm(dense @ enc.gene_weight + enc.gene_bias)))
    torch.testing.assert_close(enc(xb, mask), expected, rtol=1e-5, atol=1e-5)
    # the explicit keep mask used for "predict the hidden part" targets is the complement view
    explicit = enc(xb, keep=hidden)
    dense_h = torch.from_numpy(x.toarray()) * hidden
    expected_h = enc.mlp(torch.nn.functional.gelu(enc.norm(dense_h @ enc.gene_weight + enc.gene_bias)))
    torch.testing.assert_close(explicit, expected_h, rtol=1e-5, atol=1e-5)


def test_encoder_refuses_wrong_gene_count(batch):
    _, xb = batch
    with pytest.raises(InputError, match="40 genes but the encoder was built for 41"):
        MaskedGeneEncoder(41, n_hidden=4, n_latent=2)(xb)


def test_pointer_is_the_mean_query_of_hidden_genes_and_zero_when_nothing_is_hidden():
    ptr = MaskPointer(5, dim=3)
    hidden = torch.tensor([[True, False, True, False, False], [False] * 5])
    out = ptr(hidden)
    torch.testing.assert_close(out[0], (ptr.query[0] + ptr.query[2]) / 2)
    assert torch.equal(out[1], torch.zeros(3))


def test_predictor_shape():
    pred = JEPAPredictor(6, pointer_dim=3, n_hidden=8, n_layers=2)
    assert pred(torch.randn(4, 6), torch.randn(4, 3)).shape == (4, 6)


def test_predictive_losses():
    t = torch.randn(32, 8)
    assert predictive_loss(t.clone(), t, "cosine").item() == pytest.approx(0.0, abs=1e-6)
    assert predictive_loss(-t, t, "cosine").item() == pytest.approx(4.0, abs=1e-5)
    normed = torch.nn.functional.layer_norm(t, (8,))
    assert predictive_loss(normed, 3 * t + 1, "l2").item() == pytest.approx(0.0, abs=1e-6)  # scale-free target
    assert predictive_loss(normed + 0.1, t, "smooth_l1").item() == pytest.approx(0.5 * 0.01, rel=1e-3)
    p = torch.randn(32, 8, requires_grad=True)
    target = torch.randn(32, 8, requires_grad=True)
    predictive_loss(p, target).backward()
    assert target.grad is None  # stop-gradient on the target
    with pytest.raises(InputError, match="loss must be one of"):
        predictive_loss(p, target, "mse")


def test_variance_and_covariance_terms():
    rng = torch.Generator().manual_seed(0)
    z = torch.randn(4000, 4, generator=rng)
    assert variance_loss(z).item() < 0.02  # unit std: nothing to push
    assert variance_loss(torch.zeros(10, 4)).item() == pytest.approx(1 - 1e-2, abs=1e-3)
    assert covariance_loss(z).item() < 0.01
    corr = torch.cat([z[:, :1], z[:, :1]], dim=1)  # two identical unit-variance dims: cov 1 off-diagonal twice
    assert covariance_loss(corr).item() == pytest.approx(2 * 1.0 / 2, rel=0.1)


def _go_encoder(n_genes=40, k=6, seed=0):
    torch.manual_seed(seed)
    feats = torch.randn(n_genes, k)
    feats[::7] = 0.0  # genes without GO annotations
    return MaskedGeneEncoder(n_genes, n_hidden=8, n_latent=4, n_layers=1, gene_features=feats), feats


def test_go_encoder_gene_vectors_are_projected_features_plus_a_residual(batch):
    x, xb = batch
    enc, feats = _go_encoder()
    assert enc.n_gene_features == 6 and torch.count_nonzero(enc.gene_weight) == 0  # residual starts at zero
    with torch.no_grad():
        enc.gene_weight.normal_()
    w = enc.gene_weight + feats @ enc.gene_proj
    torch.testing.assert_close(enc.effective_weight(), w)
    expected = enc.mlp(torch.nn.functional.gelu(enc.norm(torch.from_numpy(x.toarray()) @ w + enc.gene_bias)))
    torch.testing.assert_close(enc(xb), expected, rtol=1e-5, atol=1e-5)
    enc(xb).sum().backward()
    # both the projection and the per-gene residual learn; the features are a fixed buffer
    assert enc.gene_proj.grad.abs().sum() > 0 and enc.gene_weight.grad.abs().sum() > 0
    assert "gene_features" in dict(enc.named_buffers()) and "gene_features" not in dict(enc.named_parameters())


def test_go_encoder_embeds_genes_it_was_not_built_on(batch):
    x, _ = batch
    enc, feats = _go_encoder()
    new_feats = torch.randn(5, 6)
    w_new = enc.feature_weight(new_feats)
    torch.testing.assert_close(w_new, new_feats @ enc.gene_proj)
    # 40 known genes + 5 new ones: a cell expressing only known genes embeds as before
    wide = sp.hstack([x, sp.csr_matrix((16, 5), dtype=np.float32)], format="csr")
    full = torch.cat([enc.effective_weight(), w_new])
    torch.testing.assert_close(enc(CSRBatch.from_scipy(wide), weight=full), enc(CSRBatch.from_scipy(x)))
    # a cell expressing a new gene moves by that gene's GO-projected vector
    wide[0, 42] = 3.0
    moved = enc(CSRBatch.from_scipy(wide), weight=full)
    assert not torch.allclose(moved[0], enc(CSRBatch.from_scipy(x))[0])
    free = MaskedGeneEncoder(40, n_hidden=8, n_latent=4)
    with pytest.raises(InputError, match="free gene vectors"):
        free.feature_weight(new_feats)
    with pytest.raises(InputError, match=r"gene_features must be \(n_genes=40, k\)"):
        MaskedGeneEncoder(40, n_hidden=8, n_latent=4, gene_features=torch.zeros(39, 6))


def test_action_predictor_centres_each_set_on_its_own_mean():
    torch.manual_seed(0)
    pred = ActionPredictor(n_tokens=3, gene_dim=4, n_latent=6, action_dim=5, n_hidden=8)
    torch.nn.init.normal_(pred.net[-1].weight)  # leave "no change" so the head is seen
    sizes = torch.tensor([3, 1, 4])
    z = torch.randn(int(sizes.sum()), 6)
    tokens, mask = torch.tensor([[1, 0], [2, 3], [0, 0]]), torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
    gene_vec = torch.randn(3, 2, 4)
    out = pred(z, sizes, tokens, gene_vec, mask)
    action = ((pred.embed(tokens) + pred.gene(gene_vec)) * mask.unsqueeze(-1)).sum(1)
    expect, start = [], 0
    for k, n in enumerate(sizes.tolist()):
        part = z[start : start + n]
        head = pred.net(torch.cat([part - part.mean(0), action[k].expand(n, -1)], dim=1))
        expect.append(part + head)
        start += n
    torch.testing.assert_close(out, torch.cat(expect))
