"""The example sbatch scripts in the repository's ``slurm/`` folder, rendered by :func:`render_sbatch`.

Regenerate them after changing the renderer (a test compares them byte for byte)::

    python -m celljepa.slurm._examples          # writes slurm/*.sbatch (run from the repository root)
    python -m celljepa.slurm._examples OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

from ._render import ShellVar, render_sbatch, write_script

_H5AD = "data/processed/my_screen/lognorm-v1.h5ad"
_SETUP = ["source .venv/bin/activate"]

# file name -> keyword arguments of render_sbatch (command included). No chdir: the examples are meant to be
# submitted from the project folder, which is then the job's working directory.
EXAMPLES: dict[str, dict] = {
    "pretrain-1gpu.sbatch": {
        "command": ["celljepa", "pretrain", _H5AD, "--out", "runs/pretrain-my_screen", "--no-progress"],
        "job_name": "celljepa-pretrain",
        "time": "48:00:00",
        "nodes": 1,
        "ntasks_per_node": 1,
        "gpus_per_node": 1,
        "cpus_per_task": 8,
        "mem": "64G",
        "output": "runs/pretrain-my_screen/slurm/%x-%j.out",
        "setup": _SETUP,
        "signal_seconds": 300,
    },
    "pretrain-ddp-2x4gpu.sbatch": {
        "command": ["celljepa", "pretrain", _H5AD, "--out", "runs/pretrain-my_screen-ddp", "--no-progress"],
        "job_name": "celljepa-pretrain-ddp",
        "time": "48:00:00",
        "nodes": 2,
        "ntasks_per_node": 4,
        "gpus_per_node": 4,
        "cpus_per_task": 8,
        "mem": "256G",
        "output": "runs/pretrain-my_screen-ddp/slurm/%x-%j.out",
        "setup": _SETUP,
        "signal_seconds": 300,
        "distributed": True,
    },
    "sweep-array.sbatch": {
        "command": [
            "celljepa",
            "sweep",
            "--grid",
            "configs/sweeps/ablations.yaml",
            "--out",
            "runs/ablations",
            "--task",
            ShellVar("SLURM_ARRAY_TASK_ID"),
            "--no-progress",
        ],
        "job_name": "celljepa-sweep",
        "time": "24:00:00",
        "gpus_per_node": 1,
        "cpus_per_task": 8,
        "mem": "64G",
        "array": "0-11%4",
        "output": "runs/ablations/slurm/%x-%A_%a.out",
        "setup": _SETUP,
    },
}


def render_examples() -> dict[str, str]:
    """Render every example; maps file name -> script text."""
    return {name: render_sbatch(**kwargs) for name, kwargs in EXAMPLES.items()}


def main(argv: list[str] | None = None) -> int:
    """Write the examples into ``argv[0]`` (default ``slurm/``) and print their paths."""
    argv = sys.argv[1:] if argv is None else argv
    folder = Path(argv[0] if argv else "slurm")
    for name, text in render_examples().items():
        print(write_script(folder / name, text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
