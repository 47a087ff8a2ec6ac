"""Provenance of a run: what ran, where, when and with which versions, written into every run folder."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import socket
import subprocess
import sys
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .._settings import settings
from .._version import __version__


def _package(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the checkout celljepa runs from (``+dirty`` with uncommitted changes), else ``None``."""
    tree = tree_state(untracked=False)
    return None if tree is None else tree["commit"] + ("+dirty" if tree["changed"] else "")


def tree_state(*, untracked: bool = True) -> dict | None:
    """The checkout celljepa runs from: ``{"root", "commit", "changed"}``, or None outside a git checkout.

    ``changed`` lists every modified or staged file, and with ``untracked`` every untracked file that git does not
    ignore. None when celljepa does not run from a git checkout (a non-editable install). Not cached: a final run
    checks the tree when it starts.
    """
    root = Path(__file__).resolve().parents[3]
    if not (root / ".git").exists() or not (root / "src" / "celljepa").is_dir():
        return None
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", f"--untracked-files={'all' if untracked else 'no'}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"root": str(root), "commit": commit, "changed": [line[3:] for line in status.splitlines() if line.strip()]}


def versions() -> dict:
    """Versions of celljepa and the libraries that shape its numbers, and the machine's kind."""
    import torch

    return {
        "celljepa": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "anndata": _package("anndata"),
        "scanpy": _package("scanpy"),
        "scikit-learn": _package("scikit-learn"),
        "kernel_backend": settings.kernel_backend,
        "device": "cpu",
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }


def provenance(*, device: str = "cpu") -> dict:
    """What a run folder records about its run: versions, commit, date, host, threads, device, command line.

    Examples
    --------
    >>> from celljepa.bench.provenance import provenance
    >>> sorted(provenance())[:4]
    ['celljepa', 'command', 'cuda', 'date']
    """
    import torch

    return {
        "celljepa": __version__,
        "git_commit": git_commit(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "device": device,
        "slurm_job": os.environ.get("SLURM_JOB_ID"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else "",
    }
