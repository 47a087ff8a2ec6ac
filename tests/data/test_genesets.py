"""Gene-set collections on the real files in ../shared/data/genesets: GMT, DoRothEA, PROGENy, builtins."""

from __future__ import annotations

import gzip
import shutil
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

from celljepa import InputError
from celljepa.data import genesets as gs
from celljepa.data.genesets import gene_module_map, read_gmt
from celljepa.kernels import mask_for

GENESETS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "genesets"
KANG = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "perturbation" / "scgen" / "valid.h5ad"
HALLMARK = GENESETS / "msigdb" / "h.all.v7.0.symbols.gmt"
REACTOME = GENESETS / "reactome" / "ReactomePathways.gmt"
GO_BP = GENESETS / "go" / "enrichr.GO_Biological_Process_2021.gmt"
DOROTHEA = GENESETS / "dorothea" / "dorothea_hs.csv.gz"
PROGENY = GENESETS / "progeny" / "progeny_human_model_top100.csv"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: the tests expect ../shared/data/genesets beside the repository")
    return path


@pytest.fixture(scope="module")
def dorothea_by_level() -> dict[str, dict[str, list[str]]]:
    """DoRothEA read once per confidence cut-off used below (A, C)."""
    _need(DOROTHEA)
    return {level: gs.read_gene_sets(DOROTHEA, min_confidence=level) for level in ("A", "C")}


# ------------------------------------------------------------------------------------------ GMT
def test_hallmark_gmt():
    sets = gs.read_gene_sets(_need(HALLMARK))
    assert len(sets) == 50
    assert all(name.startswith("HALLMARK_") for name in sets)
    assert next(iter(sets)) == "HALLMARK_TNFA_SIGNALING_VIA_NFKB"  # file order
    ifna = sets["HALLMARK_INTERFERON_ALPHA_RESPONSE"]
    assert {"IFI27", "ISG15", "MX1", "IRF7"} <= set(ifna)
    assert not any(g.startswith("http") for g in ifna), "the description column is not a gene"
    assert all(len(g) == len(set(g)) for g in sets.values())


def test_reactome_gmt_second_column_is_an_id():
    sets = gs.read_gene_sets(_need(REACTOME))
    assert len(sets) == 2504
    first = REACTOME.read_text().splitlines()[0].split("\t")
    assert first[1].startswith("R-HSA-")
    assert sets[first[0]] == list(dict.fromkeys(first[2:]))
    assert not any(g.startswith("R-HSA-") for genes in sets.values() for g in genes)


def test_go_enrichr_gmt_with_empty_description():
    assert GO_BP.read_text().splitlines()[0].split("\t")[1] == ""
    sets = gs.read_gene_sets(_need(GO_BP))
    assert len(sets) == 6036
    assert "" not in {g for genes in sets.values() for g in genes}
    assert all(genes for genes in sets.values())
    big = gs.read_gene_sets(GO_BP, min_size=50)
    assert 0 < len(big) < len(sets) and min(map(len, big.values())) >= 50
    assert list(big) == [name for name in sets if name in big], "min_size keeps the file order"


def test_gzipped_gmt(tmp_path):
    target = tmp_path / "h.gmt.gz"
    with open(_need(HALLMARK), "rb") as src, gzip.open(target, "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert gs.read_gene_sets(target) == read_gmt(HALLMARK)


# ------------------------------------------------------------------------------------------ DoRothEA
def test_dorothea_confidence_filter(dorothea_by_level):
    a, c = dorothea_by_level["A"], dorothea_by_level["C"]
    edges_a, edges_c = sum(map(len, a.values())), sum(map(len, c.values()))
    # counts of the shipped file (SOURCES.md: A 5,434, B 974, C 6,815 edges; no duplicate tf-target pairs)
    assert (len(a), edges_a) == (96, 5434)
    assert (len(c), edges_c) == (271, 5434 + 974 + 6815)
    assert set(a) <= set(c)
    assert "STAT1" in a and "STAT1" in c
    assert {"IRF1", "GBP1"} & set(c["STAT1"])
    head = pd.read_csv(DOROTHEA, nrows=20_000)
    assert next(iter(c)) == head.loc[head["confidence"] <= "C", "tf"].iloc[0], "sets come in file order"


def test_dorothea_bad_confidence_letter():
    for level in ("F", "AB", "", None):
        with pytest.raises(InputError, match="min_confidence must be one DoRothEA confidence letter"):
            gs.read_gene_sets(_need(DOROTHEA), min_confidence=level)


def test_dorothea_as_long_table_keeps_every_edge(tmp_path):
    # the first rows of the real file, read as a plain tf -> target table and as regulons
    lines = gzip.open(_need(DOROTHEA), "rt").read().splitlines()[:2000]
    head = tmp_path / "dorothea_head.csv"
    head.write_text("\n".join(lines) + "\n")
    every = gs.read_gene_sets(head, set_col="tf", gene_col="target")
    regulons = gs.read_gene_sets(head, min_confidence="E")
    assert every == regulons
    assert sum(map(len, every.values())) == 1999
    assert sum(map(len, gs.read_gene_sets(head, min_confidence="C").values())) < 1999


# ------------------------------------------------------------------------------------------ PROGENy
def test_progeny_matrix():
    sets = gs.read_gene_sets(_need(PROGENY))
    assert list(sets) == ["EGFR", "Hypoxia", "JAK-STAT", "MAPK", "NFkB", "PI3K", "TGFb", "TNFa", "Trail", "VEGF",
                          "p53", "Androgen", "Estrogen", "WNT"]  # fmt: skip
    assert all(len(genes) == 100 for genes in sets.values())
    assert gs.read_gene_sets(PROGENY, fmt="progeny") == sets


# ------------------------------------------------------------------------------------------ long tables
def test_long_tsv_auto_and_explicit_columns(tmp_path):
    p = tmp_path / "sets.tsv"
    p.write_text("Term\tSymbol\nB\tX\nA\tY\nB\tX\nB\tZ\n\tQ\nA\t\n")
    assert gs.read_gene_sets(p) == {"B": ["X", "Z"], "A": ["Y"]}
    assert gs.read_gene_sets(p, min_size=2) == {"B": ["X", "Z"]}
    q = tmp_path / "pairs.csv.gz"
    with gzip.open(q, "wt") as fh:
        fh.write("module,hgnc\nM1,TP53\nM1,MYC\n")
    assert gs.read_gene_sets(q, set_col="module", gene_col="HGNC") == {"M1": ["TP53", "MYC"]}


# ------------------------------------------------------------------------------------------ builtins
def test_builtin_hallmark_is_the_shared_file():
    path = gs.builtin_gene_set_path("hallmark")
    assert path.read_bytes() == _need(HALLMARK).read_bytes()
    assert gs.builtin_gene_sets() == gs.read_gene_sets(HALLMARK)
    readme = (path.parent.parent / "README.md").read_text()
    assert "h.all.v7.0.symbols.gmt" in readme and "CC BY 4.0" in readme and "Liberzon" in readme


def test_builtin_unknown_name_lists_available():
    with pytest.raises(InputError, match=r"unknown builtin gene-set collection 'kegg'; available: hallmark"):
        gs.builtin_gene_sets("kegg")


def test_resolve_gene_sets(tmp_path):
    sets, source = gs.resolve_gene_sets("hallmark")
    assert len(sets) == 50 and source == "builtin:hallmark (MSigDB v7.0)"
    sets2, source2 = gs.resolve_gene_sets(PROGENY)
    assert len(sets2) == 14 and source2 == str(PROGENY.resolve()) and Path(source2).is_absolute()
    sets3, source3 = gs.resolve_gene_sets(str(REACTOME))
    assert len(sets3) == 2504 and source3 == str(REACTOME.resolve())  # ../shared may be a symbolic link
    mapping = {"S1": ["A", "B", "A"], "S2": []}
    assert gs.resolve_gene_sets(mapping) == ({"S1": ["A", "B"]}, "mapping (1 sets)")
    with pytest.raises(InputError, match="list of gene names"):
        gs.resolve_gene_sets({"S1": "TP53"})
    with pytest.raises(InputError, match="holds no genes"):
        gs.resolve_gene_sets({})
    with pytest.raises(InputError, match="builtin name"):
        gs.resolve_gene_sets(42)
    with pytest.raises(InputError, match="does not exist"):
        gs.resolve_gene_sets(str(tmp_path / "hallmarks.gmt"))


# ------------------------------------------------------------------------------------------ errors
def test_missing_file(tmp_path):
    missing = tmp_path / "nope.gmt"
    with pytest.raises(InputError, match=r"nope\.gmt' does not exist.*builtin collection name \(hallmark\)"):
        gs.read_gene_sets(missing)
    with pytest.raises(InputError, match="is not a file"):
        gs.read_gene_sets(tmp_path)


def test_unknown_layout_lists_columns_and_layouts(tmp_path):
    p = tmp_path / "weird.csv"
    p.write_text("alpha,beta\nx,y\n")
    with pytest.raises(InputError) as err:
        gs.read_gene_sets(p)
    msg = str(err.value)
    assert "weird.csv" in msg and "['alpha', 'beta']" in msg
    for layout in ("GMT", "set_col=", "DoRothEA", "PROGENy"):
        assert layout in msg
    with pytest.raises(InputError, match=r"gene_col='hgnc' is not a column; columns found \['alpha', 'beta'\]"):
        gs.read_gene_sets(p, set_col="alpha", gene_col="hgnc")
    with pytest.raises(InputError, match="fmt must be one of"):
        gs.read_gene_sets(p, fmt="xml")
    with pytest.raises(InputError, match="needs the columns tf, confidence, target"):
        gs.read_gene_sets(p, fmt="dorothea")
    with pytest.raises(InputError, match=r"non-numeric values"):
        gs.read_gene_sets(p, fmt="progeny")


def test_empty_results(tmp_path):
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    with pytest.raises(InputError, match=r"empty\.tsv' is empty"):
        gs.read_gene_sets(empty)
    header_only = tmp_path / "header.csv"
    header_only.write_text("set,gene\n")
    with pytest.raises(InputError, match=r"header\.csv' \(long\) gave no gene sets \(0 read\)"):
        gs.read_gene_sets(header_only)
    with pytest.raises(InputError, match=r"gave no gene sets \(50 read; lower min_size"):
        gs.read_gene_sets(_need(HALLMARK), min_size=10_000)
    only_e = tmp_path / "only_e.csv"
    only_e.write_text("tf,confidence,target,mor\nSTAT1,E,GBP1,1\n")
    with pytest.raises(InputError, match=r"\(dorothea\) gave no gene sets.*min_confidence \(now 'C'\)"):
        gs.read_gene_sets(only_e)
    bad_conf = tmp_path / "bad_conf.csv"
    bad_conf.write_text("tf,confidence,target\nSTAT1,Z,GBP1\n")
    with pytest.raises(InputError, match=r"values \['Z'\] outside the confidence letters"):
        gs.read_gene_sets(bad_conf)


# ------------------------------------------------------------------------------------------ module masks
def test_hallmark_module_map_on_kang_genes():
    if not KANG.exists():
        pytest.fail(f"{KANG} is missing: the tests expect ../shared/data beside the repository")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scGen's old-format uns entries
        adata = ad.read_h5ad(KANG, backed="r")
    var_names = list(adata.var_names)
    adata.file.close()
    ids, names = gene_module_map(var_names, gs.builtin_gene_sets("hallmark"))
    assigned = np.asarray(names)[ids] != "unassigned"
    fraction = float(assigned.mean())
    print(f"Kang 2018 (scGen valid.h5ad): {assigned.sum()}/{len(var_names)} genes in a Hallmark set ({fraction:.1%})")
    assert len(var_names) == 6998
    assert 0.15 < fraction < 0.5
    assert names[-1] == "unassigned"
    # 49 sets own genes: NOTCH_SIGNALING's 5 Kang genes all belong to earlier sets in file order
    assert len(names) == 50 and "HALLMARK_NOTCH_SIGNALING" not in names
    assert len(gene_module_map(var_names, gs.builtin_gene_sets(), priority="size")[1]) == 51
    ifna = names.index("HALLMARK_INTERFERON_ALPHA_RESPONSE")
    assert ids[var_names.index("ISG15")] in (ifna, *range(ifna))  # ISG15 is in IFN-alpha or an earlier set


# --------------------------------------------------------------------------------- GMT reader and module map
def test_read_gmt_real_hallmark_and_reactome():
    hallmark = read_gmt(_need(HALLMARK))
    assert len(hallmark) == 50
    assert "HALLMARK_TNFA_SIGNALING_VIA_NFKB" in hallmark
    assert hallmark["HALLMARK_TNFA_SIGNALING_VIA_NFKB"][:3] == ["JUNB", "CXCL2", "ATF3"]
    assert all(len(g) > 0 for g in hallmark.values())
    reactome = read_gmt(_need(REACTOME))
    assert len(reactome) > 2000
    assert reactome["2-LTR-circle-formation"][:3] == ["BANF1", "HMGA1", "LIG4"]


def test_gene_module_map_on_hallmark():
    hallmark = read_gmt(_need(HALLMARK))
    var_names = ["JUNB", "MYC", "NOT_A_GENE", "TP53", "CXCL2", "ALSO_NOT"]
    ids, names = gene_module_map(var_names, hallmark)
    assert ids.dtype == np.int32 and len(ids) == len(var_names)
    assert names[-1] == "unassigned" and ids[2] == ids[5] == len(names) - 1
    first = next(s for s in hallmark if "JUNB" in hallmark[s])
    assert names[ids[0]] == first == "HALLMARK_TNFA_SIGNALING_VIA_NFKB"
    # every used module holds at least one gene (empty sets dropped) and ids are compact
    assert set(ids.tolist()) == set(range(len(names)))
    ids_size, names_size = gene_module_map(var_names, hallmark, priority="size")
    sizes = {s: len(g) for s, g in hallmark.items()}
    for g, mid in zip(var_names, ids_size, strict=True):
        if names_size[mid] != "unassigned":
            cands = [s for s in hallmark if g in hallmark[s]]
            assert sizes[names_size[mid]] == min(sizes[s] for s in cands)
    # usable as a module mask
    m = mask_for(0, 10, len(var_names), kind="module", ratio=0.5, gene_to_module=ids)
    assert m.shape == (10, 6)
    assert torch.equal(m[:, 2], m[:, 5])


def test_read_gmt_malformed(tmp_path):
    p = tmp_path / "bad.gmt"
    p.write_text("OK\tdesc\tA\tB\nBROKEN_LINE_NO_TABS\n")
    with pytest.raises(InputError, match="bad.gmt:2"):
        read_gmt(p)
    p.write_text("EMPTY\tdesc\t\t\n")
    with pytest.raises(InputError, match="no genes"):
        read_gmt(p)
    p.write_text("S\td\tA\nS\td\tB\n")
    with pytest.raises(InputError, match="twice"):
        read_gmt(p)
    with pytest.raises(InputError, match="does not exist"):
        read_gmt(tmp_path / "missing.gmt")
    p.write_text("S\td\tA\tA\tB\t\n\n")
    assert read_gmt(p) == {"S": ["A", "B"]}


def test_genome_prefixed_gene_names_match_their_symbols_on_the_real_citefuse_panel():
    from _realdata import SHARED_DATA

    from celljepa.data.genesets import resolve_gene_sets

    a = ad.read_h5ad(SHARED_DATA / "multimodal" / "citefuse" / "mimitou2019_ctrl_vs_ctcl.h5ad", backed="r")
    names = list(a.var_names)
    assert all(n.startswith("hg19_") for n in names)  # Cell Ranger's multi-genome naming
    sets, _ = resolve_gene_sets("hallmark")
    ids, modules = gene_module_map(names, sets)
    bare_ids, bare_modules = gene_module_map([n[len("hg19_") :] for n in names], sets)
    assert modules == bare_modules and np.array_equal(ids, bare_ids)
    assert (np.asarray(modules)[ids] != "unassigned").sum() > 500
    # an exact column wins over a prefixed one, and names without a known genome prefix never match
    ids, modules = gene_module_map(["GRCh38-A", "A", "mm10___B", "xx_B"], {"S1": ["A"], "S2": ["B"]})
    assert [modules[i] for i in ids] == ["unassigned", "S1", "S2", "unassigned"]
