"""Data engine: the contract, readers for public layouts, ingestion, simulation."""

from . import contract
from .ingest import ingest, ingest_anndata, processed_path
from .readers import FORMATS, detect_format, read_source

__all__ = ["FORMATS", "contract", "detect_format", "ingest", "ingest_anndata", "processed_path", "read_source"]
