"""Gene harmonisation on the real datasets: identifiers, absent genes, versioned lists, training-only lists."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from _realdata import SHARED_DATA, read_quiet, real_path

import celljepa as cj
from celljepa import CelljepaWarning, InputError
from celljepa.pp import FeatureSet, gene_keys


@pytest.fixture(scope="module")
def real(ingested):
    return {d: read_quiet(ingested[d]) for d in ("kang2018", "papalexi2021", "perturbench_devel", "norman_gears")}


def _toy(names, var=None, values=None):
    x = np.asarray(
        values if values is not None else np.arange(1, 2 * len(names) + 1).reshape(2, len(names)), dtype=np.float32
    )
    return ad.AnnData(X=sp.csr_matrix(x), var=var if var is not None else pd.DataFrame(index=names))


# --- identifiers ---------------------------------------------------------------------------------------------


def test_ensembl_ids_map_to_the_symbol_column_of_the_gears_file():
    raw = read_quiet(real_path("scx/norman_subset.h5ad"))
    assert str(raw.var_names[0]).startswith("ENSG")
    names, report = gene_keys(raw)
    assert names == [str(s) for s in raw.var["feature_name"]]
    assert report["id_source"] == "var['feature_name'] (var_names are Ensembl IDs)"
    h = cj.pp.harmonize_genes(raw, "foundation-v1")
    present = h.var_names[~h.var["absent"].to_numpy()]
    assert "BSND" in present and h.var.loc["BSND", "source_id"] == "ENSG00000162399"
    col = list(raw.var["feature_name"]).index("BSND")
    np.testing.assert_array_equal(h[:, "BSND"].X.toarray().ravel(), raw.X[:, col].toarray().ravel())


def test_a_single_genome_prefix_is_dropped_on_the_real_citefuse_panel(tmp_path):
    raw = read_quiet(SHARED_DATA / "multimodal" / "citefuse" / "mimitou2019_ctrl_vs_ctcl.h5ad")
    assert all(str(n).startswith("hg19_") for n in raw.var_names)  # Cell Ranger's multi-genome naming
    names, report = gene_keys(raw)
    assert names == [str(n)[len("hg19_") :] for n in raw.var_names] and report["genome_prefix_dropped"] == "hg19_"
    h = cj.pp.harmonize_genes(raw, "foundation-v1")
    present = h.var_names[~h.var["absent"].to_numpy()]
    assert len(present) > 500 and "ISG15" in present  # before, no gene of the panel matched the list
    col = list(raw.var_names).index("hg19_ISG15")
    np.testing.assert_array_equal(h[:, "ISG15"].X.toarray().ravel(), raw.X[:, col].toarray().ravel())
    h.write_h5ad(tmp_path / "h.h5ad")  # the report travels in uns and must stay writable
    # a mixed-species reference keeps its prefixes: a human and a mouse gene never merge into one
    names, report = gene_keys(_toy(["hg19_ACTB", "mm10_Actb"]))
    assert names == ["hg19_ACTB", "mm10_Actb"] and report["genome_prefix_dropped"] == ""


def test_versions_case_and_aliases_are_cleaned(tmp_path):
    adata = _toy(["ENSG00000243710.7", " c1orf112 ", "OLDNAME"])
    names, report = gene_keys(adata, id_column=None, aliases={"oldname": "NEWNAME"})
    assert names == ["ENSG00000243710", "c1orf112", "NEWNAME"]
    assert report["ensembl_versions_stripped"] == 1 and report["aliases_applied"] == 1
    fs = FeatureSet("toy", 1, "foundation", ("C1orf112", "NEWNAME", "ENSG00000243710", "MISSING"))
    table = tmp_path / "aliases.tsv"
    table.write_text("alias\tsymbol\nOLDNAME\tNEWNAME\n")
    h = cj.pp.harmonize_genes(adata, fs, aliases=table)
    assert list(h.var_names) == ["C1orf112", "NEWNAME", "ENSG00000243710", "MISSING"]
    assert h.var["absent"].tolist() == [False, False, False, True]
    np.testing.assert_array_equal(h.X.toarray(), [[2, 3, 1, 0], [5, 6, 4, 0]])
    assert h.uns["feature_set"]["aliases_applied"] == 1
    with pytest.raises(InputError, match="is not a var column"):
        gene_keys(adata, id_column="symbols")


def test_duplicate_names_keep_the_first_column_with_a_warning():
    adata = _toy(["TP53", "tp53", "MYC"])
    with pytest.warns(CelljepaWarning, match="1 genes map to a name already seen"):
        h = cj.pp.harmonize_genes(adata, FeatureSet("t", 1, "foundation", ("TP53", "MYC")))
    np.testing.assert_array_equal(h.X.toarray(), [[1, 3], [4, 6]])


# --- absent genes --------------------------------------------------------------------------------------------


def test_absent_genes_are_flagged_zero_columns_and_present_ones_keep_their_values(real, tmp_path):
    pap = real["papalexi2021"]
    fs = cj.datasets.load_feature_set("foundation-v1")
    h = cj.pp.harmonize_genes(pap, fs)
    assert list(h.var_names) == list(fs.genes) and h.n_obs == pap.n_obs
    absent = h.var["absent"].to_numpy()
    info = h.uns["feature_set"]
    assert info["n_present"] == int((~absent).sum()) and info["n_absent"] == int(absent.sum())
    assert info["n_present"] + info["n_dropped"] == pap.n_vars and 100 < info["n_present"] < pap.n_vars
    assert h.X[:, np.flatnonzero(absent)].nnz == 0 and h.layers["counts"][:, np.flatnonzero(absent)].nnz == 0
    for gene in h.var_names[~absent][:25]:
        src = list(pap.var_names).index(h.var.loc[gene, "source_id"])
        np.testing.assert_array_equal(h[:, gene].X.toarray().ravel(), pap.X[:, src].toarray().ravel())
        np.testing.assert_array_equal(
            h[:, gene].layers["counts"].toarray().ravel(), pap.layers["counts"][:, src].toarray().ravel()
        )
    pd.testing.assert_frame_equal(h.obs, pap.obs)
    assert info["id"] == "foundation-v1" and info["sha256"] == fs.sha256
    h.write_h5ad(tmp_path / "h.h5ad")  # the record survives a round trip through the file
    back = ad.read_h5ad(tmp_path / "h.h5ad")
    assert back.uns["feature_set"]["sha256"] == fs.sha256 and back.var["absent"].dtype == bool


def test_two_panels_with_few_shared_genes_share_one_feature_space(real):
    kang, pap = real["kang2018"], real["papalexi2021"]
    shared = {g.upper() for g in kang.var_names} & {g.upper() for g in pap.var_names}
    hk, hp = (cj.pp.harmonize_genes(a, "foundation-v1") for a in (kang, pap))
    assert list(hk.var_names) == list(hp.var_names)
    both = ~hk.var["absent"].to_numpy() & ~hp.var["absent"].to_numpy()
    assert 0 < both.sum() <= len(shared)
    assert hk.uns["feature_set"]["sha256"] == hp.uns["feature_set"]["sha256"]


def test_no_overlap_is_an_error_with_the_fix():
    with pytest.raises(InputError, match="measures none of the .* genes of foundation-v1.*id_column"):
        cj.pp.harmonize_genes(_toy(["gene_a", "gene_b"]), "foundation-v1", dataset_id="toy")


# --- versioned lists -----------------------------------------------------------------------------------------


def test_stored_lists_are_versioned_and_hashed(tmp_path):
    assert "foundation-v1" in cj.datasets.list_feature_sets()
    fs = cj.datasets.load_feature_set("foundation-v1")
    assert (fs.id, fs.name, fs.version, fs.strategy) == ("foundation-v1", "foundation", 1, "foundation")
    assert len(fs.genes) > 10000 and "TP53" in fs.genes and "IFNGR1" in fs.genes
    assert fs.sources[0].startswith("Reactome")
    path = fs.write(tmp_path / "copy.txt")
    again = cj.datasets.load_feature_set(path)
    assert again == fs and again.sha256 == fs.sha256
    edited = path.read_text().replace("\nTP53\n", "\nTP53X\n")
    (tmp_path / "edited.txt").write_text(edited)
    with pytest.raises(InputError, match="does not match its recorded sha256"):
        cj.datasets.load_feature_set(tmp_path / "edited.txt")
    with pytest.raises(InputError, match="no stored feature set 'foundation-v9'.*foundation-v1"):
        cj.datasets.load_feature_set("foundation-v9")
    with pytest.raises(InputError, match="lists genes twice"):
        FeatureSet("x", 1, "intersection", ("A", "a"))
    with pytest.raises(InputError, match="stored list, not built from data"):
        cj.pp.build_feature_set({"a": _toy(["A"])}, strategy="foundation", name="f")


# --- data-dependent lists use the training datasets only -----------------------------------------------------


def test_intersection_and_hvg_union_come_from_the_training_datasets_only(real):
    data = {"kang2018": real["kang2018"], "papalexi2021": real["papalexi2021"], "demo": real["perturbench_devel"]}
    inter = cj.pp.build_feature_set(data, strategy="intersection", name="kang-demo", train=["kang2018", "demo"])
    expected = [g for g in data["kang2018"].var_names if g.upper() in {x.upper() for x in data["demo"].var_names}]
    assert list(inter.genes) == expected and inter.sources == ("kang2018", "demo")
    hvg = cj.pp.build_feature_set(data, strategy="union_hvg", name="hvg", train=["kang2018", "demo"], n_top_genes=200)
    assert hvg.params == {"n_top_genes": 200} and 200 < len(hvg.genes) <= 400
    # the held-out dataset's values cannot move the list: scramble them and build again
    scrambled = data["papalexi2021"].copy()
    rng = np.random.default_rng(0)
    scrambled.X = sp.csr_matrix(rng.permutation(scrambled.X.toarray(), axis=1))
    again = cj.pp.build_feature_set(
        {**data, "papalexi2021": scrambled},
        strategy="union_hvg",
        name="hvg",
        train=["kang2018", "demo"],
        n_top_genes=200,
    )
    assert again.genes == hvg.genes and again.sha256 == hvg.sha256
    # ... whereas training on it does (so the check above can fail)
    with_pap = cj.pp.build_feature_set(data, strategy="union_hvg", name="hvg", n_top_genes=200)
    assert set(with_pap.genes) > set(hvg.genes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(InputError, match="share no gene"):
            cj.pp.build_feature_set(data, strategy="intersection", name="none")  # demo ∩ kang ∩ papalexi = ∅
    with pytest.raises(InputError, match="train names"):
        cj.pp.build_feature_set(data, strategy="intersection", name="x", train=["kang"])


def test_docstring_examples_run():
    import doctest

    from celljepa.data import _harmonize as harmonize
    from celljepa.pp import _harmonize_genes

    for module, n in ((harmonize, 2), (_harmonize_genes, 4)):
        result = doctest.testmod(module, raise_on_error=False, optionflags=doctest.ELLIPSIS)
        assert result.attempted >= n and result.failed == 0, module.__name__
