"""celljepa: perturbation response prediction with joint-embedding predictive architectures, for AnnData."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from . import datasets, kernels, models, pl, pp, splits, tl
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

try:
    __version__ = _version("celljepa")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = [
    "BackendUnavailableError",
    "CelljepaError",
    "CelljepaWarning",
    "ContractError",
    "InputError",
    "SplitError",
    "Violation",
    "datasets",
    "kernels",
    "models",
    "pl",
    "pp",
    "settings",
    "splits",
    "tl",
]
