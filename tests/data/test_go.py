"""The shipped Gene Ontology (BP) table, its builder and reader, and the GO gene embedding, on real data."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from _realdata import SHARED_DATA

from celljepa import InputError
from celljepa.data import go

GENES = SHARED_DATA / "genes"
GO_CSV = GENES / "human_gene_go_2022-09.csv.gz"
GENES_CSV = GENES / "human_genes_ncbi_2022-09.csv.gz"

RIBOSOMAL = ["RPL3", "RPL4", "RPL5", "RPS3", "RPS6"]  # cytosolic ribosomal proteins


def _need(path):
    if not path.exists():
        pytest.fail(f"{path} is missing: the tests expect ../shared/data/genes beside the repository")
    return path


@pytest.fixture(scope="module")
def table() -> dict[str, tuple[str, ...]]:
    return go.read_go_table()


@pytest.fixture(scope="module")
def embedding() -> go.GOEmbedding:
    return go.go_gene_embedding(64)


def test_rebuild_is_byte_identical_to_shipped(tmp_path):
    out = go.build_go_table(_need(GO_CSV), _need(GENES_CSV), tmp_path / "sub" / go.GO_TABLE)
    shipped = go._shipped_table_path()
    assert shipped.is_file()
    size = shipped.stat().st_size
    print(f"shipped {shipped.name}: {size} bytes")
    assert size < 1_000_000
    assert out.read_bytes() == shipped.read_bytes()
    assert [p.name for p in out.parent.iterdir()] == [go.GO_TABLE]  # no temporary file left behind


def test_table_contents(table):
    n_terms = len({t for terms in table.values() for t in terms})
    print(f"{len(table)} genes, {n_terms} terms")
    assert len(table) > 15_000
    assert n_terms > 10_000
    assert list(table) == sorted(table)
    assert all(list(terms) == sorted(set(terms)) and terms for terms in table.values())
    # facts checked in human_gene_go_2022-09.csv.gz
    assert "GO:0006977" in table["TP53"]  # DNA damage response, p53 class mediator -> cell cycle arrest
    assert "GO:0030218" in table["KLF1"]  # erythrocyte differentiation
    assert "GO:0006096" in table["GAPDH"]  # glycolytic process
    assert "GO:0006281" in table["BRCA1"]  # DNA repair
    assert "GO:0002181" in table["RPL3"]  # cytoplasmic translation
    # evidence ND is dropped: the root term 'biological_process' only ever comes with ND
    assert not any("GO:0008150" in terms for terms in table.values())
    # only BP terms: 'nucleus' (CC) and 'DNA binding' (MF) never appear
    assert not any("GO:0005634" in terms or "GO:0003677" in terms for terms in table.values())


def test_shipped_header_and_licence():
    with gzip.open(go._shipped_table_path(), "rt", encoding="utf-8") as fh:
        head = [next(fh) for _ in range(8)]
    comments = [line for line in head if line.startswith("#")]
    assert any("CC BY 4.0, Gene Ontology Consortium" in line for line in comments)
    assert any("evidence codes dropped: ND" in line for line in comments)
    assert head[len(comments)] == "symbol\tterms\n"


def test_read_default_returns_a_copy(table):
    other = go.read_go_table()
    other.pop("TP53")
    assert "TP53" in go.read_go_table()


def test_embedding_deterministic_unit_norm_width():
    go._embedding.cache_clear()
    first = go.go_gene_embedding(64)
    go._embedding.cache_clear()
    second = go.go_gene_embedding(64)
    assert first.matrix is not second.matrix
    assert np.array_equal(first.genes, second.genes)
    assert np.array_equal(first.matrix, second.matrix)
    assert first.matrix.shape == (len(first.genes), 64)
    assert first.matrix.dtype == np.float64
    norms = np.linalg.norm(first.matrix, axis=1)
    print(f"embedding: {first.info}; max | ||row|| - 1 | = {np.abs(norms - 1).max():.2e}")
    assert np.allclose(norms, 1.0, atol=1e-10)
    assert first.info["n_genes"] == len(first.genes) > 15_000
    assert first.info["n_components"] == 64
    assert 0 < first.info["explained_variance_ratio_sum"] < 1
    assert first.info["source"] == go.GO_TABLE
    assert go.go_gene_embedding(64) is not first  # fresh object from the cache ...
    assert go.go_gene_embedding(64).matrix is second.matrix  # ... sharing the cached read-only array
    assert not second.matrix.flags.writeable
    assert go.go_gene_embedding(16).matrix.shape[1] == 16


def test_embedding_lookup(embedding, table):
    v = embedding.vector("tp53")
    assert v is not None and v.shape == (64,)
    assert np.array_equal(v, embedding.vector("TP53"))
    assert embedding.vector("NOT_A_GENE") is None
    assert embedding.coverage(["TP53", "NOT_A_GENE"]) == 0.5
    assert set(embedding.genes) <= set(table)
    with pytest.raises(InputError):
        embedding.coverage([])


def test_ribosomal_proteins_are_closer_than_random_pairs(embedding):
    vectors = np.array([embedding.vector(g) for g in RIBOSOMAL])
    sims = vectors @ vectors.T
    group = sims[np.triu_indices(len(RIBOSOMAL), 1)].mean()
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, len(embedding.genes), (2, 20_000))
    keep = i != j
    random_mean = np.sum(embedding.matrix[i[keep]] * embedding.matrix[j[keep]], axis=1).mean()
    print(f"mean cosine: ribosomal {group:.3f}, random pairs {random_mean:.3f}")
    assert group > 0.5  # measured 0.72
    assert random_mean < 0.15  # measured 0.06
    assert group - random_mean > 0.4


def test_demo_perturbation_coverage(embedding):
    import celljepa as cj

    adata = cj.datasets.demo()
    tokens = adata.obs["perturbation_tokens"].astype(str).unique()
    genes = sorted({tok[len("gene:") :] for value in tokens for tok in value.split("|") if tok.startswith("gene:")})
    assert len(genes) >= 10
    coverage = embedding.coverage(genes)
    missing = [g for g in genes if embedding.vector(g) is None]
    print(f"demo perturbed genes: {len(genes)}, GO embedding coverage {coverage:.3f}, missing {missing}")
    assert coverage >= 0.9


def test_missing_table_raises(tmp_path):
    missing = tmp_path / "missing.tsv.gz"
    with pytest.raises(InputError, match="missing.tsv.gz") as err:
        go.read_go_table(missing)
    assert str(missing) in str(err.value)
    assert "build_go_table" in str(err.value)
    with pytest.raises(InputError, match="missing.tsv.gz"):
        go.go_gene_embedding(8, path=missing)


def test_malformed_table_raises(tmp_path):
    bad = tmp_path / "bad.tsv.gz"
    with gzip.open(bad, "wt") as fh:
        fh.write("# comment\nsymbol\tterms\nTP53\tGO:0006977,apoptosis\n")
    with pytest.raises(InputError, match=r"bad\.tsv\.gz.*line 3"):
        go.read_go_table(bad)
    wrong = tmp_path / "wrong.tsv"
    wrong.write_text("gene,term\nTP53,GO:0006977\n")
    with pytest.raises(InputError, match="header"):
        go.read_go_table(wrong)
    truncated = tmp_path / "truncated.tsv.gz"
    truncated.write_bytes(go._shipped_table_path().read_bytes()[:1000])
    with pytest.raises(InputError, match="truncated.tsv.gz"):
        go.read_go_table(truncated)


def test_build_rejects_bad_input(tmp_path):
    with pytest.raises(InputError, match="ontology"):
        go.build_go_table(GO_CSV, GENES_CSV, tmp_path / "x.tsv.gz", ontology="XX")
    with pytest.raises(InputError, match="lacks the column"):
        go.build_go_table(GENES_CSV, GENES_CSV, tmp_path / "x.tsv.gz")
    assert not (tmp_path / "x.tsv.gz").exists()


def test_embedding_argument_checks():
    with pytest.raises(InputError, match="n_components"):
        go.go_gene_embedding(0)
    with pytest.raises(InputError, match="max_term_genes"):
        go.go_gene_embedding(8, min_term_genes=10, max_term_genes=5)
    with pytest.raises(InputError, match="too large"):
        go.go_gene_embedding(50, min_term_genes=900, max_term_genes=1000)


def test_genome_prefixed_names_find_their_symbols_on_the_real_citefuse_panel(embedding):
    import anndata as ad

    a = ad.read_h5ad(SHARED_DATA / "multimodal" / "citefuse" / "mimitou2019_ctrl_vs_ctcl.h5ad", backed="r")
    names = list(a.var_names)
    assert all(n.startswith("hg19_") for n in names)  # Cell Ranger's multi-genome naming
    m, found = embedding.matrix_for(names)
    bare_m, bare_found = embedding.matrix_for([n[len("hg19_") :] for n in names])
    assert np.array_equal(found, bare_found) and np.array_equal(m, bare_m)
    assert embedding.coverage(names) > 0.9
    # only a known genome prefix is stripped, and a prefixed name finds its symbol case-insensitively
    assert embedding.vector("GRCh38-TP53") is not None and embedding.vector("xx_TP53") is None
    assert np.array_equal(embedding.vector("mm10___tp53"), embedding.vector("TP53"))
