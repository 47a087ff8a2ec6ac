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
    proc = subprocess.run([sys.executable, "-c", CODE.format(imports=imports)], env=environ, capture_output=True,
                          text=True, check=True)
    return [int(x) for x in proc.stdout.split()], proc.stderr


def test_numba_follows_omp_num_threads_when_celljepa_comes_first():
    (torch_threads, os_threads), _ = _run("import celljepa; assert 'NUMBA_NUM_THREADS' not in os.environ",
                                          OMP_NUM_THREADS="1")
    assert torch_threads == 1
    assert os_threads <= 2  # the main thread and at most one helper, never a second OpenMP worker
    # the same without celljepa: numba's one thread per core raises torch's threads (the hazard this guards)
    if (os.cpu_count() or 1) > 1:
        (torch_threads, _), _ = _run("", OMP_NUM_THREADS="1")
        assert torch_threads > 1


def test_what_align_numba_threads_does():
    env = {"OMP_NUM_THREADS": "4"}
    seen = []
    assert align_numba_threads(env, {}, load=lambda: seen.append(dict(env))) == "set"
    assert seen == [{"OMP_NUM_THREADS": "4", "NUMBA_NUM_THREADS": "4"}]  # numba is imported with it set ...
    assert env == {"OMP_NUM_THREADS": "4"}  # ... and the environment is left as it was
    assert align_numba_threads({"OMP_NUM_THREADS": "4", "NUMBA_NUM_THREADS": "8"}, {}) is None  # the user's choice
    assert align_numba_threads({}, {}) is None and align_numba_threads({"OMP_NUM_THREADS": "x"}, {}) is None
    late = {"OMP_NUM_THREADS": "2"}
    warning = align_numba_threads(late, {"numba": object()})
    assert "NUMBA_NUM_THREADS" not in late and "export NUMBA_NUM_THREADS=2" in warning
