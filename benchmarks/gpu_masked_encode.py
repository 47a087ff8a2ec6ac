"""Standalone CUDA check and benchmark of the masked sparse encoding kernel (torch, numpy, celljepa only).

Usage::

    python benchmarks/gpu_masked_encode.py results.json [--cells 65536] [--genes 2000] [--hidden 256]

1. Correctness (asserts): on random CSR data, for every mask kind and float32/float64, the CUDA
   backend's forward, dW, db and dvalues match the C++ CPU backend, and the CUDA mask (``mask_bits``
   kernel and the zero pattern of dvalues) is identical to the CPU/Python mask.
   The float32 tensor-core kernels (``cuda_kernel("tensor")``: CSR gather and mask fused with 3xTF32 tiles) are
   checked against the same CPU results.
2. Timing: forward + backward (dW, db) of ``masked_encode`` at GPU sizes, with each CUDA kernel ("tiles", the
   default, and "tensor"; target >= 1.5x the dense peer) (default 65,536 cells ×
   2,000 genes at 10 % density, H = 256, float32, ``kind="random"``, ratio 0.25) against densify +
   dense keep mask + ``torch.matmul`` + backward on the same GPU; warm-up, ``torch.cuda.synchronize``,
   median of repeats, cells/s, the time ratio and the peak GPU memory of each
   (``torch.cuda.max_memory_allocated``; the kernel's own buffers are all torch allocations).

Writes a JSON with every number to argv[1].
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
import torch

import celljepa
from celljepa.kernels import _reference_masked_encode as ref
from celljepa.kernels import load_cuda, mask_for, masked_encode
from celljepa.kernels._ext import cuda_kernel

KINDS = ("none", "random", "block", "module")


def random_csr(n_cells: int, n_genes: int, per_row: int, dtype, device, seed: int = 0):
    rng = np.random.default_rng(seed)
    # sorted unique columns per row without a dense temporary: sort random keys, keep the first per_row
    cols = np.argsort(rng.random((n_cells, n_genes), dtype=np.float32), axis=1)[:, :per_row]
    cols.sort(axis=1)
    crow = torch.arange(0, n_cells * per_row + 1, per_row, dtype=torch.int64, device=device)
    col = torch.from_numpy(cols.reshape(-1).astype(np.int64)).to(device)
    values = torch.from_numpy(rng.gamma(2.0, 1.0, n_cells * per_row)).to(dtype=dtype, device=device)
    return crow, col, values


def check_correctness() -> dict:
    results = {}
    n_cells, n_genes, hidden = 777, 1500, 300
    modules = np.random.default_rng(1).integers(-1, 40, n_genes).astype(np.int32)
    for dtype in (torch.float32, torch.float64):
        crow, col, values = random_csr(n_cells, n_genes, 150, dtype, "cpu", seed=2)
        g = torch.Generator().manual_seed(0)
        w = torch.randn(n_genes, hidden, dtype=dtype, generator=g)
        b = torch.randn(hidden, dtype=dtype, generator=g)
        dout = torch.randn(n_cells, hidden, dtype=dtype, generator=g)
        for kind in KINDS:
            kw = dict(
                kind=kind,
                ratio=0.3,
                seed=2**63 + 5,
                cell_offset=2**40 + 3,
                block_size=13,
                gene_to_module=modules if kind == "module" else None,
            )
            res = {}
            runs = [("cpu", "cpu", "tiles"), ("cuda", "cuda", "tiles")]
            if dtype == torch.float32:
                runs.append(("cuda", "cuda", "tensor"))
            for backend, dev, kernel in runs:
                v = values.to(dev).clone().requires_grad_(True)
                wr = w.detach().to(dev).clone().requires_grad_(True)
                br = b.detach().to(dev).clone().requires_grad_(True)
                with cuda_kernel(kernel):
                    h = masked_encode((crow.to(dev), col.to(dev), v, n_genes), wr, br, backend=backend, **kw)
                    h.backward(dout.to(dev))
                res[f"{backend}/{kernel}"] = [t.detach().cpu() for t in (h, wr.grad, br.grad, v.grad)]
            tol = dict(rtol=2e-4, atol=2e-4) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-9)
            for run in res:
                for name, a, e in zip(("h", "dW", "db", "dvalues"), res[run], res["cpu/tiles"], strict=True):
                    torch.testing.assert_close(
                        a, e, **tol, msg=lambda m, n=name, k=kind, d=dtype, r=run: f"{r} {k} {d} {n}: {m}"
                    )
                assert torch.equal(res[run][3] == 0, res["cpu/tiles"][3] == 0), f"{kind}: dvalues zeros differ"
            res["cuda"], res["cpu"] = res["cuda/tiles"], res["cpu/tiles"]
            # mask bits straight from the CUDA kernel vs the Python/CPU mask
            cells = torch.arange(n_cells, dtype=torch.int64, device="cuda") + kw["cell_offset"]
            bits = torch.empty(n_cells, n_genes, dtype=torch.uint8, device="cuda")
            mod = torch.from_numpy(modules).cuda()
            load_cuda().mask_bits(
                cells.data_ptr(),
                n_cells,
                n_genes,
                bits.data_ptr(),
                ref.KINDS[kind],
                kw["seed"],
                ref.ratio_threshold(kw["ratio"]),
                kw["block_size"],
                mod.data_ptr() if kind == "module" else 0,
                torch.cuda.current_stream().cuda_stream,
            )
            torch.cuda.synchronize()
            expect = mask_for(kw["seed"], n_cells, n_genes, **{k: x for k, x in kw.items() if k != "seed"})
            assert torch.equal(bits.cpu().bool(), expect), f"{kind}: CUDA mask differs from CPU mask"
            results[f"{kind}/{str(dtype).split('.')[-1]}"] = {
                "max_abs_diff_h": float((res["cuda"][0] - res["cpu"][0]).abs().max()),
                "max_abs_diff_dW": float((res["cuda"][1] - res["cpu"][1]).abs().max()),
                "hidden_fraction": float(expect.float().mean()),
            }
    return results


def timed(fn, repeats: int) -> list[float]:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        out.append(time.perf_counter() - t)
    return out


def benchmark(n_cells: int, n_genes: int, hidden: int, density: float, repeats: int) -> dict:
    per_row = max(1, int(round(n_genes * density)))
    crow, col, values = random_csr(n_cells, n_genes, per_row, torch.float32, "cuda", seed=3)
    g = torch.Generator(device="cuda").manual_seed(0)
    w = (torch.randn(n_genes, hidden, device="cuda", generator=g) / n_genes**0.5).requires_grad_(True)
    b = torch.zeros(hidden, device="cuda", requires_grad=True)
    dout = torch.randn(n_cells, hidden, device="cuda", generator=g)
    ratio = 0.25

    def ours(kernel="tiles"):
        w.grad = b.grad = None
        with cuda_kernel(kernel):
            masked_encode(
                (crow, col, values, n_genes), w, b, kind="random", ratio=ratio, seed=1, backend="cuda"
            ).backward(dout)

    def ours_forward(kernel="tiles"):
        with torch.no_grad(), cuda_kernel(kernel):
            masked_encode((crow, col, values, n_genes), w, b, kind="random", ratio=ratio, seed=1, backend="cuda")

    csr = torch.sparse_csr_tensor(crow, col, values, size=(n_cells, n_genes))

    def peer():
        w.grad = b.grad = None
        x = csr.to_dense()
        keep = torch.rand(n_cells, n_genes, device="cuda") >= ratio
        (torch.matmul(x * keep, w) + b).backward(dout)

    def peer_tf32():  # the same with TF32 matmuls (10-bit mantissas: less accurate than the float32 kernels)
        torch.backends.cuda.matmul.allow_tf32 = True
        try:
            peer()
        finally:
            torch.backends.cuda.matmul.allow_tf32 = False

    torch.backends.cuda.matmul.allow_tf32 = False
    out = {"n_cells": n_cells, "n_genes": n_genes, "hidden": hidden, "density": density, "nnz": int(col.numel())}
    for name, fn in (
        ("celljepa_fwd_bwd", ours),
        ("celljepa_fwd_only", ours_forward),
        ("celljepa_tensor_fwd_bwd", lambda: ours("tensor")),
        ("celljepa_tensor_fwd_only", lambda: ours_forward("tensor")),
        ("peer_dense_fwd_bwd", peer),
        ("peer_dense_tf32_fwd_bwd", peer_tf32),
    ):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        times = timed(fn, repeats)
        med = statistics.median(times)
        out[name] = {
            "median_s": med,
            "min_s": min(times),
            "cells_per_s": n_cells / med,
            "peak_extra_mem_mb": (torch.cuda.max_memory_allocated() - base) / 2**20,
        }
        print(
            f"{name:>22}: median {med * 1e3:8.3f} ms  ({n_cells / med:,.0f} cells/s), "
            f"peak extra GPU memory {out[name]['peak_extra_mem_mb']:.1f} MB",
            flush=True,
        )
    out["ratio_celljepa_over_peer"] = out["celljepa_fwd_bwd"]["median_s"] / out["peer_dense_fwd_bwd"]["median_s"]
    out["speedup_vs_peer"] = 1.0 / out["ratio_celljepa_over_peer"]
    out["speedup_tensor_vs_peer"] = out["peer_dense_fwd_bwd"]["median_s"] / out["celljepa_tensor_fwd_bwd"]["median_s"]
    print(
        f"celljepa / peer time ratio: {out['ratio_celljepa_over_peer']:.3f} (speed-up {out['speedup_vs_peer']:.2f}x); "
        f"tensor-core kernels: speed-up {out['speedup_tensor_vs_peer']:.2f}x (target >= 1.5x)",
        flush=True,
    )
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_json")
    p.add_argument("--cells", type=int, default=65536)
    p.add_argument("--genes", type=int, default=2000)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--density", type=float, default=0.1)
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args(argv)
    if not torch.cuda.is_available() or load_cuda() is None or load_cuda().device_count() == 0:
        print("needs a CUDA device and celljepa._cuda", file=sys.stderr)
        return 2
    report = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "celljepa": getattr(celljepa, "__version__", "?"),
        "cuda_build": load_cuda().build_info(),
    }
    print(f"device: {report['device']}", flush=True)
    report["correctness"] = check_correctness()
    print(
        "correctness: CUDA == CPU (forward, dW, db, dvalues) and identical masks for",
        list(report["correctness"]),
        flush=True,
    )
    report["benchmark"] = benchmark(args.cells, args.genes, args.hidden, args.density, args.repeats)
    with open(args.out_json, "w") as fh:
        json.dump(report, fh, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
