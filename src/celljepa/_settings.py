"""Global settings: verbosity and the kernel backend to use (``cj.settings``)."""

from __future__ import annotations

import logging
import os
import sys

from ._errors import InputError
from ._logging import logger

_VERBOSITY = {0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO, 3: logging.DEBUG}
KERNEL_BACKENDS = ("auto", "cuda", "cpu", "reference")


class Settings:
    """Process-wide settings, modelled on ``scanpy.settings``.

    Attributes
    ----------
    verbosity
        0 errors, 1 warnings (default), 2 info (start/finish of each step), 3 debug.
    kernel_backend
        ``"auto"`` (CUDA when the tensor is on a GPU and ``celljepa._cuda`` is built, else the C++
        module ``celljepa._core``, else the pure-torch reference), or one of ``"cuda"``, ``"cpu"``,
        ``"reference"`` to force that backend.

    Examples
    --------
    >>> import celljepa as cj
    >>> cj.settings.verbosity = 2
    >>> cj.settings.kernel_backend = "reference"
    """

    def __init__(self) -> None:
        self._verbosity = 1
        self._kernel_backend = "auto"

    @property
    def verbosity(self) -> int:
        return self._verbosity

    @verbosity.setter
    def verbosity(self, value: int) -> None:
        if value not in _VERBOSITY:
            raise InputError(f"verbosity must be one of {sorted(_VERBOSITY)}, got {value!r}.")
        self._verbosity = int(value)
        logger.setLevel(_VERBOSITY[self._verbosity])

    @property
    def kernel_backend(self) -> str:
        return self._kernel_backend

    @kernel_backend.setter
    def kernel_backend(self, value: str) -> None:
        if value not in KERNEL_BACKENDS:
            raise InputError(f"kernel_backend must be one of {KERNEL_BACKENDS}, got {value!r}.")
        self._kernel_backend = value

    def __repr__(self) -> str:
        return f"Settings(verbosity={self.verbosity}, kernel_backend={self.kernel_backend!r})"


settings = Settings()


def align_numba_threads(environ=None, modules=None) -> str | None:
    """Give numba the thread count of ``OMP_NUM_THREADS``; the command line calls it for its own process.

    scanpy runs numba kernels (``normalize_total`` and ``log1p`` on sparse data, ...). Without
    ``NUMBA_NUM_THREADS``, numba starts one thread per core of the *machine* and, through the OpenMP runtime
    it shares with torch, raises torch's threads above ``OMP_NUM_THREADS`` too: on a Slurm node or beside
    other jobs the spinning threads slow everything down many times. When ``OMP_NUM_THREADS`` is set and
    ``NUMBA_NUM_THREADS`` is not, this sets it to the same value (numba reads it when imported and again
    whenever it reloads its configuration), which works while numba is not imported yet; later, it returns a
    warning with the fix. ``celljepa`` commands call it before any command imports scanpy; ``import celljepa``
    never changes the environment of a user's process (export ``NUMBA_NUM_THREADS`` there, see
    ``docs/slurm.md``).

    Returns
    -------
    What was done: ``"set"``, a warning text, or ``None`` (nothing to do).
    """
    environ = os.environ if environ is None else environ
    modules = sys.modules if modules is None else modules
    omp = environ.get("OMP_NUM_THREADS", "").strip()
    if not omp.isdigit() or int(omp) < 1 or environ.get("NUMBA_NUM_THREADS"):
        return None
    if "numba" not in modules:
        environ["NUMBA_NUM_THREADS"] = omp
        return "set"
    return (
        f"numba was imported before celljepa without NUMBA_NUM_THREADS: scanpy's numba kernels will start one "
        f"thread per core and raise torch's threads above OMP_NUM_THREADS={omp}. Fix: export "
        f"NUMBA_NUM_THREADS={omp} (or import celljepa before scanpy)."
    )
