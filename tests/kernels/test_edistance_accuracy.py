"""The centred C++ kernel against the float64 oracle, within the error bound docs/kernels.md states.

For a pair (x, y) in a block whose first group has mean c, with x' = x - c, y' = y - c, s = |x'|^2 + |y'|^2,
k features and eps the unit roundoff of the input dtype, the computed distance d^ of the true distance d obeys

    |d^ - d| <= min(sqrt(g s), g s / d) + eps (|x'| + |y'|) + 4 eps d,      g = (k + 10) eps

(the expanded form's rounding and floor, the rounding of the centred values, the square root). A mean over
pairs is within the mean of its pairs' bounds (its float64 sum adds nothing at these sizes). The cases are the
ones where the expanded form loses digits: near-duplicate points far from the origin, float32 inputs with large
norms; the first kernel ("tiles", the reference the centred one replaced) is shown to break the bound there, so
the check can fail.
"""

from __future__ import annotations

import pytest
import torch

from celljepa.kernels import cross_distance_means, edistance_loss
from celljepa.kernels._edistance import cpu_kernel
from celljepa.kernels._reference import cross_distance_means_reference, edistance_loss_reference


def _pair_bound(a: torch.Tensor, b: torch.Tensor, centre: torch.Tensor, eps: float, same: bool) -> float:
    """Mean over the block's pairs (distinct pairs when ``same``) of the per-pair bound above, in float64."""
    a, b, centre = a.double(), b.double(), centre.double()
    xa, yb = a - centre, b - centre
    na, nb = xa.norm(dim=1), yb.norm(dim=1)
    s = na[:, None] ** 2 + nb[None, :] ** 2
    d = torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")
    g = (a.shape[1] + 10) * eps
    expanded = torch.minimum((g * s).sqrt(), g * s / d.clamp_min(1e-300))
    bound = expanded + eps * (na[:, None] + nb[None, :]) + 4 * eps * d
    if same:
        bound = bound[~torch.eye(len(a), dtype=torch.bool)]
    return float(bound.mean())


def _bounds(x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """(G, G) bound of every block mean: block (a, b) with a <= b is centred on group a's mean."""
    eps = float(torch.finfo(x.dtype).eps) / 2
    g = len(offsets) - 1
    groups = [x[offsets[i] : offsets[i + 1]] for i in range(g)]
    out = torch.zeros(g, g, dtype=torch.float64)
    for i in range(g):
        centre = groups[i].double().mean(dim=0)
        for j in range(i, g):
            out[i, j] = out[j, i] = _pair_bound(groups[i], groups[j], centre, eps, same=i == j)
    return out


def _cases():
    gen = torch.Generator().manual_seed(7)

    def randn(*shape):
        return torch.randn(*shape, generator=gen)

    far = randn(1, 30) * 10
    return {
        "random": (randn(600, 50), [0, 150, 420, 600]),
        # groups crossing the 256-row tile edge, unequal sizes
        "tile_edges": (randn(900, 20), [0, 257, 300, 900]),
        # float32 with a large common offset: |x|^2 ~ 5e7, distances ~ 10
        "large_norms": (randn(500, 50) + 1e3, [0, 200, 500]),
        # the same far apart per group: groups at different large offsets
        "large_norms_per_group": (torch.cat([randn(200, 16) + 3e3, randn(200, 16) - 2e3]), [0, 200, 400]),
        # near-duplicates far from the origin: distances ~ 1e-3 next to |x| ~ 50
        "near_duplicates": (far.repeat(400, 1) + 1e-4 * randn(400, 30), [0, 100, 400]),
        # exact duplicates: every distance within the group is 0
        "duplicates": (torch.cat([far.repeat(50, 1), randn(60, 30)]), [0, 50, 110]),
        "wide": (randn(300, 2000), [0, 100, 300]),
    }


@pytest.mark.parametrize("case", list(_cases()))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_centred_kernel_is_within_the_stated_bound(case, dtype):
    x, offsets = _cases()[case]
    x = x.to(dtype)
    offsets = torch.tensor(offsets)
    oracle = cross_distance_means_reference(x.double(), offsets)
    got = cross_distance_means(x, offsets, backend="cpu")
    bound = _bounds(x, offsets)
    err = (got - oracle).abs().nan_to_num(0.0)
    assert (err <= bound).all(), f"{case}: error {err.max():.3g} above bound {bound[err > bound].min():.3g}"
    if case == "duplicates":  # coincident points have distance exactly 0
        assert got[0, 0] == 0.0
    else:  # and the bound says something: a few thousand ulps of the distances at most
        rel = (bound / oracle.abs()).nan_to_num(0.0)
        assert float(rel.max()) < 4000 * torch.finfo(dtype).eps / 2


@pytest.mark.parametrize("case", ["large_norms", "near_duplicates"])
def test_the_first_kernel_breaks_the_bound_where_the_expanded_form_cancels(case):
    x, offsets = _cases()[case]
    offsets = torch.tensor(offsets)
    oracle = cross_distance_means_reference(x.double(), offsets)
    with cpu_kernel("tiles"):
        old = cross_distance_means(x, offsets, backend="cpu")
    err = (old - oracle).abs().nan_to_num(0.0)
    assert (err > _bounds(x, offsets)).any()
    # and how far: on large norms the first kernel's means were off by a third of the distances
    assert float((err / oracle.abs().clamp_min(1e-12)).max()) > 0.1


@pytest.mark.parametrize("case", ["random", "tile_edges", "wide"])
def test_both_kernels_agree_where_the_first_one_was_accurate(case):
    x, offsets = _cases()[case]
    x = x.double()  # float64: both kernels are accurate here
    offsets = torch.tensor(offsets)
    with cpu_kernel("tiles"):
        old = cross_distance_means(x, offsets, backend="cpu")
    new = cross_distance_means(x, offsets, backend="cpu")
    torch.testing.assert_close(new, old, rtol=1e-9, atol=1e-9 * float(old.nan_to_num(0).abs().max()))


@pytest.mark.parametrize("squared", [False, True])
def test_set_loss_far_from_the_origin(squared):
    # float32 sets with a large common offset: the centred loss and its gradient keep their digits
    gen = torch.Generator().manual_seed(3)
    off = torch.tensor([0, 40, 100])
    pred = (torch.randn(100, 24, generator=gen) + 500.0).requires_grad_(True)
    obs = torch.randn(100, 24, generator=gen) + 500.3
    loss = edistance_loss(pred, off, obs, off, squared=squared, backend="cpu")
    (grad,) = torch.autograd.grad(loss.sum(), pred)
    p64 = pred.detach().double().requires_grad_(True)
    ref = edistance_loss_reference(p64, off, obs.double(), off, squared=squared)
    (ref_grad,) = torch.autograd.grad(ref.sum(), p64)
    scale = float(ref.detach().abs().max())
    torch.testing.assert_close(loss.double(), ref, rtol=0, atol=1e-3 * scale)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=0, atol=1e-3 * float(ref_grad.abs().max()))
