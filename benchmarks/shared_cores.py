"""Two demo runs side by side against one alone: is celljepa graceful when the cores are shared?

One script, one machine, one sitting: a short run of the demo main job (``celljepa benchmark --data demo``, the
first fold of each split, shortened training) is timed alone, then two copies are started together and the wall
time until both have finished is taken. On ``c`` cores a fair share explains at most 2× (each run gets half the
cores); spinning OpenMP threads make it many times worse. Target: the pair takes ≤ 2.5× one run alone.

Each mode runs the same command line in a clean environment (no ``OMP_*``, ``MKL_*``, ``NUMBA_*``, ``OPENBLAS_*``
variables, as a new user's shell):

* ``after``: the ``celljepa`` command as shipped: it sizes its pools to the CPUs it may use and idle OpenMP
  threads spin briefly before they sleep (``celljepa._threads.prepare_command``).
* ``before``: the same command with that step switched off, the behaviour of earlier releases (pools sized by
  each library, libgomp's default spin of ~300,000 iterations), for the ratio it had.
* ``passive``: as ``after`` with ``OMP_WAIT_POLICY=PASSIVE`` (idle threads sleep at once), the alternative.

``--loop`` times a training loop of the transition models' size (a 3-layer MLP on 2,048 × 128, Adam, 300
steps) instead of the demo, in seconds, under each thread setting a command could choose: ``before`` (libgomp's
defaults), ``after`` (``GOMP_SPINCOUNT=1000``, what the command sets), ``passive`` (``OMP_WAIT_POLICY=PASSIVE``)
and ``one-thread`` (``OMP_NUM_THREADS=1``): how each shares the cores, and what it costs a run alone.

Usage::

    python benchmarks/shared_cores.py                      # both modes, writes benchmarks/results/threads/
    python benchmarks/shared_cores.py --modes after --out /tmp/threads
    python benchmarks/shared_cores.py --loop --modes before,after,passive,one-thread

Run it on otherwise quiet cores: it measures contention between its own runs, not with other jobs.
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

HERE = Path(__file__).resolve().parent
SHORT = [
    "--max-folds", "1", "--jepa-steps", "100", "--transition-set", "max_steps=100", "--transition-set", "ensemble=1",
    "--no-progress", "-q",
]  # fmt: skip
TARGET = 2.5
# the command with its thread setup switched off (the behaviour before celljepa._threads existed)
BEFORE = (
    "import sys, celljepa.cli as cli; cli.prepare_command = lambda *a, **k: []; "
    "sys.argv[0] = 'celljepa'; raise SystemExit(cli.main())"
)


def _environ() -> dict[str, str]:
    drop = ("OMP_", "MKL_", "NUMBA_", "OPENBLAS_", "GOMP_", "KMP_", "SLURM_CPUS")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


LOOP = """
import torch
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(128, 256), torch.nn.GELU(), torch.nn.Linear(256, 256), torch.nn.GELU(),
                          torch.nn.Linear(256, 50))
opt = torch.optim.Adam(net.parameters(), 3e-4)
x, y = torch.randn(2048, 128), torch.randn(2048, 50)
for _ in range(300):
    loss = ((net(x) - y) ** 2).mean(); opt.zero_grad(); loss.backward(); opt.step()
"""
LOOP_ENV = {"before": {}, "after": {"GOMP_SPINCOUNT": "1000"}, "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
            "one-thread": {"OMP_NUM_THREADS": "1"}}  # fmt: skip
_loop = False


def _environ_for(mode: str) -> dict[str, str]:
    env = _environ()
    if _loop:
        env.update(LOOP_ENV[mode])
    elif mode == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    return env


def _command(mode: str, out: Path) -> list[str]:
    if _loop:
        return [sys.executable, "-c", LOOP]
    head = [sys.executable, "-c", BEFORE] if mode == "before" else [sys.executable, "-m", "celljepa.cli"]
    return [*head, "benchmark", "--data", "demo", *SHORT, "--out", str(out)]


def _run_together(mode: str, n: int, work: Path) -> float:
    """Start ``n`` runs at once; the wall time until the last one has finished."""
    start = time.perf_counter()
    procs = []
    for i in range(n):
        log = (work / f"{mode}-{n}-{i}.log").open("w")
        procs.append(
            (
                subprocess.Popen(
                    _command(mode, work / f"{mode}-{n}-{i}"),
                    env=_environ_for(mode),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                ),
                log,
            )
        )
    for proc, log in procs:
        proc.wait()
        log.close()
        if proc.returncode != 0:
            raise SystemExit(f"a {mode} run failed (exit {proc.returncode}); see {log.name}")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default="after,before", help="after, before, passive (comma-separated)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "threads")
    parser.add_argument("--loop", action="store_true", help="a training loop instead of the demo (see above)")
    args = parser.parse_args(argv)
    global _loop
    _loop = args.loop
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    allowed = set(LOOP_ENV) if _loop else {"after", "before", "passive"}
    if not modes or set(modes) - allowed:
        parser.error(f"--modes takes {', '.join(sorted(allowed))}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="celljepa-shared-cores-") as tmp:
        work = Path(tmp)
        for mode in modes:
            alone = _run_together(mode, 1, work)
            pair = _run_together(mode, 2, work)
            rows.append(
                {"mode": mode, "alone_s": round(alone, 1), "pair_s": round(pair, 1), "ratio": round(pair / alone, 2)}
            )
            print(f"{mode}: one alone {alone:.1f} s, two side by side {pair:.1f} s: {pair / alone:.2f}×", flush=True)
    result = {
        "command": "a 300-step training loop (benchmarks/shared_cores.py LOOP)"
        if _loop
        else "celljepa benchmark --data demo " + " ".join(SHORT),
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "target_ratio": TARGET,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "shared_cores_loop" if _loop else "shared_cores"
    tmp_json = args.out / f"{stem}.json.tmp"
    tmp_json.write_text(json.dumps(result, indent=1) + "\n")
    tmp_json.replace(args.out / f"{stem}.json")
    lines = [
        "| mode | one run alone (s) | two side by side (s) | ratio | target ≤ 2.5× |",
        "|---|---:|---:|---:|---|",
        *(
            f"| {r['mode']} | {r['alone_s']} | {r['pair_s']} | {r['ratio']}× | "
            f"{'met' if r['ratio'] <= TARGET else 'not met'} |"
            for r in rows
        ),
    ]
    tmp_md = args.out / f"{stem}.md.tmp"
    tmp_md.write_text(f"`{result['command']}` on {result['cpus']} CPUs, {result['date']}\n\n" + "\n".join(lines) + "\n")
    tmp_md.replace(args.out / f"{stem}.md")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
