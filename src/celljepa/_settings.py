"""Global settings: verbosity and the kernel backend to use (``cj.settings``)."""

from __future__ import annotations

import logging

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
