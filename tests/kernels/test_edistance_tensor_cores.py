"""The CUDA tensor-core E-distance kernel (``cuda_kernel("tensor")``), on any machine through its host emulation.

``celljepa._core.edistance_block_sums_tc_emulated`` runs the kernel's block-level code (``csrc/edistance/
edistance_tc.hpp``: work-item decode, centring on the block's first group, staging, the per-row norms, the
epilogue and the diagonal mask) thread by thread, and computes each warp's m16n16k8 products as the tensor cores
define them (3xTF32 split, float32 accumulators). These tests drive it through the CUDA branch of the Python
dispatch and hold it to the CPU kernel's error bound (docs/kernels.md) with the 3xTF32 dot products' larger
constant; on a machine with a CUDA device the last test compares the device with the emulation.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from celljepa.kernels import available_backends, cross_distance_means
from celljepa.kernels._ext import CUDA_KERNELS, cuda_kernel, load_core
from celljepa.kernels._reference import cross_distance_means_reference

pytestmark = pytest.mark.skipif(load_core() is None, reason="celljepa._core not built")
_ed = importlib.import_module("celljepa.kernels._edistance")
TILE = 64


class _TensorCoreEmulation:
    """celljepa._cuda's block-sums launcher with the tensor-core kernel emulated on the host."""

    edistance_tile = TILE

    def __init__(self):
        self.calls = []

    def edistance_block_sums(
        self, x, n, d, norms, offsets, blocks, items, n_items, squared, is_double, part, stream, kernel, means
    ):
        self.calls.append((kernel, bool(means), is_double))
        assert kernel == CUDA_KERNELS["tensor"] and means and not is_double
        load_core().edistance_block_sums_tc_emulated(x, d, means, offsets, blocks, items, n_items, squared, part)


@pytest.fixture
def emulated(monkeypatch):
    fake = _TensorCoreEmulation()
    monkeypatch.setattr(_ed, "load_cuda", lambda: fake)
    monkeypatch.setattr(_ed, "_on_cuda", lambda t: True)
    monkeypatch.setattr(_ed, "_stream", lambda dev: 0)
    with cuda_kernel("tensor"):
        yield fake


def _means(x, offsets, *, squared=False, pairs=None):
    return _ed._means_compiled(x, offsets, squared=squared, pairs=pairs)


def _bounds(x: torch.Tensor, offsets, factor: float) -> torch.Tensor:
    """(G, G) bound of every block mean (block (a, b), a <= b, centred on group a's mean), as in
    test_edistance_accuracy.py with g = factor · (k + 10) · eps."""
    eps = float(torch.finfo(torch.float32).eps) / 2
    g = len(offsets) - 1
    groups = [x[offsets[i] : offsets[i + 1]].double() for i in range(g)]
    out = torch.zeros(g, g, dtype=torch.float64)
    gamma = factor * (x.shape[1] + 10) * eps
    for i in range(g):
        centre = groups[i].mean(dim=0)
        for j in range(i, g):
            a, b = groups[i] - centre, groups[j] - centre
            na, nb = a.norm(dim=1), b.norm(dim=1)
            s = na[:, None] ** 2 + nb[None, :] ** 2
            d = torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")
            bound = torch.minimum((gamma * s).sqrt(), gamma * s / d.clamp_min(1e-300))
            bound = bound + eps * (na[:, None] + nb[None, :]) + 4 * eps * d
            if i == j:
                bound = bound[~torch.eye(len(a), dtype=torch.bool)]
            out[i, j] = out[j, i] = bound.mean() if bound.numel() else 0.0
    return out


def _cases():
    gen = torch.Generator().manual_seed(11)

    def randn(*shape):
        return torch.randn(*shape, generator=gen)

    far = randn(1, 30) * 10
    return {
        "random": (randn(400, 50), [0, 100, 290, 400]),
        # groups of 1, 2 and sizes around the 64-row tile edge; d not a multiple of the MMA depth 8
        "tile_edges": (randn(1 + 2 + 63 + 64 + 65 + 130, 23), [0, 1, 3, 66, 130, 195, 325]),
        "large_norms": (randn(300, 50) + 1e3, [0, 120, 300]),
        "large_norms_per_group": (torch.cat([randn(150, 16) + 3e3, randn(150, 16) - 2e3]), [0, 150, 300]),
        "near_duplicates": (far.repeat(200, 1) + 1e-4 * randn(200, 30), [0, 70, 200]),
        "duplicates": (torch.cat([far.repeat(50, 1), randn(60, 30)]), [0, 50, 110]),
        "wide": (randn(150, 700), [0, 64, 150]),
    }


@pytest.mark.parametrize("case", list(_cases()))
def test_tensor_core_kernel_is_within_the_bound(emulated, case):
    x, offsets = _cases()[case]
    offsets = torch.tensor(offsets)
    oracle = cross_distance_means_reference(x.double(), offsets)
    got = _means(x, offsets)
    assert emulated.calls and all(c == (1, True, False) for c in emulated.calls)
    bound = _bounds(x, offsets, factor=2.0)
    err = (got - oracle).abs().nan_to_num(0.0)
    assert (err <= bound).all(), f"{case}: error {err.max():.3g} above bound {bound[err > bound].min():.3g}"
    if case == "duplicates":  # coincident points have distance exactly 0
        assert got[0, 0] == 0.0
    else:  # a useful bound: a few thousand float32 ulps of the distances at most
        rel = (bound / oracle.abs()).nan_to_num(0.0)
        assert float(rel.max()) < 4000 * torch.finfo(torch.float32).eps / 2


@pytest.mark.parametrize("d", [1, 5, 8, 31, 32, 33, 70])
@pytest.mark.parametrize("squared", [False, True])
def test_tensor_core_kernel_matches_the_reference_on_ragged_tiles(emulated, d, squared):
    sizes = [1, 2, 63, 64, 65, 129]
    gen = torch.Generator().manual_seed(d)
    x = torch.randn(sum(sizes), d, generator=gen) + torch.repeat_interleave(
        3 * torch.randn(len(sizes), d, generator=gen), torch.tensor(sizes), dim=0
    )
    offsets = torch.tensor([0, *np.cumsum(sizes).tolist()])
    want = cross_distance_means_reference(x.double(), offsets, squared=squared)
    torch.testing.assert_close(_means(x, offsets, squared=squared), want, rtol=2e-5, atol=2e-5, equal_nan=True)
    pairs = torch.tensor([[0, 1], [3, 2], [5, 5], [4, 0], [3, 5], [1, 1]])
    want = cross_distance_means_reference(x.double(), offsets, squared=squared, pairs=pairs)
    got = _means(x, offsets, squared=squared, pairs=pairs)
    torch.testing.assert_close(got, want, rtol=2e-5, atol=2e-5, equal_nan=True)


def test_the_emulated_products_are_three_tf32_terms():
    """The emulation rounds the products' operands to TF32 as the tensor cores do, and keeps float32 accuracy only
    through the three-term split: on a group of three cells (three distances), one TF32 term would be off by
    ~1e-4 relative, the split by ~1e-9. So the first check can fail."""
    gen = torch.Generator().manual_seed(3)
    x = (torch.rand(3, 40, generator=gen) * 2 + 4).to(torch.float32).contiguous()
    offsets, blocks = torch.tensor([0, 3]), torch.tensor([[0, 0]])
    items = _ed._tile_items(offsets, blocks, TILE)
    means = _ed._group_means(x, offsets)
    part = torch.empty(items.shape[0], dtype=torch.float64)
    load_core().edistance_block_sums_tc_emulated(
        x.data_ptr(),
        40,
        means.data_ptr(),
        offsets.data_ptr(),
        blocks.data_ptr(),
        items.data_ptr(),
        1,
        False,
        part.data_ptr(),
    )
    xc = x.double() - means.double()
    want = float(torch.triu(torch.cdist(xc, xc), diagonal=1).sum())
    assert abs(float(part.sum()) - want) / want < 1e-7
    hi = ((xc.float().view(torch.int32) + 0x1000) & ~0x1FFF).view(torch.float32).double()  # cvt.rna.tf32
    sq = hi.pow(2).sum(1)
    one_term = float(torch.triu((sq[:, None] + sq[None] - 2 * hi @ hi.T).clamp_min(0).sqrt(), diagonal=1).sum())
    assert abs(one_term - want) / want > 1e-5


def test_float64_and_the_default_take_the_simt_kernel(monkeypatch):
    """float64 never reaches the tensor-core kernel, and the default CUDA kernel stays "tiles" until verified."""
    seen = []

    class Spy(_TensorCoreEmulation):
        def edistance_block_sums(self, *args):
            seen.append((args[12], args[13]))
            part = args[10]
            n_items = args[7]
            import ctypes

            arr = np.ctypeslib.as_array((ctypes.c_double * n_items).from_address(part))
            arr[:] = 0.0

    monkeypatch.setattr(_ed, "load_cuda", lambda: Spy())
    monkeypatch.setattr(_ed, "_on_cuda", lambda t: True)
    monkeypatch.setattr(_ed, "_stream", lambda dev: 0)
    x = torch.randn(20, 3)
    offsets = torch.tensor([0, 10, 20])
    _means(x, offsets)
    with cuda_kernel("tensor"):
        _means(x.double(), offsets)
        _means(x, offsets)
    assert seen[0] == (CUDA_KERNELS["tiles"], 0)
    assert seen[1][1] == 0  # float64: no means, so the launcher keeps the SIMT kernel
    assert seen[2][0] == CUDA_KERNELS["tensor"] and seen[2][1] != 0


@pytest.mark.skipif("cuda" not in available_backends(), reason="no CUDA device")
@pytest.mark.parametrize("case", ["random", "tile_edges", "large_norms", "near_duplicates", "wide"])
def test_tensor_core_kernel_on_the_device_equals_its_emulation(case):
    """On a GPU: the device kernel against its host emulation (same tiles, same splits) and the reference."""
    x, offsets = _cases()[case]
    offsets = torch.tensor(offsets)
    with cuda_kernel("tensor"):
        dev = cross_distance_means(x.cuda(), offsets, backend="cuda").cpu()
    oracle = cross_distance_means_reference(x.double(), offsets)
    err = (dev - oracle).abs().nan_to_num(0.0)
    bound = _bounds(x, offsets, factor=2.0)
    assert (err <= bound).all(), f"{case}: device error {err.max():.3g} above the bound"
    fake = _TensorCoreEmulation()
    with pytest.MonkeyPatch.context() as mp, cuda_kernel("tensor"):
        mp.setattr(_ed, "load_cuda", lambda: fake)
        mp.setattr(_ed, "_on_cuda", lambda t: True)
        mp.setattr(_ed, "_stream", lambda d: 0)
        emu = _means(x, offsets)
    torch.testing.assert_close(dev, emu, rtol=1e-5, atol=1e-6, equal_nan=True)
