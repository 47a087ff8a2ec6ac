"""celljepa: perturbation response prediction with joint-embedding predictive architectures, for AnnData.

The subpackages load on first use (``cj.pp``, ``cj.tl``, ``cj.pl``, ...), so ``import celljepa.kernels``
needs neither anndata nor scanpy, and ``celljepa --help`` starts without torch.
"""

from __future__ import annotations

import importlib

from ._errors import (
    BackendUnavailableError,
    CelljepaError,
    CelljepaWarning,
    ContractError,
    InputError,
    SplitError,
    Violation,
)
from ._settings import settings
from ._threads import limit_threads
from ._version import __version__

# the public subpackages, imported on first attribute access (PEP 562)
_SUBPACKAGES = ("bench", "data", "datasets", "eval", "kernels", "models", "nn", "pl", "pp", "splits", "tl", "train")


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBPACKAGES))


__all__ = [
    "BackendUnavailableError",
    "CelljepaError",
    "CelljepaWarning",
    "ContractError",
    "InputError",
    "SplitError",
    "Violation",
    "__version__",
    "datasets",
    "kernels",
    "limit_threads",
    "models",
    "pl",
    "pp",
    "settings",
    "splits",
    "tl",
]
