"""Cell types called from CITE-seq proteins, on the real CiteFuse cells."""

from __future__ import annotations

import anndata as ad
import pandas as pd
import pytest
from _realdata import SHARED_DATA

from celljepa._errors import InputError
from celljepa.data.proteins import protein_cell_types

CITEFUSE = SHARED_DATA / "multimodal" / "citefuse" / "mimitou2019_ctrl_vs_ctcl.h5ad"


@pytest.fixture(scope="module")
def proteins() -> pd.DataFrame:
    return ad.read_h5ad(CITEFUSE).obsm["protein_expression"]


def test_protein_cell_types_are_seeded_clusters_named_by_markers(proteins):
    labels = protein_cell_types(proteins, seed=0)
    again = protein_cell_types(proteins, seed=0)
    assert labels.index.equals(proteins.index)
    assert (labels.astype(str) == again.astype(str)).all()
    counts = labels.value_counts()
    assert 3 <= len(counts) <= 12 and counts.min() >= 10
    # a name lists markers, never an isotype control
    assert all(name.startswith("p") and "+" in name and "IgG" not in name for name in counts.index)
    # T-cell clusters and a B/antigen-presenting cluster are among them
    names = " ".join(counts.index)
    assert "CD4+" in names or "CD8+" in names
    assert "CD19+" in names or "MHCII (HLA-DR)+" in names


def test_protein_labels_do_not_follow_the_rna_only_condition(proteins):
    """The two donors share cell types: no cluster is made of one condition alone by construction."""
    labels = protein_cell_types(proteins, seed=0)
    condition = ad.read_h5ad(CITEFUSE).obs["condition"].astype(str).to_numpy()
    table = pd.crosstab(labels.astype(str).to_numpy(), condition)
    assert (table > 0).sum(axis=1).max() == 2  # at least one cluster holds cells of both donors


def test_protein_cell_types_refuses_bad_input(proteins):
    with pytest.raises(InputError, match="DataFrame"):
        protein_cell_types(proteins.to_numpy())
    bad = proteins.copy()
    bad.iloc[0, 0] = -1
    with pytest.raises(InputError, match="negative"):
        protein_cell_types(bad)
    with pytest.raises(InputError, match="fewer than 2 proteins"):
        protein_cell_types(proteins[["IgG1", "IgG2a", "CD4"]])
