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
