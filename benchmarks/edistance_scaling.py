"""Scaling table of the C++ all-pairs E-distance: cells per group × groups × dims, against torch.matmul.

For each shape, float32 random data, all pairs of groups (``edistance(x, offsets, backend="cpu")``): the best of
a few calls of the centred kernel and of the first kernel (``tiles``), alternating, their multiply-add rates
((N²/2)·d MACs) and the centred kernel's rate as a percentage of ``torch.matmul`` (1024³, compute-bound) timed
in the same run. Shapes above ``--max-gmac`` multiply-adds are left out.

Usage::

    python benchmarks/edistance_scaling.py                 # writes benchmarks/results/kernels/edistance_scaling.*
    python benchmarks/edistance_scaling.py --max-gmac 50 --out /tmp/scaling

Run on quiet cores; threads: ``OMP_NUM_THREADS`` or all the CPUs the process may use.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from celljepa.kernels import edistance
from celljepa.kernels._edistance import cpu_kernel

HERE = Path(__file__).resolve().parent
CELLS = (20, 200, 1000)
GROUPS = (10, 100)
DIMS = (50, 500, 2000)


def _best(fn, calls: int) -> float:
    fn()
    out = float("inf")
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        out = min(out, time.perf_counter() - t0)
    return out


def _matmul_rate() -> float:
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    return 1024**3 / _best(lambda: torch.matmul(a, b), 30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-gmac", type=float, default=300.0, help="largest shape, in 10⁹ multiply-adds")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "kernels")
    args = parser.parse_args(argv)
    rows = []
    matmul = [_matmul_rate()]
    for d in DIMS:
        for g in GROUPS:
            for ng in CELLS:
                n = g * ng
                macs = n * n / 2 * d
                if macs > args.max_gmac * 1e9:
                    continue
                gen = torch.Generator().manual_seed(0)
                x, off = torch.randn(n, d, generator=gen), torch.arange(0, n + 1, ng)
                calls = max(3, min(200, int(2e10 / macs)))
                times = {"centered": float("inf"), "tiles": float("inf")}
                for _ in range(2):  # alternate, so that a drifting machine hits both alike
                    for name in times:
                        with cpu_kernel(name):
                            run = lambda x=x, off=off: edistance(x, off, backend="cpu")  # noqa: E731
                            times[name] = min(times[name], _best(run, calls))
                matmul.append(_matmul_rate())
                rate = macs / times["centered"]
                rows.append(
                    {
                        "cells_per_group": ng,
                        "groups": g,
                        "dims": d,
                        "seconds": round(times["centered"], 6),
                        "gmac_s": round(rate / 1e9, 1),
                        "tiles_gmac_s": round(macs / times["tiles"] / 1e9, 1),
                        "pct_of_matmul": round(100 * rate / max(matmul), 1),
                    }
                )
                r = rows[-1]
                print(
                    f"{ng:>5} cells × {g:>3} groups × {d:>4} dims: {r['seconds'] * 1e3:9.2f} ms, "
                    f"{r['gmac_s']:5.1f} GMAC/s ({r['pct_of_matmul']:.0f} % of matmul), "
                    f"first kernel {r['tiles_gmac_s']:.1f}",
                    flush=True,
                )
    result = {
        "threads": torch.get_num_threads(),
        "matmul_gmac_s": round(max(matmul) / 1e9, 1),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "rows": rows,
    }
    lines = [
        f"All-pairs E-distance, float32, {result['threads']} threads, {result['date']}; torch.matmul 1024³: "
        f"{result['matmul_gmac_s']} GMAC/s (best in the same run).",
        "",
        "| cells per group | groups | dims | time | GMAC/s | % of matmul | first kernel GMAC/s |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {r['cells_per_group']} | {r['groups']} | {r['dims']} | {r['seconds'] * 1e3:.2f} ms | {r['gmac_s']} | "
            f"{r['pct_of_matmul']:.0f} | {r['tiles_gmac_s']} |"
            for r in rows
        ),
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in (
        ("edistance_scaling.json", json.dumps(result, indent=1)),
        ("edistance_scaling.md", "\n".join(lines)),
    ):
        tmp = args.out / (name + ".tmp")
        tmp.write_text(text + "\n")
        tmp.replace(args.out / name)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
