"""Preprocessing: bring perturbation data into the celljepa contract, normalise, validate, harmonise genes.

One private module per function (``_standardize``, ``_normalize``, ``_validate``, ``_harmonize_genes``); each
is the public face of a contract operation of :mod:`celljepa.data`, which ingestion and the workflows use.
"""

from ._harmonize_genes import harmonize_genes
from ._normalize import normalize
from ._standardize import standardize
from ._validate import validate

__all__ = ["harmonize_genes", "normalize", "standardize", "validate"]
