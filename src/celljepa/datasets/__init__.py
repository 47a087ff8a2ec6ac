"""Datasets: the bundled demo, simulated screens, gene-set collections, feature sets and readers for public files."""

from ..data._harmonize import (
    FeatureSet,
    build_feature_set,
    combine_datasets,
    gene_keys,
    gene_presence,
    list_feature_sets,
    load_feature_set,
)
from ..data.genesets import builtin_gene_set_path, builtin_gene_sets, read_gene_sets, read_gmt
from ..data.simulate import simulate_screen as simulate
from ..data.simulate import write_simulated_h5ad
from ._demo import DEMO_DATASET_ID, demo, demo_path

__all__ = [
    "DEMO_DATASET_ID",
    "FeatureSet",
    "build_feature_set",
    "combine_datasets",
    "gene_keys",
    "gene_presence",
    "list_feature_sets",
    "load_feature_set",
    "builtin_gene_set_path",
    "builtin_gene_sets",
    "demo",
    "demo_path",
    "read_gene_sets",
    "read_gmt",
    "simulate",
    "write_simulated_h5ad",
]
