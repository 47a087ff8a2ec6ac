"""Preprocessing: bring perturbation data into the celljepa contract, normalise, validate, harmonise genes."""

from ..data._harmonize import harmonize_genes
from ..data._normalize import normalize
from ..data._standardize import standardize
from ..data._validate import validate

__all__ = ["harmonize_genes", "normalize", "standardize", "validate"]
