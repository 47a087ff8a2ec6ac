"""OMP_NUM_THREADS holds for the whole process: scanpy's numba kernels must not raise torch's threads."""

from __future__ import annotations

import os
import subprocess
import sys

from celljepa._settings import align_numba_threads

CODE = """
import os, sys
{imports}
import numpy as np, scipy.sparse as sp, anndata as ad, scanpy as sc, torch
a = ad.AnnData(sp.csr_matrix(np.random.default_rng(0).poisson(0.3, (400, 200)).astype("float32")))
sc.pp.normalize_total(a)
sc.pp.log1p(a)
print(torch.get_num_threads(), len(os.listdir("/proc/self/task")))
"""


def _run(imports: str, **env) -> tuple[list[int], str]:
    # a clean slate for the thread pools (MKL_NUM_THREADS, for one, changes which OpenMP runtime numba uses)
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "MKL_", "OPENBLAS_", "OMP_"))}
    environ.update(env)
    proc = subprocess.run(
        [sys.executable, "-c", CODE.format(imports=imports)], env=environ, capture_output=True, text=True, check=True
    )
    return [int(x) for x in proc.stdout.split()], proc.stderr


# what a `celljepa` command does first (here `celljepa info --help`, which exits after printing)
CLI_FIRST = """
import contextlib, io
from celljepa.cli import main
try:
    with contextlib.redirect_stdout(io.StringIO()):
        main(["info", "--help"])
except SystemExit:
    pass
"""


def test_importing_celljepa_leaves_the_environment_alone():
    code = (
        "import os, celljepa, celljepa.pp, celljepa.tl; print(sorted(os.environ.get(k, '-') for k in "
        "('NUMBA_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS')))"
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "MKL_", "OPENBLAS_"))}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "['-', '-', '-']"


def test_numba_follows_omp_num_threads_in_a_celljepa_command():
    (torch_threads, os_threads), _ = _run(CLI_FIRST, OMP_NUM_THREADS="1")
    assert torch_threads == 1
    assert os_threads <= 2  # the main thread and at most one helper, never a second OpenMP worker
    # the same without celljepa: numba's one thread per core raises torch's threads (the hazard this guards)
    if (os.cpu_count() or 1) > 1:
        (torch_threads, _), _ = _run("", OMP_NUM_THREADS="1")
        assert torch_threads > 1


def test_what_align_numba_threads_does():
    env = {"OMP_NUM_THREADS": "4"}
    assert align_numba_threads(env, {}) == "set" and env["NUMBA_NUM_THREADS"] == "4"
    assert align_numba_threads({"OMP_NUM_THREADS": "4", "NUMBA_NUM_THREADS": "8"}, {}) is None  # the user's choice
    assert align_numba_threads({}, {}) is None and align_numba_threads({"OMP_NUM_THREADS": "x"}, {}) is None
    late = {"OMP_NUM_THREADS": "2"}
    warning = align_numba_threads(late, {"numba": object()})
    assert "NUMBA_NUM_THREADS" not in late and "export NUMBA_NUM_THREADS=2" in warning
