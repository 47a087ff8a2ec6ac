"""Preprocessing: bring perturbation data into the celljepa contract, normalise, validate, harmonise genes.

One private module per function (``_standardize``, ``_normalize``, ``_validate``, ``_harmonize_genes``); each
is the public face of a contract operation of :mod:`celljepa.data`, which ingestion and the workflows use.

The feature-set tools that :func:`harmonize_genes` works with are here too (not in ``__all__``, which lists
the functions that take an AnnData first): :class:`FeatureSet`, :func:`build_feature_set` (a gene list from
training datasets), :func:`combine_datasets` (several datasets on one feature set), :func:`gene_keys` and
:func:`gene_presence`. Stored feature sets are loaded with :func:`celljepa.datasets.load_feature_set`.
"""

from ..data._harmonize import FeatureSet as FeatureSet
from ..data._harmonize import build_feature_set as build_feature_set
from ..data._harmonize import combine_datasets as combine_datasets
from ..data._harmonize import gene_keys as gene_keys
from ..data._harmonize import gene_presence as gene_presence
from ._harmonize_genes import harmonize_genes
from ._normalize import normalize
from ._standardize import standardize
from ._validate import validate

__all__ = ["harmonize_genes", "normalize", "standardize", "validate"]
