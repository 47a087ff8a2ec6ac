"""Datasets: loaders only — the bundled demo, simulated screens, stored gene-set collections and feature sets.

Every name in ``__all__`` is a function that returns data (an AnnData, a gene-set collection, a stored feature
set) or the path of a bundled file. The harmonisation tools that used to be re-exported here
(``FeatureSet``, ``build_feature_set``, ``combine_datasets``, ``gene_keys``, ``gene_presence``) live in
:mod:`celljepa.pp` with :func:`celljepa.pp.harmonize_genes`; reaching them through ``cj.datasets`` still works
and emits a FutureWarning.
"""

from __future__ import annotations

import warnings

from ..data._harmonize import list_feature_sets, load_feature_set
from ..data.genesets import builtin_gene_set_path, builtin_gene_sets, read_gene_sets, read_gmt
from ..data.simulate import simulate_screen as simulate
from ..data.simulate import write_simulated_h5ad
from ._demo import DEMO_DATASET_ID as DEMO_DATASET_ID  # a constant, so not in __all__
from ._demo import demo, demo_path

__all__ = [
    "builtin_gene_set_path",
    "builtin_gene_sets",
    "demo",
    "demo_path",
    "list_feature_sets",
    "load_feature_set",
    "read_gene_sets",
    "read_gmt",
    "simulate",
    "write_simulated_h5ad",
]

_MOVED_TO_PP = ("FeatureSet", "build_feature_set", "combine_datasets", "gene_keys", "gene_presence")


def __getattr__(name: str):
    if name in _MOVED_TO_PP:
        from ..data import _harmonize

        warnings.warn(
            f"cj.datasets.{name} moved to cj.pp.{name} (cj.datasets holds loaders only); "
            f"use cj.pp.{name} / `from celljepa.pp import {name}`.",
            FutureWarning,
            stacklevel=2,
        )
        return getattr(_harmonize, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
