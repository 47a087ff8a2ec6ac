"""Batched E-distance kernels (C++ / CUDA) against the pure-torch reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import celljepa as cj
from celljepa._errors import InputError
from celljepa.kernels import available_backends, cross_distance_means, edistance, edistance_loss
from celljepa.kernels._ext import load_core

BACKENDS = [b for b in available_backends() if b != "reference"]
HAS_CUDA = "cuda" in BACKENDS
TOL = {torch.float32: dict(rtol=2e-5, atol=2e-5), torch.float64: dict(rtol=1e-10, atol=1e-11)}


def _offsets(sizes) -> torch.Tensor:
    return torch.tensor([0, *np.cumsum(sizes).tolist()], dtype=torch.int64)


def _dev(backend: str) -> str:
    return "cuda" if backend == "cuda" else "cpu"


def _oracle(backend: str) -> str:
    """CUDA results are compared with the C++ CPU kernel, the CPU kernel with the reference."""
    return "cpu" if backend == "cuda" else "reference"


def _data(sizes, d, dtype, seed=0, dup=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(int(sum(sizes)), d, generator=g, dtype=torch.float64)
    x += torch.repeat_interleave(
        torch.randn(len(sizes), d, generator=g, dtype=torch.float64), torch.tensor(sizes), dim=0
    )
    if dup and x.shape[0] > 3:
        x[2] = x[3]  # coincident points
    return x.to(dtype), _offsets(sizes)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("squared", [False, True])
def test_cross_distance_means_matches_oracle(backend, dtype, squared):
    sizes = [1, 2, 7, 300, 33, 513]  # tiles of 256: ragged edges, multi-tile diagonal blocks
    x, off = _data(sizes, 19, dtype)
    got = cross_distance_means(x.to(_dev(backend)), off, squared=squared, backend=backend).cpu()
    want = cross_distance_means(x, off, squared=squared, backend=_oracle(backend)).cpu()
    assert got.dtype == torch.float64 and got.shape == (6, 6)
    torch.testing.assert_close(got, want, equal_nan=True, **TOL[dtype])
    assert torch.isnan(got[0, 0]) and not torch.isnan(got[1:, 1:].diagonal()).any()

    pairs = torch.tensor([[0, 1], [3, 2], [5, 5], [4, 0], [3, 5], [1, 1]])
    got = cross_distance_means(x.to(_dev(backend)), off, squared=squared, pairs=pairs, backend=backend).cpu()
    want = cross_distance_means(x, off, squared=squared, pairs=pairs, backend=_oracle(backend)).cpu()
    assert got.shape == (6, 3)
    torch.testing.assert_close(got, want, equal_nan=True, **TOL[dtype])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("include_self_pairs", [False, True])
@pytest.mark.parametrize("squared", [False, True])
def test_edistance_matches_oracle(backend, include_self_pairs, squared):
    x, off = _data([5, 40, 2, 90], 8, torch.float64, seed=1)
    kw = dict(squared=squared, include_self_pairs=include_self_pairs)
    got = edistance(x.to(_dev(backend)), off, backend=backend, **kw).cpu()
    want = edistance(x, off, backend=_oracle(backend), **kw).cpu()
    torch.testing.assert_close(got, want, **TOL[torch.float64])
    pairs = torch.tensor([[0, 3], [1, 2], [2, 2]])
    got = edistance(x.to(_dev(backend)), off, pairs=pairs, backend=backend, **kw).cpu()
    want = edistance(x, off, pairs=pairs, backend=_oracle(backend), **kw).cpu()
    torch.testing.assert_close(got, want, **TOL[torch.float64])


@pytest.mark.parametrize("backend", BACKENDS)
def test_settings_kernel_backend_dispatches(backend, monkeypatch):
    x, off = _data([4, 6], 3, torch.float64)
    monkeypatch.setattr(cj.settings, "kernel_backend", backend)
    torch.testing.assert_close(
        cross_distance_means(x.to(_dev(backend)), off).cpu(),
        cross_distance_means(x, off, backend="reference"),
        **TOL[torch.float64],
    )


def _loss_data(n_sizes, m_sizes, d, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(sum(n_sizes), d, generator=g, dtype=torch.float64).to(dtype)
    o = (torch.randn(sum(m_sizes), d, generator=g, dtype=torch.float64) + 0.5).to(dtype)
    return p, _offsets(n_sizes), o, _offsets(m_sizes)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("squared", [False, True])
def test_loss_and_gradients_match_oracle(backend, dtype, squared):
    p, po, o, oo = _loss_data([3, 1, 40, 300], [5, 2, 1, 270], 21, dtype)
    p[1] = p[0]  # coincident pred points
    o[0] = p[0]  # pred coincides with obs
    w = torch.randn(4, dtype=dtype)
    dev = _dev(backend)

    def run(bk, dv):
        pp = p.to(dv).requires_grad_(True)
        oo_ = o.to(dv).requires_grad_(True)
        loss = edistance_loss(pp, po, oo_, oo, squared=squared, backend=bk)
        gp, go = torch.autograd.grad((loss * w.to(dv)).sum(), [pp, oo_])
        return loss.detach().cpu(), gp.cpu(), go.cpu()

    got, want = run(backend, dev), run(_oracle(backend), "cpu")
    tol = TOL[dtype] if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
    for a, b in zip(got, want, strict=True):
        assert a.dtype == dtype and torch.isfinite(a).all()
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("backend", BACKENDS)
def test_loss_gradient_without_obs_grad_and_no_grad(backend):
    p, po, o, oo = _loss_data([4, 6], [5, 3], 7, torch.float64)
    dev = _dev(backend)
    pp = p.to(dev).requires_grad_(True)
    loss = edistance_loss(pp, po, o.to(dev), oo, backend=backend)
    (g,) = torch.autograd.grad(loss.sum(), [pp])
    want = edistance_loss(p.requires_grad_(True), po, o, oo, backend="reference")
    (gw,) = torch.autograd.grad(want.sum(), [p])
    torch.testing.assert_close(g.cpu(), gw, **TOL[torch.float64])
    with torch.no_grad():
        torch.testing.assert_close(
            edistance_loss(pp, po, o.to(dev), oo, backend=backend).cpu(), want.detach(), **TOL[torch.float64]
        )


@pytest.mark.parametrize("squared", [False, True])
def test_loss_gradcheck_float64(squared):
    if "cpu" not in BACKENDS:
        pytest.skip("celljepa._core not built")
    p, po, o, oo = _loss_data([3, 5, 1], [4, 2, 3], 4, torch.float64, seed=3)
    p.requires_grad_(True)
    o.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, b: edistance_loss(a, po, b, oo, squared=squared, backend="cpu"), (p, o), eps=1e-6, atol=1e-7
    )


sizes_st = st.lists(st.integers(1, 9), min_size=1, max_size=5)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n_sizes=sizes_st, data=st.data(), d=st.integers(1, 6), squared=st.booleans(), seed=st.integers(0, 2**16))
def test_property_ragged_sets_with_duplicates(n_sizes, data, d, squared, seed):
    """Sizes 1 and 2, duplicated and coincident points: results match the reference, gradients are finite."""
    m_sizes = data.draw(st.lists(st.integers(1, 9), min_size=len(n_sizes), max_size=len(n_sizes)))
    g = torch.Generator().manual_seed(seed)
    # a small integer lattice makes exact duplicates (within and across sets) frequent
    p = torch.randint(-2, 3, (sum(n_sizes), d), generator=g).to(torch.float64)
    o = torch.randint(-2, 3, (sum(m_sizes), d), generator=g).to(torch.float64)
    po, oo = _offsets(n_sizes), _offsets(m_sizes)
    for backend in BACKENDS:
        dev = _dev(backend)
        a, b = p.clone().to(dev).requires_grad_(True), o.clone().to(dev).requires_grad_(True)
        loss = edistance_loss(a, po, b, oo, squared=squared, backend=backend)
        ga, gb = torch.autograd.grad(loss.sum(), [a, b])
        assert torch.isfinite(loss).all() and torch.isfinite(ga).all() and torch.isfinite(gb).all()
        ra, rb = p.clone().requires_grad_(True), o.clone().requires_grad_(True)
        rl = edistance_loss(ra, po, rb, oo, squared=squared, backend="reference")
        rga, rgb = torch.autograd.grad(rl.sum(), [ra, rb])
        torch.testing.assert_close(loss.detach().cpu(), rl.detach(), **TOL[torch.float64])
        torch.testing.assert_close(ga.cpu(), rga, **TOL[torch.float64])
        torch.testing.assert_close(gb.cpu(), rgb, **TOL[torch.float64])
        x = torch.cat([p, o])
        off = _offsets(n_sizes + m_sizes)
        got = cross_distance_means(x.to(dev), off, squared=squared, backend=backend).cpu()
        want = cross_distance_means(x, off, squared=squared, backend="reference")
        torch.testing.assert_close(got, want, equal_nan=True, **TOL[torch.float64])


@pytest.mark.parametrize("backend", ["reference", *BACKENDS])
def test_empty_group_and_bad_input_raise(backend):
    x = torch.randn(10, 3)
    with pytest.raises(InputError, match="empty"):
        cross_distance_means(x, torch.tensor([0, 4, 4, 10]), backend=backend)
    with pytest.raises(InputError, match="empty"):
        edistance_loss(x, torch.tensor([0, 0, 10]), x, torch.tensor([0, 5, 10]), backend=backend)
    with pytest.raises(InputError, match="end at"):
        edistance(x, torch.tensor([0, 4, 9]), backend=backend)
    with pytest.raises(InputError, match="single cell"):
        edistance(x, torch.tensor([0, 1, 10]), backend=backend)
    with pytest.raises(InputError, match="pairs"):
        cross_distance_means(x, torch.tensor([0, 4, 10]), pairs=torch.tensor([[0, 2]]), backend=backend)


def test_cpu_backend_forced_but_missing_raises(monkeypatch):
    from celljepa._errors import BackendUnavailableError
    from celljepa.kernels import _ext

    monkeypatch.setattr(_ext, "load_core", lambda: None)
    with pytest.raises(BackendUnavailableError):
        cross_distance_means(torch.randn(4, 2), torch.tensor([0, 2, 4]), backend="cpu")


def test_int64_indexing_past_2_31_elements(tmp_path):
    """Rows whose element offset (row * d) exceeds 2**31: a sparse memory-mapped file of 8.6 GB virtual size.

    Only the groups named in ``pairs`` are read (and only their pages materialise), so the test touches a few
    KB; it checks that offsets, row starts and element indices are int64 end to end in the C++ kernel.
    """
    if "cpu" not in BACKENDS:
        pytest.skip("celljepa._core not built")
    d = 4
    n = 2**31 // d + 1000  # N * d > 2**31
    path = tmp_path / "big.f32"
    with open(path, "wb") as fh:
        fh.truncate(n * d * 4)  # sparse: no disk blocks, zero pages
    mm = np.memmap(path, dtype=np.float32, mode="r+", shape=(n, d))
    tail = np.random.default_rng(0).standard_normal((300, d)).astype(np.float32)
    mm[n - 300 :] = tail
    x = torch.from_numpy(mm)  # shares the mapping
    off = torch.tensor([0, n - 300, n - 100, n], dtype=torch.int64)
    assert (n - 300) * d > 2**31
    pairs = torch.tensor([[1, 2]])
    got = cross_distance_means(x, off, pairs=pairs, backend="cpu")
    small = torch.from_numpy(tail)
    want = cross_distance_means(small, torch.tensor([0, 200, 300]), pairs=torch.tensor([[0, 1]]), backend="reference")
    torch.testing.assert_close(got, want, **TOL[torch.float32])
    del x, mm


@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device")
def test_cuda_stream_and_device_outputs():
    x, off = _data([70, 130], 9, torch.float32)
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        got = cross_distance_means(x.cuda(), off, backend="cuda")
    s.synchronize()
    assert got.is_cuda
    torch.testing.assert_close(got.cpu(), cross_distance_means(x, off, backend="cpu"), **TOL[torch.float32])


def test_torch_library_opcheck():
    """The registered ops (celljepa::edistance_block_sums, celljepa::edistance_set_loss) pass torch's opcheck."""
    if "cpu" not in BACKENDS:
        pytest.skip("celljepa._core not built")
    import importlib

    mod = importlib.import_module("celljepa.kernels._edistance")
    x = torch.randn(30, 4, dtype=torch.float64)
    blocks = torch.tensor([[0, 0], [0, 1], [1, 1]])
    torch.library.opcheck(mod._block_sums_op, (x, torch.tensor([0, 10, 30]), blocks, False))
    p = torch.randn(12, 3, dtype=torch.float64, requires_grad=True)
    o = torch.randn(9, 3, dtype=torch.float64, requires_grad=True)
    args = (p, o, torch.tensor([0, 5, 12]), torch.tensor([0, 4, 9]), False, True, True)
    torch.library.opcheck(mod._set_loss_op, args)


class _EmulatedCuda:
    """Pure-torch stand-in for celljepa._cuda's E-distance launchers, honouring their pointer contract."""

    edistance_tile = 16

    @staticmethod
    def _view(ptr, n, dtype):
        import ctypes

        ct = {torch.float32: ctypes.c_float, torch.float64: ctypes.c_double, torch.int64: ctypes.c_int64}[dtype]
        return torch.from_numpy(np.ctypeslib.as_array((ct * max(n, 1)).from_address(ptr))[:n])

    def edistance_block_sums(
        self, x, n, d, norms, offsets, blocks, items, n_items, squared, is_double, part, stream, kernel=0, means=0
    ):
        if kernel == 1 and not is_double:  # the tensor-core kernel, through its host emulation
            assert means, "the tensor-core kernel needs the group means"
            load_core().edistance_block_sums_tc_emulated(x, d, means, offsets, blocks, items, n_items, squared, part)
            return
        dt = torch.float64 if is_double else torch.float32
        xs = self._view(x, n * d, dt).view(n, d)
        it = self._view(items, n_items * 3, torch.int64).view(-1, 3)
        nblk = int(it[:, 0].max()) + 1
        blk = self._view(blocks, nblk * 2, torch.int64).view(-1, 2)
        off = self._view(offsets, int(blk.max()) + 2, torch.int64)
        out = self._view(part, n_items, torch.float64)
        t = self.edistance_tile
        for r, (b, i0, j0) in enumerate(it.tolist()):
            a, c = blk[b].tolist()
            xa = xs[off[a] + i0 : min(off[a] + i0 + t, off[a + 1])].double()
            yb = xs[off[c] + j0 : min(off[c] + j0 + t, off[c + 1])].double()
            dm = torch.cdist(xa, yb) ** (2 if squared else 1)
            if a == c and i0 == j0:
                dm = torch.triu(dm, diagonal=1)
            out[r] = dm.sum()

    def edistance_set_loss(
        self, p, n_p, o, n_o, d, pn, on, poff, ooff, n_sets, items, n_items, squared, is_double, part, gp, go, stream
    ):
        dt = torch.float64 if is_double else torch.float32
        pm, om = self._view(p, n_p * d, dt).view(n_p, d), self._view(o, n_o * d, dt).view(n_o, d)
        GP = self._view(gp, n_p * d, dt).view(n_p, d) if gp else None
        GO = self._view(go, n_o * d, dt).view(n_o, d) if go else None
        po, oo = self._view(poff, n_sets + 1, torch.int64), self._view(ooff, n_sets + 1, torch.int64)
        it = self._view(items, n_items * 4, torch.int64).view(-1, 4)
        out = self._view(part, n_items, torch.float64)
        t = self.edistance_tile
        for r, (k, kind, i0, j0) in enumerate(it.tolist()):
            n, m = int(po[k + 1] - po[k]), int(oo[k + 1] - oo[k])
            (X, xs, nx, GX), (Y, ys, ny, GY) = {
                0: ((pm, po[k], n, GP), (om, oo[k], m, GO)),
                1: ((pm, po[k], n, GP), (pm, po[k], n, GP)),
                2: ((om, oo[k], m, GO), (om, oo[k], m, GO)),
            }[kind]
            c = {0: 2 / (n * m), 1: -2 / (n * (n - 1)) if n > 1 else 0.0, 2: -2 / (m * (m - 1)) if m > 1 else 0.0}[kind]
            rx = slice(int(xs + i0), int(xs + min(i0 + t, nx)))
            ry = slice(int(ys + j0), int(ys + min(j0 + t, ny)))
            xa, yb = X[rx].double(), Y[ry].double()
            diff = xa[:, None] - yb[None]
            q = (diff * diff).sum(-1)
            mask = torch.ones_like(q, dtype=torch.bool)
            if kind != 0 and i0 == j0:
                mask = torch.triu(mask, diagonal=1)
            dist = q if squared else q.sqrt()
            out[r] = (dist * mask).sum()
            if c != 0.0:
                w = torch.full_like(q, 2.0) if squared else torch.where(dist > 0, 1.0 / dist, torch.zeros_like(q))
                w = w * mask * c
                if GX is not None:
                    GX[rx] += (w[:, :, None] * diff).sum(1).to(dt)
                if GY is not None:
                    GY[ry] -= (w[:, :, None] * diff).sum(0).to(dt)


def test_cuda_python_path_with_emulated_kernels(monkeypatch):
    """The CUDA branch of the dispatch (work items, partial sums, reduction, gradients) with an emulated kernel.

    The real CUDA kernels need a device; this checks the Python side and the launcher contract on any machine.
    """
    import importlib

    mod = importlib.import_module("celljepa.kernels._edistance")
    monkeypatch.setattr(mod, "load_cuda", lambda: _EmulatedCuda())
    monkeypatch.setattr(mod, "_on_cuda", lambda t: True)
    monkeypatch.setattr(mod, "_stream", lambda dev: 0)
    x, off = _data([1, 2, 17, 40], 5, torch.float64)
    for squared in (False, True):
        got = mod._means_compiled(x, off, squared=squared)
        want = cross_distance_means(x, off, squared=squared, backend="reference")
        torch.testing.assert_close(got, want, equal_nan=True, **TOL[torch.float64])
        pairs = torch.tensor([[0, 1], [3, 2], [3, 3]])
        got = mod._means_compiled(x, off, squared=squared, pairs=pairs)
        want = cross_distance_means(x, off, squared=squared, pairs=pairs, backend="reference")
        torch.testing.assert_close(got, want, equal_nan=True, **TOL[torch.float64])
        p, po, o, oo = _loss_data([3, 1, 20], [5, 2, 33], 4, torch.float64)
        a, b = p.clone().requires_grad_(True), o.clone().requires_grad_(True)
        loss = mod._loss_compiled(a, po, b, oo, squared=squared)
        ga, gb = torch.autograd.grad((loss * torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)).sum(), [a, b])
        ra, rb = p.clone().requires_grad_(True), o.clone().requires_grad_(True)
        rl = edistance_loss(ra, po, rb, oo, squared=squared, backend="reference")
        rga, rgb = torch.autograd.grad((rl * torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)).sum(), [ra, rb])
        for u, v in ((loss, rl), (ga, rga), (gb, rgb)):
            torch.testing.assert_close(u.detach(), v.detach(), **TOL[torch.float64])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sizes", [(40, 1, 75, 2), (300, 200, 5)])
def test_squared_closed_form_equals_the_pairwise_sums(dtype, sizes):
    from celljepa.kernels import squared_distance_means

    x, off = _data(sizes, 7, dtype, seed=3)
    tol = TOL[dtype]
    want = cross_distance_means(x.to(torch.float64), off, squared=True, backend="reference")
    torch.testing.assert_close(squared_distance_means(x, off), want, equal_nan=True, **tol)
    pairs = torch.tensor([[0, 1], [2, 0], [1, 1], [2, 2]])
    want = cross_distance_means(x.to(torch.float64), off, squared=True, pairs=pairs, backend="reference")
    torch.testing.assert_close(squared_distance_means(x, off, pairs=pairs), want, equal_nan=True, **tol)
    # the auto backend takes the closed form for squared distances
    torch.testing.assert_close(
        cross_distance_means(x, off, squared=True), squared_distance_means(x, off), equal_nan=True, rtol=0, atol=0
    )


def test_squared_closed_form_is_well_conditioned_far_from_the_origin():
    """float32 cells around 1e3: the closed form works on deviations from the group means, so it keeps the
    accuracy of the float64 pairwise sums where ``‖x‖² − ‖μ‖²`` would lose every digit."""
    from celljepa.kernels import squared_distance_means

    x, off = _data((120, 80), 5, torch.float64, seed=4)
    x = x * 0.01 + 1e3
    want = cross_distance_means(x, off, squared=True, backend="reference")
    got = squared_distance_means(x.to(torch.float32), off)
    # float32 storage of 1e3 + 0.01·z keeps ~4 significant digits of the deviations
    torch.testing.assert_close(got, want, rtol=2e-3, atol=1e-7)
    assert (got > 0).all()


def test_squared_edistance_and_gradients_through_the_closed_form():
    from celljepa.kernels import squared_distance_means

    x, off = _data((30, 50), 4, torch.float64, seed=5)
    e = edistance(x, off, squared=True)
    want = edistance(x, off, squared=True, backend="reference")
    torch.testing.assert_close(e, want, rtol=1e-10, atol=1e-11)
    xr = x.clone().requires_grad_(True)
    squared_distance_means(xr, off, pairs=torch.tensor([[0, 1]]))[0, 0].backward()
    # d/dx_i of mean_{i,j}‖x_i − y_j‖² for x_i in the first group: 2 (x_i − mean y) / n_a
    expect = 2 * (x[:30] - x[30:].mean(0)) / 30
    torch.testing.assert_close(xr.grad[:30], expect, rtol=1e-10, atol=1e-12)
