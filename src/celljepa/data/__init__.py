"""Data engine: the contract, readers for public layouts, ingestion, simulation.

``contract`` loads with the package; the readers and ingestion (anndata, scanpy) on first use.
"""

from __future__ import annotations

import importlib

from . import contract

__all__ = ["FORMATS", "contract", "detect_format", "ingest", "ingest_anndata", "processed_path", "read_source"]

_LAZY = {
    "ingest": "_ingest",
    "ingest_anndata": "_ingest",
    "processed_path": "_ingest",
    "FORMATS": "readers",
    "detect_format": "readers",
    "read_source": "readers",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
