"""E-distance kernels: celljepa's C++ kernels against the pure-torch reference (the "peer").

Groups
------
* ``edistance-allpairs-100x200x50``: all-pairs E-distance, 100 groups x 200 cells x 50 dims, float32. The
  ``matmul`` entries time ``torch.matmul`` in the same run; the summary prints the kernel's multiply-add
  rate ((N^2 / 2) * d MACs) as a percentage of matmul's, and its time as a ratio to the first kernel's
  (``tiles``, raw rows: the reference the centred kernel replaced).
* ``edistance-small-10x20x50`` and ``edistance-wide-20x200x2000``: the centred kernel against the first one
  (the peer) on small groups and on wide data, where it must not be slower.
* ``edistance-pertpy-100x200x50`` (with pertpy installed): pertpy's ``Distance("edistance")`` for all pairs
  against celljepa's ``cj.tl.edistance`` on the same AnnData.
* ``edistance-squared-100x200x50``: all-pairs squared (scPerturb) E-distance, the exact O(N·d) closed form
  (what the ``auto`` backend runs for squared distances) against the pairwise C++ kernel (the peer).
* ``edistance-setloss-64x128x64``: set loss forward + backward, 64 conditions x 128 cells x 64 dims.
* ``edistance-onesided-1M`` (only with ``CELLJEPA_BENCH_SCALE=1``): one-sided E-distance of 1,000,000 cells x
  50 dims (1,000 groups against a control group), with peak RSS.
"""

from __future__ import annotations

import os
import resource

import pytest
import torch

from celljepa.kernels import _reference as ref
from celljepa.kernels import edistance, edistance_loss
from celljepa.kernels._edistance import cpu_kernel

G, NG, D = 100, 200, 50
N = G * NG
MACS = N * N / 2 * D
RATES: dict[str, float] = {}


@pytest.fixture(scope="module")
def cells():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=g)
    return x, torch.arange(0, N + 1, NG)


def _reference_allpairs(x, off):
    """Peer: torch.cdist in blocks of whole groups + reshape-sum to a (G, G) matrix of means."""
    sizes = (off[1:] - off[:-1]).to(torch.float64)
    sums = torch.zeros(G, G, dtype=torch.float64)
    step = 2048 // NG * NG
    for i in range(0, N, step):
        for j in range(i, N, step):
            dmat = torch.cdist(x[i : i + step], x[j : j + step], compute_mode="donot_use_mm_for_euclid_dist")
            gi, gj = dmat.shape[0] // NG, dmat.shape[1] // NG
            blk = dmat.reshape(gi, NG, gj, NG).sum(dim=(1, 3), dtype=torch.float64)
            sums[i // NG : i // NG + gi, j // NG : j // NG + gj] = blk
            if j != i:
                sums[j // NG : j // NG + gj, i // NG : i // NG + gi] = blk.T
    diag = torch.diagonal(sums) / (sizes * (sizes - 1))
    means = sums / (sizes[:, None] * sizes[None, :])
    return ref.edistance_from_means(
        means, diag[:, None], diag[None, :], sizes[:, None], sizes[None, :], include_self_pairs=False
    ).fill_diagonal_(0.0)


@pytest.mark.benchmark(group="edistance-allpairs-100x200x50")
def test_allpairs_celljepa_cpu(benchmark, cells):
    x, off = cells
    e = benchmark.pedantic(edistance, (x, off), kwargs={"backend": "cpu"}, rounds=15, warmup_rounds=2)
    RATES["kernel"] = MACS / benchmark.stats.stats.median
    RATES["kernel_best"] = MACS / benchmark.stats.stats.min
    torch.testing.assert_close(e, _reference_allpairs(x, off), rtol=1e-4, atol=1e-4)


@pytest.mark.benchmark(group="edistance-allpairs-100x200x50")
def test_allpairs_tiles_kernel(benchmark, cells):
    """The first C++ kernel (raw rows, no centring), same data, same run."""
    x, off = cells
    with cpu_kernel("tiles"):
        benchmark.pedantic(edistance, (x, off), kwargs={"backend": "cpu"}, rounds=15, warmup_rounds=2)
    RATES["tiles"] = MACS / benchmark.stats.stats.median
    RATES["tiles_best"] = MACS / benchmark.stats.stats.min


@pytest.mark.benchmark(group="edistance-allpairs-100x200x50")
def test_allpairs_reference_peer(benchmark, cells):
    x, off = cells
    benchmark.pedantic(_reference_allpairs, (x, off), rounds=2, warmup_rounds=0)


@pytest.mark.benchmark(group="edistance-allpairs-100x200x50")
def test_allpairs_matmul_same_shape(benchmark, cells):
    """torch.matmul of the same operands: a (2000 x 50) row block against all N rows, (N / 2000) times / 2."""
    x, _ = cells
    blocks = [x[i : i + 2000] for i in range(0, N, 2000)]

    def run():
        for b in blocks[: len(blocks) // 2]:
            torch.matmul(b, x.T)

    benchmark.pedantic(run, rounds=15, warmup_rounds=2)
    RATES["matmul_same_shape"] = (len(blocks) // 2) * 2000 * N * D / benchmark.stats.stats.median
    RATES["matmul_same_shape_best"] = (len(blocks) // 2) * 2000 * N * D / benchmark.stats.stats.min


@pytest.mark.benchmark(group="edistance-allpairs-100x200x50")
def test_allpairs_matmul_square_1024(benchmark):
    """Compute-bound torch.matmul (1024^3), the machine's practical peak multiply-add rate."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    benchmark.pedantic(torch.matmul, (a, b), rounds=60, warmup_rounds=5)
    RATES["matmul_square"] = 1024**3 / benchmark.stats.stats.median
    RATES["matmul_square_best"] = 1024**3 / benchmark.stats.stats.min
    _report_mac_rate(benchmark)


def _report_mac_rate(benchmark):
    """Kernel MAC rate as a percentage of torch.matmul's in the same run, from medians and from best times
    (the best time is the achievable rate on a shared machine); printed (use -s) and stored in extra_info."""
    for stat in ("", "_best"):
        k = RATES.get("kernel" + stat)
        if k is None:
            return
        if (t := RATES.get("tiles" + stat)) is not None:
            benchmark.extra_info[f"kernel_time_over_tiles{stat}"] = round(t / k, 3)
            print(f"\nall-pairs kernel ({'best times' if stat else 'medians'}): time {t / k:.2f}x the first kernel's")
        for name in ("matmul_same_shape", "matmul_square"):
            ref_rate = RATES.get(name + stat)
            if ref_rate is None:
                continue
            pct = 100 * k / ref_rate
            benchmark.extra_info[f"kernel_pct_of_{name}{stat}"] = round(pct, 1)
            label = "best times" if stat else "medians"
            print(
                f"\nall-pairs kernel ({label}): {k / 1e9:.1f} GMAC/s = {pct:.0f}% of {name} "
                f"({ref_rate / 1e9:.1f} GMAC/s)"
            )


@pytest.mark.benchmark(group="edistance-squared-100x200x50")
def test_squared_closed_form(benchmark, cells):
    x, off = cells
    e = benchmark.pedantic(edistance, (x, off), kwargs={"squared": True}, rounds=20, warmup_rounds=2)
    torch.testing.assert_close(e, edistance(x, off, squared=True, backend="cpu"), rtol=1e-4, atol=1e-4)


@pytest.mark.benchmark(group="edistance-squared-100x200x50")
def test_squared_pairwise_kernel_peer(benchmark, cells):
    x, off = cells
    benchmark.pedantic(edistance, (x, off), kwargs={"squared": True, "backend": "cpu"}, rounds=5, warmup_rounds=1)


def _shape(g, ng, d, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(g * ng, d, generator=gen), torch.arange(0, g * ng + 1, ng)


@pytest.mark.parametrize("kernel", ["centered", "tiles_peer"])
@pytest.mark.benchmark(group="edistance-small-10x20x50")
def test_small_groups(benchmark, kernel):
    x, off = _shape(10, 20, 50, 3)
    with cpu_kernel(kernel.removesuffix("_peer")):
        benchmark.pedantic(edistance, (x, off), kwargs={"backend": "cpu"}, rounds=300, warmup_rounds=20)


@pytest.mark.parametrize("kernel", ["centered", "tiles_peer"])
@pytest.mark.benchmark(group="edistance-wide-20x200x2000")
def test_wide_data(benchmark, kernel):
    x, off = _shape(20, 200, 2000, 4)
    with cpu_kernel(kernel.removesuffix("_peer")):
        benchmark.pedantic(edistance, (x, off), kwargs={"backend": "cpu"}, rounds=11, warmup_rounds=2)


SHAPES = {
    "allpairs-100x200x50": (100, 200, 50, 15),
    "small-10x20x50": (10, 20, 50, 400),
    "wide-20x200x2000": (20, 200, 2000, 11),
}


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.benchmark(group="edistance-centered-vs-tiles-interleaved")
def test_centered_over_tiles_interleaved(benchmark, shape):
    """Time ratio centred / first kernel from calls that alternate (one of each per round), robust to a machine
    whose speed drifts between two benchmarks: the min over rounds of each, and the median of per-round ratios."""
    import statistics
    import time

    g, ng, d, rounds = SHAPES[shape]
    x, off = _shape(g, ng, d, 5)
    times: dict[str, list[float]] = {"centered": [], "tiles": []}

    def one_round():
        for name in ("centered", "tiles") if len(times["tiles"]) % 2 else ("tiles", "centered"):
            with cpu_kernel(name):
                t0 = time.perf_counter()
                edistance(x, off, backend="cpu")
                times[name].append(time.perf_counter() - t0)

    benchmark.pedantic(one_round, rounds=rounds, warmup_rounds=2)
    c, t = times["centered"][2:], times["tiles"][2:]
    best = min(c) / min(t)
    per_round = statistics.median(a / b for a, b in zip(c, t, strict=True))
    benchmark.extra_info.update(
        {"centered_over_tiles_best": round(best, 3), "centered_over_tiles_median": round(per_round, 3)}
    )
    print(f"\n{shape}: centred / first kernel = {best:.3f} (best times), {per_round:.3f} (median of per-round ratios)")


B, NB, DL = 64, 128, 64


@pytest.fixture(scope="module")
def sets():
    g = torch.Generator().manual_seed(1)
    p = torch.randn(B * NB, DL, generator=g)
    o = torch.randn(B * NB, DL, generator=g) + 0.3
    off = torch.arange(0, B * NB + 1, NB)
    return p, o, off


def _fwd_bwd(p, o, off, backend):
    pp = p.detach().requires_grad_(True)
    loss = edistance_loss(pp, off, o, off, backend=backend)
    loss.sum().backward()
    return pp.grad


@pytest.mark.benchmark(group="edistance-setloss-64x128x64")
def test_setloss_celljepa_cpu(benchmark, sets):
    p, o, off = sets
    g = benchmark.pedantic(_fwd_bwd, (p, o, off, "cpu"), rounds=10, warmup_rounds=2)
    torch.testing.assert_close(g, _fwd_bwd(p, o, off, "reference"), rtol=1e-4, atol=1e-5)


@pytest.mark.benchmark(group="edistance-setloss-64x128x64")
def test_setloss_tiles_kernel(benchmark, sets):
    p, o, off = sets
    with cpu_kernel("tiles"):
        benchmark.pedantic(_fwd_bwd, (p, o, off, "cpu"), rounds=10, warmup_rounds=2)


@pytest.mark.benchmark(group="edistance-setloss-64x128x64")
def test_setloss_reference_peer(benchmark, sets):
    p, o, off = sets
    benchmark.pedantic(_fwd_bwd, (p, o, off, "reference"), rounds=5, warmup_rounds=1)


@pytest.mark.skipif(os.environ.get("CELLJEPA_BENCH_SCALE") != "1", reason="set CELLJEPA_BENCH_SCALE=1 to run")
@pytest.mark.benchmark(group="edistance-onesided-1M")
def test_onesided_1m_cells(benchmark):
    n_groups, n_ctrl, n = 1000, 10_000, 1_000_000
    g = torch.Generator().manual_seed(2)
    x = torch.randn(n, 50, generator=g)
    sizes = torch.full((n_groups,), (n - n_ctrl) // n_groups)
    off = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(torch.cat([torch.tensor([n_ctrl]), sizes]), 0)])
    pairs = torch.stack([torch.zeros(n_groups, dtype=torch.int64), torch.arange(1, n_groups + 1)], 1)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    e = benchmark.pedantic(edistance, (x, off), kwargs={"pairs": pairs, "backend": "cpu"}, rounds=1, iterations=1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert e.shape == (n_groups,) and torch.isfinite(e).all()
    print(
        f"\none-sided 1M x 50: peak RSS {peak / 1024:.0f} MiB (input {x.numel() * 4 / 2**20:.0f} MiB, "
        f"before {before / 1024:.0f} MiB)"
    )


@pytest.fixture(scope="module")
def cells_adata(cells):
    import anndata as ad
    import numpy as np
    import pandas as pd

    x, _ = cells
    obs = pd.DataFrame({"group": np.repeat([f"g{i:03d}" for i in range(G)], NG)}, index=[f"c{i}" for i in range(N)])
    adata = ad.AnnData(np.zeros((N, 1), dtype=np.float32), obs=obs)
    adata.obsm["X_pca"] = x.numpy()
    return adata


def _tool(benchmark, adata, rounds, **kwargs):
    import celljepa as cj

    benchmark.pedantic(cj.tl.edistance, (adata, "group"), kwargs=kwargs, rounds=rounds, warmup_rounds=1)


@pytest.mark.benchmark(group="edistance-allpairs-vs-scperturb")
def test_scperturb_celljepa_tool(benchmark, cells_adata):
    """celljepa's scanpy-style tool with scPerturb's estimator (squared distances, no subsampling)."""
    _tool(benchmark, cells_adata, 3, equalize=False, squared=True, backend="cpu")


@pytest.mark.benchmark(group="edistance-allpairs-vs-scperturb")
def test_scperturb_celljepa_closed_form(benchmark, cells_adata):
    """The same tool on the auto backend: squared distances take the exact closed form."""
    _tool(benchmark, cells_adata, 5, equalize=False, squared=True)


@pytest.mark.benchmark(group="edistance-allpairs-vs-scperturb")
def test_scperturb_peer_edist(benchmark, cells_adata):
    """Peer: scperturb.edist (PyPI ``scperturb``; its pairwise distances via scikit-learn, all cores)."""
    scperturb = pytest.importorskip("scperturb", reason="install the [bench] extra for the scPerturb peer")
    benchmark.pedantic(
        scperturb.edist,
        (cells_adata,),
        kwargs={"obs_key": "group", "obsm_key": "X_pca", "dist": "sqeuclidean", "n_jobs": -1, "verbose": False},
        rounds=1,
        warmup_rounds=0,
    )


@pytest.mark.benchmark(group="edistance-pertpy-100x200x50")
def test_pertpy_celljepa_tool(benchmark, cells_adata):
    """celljepa's scanpy-style tool: all-pairs E-distance (pertpy's estimator: self pairs in the within terms)."""
    _tool(benchmark, cells_adata, 3, equalize=False, include_self_pairs=True, backend="cpu")


@pytest.mark.benchmark(group="edistance-pertpy-100x200x50")
def test_pertpy_peer_pairwise(benchmark, cells_adata):
    """Peer: pertpy 1.0's ``Distance("edistance").pairwise`` over the same groups and representation."""
    # pertpy 1.0.3 imports multipletests from where statsmodels 0.15 no longer has it (docs/tutorials/pertpy.md)
    multicomp = pytest.importorskip("statsmodels.sandbox.stats.multicomp", reason="pertpy needs statsmodels")
    multitest = pytest.importorskip("statsmodels.stats.multitest", reason="pertpy needs statsmodels")
    if not hasattr(multicomp, "multipletests"):
        multicomp.multipletests = multitest.multipletests
    pt = pytest.importorskip("pertpy", reason="install pertpy for the pertpy peer")
    dist = pt.tools.Distance(metric="edistance", obsm_key="X_pca")
    benchmark.pedantic(
        dist.pairwise, (cells_adata,), kwargs={"groupby": "group", "show_progressbar": False}, rounds=1, warmup_rounds=0
    )
