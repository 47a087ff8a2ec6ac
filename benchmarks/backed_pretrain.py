"""Backed-mode JEPA pretraining on a simulated 1,000,000-cell .h5ad: peak memory and throughput.

Writes the file once with :func:`celljepa.datasets.write_simulated_h5ad` (chunked, bounded memory),
then runs ``celljepa pretrain FILE --backed`` in a fresh process for each chunk size and reports the
peak resident memory of that process (``ru_maxrss`` of the child) and the training throughput
(cells/s from ``metrics.jsonl``). The peer is the in-memory size of the same matrix (float32 CSR):
a run that loaded the file would need at least that much.

Usage::

    python benchmarks/backed_pretrain.py --cells 1000000 --genes 1000 --steps 300 \
        --file /tmp/cj_sim_1m.h5ad --out benchmarks/results/backed_pretrain.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _csr_bytes(path: Path) -> int:
    import h5py

    with h5py.File(path, "r") as f:
        x = f["X"]
        nnz = x["data"].shape[0]
        return nnz * (4 + 4) + (x["indptr"].shape[0]) * 8  # float32 values + int32 indices + int64 indptr


def _run(cmd: list[str], env: dict) -> tuple[int, float, str]:
    """Run ``cmd``; return (peak RSS of that child in bytes, wall seconds, stderr)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{stderr[-4000:]}")
    return usage.ru_maxrss * 1024, wall, stderr


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", type=int, default=1_000_000)
    p.add_argument("--genes", type=int, default=1000)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--chunk-size", type=int, default=65_536)
    p.add_argument("--file", type=Path, default=Path("/tmp/cj_sim_1m.h5ad"))
    p.add_argument("--runs", type=Path, default=Path("/tmp/cj_backed_runs"))
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()

    import celljepa as cj

    if not args.file.exists():
        t0 = time.perf_counter()
        cj.datasets.write_simulated_h5ad(args.file, args.cells, args.genes, 50, 4, chunk_size=50_000, seed=0)
        print(f"wrote {args.file} in {time.perf_counter() - t0:.0f} s")
    csr = _csr_bytes(args.file)
    env = {**os.environ}
    run = args.runs / f"chunk{args.chunk_size}"
    cmd = [
        sys.executable,
        "-m",
        "celljepa.cli",
        "pretrain",
        str(args.file),
        "--backed",
        "--out",
        str(run),
        "--restart",
        "--no-progress",
        "--set",
        "mask.kind=random",
        "--set",
        f"train.max_steps={args.steps}",
        "--set",
        f"train.batch_size={args.batch_size}",
        "--set",
        f"data.chunk_size={args.chunk_size}",
        "--set",
        "train.log_every=50",
        "--set",
        f"train.eval_every={args.steps}",
        "--set",
        f"train.checkpoint_every={args.steps}",
    ]
    floor_cmd = [
        sys.executable,
        "-c",
        "import sys, anndata as ad, celljepa, torch; a = ad.read_h5ad(sys.argv[1], backed='r'); a.file.close()",
        str(args.file),
    ]
    floor, _, _ = _run(floor_cmd, env)  # imports + the file's obs/var in memory: the floor of any run
    peak, wall, _ = _run(cmd, env)
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r.get("split") != "eval"]
    steady = [r["cells_per_s"] for r in train[1:]] or [train[-1]["cells_per_s"]]
    result = json.loads((run / "eval.json").read_text())
    row = {
        "cells": args.cells,
        "genes": args.genes,
        "file_bytes": args.file.stat().st_size,
        "csr_in_memory_bytes": csr,
        "chunk_size": args.chunk_size,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "floor_rss_bytes": floor,
        "train_peak_rss_bytes": result["train_info"]["peak_rss_bytes"],
        "peak_rss_bytes": peak,
        "peak_rss_over_csr": peak / csr,
        "cells_per_s": sum(steady) / len(steady),
        "train_seconds": result["train_seconds"],
        "wall_seconds": round(wall, 1),
        "effective_rank": result["diagnostics"]["effective_rank"],
        "torch_threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or None,
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(row, indent=2))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        rows = json.loads(args.out.read_text()) if args.out.exists() else []
        rows = [r for r in rows if r.get("chunk_size") != args.chunk_size] + [row]
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
