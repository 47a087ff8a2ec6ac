"""The compiled modules: build facts, OpenMP, the CUDA module compiled without a GPU, backend dispatch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

import celljepa as cj
from celljepa.kernels import resolve_backend


def test_core_module_reports_openmp():
    import celljepa._core as core

    info = core.build_info()
    assert info["openmp"] is True and info["threads"] >= 1
    assert info["cxx_standard"] >= 201703
    assert info["compiler"] and info["backend"] == "cpu"


def test_core_threads_follow_omp_num_threads_and_torch():
    # The kernels share torch's OpenMP runtime, so OMP_NUM_THREADS and torch.set_num_threads both apply.
    code = "import celljepa._core as c; print(c.max_threads())"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"
    code = "import torch, celljepa._core as c; torch.set_num_threads(1); print(c.max_threads())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no CUDA compiler: celljepa._cuda is not built")
def test_cuda_module_is_built_and_imports_without_gpu():
    import celljepa._cuda as cuda

    info = cuda.build_info()
    assert info["cudart"] == "static"
    assert info["cuda_version"].split(".")[0].isdigit()
    assert isinstance(info["device_count"], int) and info["device_count"] >= 0
    assert len(info["devices"]) == info["device_count"]
    assert cuda.device_count() == info["device_count"]


def test_import_works_without_compiled_modules():
    code = (
        "import sys, logging; sys.modules['celljepa._core'] = None; sys.modules['celljepa._cuda'] = None\n"
        "import celljepa as cj; cj.settings.verbosity = 2\n"
        "print(cj.kernels.available_backends()); print(cj.kernels.resolve_backend())\n"
        "cj.kernels.load_core(); cj.kernels.load_core()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.split("\n")[:2] == ["['reference']", "reference"]
    assert proc.stderr.count("celljepa._core is not available") == 1  # logged once


def test_forced_backend_that_is_missing_names_the_build_option(monkeypatch):
    import celljepa.kernels._ext as ext

    monkeypatch.setattr(ext, "load_cuda", lambda: None)
    with pytest.raises(cj.BackendUnavailableError, match="CELLJEPA_CUDA=ON"):
        resolve_backend("cuda")
    assert resolve_backend("reference") == "reference"
    assert resolve_backend(None, on_cuda_tensor=True) == "reference"


def test_settings_backend_is_used_and_checked():
    old = cj.settings.kernel_backend
    try:
        cj.settings.kernel_backend = "reference"
        assert resolve_backend() == "reference"
        with pytest.raises(cj.InputError):
            cj.settings.kernel_backend = "tpu"
    finally:
        cj.settings.kernel_backend = old
    assert resolve_backend() == "cpu"


def test_kernels_import_and_run_without_anndata_scanpy_or_pandas():
    # the scverse stack made unimportable (None in sys.modules): the kernels must import and compute without it
    code = (
        "import sys\n"
        "for name in ('anndata', 'scanpy', 'pandas', 'sklearn', 'h5py'):\n"
        "    sys.modules[name] = None\n"
        "import torch\n"
        "import celljepa.kernels as k\n"
        "x = torch.randn(30, 4, dtype=torch.float64); off = torch.tensor([0, 15, 30])\n"
        "print(torch.allclose(k.edistance(x, off, backend='reference'), k.edistance(x, off)))\n"
        "w = torch.randn(6, 3, dtype=torch.float64)\n"
        "dense = torch.randn(5, 6, dtype=torch.float64).relu()\n"
        "h = k.masked_encode(dense.to_sparse_csr(), w, kind='random', ratio=0.5, seed=1)\n"
        "print(tuple(h.shape))\n"
        "print(sorted(m for m, v in sys.modules.items() if v is not None and m.split('.')[0] in\n"
        "             ('anndata', 'scanpy', 'pandas')))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:3] == ["True", "(5, 3)", "[]"]
    # the same hook does stop the rest of the package, so the check can fail
    code = code.split("import torch")[0] + "import celljepa.data.genesets\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0 and "import of pandas halted" in proc.stderr
