"""The baselines end to end on simulated screens of 100 k, 300 k and 1 M cells: time and peak memory.

Each file (2,000 genes, 200 perturbations, written chunk by chunk by
:func:`celljepa.datasets.write_simulated_h5ad`) is scored by ``celljepa eval-baselines FILE --backed`` (one S1
fold of 5) in a fresh process: the evaluation space (HVGs + exact PCA from the chunked scatter matrix), every
baseline tuned on validation, the E-distance, E-test and noise floor of every test condition, the figures and
the run folder. The peak resident memory of that process is ``ru_maxrss`` from ``wait4``. The peer, on the
smallest file only, is the same command without ``--backed``: the whole matrix in memory and the training
matrix densified for the PCA.

Usage::

    python benchmarks/scale_baselines.py --cells 100000,300000,1000000 --dir /tmp/cj_scale \
        --out benchmarks/results/scale_baselines.json
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


def _stored_values(path: Path) -> int:
    import h5py

    with h5py.File(path, "r") as f:
        return int(f["X"]["data"].shape[0])


def _run(cmd: list[str], env: dict) -> dict:
    """Run ``cmd`` in a child process: its exit code, wall seconds and peak RSS (bytes)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        err.seek(0)
        tail = err.read()[-2000:]
    return {
        "returncode": os.waitstatus_to_exitcode(status),
        "wall_s": round(time.perf_counter() - t0, 1),
        "peak_rss_bytes": int(usage.ru_maxrss) * 1024,
        "stderr_tail": tail,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", default="100000,300000,1000000")
    p.add_argument("--genes", type=int, default=2000)
    p.add_argument("--perturbations", type=int, default=200)
    p.add_argument("--contexts", type=int, default=2)
    p.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "cj_scale")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/scale_baselines.json"))
    p.add_argument("--no-peer", action="store_true", help="skip the in-memory run on the smallest file")
    args = p.parse_args(argv)

    import celljepa as cj
    from celljepa._io import write_json_atomic

    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(os.cpu_count()))}
    sizes = [int(c) for c in args.cells.split(",")]
    args.dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, n in enumerate(sizes):
        path = args.dir / f"sim_{n}x{args.genes}.h5ad"
        write_s = None
        if not path.is_file():
            t0 = time.perf_counter()
            cj.datasets.write_simulated_h5ad(
                path, n, args.genes, args.perturbations, args.contexts, chunk_size=50_000, seed=0, progress=False
            )
            write_s = round(time.perf_counter() - t0, 1)
        runs = [("backed", ["--backed"])] + ([("in_memory", [])] if i == 0 and not args.no_peer else [])
        for mode, extra in runs:
            out = args.dir / f"run_{n}_{mode}"
            cmd = [
                sys.executable,
                "-m",
                "celljepa.cli",
                "eval-baselines",
                str(path),
                "--split",
                "S1_unseen_perturbation",
                "--fold",
                "0",
                "--folds",
                "5",
                "--out",
                str(out),
                *extra,
            ]
            result = _run(cmd, env)
            row = {
                "cells": n,
                "genes": args.genes,
                "perturbations": args.perturbations,
                "mode": mode,
                "stored_values": _stored_values(path),
                "file_bytes": path.stat().st_size,
                "write_s": write_s,
                **result,
            }
            if result["returncode"] == 0:
                m = json.loads((out / "metrics.json").read_text())
                config = json.loads((out / "config.json").read_text())
                row.update(
                    n_test_conditions=m["n_test_conditions"],
                    comparator=m["comparator"],
                    methods=sorted(m["methods"]),
                    timings_s=config.get("timings_s"),
                )
                del row["stderr_tail"]
            rows.append(row)
            print(
                f"{n:>9,} cells {mode:>9}: {result['wall_s']:7.1f} s, peak RSS "
                f"{result['peak_rss_bytes'] / 2**30:.2f} GiB, exit {result['returncode']}",
                flush=True,
            )
    write_json_atomic(
        args.out,
        {
            "rows": rows,
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine()},
            "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        },
    )
    print(f"written to {args.out}")
    return 0 if all(r["returncode"] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
