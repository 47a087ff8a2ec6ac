"""Preprocessing: bring perturbation data into the celljepa contract, normalise, validate."""

from ..data._normalize import normalize
from ..data._standardize import standardize
from ..data._validate import validate

__all__ = ["normalize", "standardize", "validate"]
