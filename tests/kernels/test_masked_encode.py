"""Masked sparse encoding h = (x ⊙ keep)·W + b: every backend against a dense oracle, the mask RNG
across Python/C++/CUDA, autograd, properties (hypothesis), validation and the GMT helpers.

int64 indexing: a real batch with nnz > 2**31 needs > 25 GB (int64 col + values) and a W or output with
> 2**31 elements needs > 8 GB, which is not feasible here; instead the C++ kernels are driven through
raw pointers with CSR row pointers beyond 2**31 (shifted base pointers), cell offsets near 2**63 and
unit ids near 2**64 in the hash.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import celljepa as cj
from celljepa import InputError
from celljepa.kernels import _reference_masked_encode as ref
from celljepa.kernels import (
    available_backends,
    load_core,
    load_cuda,
    mask_for,
    masked_encode,
    module_mask_for,
)

BACKENDS = available_backends()
KINDS = ["none", "random", "block", "module"]
GENESETS = Path(__file__).resolve().parents[2].parent / "shared/data/genesets"
HAS_CUDA = "cuda" in BACKENDS
needs_core = pytest.mark.skipif(load_core() is None, reason="celljepa._core not built")
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device")


def _device(backend: str) -> str:
    return "cuda" if backend == "cuda" else "cpu"


def _data(n_cells=40, n_genes=120, density=0.15, dtype=torch.float64, seed=0, hidden=7, n_modules=9):
    rng = np.random.default_rng(seed)
    x = sp.random(n_cells, n_genes, density=density, format="csr", random_state=rng, dtype=np.float64)
    x.data = rng.gamma(2.0, 1.0, x.nnz)
    x.sort_indices()
    x = x.astype(np.float32 if dtype == torch.float32 else np.float64)
    w = torch.from_numpy(rng.standard_normal((n_genes, hidden))).to(dtype)
    b = torch.from_numpy(rng.standard_normal(hidden)).to(dtype)
    modules = rng.integers(-1, n_modules, n_genes).astype(np.int32)
    return x, w, b, modules


def _tuple(x, dtype, device, requires_grad=False):
    values = torch.tensor(x.data, dtype=dtype, device=device, requires_grad=requires_grad)
    crow = torch.tensor(x.indptr, dtype=torch.int64, device=device)
    col = torch.tensor(x.indices, dtype=torch.int64, device=device)
    return (crow, col, values, x.shape[1]), values


def _mask_kwargs(kind, modules, ratio=0.35, seed=11, cell_offset=5, block_size=6):
    return dict(
        kind=kind,
        ratio=ratio,
        seed=seed,
        cell_offset=cell_offset,
        block_size=block_size,
        gene_to_module=modules if kind == "module" else None,
    )


def _mask_of(kw, n_cells, n_genes):
    """The pure-torch mask (the oracle) for the keyword arguments given to masked_encode."""
    rest = {k: v for k, v in kw.items() if k != "seed"}
    return mask_for(kw["seed"], n_cells, n_genes, backend="reference", **rest)


def _dense_oracle(x, w, b, hidden_mask, dout):
    """Dense float64 computation with an explicit mask: output, dW, db, dvalues (per nonzero)."""
    xd = torch.tensor(x.toarray(), dtype=torch.float64, requires_grad=True)
    wd = w.detach().double().cpu().requires_grad_(True)
    bd = b.detach().double().cpu().requires_grad_(True)
    h = (xd * (~hidden_mask).double()) @ wd + bd
    h.backward(dout.double().cpu())
    rows = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))
    return h.detach(), wd.grad, bd.grad, xd.grad[rows, x.indices]


# --------------------------------------------------------------------------------- RNG / masks
@needs_core
def test_python_hash_equals_cpp_hash():
    core = load_core()
    rng = np.random.default_rng(0)
    cases = [(0, 0, 0), (2**64 - 1, 2**63 - 1, 2**64 - 1), (1, 2**62 + 3, 2**64 - 2)]
    cases += [(int(s), int(c), int(u)) for s, c, u in rng.integers(0, 2**63 - 1, (200, 3), dtype=np.int64)]
    seeds = {s for s, _, _ in cases}
    for s in seeds:
        sub = [(c, u) for ss, c, u in cases if ss == s]
        keys = ref.row_keys(s, torch.tensor([c for c, _ in sub], dtype=torch.int64))
        units = torch.tensor([ref._s64(u) for _, u in sub], dtype=torch.int64)
        got = [v & (2**64 - 1) for v in ref.unit_hash(keys, units).tolist()]
        assert got == [core.mask_unit_hash(s, c, u) for c, u in sub]


@needs_core
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cell_offset", [0, 12345, 2**62 + 17])
def test_mask_for_equals_core_mask_bits(kind, cell_offset):
    core = load_core()
    n_cells, n_genes = 33, 257
    modules = np.random.default_rng(1).integers(-1, 12, n_genes).astype(np.int32)
    kw = _mask_kwargs(kind, modules, ratio=0.4, seed=3, cell_offset=cell_offset, block_size=7)
    expect = _mask_of(kw, n_cells, n_genes)
    cells = torch.arange(n_cells, dtype=torch.int64) + cell_offset
    out = torch.empty(n_cells, n_genes, dtype=torch.uint8)
    mod = torch.from_numpy(modules)
    core.mask_bits(
        cells.data_ptr(),
        n_cells,
        n_genes,
        out.data_ptr(),
        ref.KINDS[kind],
        3,
        ref.ratio_threshold(0.4),
        7,
        mod.data_ptr() if kind == "module" else 0,
    )
    assert torch.equal(out.bool(), expect)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cell_offset", [0, 2**62 + 17])
def test_mask_for_backends_equal_reference(backend, kind, cell_offset):
    """mask_for dispatches to the compiled mask_bits kernels; every backend gives the reference bits."""
    modules = np.random.default_rng(2).integers(-1, 9, 301).astype(np.int32)
    kw = _mask_kwargs(kind, modules, ratio=0.35, seed=2**64 - 5, cell_offset=cell_offset, block_size=11)
    expect = _mask_of(kw, 70, 301)
    rest = {k: v for k, v in kw.items() if k != "seed"}
    got = mask_for(kw["seed"], torch.arange(70), 301, backend=backend, device=_device(backend), **rest)
    assert got.device.type == _device(backend) and torch.equal(got.cpu(), expect)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", KINDS)
def test_mask_read_back_through_kernel(backend, kind):
    """All-ones x and W = identity: the kernel output is the keep mask itself."""
    dev = _device(backend)
    n_cells, n_genes = 25, 64
    modules = np.random.default_rng(2).integers(-1, 6, n_genes).astype(np.int32)
    x = sp.csr_matrix(np.ones((n_cells, n_genes)))
    w = torch.eye(n_genes, dtype=torch.float64, device=dev)
    kw = _mask_kwargs(kind, modules, ratio=0.5, cell_offset=1000)
    h = masked_encode(_tuple(x, torch.float64, dev)[0], w, backend=backend, **kw)
    assert torch.equal(h.cpu() == 0, _mask_of(kw, n_cells, n_genes))


def test_mask_fraction_matches_ratio():
    m = mask_for(7, 400, 5000, kind="random", ratio=0.3)
    assert abs(m.float().mean().item() - 0.3) < 0.005  # sd ≈ 0.0003
    assert mask_for(7, 50, 100, kind="random", ratio=0.0).sum() == 0
    assert mask_for(7, 50, 100, kind="none", ratio=0.9).sum() == 0
    near1 = mask_for(7, 50, 1000, kind="random", ratio=0.999)
    assert near1.float().mean().item() > 0.99
    blocks = mask_for(7, 400, 4000, kind="block", ratio=0.25, block_size=20)
    assert abs(blocks.float().mean().item() - 0.25) < 0.02
    mods = module_mask_for(7, 2000, 50, ratio=0.4)
    assert abs(mods.float().mean().item() - 0.4) < 0.01


def test_module_masks_hide_whole_modules():
    rng = np.random.default_rng(3)
    modules = rng.integers(-1, 15, 300).astype(np.int32)
    m = mask_for(5, 200, 300, kind="module", ratio=0.5, gene_to_module=modules)
    per_module = module_mask_for(5, 200, 15, ratio=0.5)
    for mid in range(-1, 15):
        cols = m[:, modules == mid]
        assert torch.all(cols.all(1) | (~cols).all(1)), f"module {mid} partially hidden"
        assert torch.equal(cols[:, 0], per_module[:, mid])  # -1 is the last column
    assert 0.3 < m.float().mean().item() < 0.7


def test_block_masks_are_contiguous_blocks():
    bs = 8
    m = mask_for(9, 100, 203, kind="block", ratio=0.5, block_size=bs)
    for row in m:
        # within a cell, the mask is constant on runs cut at positions (g + phase) % bs == 0
        change = torch.nonzero(row[1:] != row[:-1]).flatten() + 1
        if change.numel():
            phases = {(-int(c)) % bs for c in change}
            assert len(phases) == 1
    # block_size 1 hides genes independently but differs from the random stream only in the unit mapping
    one = mask_for(9, 50, 300, kind="block", ratio=0.3, block_size=1)
    assert abs(one.float().mean().item() - 0.3) < 0.03


def test_determinism_seed_and_offset():
    x, w, b, modules = _data(n_cells=60, dtype=torch.float32)
    kw = _mask_kwargs("random", modules, cell_offset=0)
    h1 = masked_encode(x, w, b, **kw)
    h2 = masked_encode(x, w, b, **kw)
    assert torch.equal(h1, h2)
    kw2 = dict(kw, seed=kw["seed"] + 1)
    assert not torch.equal(_mask_of(kw, 60, x.shape[1]), _mask_of(kw2, 60, x.shape[1]))
    assert not torch.equal(h1, masked_encode(x, w, b, **kw2))
    # rows 20..59 with cell_offset=20 reproduce rows 20..59 of the full batch
    sub = masked_encode(x[20:], w, b, **dict(kw, cell_offset=20))
    assert torch.equal(sub, h1[20:])
    # and differ from the same rows masked as cells 0..39
    assert not torch.equal(masked_encode(x[20:], w, b, **kw), h1[20:])


@needs_core
def test_cpu_backward_is_deterministic():
    x, w, b, modules = _data(n_cells=300, n_genes=400, density=0.2, dtype=torch.float32, hidden=64)
    grads = []
    for _ in range(3):
        wr = w.clone().requires_grad_(True)
        masked_encode(x, wr, b, backend="cpu", **_mask_kwargs("random", modules)).pow(2).sum().backward()
        grads.append(wr.grad)
    assert torch.equal(grads[0], grads[1]) and torch.equal(grads[0], grads[2])


# --------------------------------------------------------------------------------- forward / backward
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", KINDS + ["explicit"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_backward_against_dense_oracle(backend, kind, dtype):
    dev = _device(backend)
    x, w, b, modules = _data(dtype=dtype)
    x[3] = 0  # an empty row
    x.eliminate_zeros()
    if kind == "explicit":
        hidden = torch.from_numpy(np.random.default_rng(4).random(x.shape) < 0.4)
        kw = dict(kind="explicit", keep=~hidden)
    else:
        kw = _mask_kwargs(kind, modules)
        hidden = _mask_of(kw, x.shape[0], x.shape[1])
    xt, values = _tuple(x, dtype, dev, requires_grad=True)
    wr = w.to(dev).requires_grad_(True)
    br = b.to(dev).requires_grad_(True)
    h = masked_encode(xt, wr, br, backend=backend, **kw)
    dout = torch.randn(h.shape, dtype=dtype, generator=torch.Generator().manual_seed(0)).to(dev)
    h.backward(dout)
    eh, edw, edb, edv = _dense_oracle(x, w, b, hidden, dout)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    assert h.dtype == dtype and h.device.type == dev
    torch.testing.assert_close(h.detach().cpu().double(), eh, **tol)
    torch.testing.assert_close(wr.grad.cpu().double(), edw, **tol)
    torch.testing.assert_close(br.grad.cpu().double(), edb, **tol)
    torch.testing.assert_close(values.grad.cpu().double(), edv, **tol)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["random", "module"])
def test_gradcheck_float64(backend, kind):
    dev = _device(backend)
    x, w, b, modules = _data(n_cells=6, n_genes=15, density=0.4, hidden=3, n_modules=3)
    _, values = _tuple(x, torch.float64, dev, requires_grad=True)
    crow = torch.tensor(x.indptr, dtype=torch.int64, device=dev)
    col = torch.tensor(x.indices, dtype=torch.int64, device=dev)
    kw = _mask_kwargs(kind, modules, ratio=0.3, cell_offset=2)

    def f(v, wt, bt):
        return masked_encode((crow, col, v, x.shape[1]), wt, bt, backend=backend, **kw)

    assert torch.autograd.gradcheck(f, (values, w.to(dev).requires_grad_(True), b.to(dev).requires_grad_(True)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_input_formats_agree(backend):
    dev = _device(backend)
    x, w, b, modules = _data(dtype=torch.float32)
    w, b = w.to(dev), b.to(dev)
    kw = _mask_kwargs("block", modules)
    h_tuple = masked_encode(_tuple(x, torch.float32, dev)[0], w, b, backend=backend, **kw)
    xt = torch.sparse_csr_tensor(
        torch.tensor(x.indptr), torch.tensor(x.indices), torch.tensor(x.data, dtype=torch.float32), size=x.shape
    ).to(dev)
    torch.testing.assert_close(masked_encode(xt, w, b, backend=backend, **kw), h_tuple)
    if dev == "cpu":
        torch.testing.assert_close(masked_encode(x.astype(np.float32), w, b, backend=backend, **kw), h_tuple)
        # int32 indices are accepted and widened
        crow32 = torch.tensor(x.indptr, dtype=torch.int32)
        col32 = torch.tensor(x.indices, dtype=torch.int32)
        vals = torch.tensor(x.data, dtype=torch.float32)
        torch.testing.assert_close(
            masked_encode((crow32, col32, vals, x.shape[1]), w, b, backend=backend, **kw), h_tuple
        )


def test_settings_force_backend(monkeypatch):
    x, w, b, modules = _data(dtype=torch.float32)
    calls = []
    real = ref.forward_reference
    monkeypatch.setitem(
        __import__("celljepa.kernels._masked_encode", fromlist=["_FORWARD"])._FORWARD,
        "reference",
        lambda *a, **k: calls.append(1) or real(*a, **k),
    )
    old = cj.settings.kernel_backend
    try:
        cj.settings.kernel_backend = "reference"
        masked_encode(x, w, b, kind="random", ratio=0.2)
    finally:
        cj.settings.kernel_backend = old
    assert calls == [1]


# --------------------------------------------------------------------------------- torch.library registration
@needs_core
@pytest.mark.parametrize("kind", KINDS)
def test_torch_library_opcheck(kind):
    """celljepa::masked_encode_forward (with its registered fake and autograd) passes torch's opcheck on CPU.

    opcheck runs the schema, fake-tensor, autograd-registration and AOT-dispatch (dynamic shapes, forward and
    backward through the grad ops) checks. A seed >= 2**63 exercises the uint64 -> int64 round trip.
    """
    import importlib

    mod = importlib.import_module("celljepa.kernels._masked_encode")
    x, w, b, modules = _data(n_cells=7, n_genes=20, density=0.3, hidden=4, n_modules=3)
    (crow, col, values, _), _ = _tuple(x, torch.float64, "cpu", requires_grad=True)
    gmod = torch.from_numpy(modules) if kind == "module" else None
    mask = (ref.KINDS[kind], mod._to_i64(2**64 - 5), 3, ref.ratio_threshold(0.4), 3, gmod)
    for backend in ("cpu", "reference"):
        for bias in (b.clone().requires_grad_(True), None):
            args = (crow, col, values, w.clone().requires_grad_(True), bias, *mask, backend)
            torch.library.opcheck(mod._forward_op, args)
    dout = torch.randn(7, 4, dtype=torch.float64)
    torch.library.opcheck(mod._grad_weight_op, (crow, col, values.detach(), dout, 20, *mask, "cpu"))
    torch.library.opcheck(mod._grad_values_op, (crow, col, w, dout, *mask, "cpu"))


def test_seed_round_trip_through_op_arguments():
    """Seeds up to 2**64 - 1 cross the int64 op schema as their two's-complement bits and come back unchanged."""
    import importlib

    mod = importlib.import_module("celljepa.kernels._masked_encode")
    for seed in (0, 1, 2**63 - 1, 2**63, 2**64 - 1):
        s = mod._to_i64(seed)
        assert -(2**63) <= s < 2**63 and mod._to_u64(s) == seed
    x, w, b, modules = _data(n_cells=10, n_genes=30, dtype=torch.float64)
    outs = [
        masked_encode(x, w, b, kind="random", ratio=0.5, seed=s, backend=bk)
        for s in (2**64 - 1, 2**63 + 7)
        for bk in BACKENDS
        if bk != "cuda"
    ]
    for o in outs[1 : len(outs) // 2]:
        torch.testing.assert_close(o, outs[0])
    assert not torch.equal(outs[0], outs[-1])


class _EmulatedCuda:
    """celljepa._cuda's masked-encode launchers (trailing stream, kernel and n_genes arguments; grad_weight
    accumulating into a zeroed dW) emulated with the C++ kernels, which share their pointer contract, and for
    kernel 1 (float32) with the host emulation of the tensor-core kernels."""

    def __init__(self, n_genes):
        self.core, self.n_genes, self.streams, self.kernels = load_core(), n_genes, [], []

    def masked_encode_forward(self, *args):
        *args, stream, kernel, n_genes = args
        self.streams.append(stream)
        self.kernels.append(kernel)
        assert n_genes == self.n_genes
        if kernel == 1 and not args[8]:  # float32 on tensor cores
            self.core.masked_encode_forward_tc_emulated(*args[:8], *args[9:], n_genes)
        else:
            self.core.masked_encode_forward(*args)

    def masked_encode_grad_weight(self, crow, col, values, n_rows, dout, hidden, dweight, is_double, *mask):
        *mask, stream, kernel, n_genes = mask
        self.streams.append(stream)
        self.kernels.append(kernel)
        assert n_genes == self.n_genes
        if kernel == 1 and not is_double:
            self.core.masked_encode_grad_weight_tc_emulated(
                crow, col, values, n_rows, dout, hidden, dweight, *mask, n_genes
            )
        else:
            self.core.masked_encode_grad_weight(
                crow, col, values, n_rows, dout, hidden, n_genes, dweight, is_double, *mask
            )

    def masked_encode_grad_values(self, *args):
        self.streams.append(args[-1])
        self.core.masked_encode_grad_values(*args[:-1])


@needs_core
@pytest.mark.parametrize("kind", KINDS)
def test_cuda_branch_of_registered_op_with_emulated_kernels(monkeypatch, kind):
    """backend="cuda" runs through the same registered op and autograd formula as "cpu" (only the backend
    string differs); the CUDA launchers are emulated so the Python side is checked on any machine."""
    import contextlib
    import importlib

    mod = importlib.import_module("celljepa.kernels._masked_encode")
    x, w, b, modules = _data(n_cells=30, n_genes=80, density=0.2, hidden=5)
    emu = _EmulatedCuda(x.shape[1])
    monkeypatch.setattr(mod, "load_cuda", lambda: emu)
    monkeypatch.setattr(mod, "_stream", lambda t: 1234)
    monkeypatch.setattr(torch.cuda, "device", lambda dev: contextlib.nullcontext())
    spec = mod._make_spec(kind, 0.4, 2**64 - 3, 17, x.shape[0], x.shape[1], modules, 4, torch.device("cpu"))
    res = {}
    for backend in ("cuda", "cpu"):
        (crow, col, values, _), _ = _tuple(x, torch.float64, "cpu", requires_grad=True)
        wr, br = w.clone().requires_grad_(True), b.clone().requires_grad_(True)
        h = mod._forward_op(crow, col, values, wr, br, *mod._op_mask_args(spec), backend)
        h.backward(torch.arange(h.numel(), dtype=h.dtype).reshape(h.shape))
        res[backend] = (h.detach(), wr.grad, br.grad, values.grad)
    assert emu.streams == [1234] * 3
    for a, e in zip(res["cuda"], res["cpu"], strict=True):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)


@needs_core
@pytest.mark.parametrize("kind", KINDS)
def test_tensor_core_kernels_through_their_emulation(monkeypatch, kind):
    """The float32 tensor-core forward and weight gradient (CSR gather and mask fused with 3xTF32 tiles; their
    host emulation, csrc/masked_encode/masked_encode_tc_emulate_cpu.cpp) equal the C++ kernels. The shapes cross
    the 64-cell, 64-unit and 32-gene tile edges; 1,100 cells make several cell slices of the weight gradient."""
    import contextlib
    import importlib

    from celljepa.kernels._ext import cuda_kernel

    mod = importlib.import_module("celljepa.kernels._masked_encode")
    x, w, b, modules = _data(n_cells=1100, n_genes=75, density=0.2, hidden=70, dtype=torch.float32, seed=4)
    emu = _EmulatedCuda(x.shape[1])
    monkeypatch.setattr(mod, "load_cuda", lambda: emu)
    monkeypatch.setattr(mod, "_stream", lambda t: 0)
    monkeypatch.setattr(torch.cuda, "device", lambda dev: contextlib.nullcontext())
    spec = mod._make_spec(kind, 0.4, 2**64 - 3, 17, x.shape[0], x.shape[1], modules, 4, torch.device("cpu"))
    dout = torch.randn(x.shape[0], w.shape[1], generator=torch.Generator().manual_seed(1))
    res = {}
    for backend in ("cuda", "cpu"):
        (crow, col, values, _), _ = _tuple(x, torch.float32, "cpu", requires_grad=True)
        wr, br = w.clone().requires_grad_(True), b.clone().requires_grad_(True)
        with cuda_kernel("tensor"):
            h = mod._forward_op(crow, col, values, wr, br, *mod._op_mask_args(spec), backend)
            h.backward(dout)
        res[backend] = (h.detach(), wr.grad, br.grad, values.grad)
    assert emu.kernels == [1, 1]
    for name, a, e in zip(("out", "dW", "db", "dvalues"), res["cuda"], res["cpu"], strict=True):
        scale = float(e.abs().max())
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5 * scale, msg=lambda m, n=name: f"{kind} {n}: {m}")
    if kind != "none":  # the mask is applied: without it the forward differs
        plain = masked_encode(_tuple(x, torch.float32, "cpu")[0], w, b, kind="none", backend="cpu")
        assert not torch.allclose(plain, res["cuda"][0], rtol=1e-3, atol=1e-3)


# --------------------------------------------------------------------------------- hypothesis
@st.composite
def csr_batches(draw):
    n_cells = draw(st.integers(1, 12))
    n_genes = draw(st.integers(1, 30))
    hidden = draw(st.integers(1, 9))
    rows = []
    for _ in range(n_cells):
        cols = draw(st.lists(st.integers(0, n_genes - 1), unique=True, max_size=n_genes))
        rows.append(sorted(cols))
    crow = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    col = np.array([c for r in rows for c in r], dtype=np.int64)
    seed = draw(st.integers(0, 2**64 - 1))
    ratio = draw(st.sampled_from([0.0, 0.5, 0.999, 0.1]))
    kind = draw(st.sampled_from(KINDS))
    cell_offset = draw(st.integers(0, 2**62))
    block_size = draw(st.integers(1, 7))
    return n_cells, n_genes, hidden, crow, col, seed, ratio, kind, cell_offset, block_size


@needs_core
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(csr_batches())
def test_property_cpu_matches_reference(case):
    n_cells, n_genes, hidden, crow, col, seed, ratio, kind, cell_offset, block_size = case
    g = torch.Generator().manual_seed(int(seed % 1000))
    values = torch.rand(len(col), dtype=torch.float64, generator=g).requires_grad_(True)
    w = torch.randn(n_genes, hidden, dtype=torch.float64, generator=g)
    b = torch.randn(hidden, dtype=torch.float64, generator=g)
    modules = torch.randint(-1, 4, (n_genes,), generator=g, dtype=torch.int32)
    kw = dict(
        kind=kind,
        ratio=ratio,
        seed=seed,
        cell_offset=cell_offset,
        block_size=block_size,
        gene_to_module=modules if kind == "module" else None,
    )
    x = (torch.from_numpy(crow), torch.from_numpy(col), values, n_genes)
    outs = {}
    for backend in ("cpu", "reference"):
        v = values.detach().clone().requires_grad_(True)
        wr, br = w.clone().requires_grad_(True), b.clone().requires_grad_(True)
        h = masked_encode((x[0], x[1], v, n_genes), wr, br, backend=backend, **kw)
        (h * torch.arange(h.numel(), dtype=h.dtype).reshape(h.shape)).sum().backward()
        outs[backend] = (h.detach(), wr.grad, br.grad, v.grad)
    for a, e in zip(outs["cpu"], outs["reference"], strict=True):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10)
    # the mask the kernel used is mask_for's
    hidden_mask = _mask_of(kw, n_cells, n_genes)
    rows = np.repeat(np.arange(n_cells), np.diff(crow))
    nz_hidden = hidden_mask[rows, col] if len(col) else torch.zeros(0, dtype=torch.bool)
    assert torch.all(outs["cpu"][3][nz_hidden] == 0)


# --------------------------------------------------------------------------------- int64 indexing
@needs_core
def test_int64_row_pointers_beyond_2_31():
    """CSR row pointers > 2**31 (base pointers shifted back): the kernels index nonzeros with int64.

    The shifted base addresses are passed modulo 2**64 (they wrap below zero when the heap sits low in the
    address space); base + row pointer lands back on the real data either way.
    """
    core = load_core()
    x, w, b, modules = _data(n_cells=20, n_genes=50, dtype=torch.float64)
    kw = _mask_kwargs("random", modules, cell_offset=2**62)
    expect = masked_encode(x, w, b, **kw, backend="reference")
    shift = 2**31 + 12345
    crow = torch.tensor(x.indptr, dtype=torch.int64) + shift
    col = torch.tensor(x.indices, dtype=torch.int64)
    vals = torch.tensor(x.data, dtype=torch.float64)
    out = torch.empty(20, w.shape[1], dtype=torch.float64)
    spec = (1, kw["seed"], kw["cell_offset"], ref.ratio_threshold(kw["ratio"]), kw["block_size"], 0)
    col_base, vals_base = (col.data_ptr() - 8 * shift) % 2**64, (vals.data_ptr() - 8 * shift) % 2**64
    core.masked_encode_forward(
        crow.data_ptr(), col_base, vals_base, 20, w.data_ptr(), w.shape[1], b.data_ptr(), out.data_ptr(), True, *spec
    )
    torch.testing.assert_close(out, expect)
    dout = torch.randn(20, w.shape[1], dtype=torch.float64)
    dw = torch.empty_like(w)
    core.masked_encode_grad_weight(
        crow.data_ptr(), col_base, vals_base, 20, dout.data_ptr(), w.shape[1], w.shape[0], dw.data_ptr(), True, *spec
    )
    wr = w.clone().requires_grad_(True)
    masked_encode(x, wr, b, **kw, backend="reference").backward(dout)
    torch.testing.assert_close(dw, wr.grad)


# --------------------------------------------------------------------------------- validation
def test_validation_errors():
    x, w, b, modules = _data(dtype=torch.float32)
    with pytest.raises(InputError, match="rows but x has"):
        masked_encode(x, w[:-1], b)
    with pytest.raises(InputError, match="dtype|float64"):
        masked_encode(x.astype(np.float64), w, b)
    with pytest.raises(InputError, match="float32 or float64"):
        masked_encode(x.astype(np.int64), w, b)
    with pytest.raises(InputError, match=r"\[0, 1\)"):
        masked_encode(x, w, b, kind="random", ratio=1.0)
    with pytest.raises(InputError, match=r"\[0, 1\)"):
        masked_encode(x, w, b, kind="random", ratio=-0.1)
    with pytest.raises(InputError, match="one entry per gene"):
        masked_encode(x, w, b, kind="module", ratio=0.2, gene_to_module=modules[:-1])
    with pytest.raises(InputError, match="needs gene_to_module"):
        masked_encode(x, w, b, kind="module", ratio=0.2)
    with pytest.raises(InputError, match="kind must be"):
        masked_encode(x, w, b, kind="bogus")
    with pytest.raises(InputError, match="bias"):
        masked_encode(x, w, b[:-1])
    with pytest.raises(InputError, match="CSR"):
        masked_encode(torch.ones(3, w.shape[0]), w)
    with pytest.raises(InputError, match="CSR"):
        masked_encode(x.tocsc(), w)
    crow = torch.tensor(x.indptr, dtype=torch.int64)
    col = torch.tensor(x.indices, dtype=torch.int64)
    vals = torch.tensor(x.data, dtype=torch.float32)
    r = int(np.argmax(np.diff(x.indptr)))  # a row with >= 2 nonzeros
    bad = col.clone()
    bad[crow[r]], bad[crow[r] + 1] = col[crow[r] + 1], col[crow[r]]
    with pytest.raises(InputError, match="strictly increasing"):
        masked_encode((crow, bad, vals, x.shape[1]), w)
    dup = col.clone()
    dup[crow[r] + 1] = col[crow[r]]
    with pytest.raises(InputError, match="strictly increasing"):
        masked_encode((crow, dup, vals, x.shape[1]), w)
    oob = col.clone()
    oob[0] = x.shape[1]
    with pytest.raises(InputError, match="col_indices must lie"):
        masked_encode((crow, oob, vals, x.shape[1]), w)
    with pytest.raises(InputError, match="non-decreasing|start at 0"):
        masked_encode((crow.flip(0), col, vals, x.shape[1]), w)
    with pytest.raises(InputError, match="int64"):
        masked_encode((crow.double(), col, vals, x.shape[1]), w)
    with pytest.raises(InputError, match="seed"):
        masked_encode(x, w, kind="random", ratio=0.1, seed=-1)
    with pytest.raises(InputError, match="keep"):
        masked_encode(x, w, kind="explicit")
    with pytest.raises(InputError, match="boolean"):
        masked_encode(x, w, kind="explicit", keep=np.ones(x.shape))
    with pytest.raises(cj.BackendUnavailableError if load_cuda() is None else InputError):
        masked_encode(x, w, backend="cuda")


# --------------------------------------------------------------------------------- CUDA vs CPU
@needs_cuda
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu(kind, dtype):
    x, w, b, modules = _data(n_cells=300, n_genes=500, density=0.1, dtype=dtype, hidden=300)
    kw = _mask_kwargs(kind, modules, cell_offset=2**40)
    res = {}
    for backend, dev in (("cpu", "cpu"), ("cuda", "cuda")):
        xt, values = _tuple(x, dtype, dev, requires_grad=True)
        # Fresh leaves per device: w.to("cpu") would return w itself, and requires_grad_ would mutate it.
        wr, br = w.detach().to(dev).clone().requires_grad_(True), b.detach().to(dev).clone().requires_grad_(True)
        h = masked_encode(xt, wr, br, backend=backend, **kw)
        h.backward(torch.ones_like(h))
        res[backend] = [t.detach().cpu() for t in (h, wr.grad, br.grad, values.grad)]
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    for a, e in zip(res["cuda"], res["cpu"], strict=True):
        torch.testing.assert_close(a, e, **tol)
    # identical masks: zero pattern of dvalues and the CUDA mask_bits kernel
    assert torch.equal(res["cuda"][3] == 0, res["cpu"][3] == 0)
    cells = torch.arange(64, dtype=torch.int64, device="cuda") + 2**40
    out = torch.empty(64, 500, dtype=torch.uint8, device="cuda")
    mod = torch.from_numpy(modules).cuda()
    load_cuda().mask_bits(
        cells.data_ptr(),
        64,
        500,
        out.data_ptr(),
        ref.KINDS[kind],
        kw["seed"],
        ref.ratio_threshold(kw["ratio"]),
        kw["block_size"],
        mod.data_ptr() if kind == "module" else 0,
        torch.cuda.current_stream().cuda_stream,
    )
    torch.cuda.synchronize()
    expect = _mask_of(kw, 64, 500)
    assert torch.equal(out.cpu().bool(), expect)


@needs_cuda
@pytest.mark.parametrize("kind", KINDS)
def test_cuda_tensor_core_kernels_match_cpu_and_their_emulation(kind):
    """On a GPU: the tensor-core forward and weight gradient against the C++ kernels, and against their host
    emulation (the same tiles and 3xTF32 splits), so a difference between the two is the device's own."""
    from celljepa.kernels._ext import cuda_kernel

    x, w, b, modules = _data(n_cells=1100, n_genes=500, density=0.1, dtype=torch.float32, hidden=300)
    kw = _mask_kwargs(kind, modules, cell_offset=2**40)
    dout = torch.randn(x.shape[0], w.shape[1], generator=torch.Generator().manual_seed(1))
    res = {}
    for backend, dev in (("cpu", "cpu"), ("cuda", "cuda")):
        xt, values = _tuple(x, torch.float32, dev, requires_grad=True)
        wr, br = w.detach().to(dev).clone().requires_grad_(True), b.detach().to(dev).clone().requires_grad_(True)
        with cuda_kernel("tensor"):
            h = masked_encode(xt, wr, br, backend=backend, **kw)
            h.backward(dout.to(dev))
        res[backend] = [t.detach().cpu() for t in (h, wr.grad, br.grad, values.grad)]
    for a, e in zip(res["cuda"], res["cpu"], strict=True):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5 * float(e.abs().max()))
    core = load_core()
    (crow, col, values, n_genes), _ = _tuple(x, torch.float32, "cpu")
    spec_args = (ref.KINDS[kind], kw["seed"], kw["cell_offset"], ref.ratio_threshold(kw["ratio"]), kw["block_size"])
    mod = torch.from_numpy(modules)
    out = torch.empty(x.shape[0], w.shape[1])
    core.masked_encode_forward_tc_emulated(
        crow.data_ptr(),
        col.data_ptr(),
        values.data_ptr(),
        x.shape[0],
        w.data_ptr(),
        w.shape[1],
        b.data_ptr(),
        out.data_ptr(),
        *spec_args,
        mod.data_ptr() if kind == "module" else 0,
        n_genes,
    )
    torch.testing.assert_close(res["cuda"][0], out, rtol=1e-6, atol=1e-6 * float(out.abs().max()))


@needs_core
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["random", "module"])
def test_genome_vocabulary_gene_tokens_match_the_dense_oracle(backend, kind):
    """Cells as sparse (gene id, value) tokens over the 42,815-gene genome-v1 vocabulary: a few hundred
    tokens per cell, absent genes simply absent, Hallmark modules mapped onto the vocabulary."""
    from celljepa.data.genesets import builtin_gene_sets, gene_module_map

    vocab = cj.datasets.load_feature_set("genome-v1").genes
    n_genes = len(vocab)
    rng = np.random.default_rng(3)
    n_cells, per_cell = 24, 300
    cols = np.sort(np.stack([rng.choice(n_genes, per_cell, replace=False) for _ in range(n_cells)]), axis=1)
    x = sp.csr_matrix(
        (rng.gamma(2.0, 1.0, n_cells * per_cell), cols.ravel(), np.arange(0, n_cells * per_cell + 1, per_cell)),
        shape=(n_cells, n_genes),
    )
    modules, names = gene_module_map(list(vocab), builtin_gene_sets("hallmark"), priority="size")
    assert len(names) > 40 and (np.asarray(modules) >= 0).sum() > 4000
    w = torch.from_numpy(rng.standard_normal((n_genes, 5)))
    b = torch.from_numpy(rng.standard_normal(5))
    kw = _mask_kwargs(kind, np.asarray(modules, dtype=np.int32), ratio=0.5)
    hidden = _mask_of(kw, n_cells, n_genes)
    dev = _device(backend)
    xt, values = _tuple(x, torch.float64, dev, requires_grad=True)
    wr, br = w.to(dev).requires_grad_(True), b.to(dev).requires_grad_(True)
    h = masked_encode(xt, wr, br, backend=backend, **kw)
    dout = torch.randn(h.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).to(dev)
    h.backward(dout)
    eh, edw, edb, edv = _dense_oracle(x, w, b, hidden, dout)
    tol = dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(h.detach().cpu(), eh, **tol)
    torch.testing.assert_close(wr.grad.cpu(), edw, **tol)
    torch.testing.assert_close(br.grad.cpu(), edb, **tol)
    torch.testing.assert_close(values.grad.cpu(), edv, **tol)
    # only the rows of genes that occur in the batch receive a gradient
    touched = np.zeros(n_genes, dtype=bool)
    touched[np.unique(cols)] = True
    assert torch.count_nonzero(wr.grad.cpu()[~touched]) == 0
