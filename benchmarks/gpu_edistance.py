"""CUDA E-distance kernels: correctness against the C++ CPU kernels, then timings at GPU sizes.

Both float32 block-sum kernels are checked and timed: "tiles" (SIMT register tiles, the default) and "tensor"
(3xTF32 tensor cores, ``celljepa.kernels._ext.cuda_kernel("tensor")``); the target for "tensor" is >= 50 % of
torch.matmul's fp32 rate (TF32 off) in the same run.

Usage: ``python benchmarks/gpu_edistance.py results.json`` on a machine with a CUDA device and celljepa built
with ``celljepa._cuda``. Needs only torch, numpy and celljepa. Writes a JSON of results to argv[1].
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch

import celljepa
from celljepa.kernels import build_info, cross_distance_means, edistance, edistance_loss
from celljepa.kernels._ext import cuda_kernel

#: the float32 block-sum kernels: SIMT register tiles (the default) and 3xTF32 tensor cores
KERNELS = ("tiles", "tensor")


def _offsets(sizes) -> torch.Tensor:
    return torch.tensor([0, *np.cumsum(sizes).tolist()], dtype=torch.int64)


def _time(fn, reps: int = 5, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def check_correctness(results: dict) -> None:
    g = torch.Generator().manual_seed(0)
    checks = {}
    for dtype, tol in ((torch.float32, 2e-5), (torch.float64, 1e-10)):
        sizes = [1, 2, 7, 300, 65, 129, 513]
        x = torch.randn(sum(sizes), 23, generator=g, dtype=torch.float64).to(dtype)
        x[3] = x[4]
        off = _offsets(sizes)
        for squared in (False, True):
            for kernel in KERNELS:
                with cuda_kernel(kernel):
                    a = cross_distance_means(x.cuda(), off, squared=squared, backend="cuda").cpu()
                b = cross_distance_means(x, off, squared=squared, backend="cpu")
                torch.testing.assert_close(a, b, rtol=tol, atol=tol, equal_nan=True)
                pairs = torch.tensor([[0, 1], [3, 2], [6, 6], [4, 0], [3, 6]])
                with cuda_kernel(kernel):
                    a = cross_distance_means(x.cuda(), off, squared=squared, pairs=pairs, backend="cuda").cpu()
                b = cross_distance_means(x, off, squared=squared, pairs=pairs, backend="cpu")
                torch.testing.assert_close(a, b, rtol=tol, atol=tol, equal_nan=True)
            # loss and gradients
            ns, ms = [3, 1, 40, 300, 64], [5, 2, 1, 270, 65]
            p = torch.randn(sum(ns), 37, generator=g, dtype=torch.float64).to(dtype)
            o = (torch.randn(sum(ms), 37, generator=g, dtype=torch.float64) + 0.5).to(dtype)
            p[1] = p[0]
            o[0] = p[0]
            po, oo = _offsets(ns), _offsets(ms)
            w = torch.randn(len(ns), dtype=dtype)
            outs = []
            for dev, bk in (("cuda", "cuda"), ("cpu", "cpu")):
                pp, ob = p.to(dev).requires_grad_(True), o.to(dev).requires_grad_(True)
                loss = edistance_loss(pp, po, ob, oo, squared=squared, backend=bk)
                gp, go = torch.autograd.grad((loss * w.to(dev)).sum(), [pp, ob])
                outs.append((loss.detach().cpu(), gp.cpu(), go.cpu()))
            ltol = 1e-4 if dtype == torch.float32 else 1e-9
            for a, b in zip(*outs, strict=True):
                assert torch.isfinite(a).all()
                torch.testing.assert_close(a, b, rtol=ltol, atol=ltol)
            checks[f"{dtype}-squared={squared}"] = "ok"
    results["correctness"] = checks
    print("correctness: CUDA matches the C++ CPU kernels", flush=True)


def matmul_rate(m: int, k: int, n: int) -> float:
    a = torch.randn(m, k, device="cuda")
    b = torch.randn(k, n, device="cuda")
    t = _time(lambda: a @ b, reps=10)
    return m * k * n / t  # MAC/s


def bench(results: dict) -> None:
    torch.backends.cuda.matmul.allow_tf32 = False  # compare against plain fp32 FMA throughput
    peak = matmul_rate(8192, 8192, 8192)
    results["matmul_fp32_tflops"] = 2 * peak / 1e12
    print(f"torch.matmul fp32 8192^3: {2 * peak / 1e12:.1f} TFLOP/s", flush=True)

    # all-pairs: 200k cells in 1000 groups x 50 dims (and the CPU benchmark's 100 x 200 x 50), each kernel
    d = 50
    same = matmul_rate(200_000 // 4, d, 8192)
    results["matmul_same_k_tflops"] = 2 * same / 1e12
    for n, gsz, name in ((200_000, 200, "allpairs_200k_1000groups_50d"), (20_000, 200, "allpairs_100x200x50")):
        x = torch.randn(n, d, device="cuda")
        off = torch.arange(0, n + 1, gsz)
        macs = n * n / 2 * d
        for kernel in KERNELS:
            with cuda_kernel(kernel):
                t = _time(lambda x=x, off=off: edistance(x, off, backend="cuda"), reps=5, warmup=2)
            results[f"{name}/{kernel}"] = {
                "seconds": t,
                "tflops": 2 * macs / t / 1e12,
                "pct_of_matmul_peak": 100 * macs / t / peak,
                "pct_of_matmul_same_k": 100 * macs / t / same,
            }
            print(f"{name} [{kernel}]:", results[f"{name}/{kernel}"], flush=True)

    # one-sided: 1M cells, 1000 groups of 990 against a control group of 10k
    n_groups, n_ctrl, n = 1000, 10_000, 1_000_000
    x = torch.randn(n, d, device="cuda")
    sizes = [n_ctrl] + [(n - n_ctrl) // n_groups] * n_groups
    off = _offsets(sizes)
    pairs = torch.stack([torch.zeros(n_groups, dtype=torch.int64), torch.arange(1, n_groups + 1)], 1)
    gs = sizes[1]
    macs = (n_ctrl * gs * n_groups + n_ctrl**2 / 2 + n_groups * gs**2 / 2) * d
    for kernel in KERNELS:
        torch.cuda.reset_peak_memory_stats()
        with cuda_kernel(kernel):
            t = _time(lambda: edistance(x, off, pairs=pairs, backend="cuda"), reps=3, warmup=1)
        results[f"onesided_1M_50d/{kernel}"] = {
            "seconds": t,
            "tflops": 2 * macs / t / 1e12,
            "pct_of_matmul_peak": 100 * macs / t / peak,
            "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
        }
        print(f"one-sided 1M [{kernel}]:", results[f"onesided_1M_50d/{kernel}"], flush=True)

    # set loss fwd + bwd: 1024 conditions x 256 cells x 64 dims
    b, nb, dl = 1024, 256, 64
    p = torch.randn(b * nb, dl, device="cuda")
    o = torch.randn(b * nb, dl, device="cuda") + 0.3
    off = torch.arange(0, b * nb + 1, nb)

    def step(backend):
        pp = p.detach().requires_grad_(True)
        edistance_loss(pp, off, o, off, backend=backend).sum().backward()
        return pp.grad

    t = _time(lambda: step("cuda"), reps=5, warmup=2)
    t_ref = _time(lambda: step("reference"), reps=2, warmup=1)
    # forward: dots of 3 blocks per set (cross full, two within halves ~ full) -> 2 nb^2 dl MACs; gradient
    # pass: two GEMM-like products per block (W @ Y, W^T @ X) -> about 2x that again
    macs = b * (2 * nb * nb * dl) * 3
    results["setloss_1024x256x64"] = {
        "seconds": t,
        "reference_seconds": t_ref,
        "speedup_vs_reference": t_ref / t,
        "tflops_approx": 2 * macs / t / 1e12,
    }
    print("set loss:", results["setloss_1024x256x64"], flush=True)


def main() -> None:
    out = sys.argv[1] if len(sys.argv) > 1 else "gpu_edistance.json"
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device visible to torch")
    results: dict = {
        "celljepa": celljepa.__version__,
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0),
        "build": build_info()["_cuda"],
    }
    try:
        check_correctness(results)
        bench(results)
    finally:
        with open(out, "w") as fh:
            json.dump(results, fh, indent=2, default=str)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
