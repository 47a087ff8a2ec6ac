"""Drug metadata features from the real sci-Plex tables."""

from __future__ import annotations

import pytest

from celljepa._errors import InputError
from celljepa.data.drugs import normalize_drug_name, read_drug_metadata


def test_selleck_table_targets_and_pathways(shared_data):
    feats = read_drug_metadata(shared_data / "drug_metadata/sciplex/drugProperties_short.tsv")
    assert len(feats.names) > 1000 and feats.matrix.shape == (len(feats.names), feats.n_features)
    v = feats.vector("Veliparib")
    on = {feats.features[i] for i in v.nonzero()[0]}
    assert on == {"Target=PARP", "Pathway=DNA Damage"}
    assert feats.vector("VELIPARIB (ABT-888)") is not None and feats.vector("not a drug") is None


def test_chemcpa_csv_pathways(shared_data):
    feats = read_drug_metadata(shared_data / "drug_metadata/chemcpa/trapnell_drugs_smiles.csv")
    v = feats.vector("ABT-737")
    assert {feats.features[i] for i in v.nonzero()[0]} == {"pathway=Apoptosis"}
    assert all(f.startswith("pathway=") for f in feats.features)


def test_featurizer_uses_drug_metadata(shared_data):
    from celljepa.models.transition import ActionFeaturizer

    feats = read_drug_metadata(shared_data / "drug_metadata/chemcpa/trapnell_drugs_smiles.csv")
    f = ActionFeaturizer.build(drugs=feats)
    x = f.token("drug:ABT-737")
    assert x[-1] == 1.0 and x.sum() == 2.0 and not f.token("drug:unknown").any()


def test_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_drug_metadata(tmp_path / "none.tsv")
    bad = tmp_path / "bad.tsv"
    bad.write_text("a\tb\n1\t2\n")
    with pytest.raises(InputError, match="name_column"):
        read_drug_metadata(bad)
    assert normalize_drug_name(" Trichostatin A (TSA) ") == "trichostatina"
