"""Import of the optional compiled modules; a missing module is logged once, never an import failure."""

from __future__ import annotations

import contextlib
import importlib
import logging
from functools import cache
from types import ModuleType

from .._errors import BackendUnavailableError, InputError
from .._logging import log_once
from .._settings import KERNEL_BACKENDS, settings


@cache
def _load(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"celljepa.{name}")
    except ImportError as err:
        log_once(
            f"missing:{name}",
            f"compiled module celljepa.{name} is not available ({err}); using the pure-torch reference kernels.",
            level=logging.INFO,
        )
        return None


def load_core() -> ModuleType | None:
    """The C++ (OpenMP) module ``celljepa._core``, or ``None`` when it was not built."""
    return _load("_core")


def load_cuda() -> ModuleType | None:
    """The CUDA module ``celljepa._cuda``, or ``None`` when it was not built (no nvcc at build time)."""
    return _load("_cuda")


#: The CUDA kernels for float32 work (E-distance block sums, masked encoding forward and weight gradient):
#: "tiles" (SIMT; the default, verified on an H200) and "tensor" (3xTF32 tensor-core tiles, sm_80+; tested
#: through their host emulations, opt-in until ``benchmarks/gpu/run_device_checks.sh`` has passed on a device).
#: float64, and devices older than sm_80, always take "tiles".
CUDA_KERNELS = {"tensor": 1, "tiles": 0}
_cuda_kernel = ["tiles"]


def cuda_kernel_id() -> int:
    """The id the CUDA launchers take for the kernel chosen now (see :func:`cuda_kernel`)."""
    return CUDA_KERNELS[_cuda_kernel[0]]


@contextlib.contextmanager
def cuda_kernel(name: str):
    """Run the float32 CUDA kernels as ``name`` (``"tensor"`` or ``"tiles"``) inside the block.

    >>> from celljepa.kernels._ext import cuda_kernel, cuda_kernel_id
    >>> with cuda_kernel("tensor"):
    ...     cuda_kernel_id()
    1
    >>> cuda_kernel_id()
    0
    """
    if name not in CUDA_KERNELS:
        raise InputError(f"unknown CUDA kernel {name!r}; one of {', '.join(CUDA_KERNELS)}.")
    before, _cuda_kernel[0] = _cuda_kernel[0], name
    try:
        yield
    finally:
        _cuda_kernel[0] = before


def build_info() -> dict:
    """Build facts of every compiled module: ``{"_core": {...} | None, "_cuda": {...} | None}``.

    Examples
    --------
    >>> import celljepa as cj
    >>> cj.kernels.build_info()["_core"]["openmp"]
    True
    """
    core, cuda = load_core(), load_cuda()
    return {"_core": core.build_info() if core else None, "_cuda": cuda.build_info() if cuda else None}


def available_backends() -> list[str]:
    """Backends usable in this process, fastest first (``cuda`` only with a visible device)."""
    out = []
    cuda = load_cuda()
    if cuda is not None and cuda.device_count() > 0:
        out.append("cuda")
    if load_core() is not None:
        out.append("cpu")
    out.append("reference")
    return out


def resolve_backend(backend: str | None = None, *, on_cuda_tensor: bool = False) -> str:
    """Pick the backend for one call: the argument, else ``cj.settings.kernel_backend``.

    ``auto`` dispatches CUDA (tensor on a GPU and ``_cuda`` built) → C++ (``_core``) → reference and
    logs once when it falls back. A forced backend that is missing raises
    :class:`celljepa.BackendUnavailableError` naming the build option.
    """
    choice = backend or settings.kernel_backend
    if choice not in KERNEL_BACKENDS:
        raise InputError(f"backend={choice!r} must be one of {KERNEL_BACKENDS}.")
    if choice == "cuda":
        if load_cuda() is None:
            raise BackendUnavailableError(
                "backend='cuda' was requested but celljepa._cuda is not built. Reinstall with a CUDA compiler "
                "on PATH and CELLJEPA_CUDA=ON (pip install . --config-settings=cmake.define.CELLJEPA_CUDA=ON)."
            )
        return "cuda"
    if choice == "cpu":
        if load_core() is None:
            raise BackendUnavailableError(
                "backend='cpu' was requested but celljepa._core is not built; reinstall celljepa from source "
                "(pip install .) with a C++17 compiler."
            )
        return "cpu"
    if choice == "reference":
        return "reference"
    if on_cuda_tensor:
        if load_cuda() is not None:
            return "cuda"
        log_once("fallback:cuda", "celljepa._cuda is not built; CUDA tensors use the pure-torch reference.")
        return "reference"
    if load_core() is not None:
        return "cpu"
    return "reference"
