"""Gene Ontology annotations shipped with celljepa, and a gene embedding built from them.

The package ships one derived table, :data:`GO_TABLE`: for every human gene symbol, the Gene
Ontology biological-process (BP) terms it is directly annotated to (org.Hs.eg.db 3.16.0, NCBI Entrez
Gene 2022-09-12, GO 2022-07-01; evidence code ``ND`` removed). :func:`build_go_table` makes it from
the two Bioconductor exports, :func:`read_go_table` reads it, and :func:`go_gene_embedding` turns
it into a deterministic genome-wide gene embedding (TF-IDF over GO terms, truncated SVD) for
perturbation-prediction baselines that need one vector per perturbed gene.

Nothing here downloads anything. GO annotations: CC BY 4.0, Gene Ontology Consortium; NCBI Gene:
public domain.
"""

from __future__ import annotations

import functools
import gzip
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.decomposition import TruncatedSVD

from .._errors import InputError
from .._io import write_atomic
from ._names import genome_prefix, strip_genome_prefix

__all__ = [
    "GO_TABLE",
    "GOEmbedding",
    "build_go_table",
    "go_gene_embedding",
    "read_go_table",
]

GO_TABLE = "go_bp_2022-09.tsv.gz"

_ONTOLOGIES = ("BP", "MF", "CC")
_DROPPED_EVIDENCE = ("ND",)
_HEADER = "symbol\tterms"
_LICENCE_LINE = "GO annotations: CC BY 4.0, Gene Ontology Consortium; NCBI Gene: public domain"
_GZIP_MAGIC = b"\x1f\x8b"


# ------------------------------------------------------------------------------------------ build
def _read_csv_columns(path: Path, columns: tuple[str, ...], what: str) -> pd.DataFrame:
    if not path.is_file():
        raise InputError(f"{what} file not found: '{path}'. Check the path.")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except Exception as err:  # pandas raises many types for unreadable files
        raise InputError(f"cannot read {what} file '{path}' as CSV: {err}") from err
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(
            f"{what} file '{path}' lacks the column(s) {missing}; found {list(frame.columns)}. "
            f"Expected an org.Hs.eg.db export with columns {list(columns)}."
        )
    return frame.loc[:, list(columns)]


def build_go_table(
    go_csv: str | os.PathLike,
    genes_csv: str | os.PathLike,
    out: str | os.PathLike,
    *,
    ontology: str = "BP",
) -> Path:
    """Build the gene → GO term table from org.Hs.eg.db exports.

    Keeps the annotations of one ontology, drops evidence code ``ND`` (no biological data), maps
    Entrez IDs to symbols (annotations of genes without a symbol are dropped; Entrez IDs that share
    a symbol have their terms united) and deduplicates (gene, term) pairs. The output is gzip text
    with deterministic bytes (``mtime=0``, empty file name in the gzip header), written atomically:
    ``#`` comment lines with the sources, filters, counts and licence, the header ``symbol<TAB>terms``,
    then one line per gene, sorted by symbol, with its sorted terms joined by commas.

    Parameters
    ----------
    go_csv
        CSV with columns ``ENTREZID, GO, EVIDENCE, ONTOLOGY`` (direct annotations; e.g.
        ``human_gene_go_2022-09.csv.gz``).
    genes_csv
        CSV with columns ``ENTREZID, SYMBOL`` (e.g. ``human_genes_ncbi_2022-09.csv.gz``).
    out
        The file to write (``.tsv.gz``); its folder is created if needed.
    ontology
        ``"BP"`` (biological process, the default), ``"MF"`` or ``"CC"``.

    Returns
    -------
    The :class:`~pathlib.Path` written.

    Examples
    --------
    >>> from celljepa.data.go import build_go_table, read_go_table
    >>> path = build_go_table("human_gene_go_2022-09.csv.gz", "human_genes_ncbi_2022-09.csv.gz",
    ...                       "go_bp.tsv.gz")  # doctest: +SKIP
    >>> read_go_table(path)["TP53"][:2]  # doctest: +SKIP
    ('GO:0000122', 'GO:0000423')
    """
    key = ontology.strip().upper() if isinstance(ontology, str) else None
    if key not in _ONTOLOGIES:
        raise InputError(f"unknown ontology {ontology!r}; choose one of {', '.join(_ONTOLOGIES)}.")
    go_path, genes_path = Path(go_csv), Path(genes_csv)
    go = _read_csv_columns(go_path, ("ENTREZID", "GO", "EVIDENCE", "ONTOLOGY"), "GO annotation")
    genes = _read_csv_columns(genes_path, ("ENTREZID", "SYMBOL"), "gene")

    n_rows = len(go)
    go = go[go["ONTOLOGY"] == key]
    n_ontology = len(go)
    go = go[~go["EVIDENCE"].isin(_DROPPED_EVIDENCE)]
    n_evidence = len(go)
    go = go.dropna(subset=["ENTREZID", "GO"])

    symbols = genes.dropna().drop_duplicates("ENTREZID").set_index("ENTREZID")["SYMBOL"].str.strip()
    go = go.assign(SYMBOL=go["ENTREZID"].map(symbols))
    no_symbol = go["SYMBOL"].isna() | (go["SYMBOL"] == "")
    n_no_symbol_ids = go.loc[no_symbol, "ENTREZID"].nunique()
    go = go[~no_symbol]
    n_entrez = go["ENTREZID"].nunique()
    pairs = go[["SYMBOL", "GO"]].drop_duplicates().sort_values(["SYMBOL", "GO"], kind="mergesort")
    if pairs.empty:
        raise InputError(
            f"no {key} annotations left in '{go_path}' after dropping evidence {list(_DROPPED_EVIDENCE)} "
            f"and genes without a symbol in '{genes_path}'. Check that the files are the human org.Hs.eg.db exports."
        )
    table = pairs.groupby("SYMBOL", sort=True)["GO"].agg(",".join)
    n_genes, n_terms = len(table), pairs["GO"].nunique()

    lines = [
        f"# Gene Ontology {key} annotations per human gene symbol (direct annotations, not propagated)",
        f"# sources: {go_path.name} (GO annotations), {genes_path.name} (Entrez ID -> symbol); "
        "Bioconductor org.Hs.eg.db 3.16.0",
        f"# built by celljepa.data.go.build_go_table(ontology={key!r})",
        f"# filters: ONTOLOGY == {key}; evidence codes dropped: {', '.join(_DROPPED_EVIDENCE)}; "
        "genes without a symbol dropped; terms of Entrez IDs sharing a symbol united; (gene, term) deduplicated",
        f"# counts: {n_rows} input rows, {n_ontology} {key} rows, {n_evidence} after the evidence filter, "
        f"{n_no_symbol_ids} Entrez IDs without a symbol, {n_entrez} Entrez IDs kept, "
        f"{n_genes} genes, {n_terms} terms, {len(pairs)} gene-term pairs",
        f"# licence: {_LICENCE_LINE}",
        _HEADER,
    ]
    lines.extend(f"{symbol}\t{terms}" for symbol, terms in table.items())
    payload = ("\n".join(lines) + "\n").encode("utf-8")

    def _write(tmp: Path) -> None:
        with open(tmp, "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as gz:
                gz.write(payload)
            raw.flush()
            os.fsync(raw.fileno())

    return write_atomic(out, _write)


# ------------------------------------------------------------------------------------------- read
def _shipped_table_path() -> Path:
    return Path(str(resources.files("celljepa.datasets").joinpath("_data", "go", GO_TABLE)))


def _parse_go_table(path: Path, fix: str) -> dict[str, tuple[str, ...]]:
    if not path.exists():
        raise InputError(f"GO table not found: '{path}'. {fix}")
    if path.is_dir():
        raise InputError(f"GO table '{path}' is a folder, not a file. {fix}")
    with open(path, "rb") as fh:
        gzipped = fh.read(2) == _GZIP_MAGIC
    try:
        opener = gzip.open(path, "rt", encoding="utf-8") if gzipped else open(path, encoding="utf-8")
        with opener as fh:
            raw_lines = fh.read().splitlines()
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read GO table '{path}': {err}. {fix}") from err

    table: dict[str, tuple[str, ...]] = {}
    header_seen = False
    for lineno, line in enumerate(raw_lines, start=1):
        if not header_seen:
            if line.startswith("#") or not line.strip():
                continue
            if line.rstrip("\r") != _HEADER:
                raise InputError(
                    f"GO table '{path}' line {lineno}: expected the header 'symbol<TAB>terms', "
                    f"found {line[:60]!r}. {fix}"
                )
            header_seen = True
            continue
        if not line.strip():
            continue
        parts = line.rstrip("\r").split("\t")
        if len(parts) != 2 or not parts[0]:
            raise InputError(
                f"GO table '{path}' line {lineno}: expected 'SYMBOL<TAB>GO:...,GO:...', found {line[:60]!r}. {fix}"
            )
        symbol, terms = parts
        ids = tuple(terms.split(",")) if terms else ()
        bad = [t for t in ids if not t.startswith("GO:")]
        if bad:
            raise InputError(f"GO table '{path}' line {lineno}: {symbol} has non-GO term(s) {bad[:3]}. {fix}")
        if symbol in table:
            raise InputError(f"GO table '{path}' line {lineno}: gene {symbol} appears twice. {fix}")
        table[symbol] = ids
    if not header_seen:
        raise InputError(f"GO table '{path}' has no 'symbol<TAB>terms' header (empty or not a GO table). {fix}")
    if not table:
        raise InputError(f"GO table '{path}' has a header but no genes. {fix}")
    return table


_REBUILD_FIX = (
    "Rebuild it with celljepa.data.go.build_go_table(go_csv, genes_csv, out) from the org.Hs.eg.db exports, "
    "or call read_go_table() without a path for the table shipped with celljepa."
)
_REINSTALL_FIX = "The GO table shipped with celljepa is missing or damaged; reinstall celljepa."


@functools.lru_cache(maxsize=1)
def _read_shipped_table() -> dict[str, tuple[str, ...]]:
    return _parse_go_table(_shipped_table_path(), _REINSTALL_FIX)


def read_go_table(path: str | os.PathLike | None = None) -> dict[str, tuple[str, ...]]:
    """Read a gene → GO term table written by :func:`build_go_table`.

    Parameters
    ----------
    path
        The table; ``None`` (default) reads the one shipped with celljepa, :data:`GO_TABLE`
        (GO biological process, org.Hs.eg.db 3.16.0), which is read once per process and cached.

    Returns
    -------
    ``dict[str, tuple[str, ...]]``: gene symbol → its sorted GO term IDs, genes in file (symbol) order.

    Raises
    ------
    InputError
        When the file is missing, not a GO table or malformed; the message names the file and the fix.

    Examples
    --------
    >>> from celljepa.data.go import read_go_table
    >>> table = read_go_table()
    >>> "GO:0006977" in table["TP53"]  # DNA damage response, p53-mediated, resulting in cell cycle arrest
    True
    """
    if path is None:
        return dict(_read_shipped_table())  # a copy: callers may edit it without touching the cache
    return _parse_go_table(Path(path), _REBUILD_FIX)


# -------------------------------------------------------------------------------------- embedding
@dataclass(frozen=True, eq=False)
class GOEmbedding:
    """A gene embedding: one unit-norm row per gene symbol.

    Attributes
    ----------
    genes
        Gene symbols (``numpy`` array of ``str``), one per row of ``matrix``.
    matrix
        ``(n_genes, n_components)`` float64 array, rows L2-normalised.
    info
        Provenance: ``n_genes``, ``n_terms``, ``n_components``, ``explained_variance_ratio_sum``,
        ``source`` (file name) and the arguments used.

    Examples
    --------
    >>> from celljepa.data.go import go_gene_embedding
    >>> emb = go_gene_embedding(16)
    >>> emb.vector("tp53").shape, emb.coverage(["TP53", "NOT_A_GENE"])
    ((16,), 0.5)
    """

    genes: np.ndarray
    matrix: np.ndarray
    info: dict
    _exact: dict = field(init=False, repr=False)
    _folded: dict = field(init=False, repr=False)

    def __post_init__(self) -> None:
        exact = {str(g): i for i, g in enumerate(self.genes)}
        folded: dict[str, int] = {}
        for g, i in exact.items():
            folded.setdefault(g.upper(), i)
        object.__setattr__(self, "_exact", exact)
        object.__setattr__(self, "_folded", folded)

    def _index(self, name) -> int | None:
        if not isinstance(name, str):
            return None
        name = name.strip()
        i = self._exact.get(name)
        if i is None:
            i = self._folded.get(name.upper())
        if i is None and genome_prefix(name):  # Cell Ranger's multi-genome names: hg19_TP53 -> TP53
            return self._index(strip_genome_prefix(name))
        return i

    def vector(self, name: str) -> np.ndarray | None:
        """The embedding of gene ``name`` (case-insensitive symbol), or ``None`` when it has none.

        Parameters
        ----------
        name
            A gene symbol; an exact match wins over a case-insensitive one. A name with a reference-genome
            prefix, as Cell Ranger writes for multi-genome references (``hg19_TP53``, ``GRCh38-TP53``),
            falls back to its symbol.

        Returns
        -------
        A copy of the gene's ``(n_components,)`` row, or ``None``.

        Examples
        --------
        >>> from celljepa.data.go import go_gene_embedding
        >>> go_gene_embedding(8).vector("NOT_A_GENE") is None
        True
        """
        i = self._index(name)
        return None if i is None else self.matrix[i].copy()

    def matrix_for(self, names: Iterable[str], dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
        """One row per name: ``(matrix, found)``; rows of names without an embedding are zero.

        Examples
        --------
        >>> from celljepa.data.go import go_gene_embedding
        >>> m, found = go_gene_embedding(8).matrix_for(["TP53", "NOT_A_GENE"])
        >>> m.shape, found.tolist()
        ((2, 8), [True, False])
        """
        index = [self._index(n) for n in names]
        found = np.array([i is not None for i in index], dtype=bool)
        out = np.zeros((len(index), self.matrix.shape[1]), dtype=dtype)
        if found.any():
            out[found] = self.matrix[[i for i in index if i is not None]]
        return out, found

    def coverage(self, names: Iterable[str]) -> float:
        """The fraction of ``names`` that have an embedding (case-insensitive; duplicates count each time).

        Parameters
        ----------
        names
            Gene symbols (a single string counts as one name).

        Returns
        -------
        A float in ``[0, 1]``.

        Raises
        ------
        InputError
            When ``names`` is empty.

        Examples
        --------
        >>> from celljepa.data.go import go_gene_embedding
        >>> go_gene_embedding(8).coverage(["KLF1", "FOXL2"])
        1.0
        """
        items = [names] if isinstance(names, str) else list(names)
        if not items:
            raise InputError("coverage() needs at least one gene name.")
        return sum(self._index(n) is not None for n in items) / len(items)


def _source_key(path: str | os.PathLike | None) -> tuple:
    """What identifies a table for the cache: the resolved path and, for user files, its size and mtime."""
    if path is None:
        return (None,)
    p = Path(path).resolve()
    try:
        st = p.stat()
    except OSError:
        return (str(p), None, None)
    return (str(p), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _embedding(
    n_components: int, min_term_genes: int, max_term_genes: int, seed: int, source: tuple
) -> tuple[np.ndarray, np.ndarray, dict]:
    path = source[0]
    table = read_go_table(path)
    source_name = GO_TABLE if path is None else Path(path).name

    all_genes = list(table)
    term_ids: dict[str, int] = {}
    rows: list[int] = []
    cols: list[int] = []
    for r, g in enumerate(all_genes):
        for t in table[g]:
            rows.append(r)
            cols.append(term_ids.setdefault(t, len(term_ids)))
    terms = np.array(list(term_ids), dtype=object)
    binary = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float64), (np.asarray(rows), np.asarray(cols))),
        shape=(len(all_genes), len(terms)),
    )
    binary.sum_duplicates()
    binary.data[:] = 1.0

    df = np.asarray(binary.sum(axis=0)).ravel()
    keep_terms = np.flatnonzero((df >= min_term_genes) & (df <= max_term_genes))
    # sort kept terms by ID so the column order does not depend on file order
    keep_terms = keep_terms[np.argsort(terms[keep_terms].astype(str), kind="mergesort")]
    x = binary[:, keep_terms].tocsr()
    keep_genes = np.flatnonzero(np.diff(x.indptr) > 0)
    x = x[keep_genes].tocsr()
    n_genes, n_terms = x.shape
    if n_terms <= n_components or n_genes <= n_components:
        raise InputError(
            f"n_components={n_components} is too large: the GO table '{source_name}' leaves {n_genes} genes and "
            f"{n_terms} terms annotated to {min_term_genes}-{max_term_genes} genes. "
            "Lower n_components or widen min_term_genes/max_term_genes."
        )

    idf = np.log(n_genes / np.asarray(x.sum(axis=0)).ravel())
    x = x @ sp.diags(idf)
    x = _l2_rows_sparse(x.tocsr())
    svd = TruncatedSVD(n_components=n_components, random_state=seed)
    z = svd.fit_transform(x)
    norms = np.linalg.norm(z, axis=1)
    nonzero = norms > 0
    z = z[nonzero] / norms[nonzero, None]

    genes = np.array([all_genes[i] for i in keep_genes[nonzero]], dtype=str)
    matrix = np.ascontiguousarray(z, dtype=np.float64)
    genes.setflags(write=False)
    matrix.setflags(write=False)
    info = {
        "n_genes": int(matrix.shape[0]),
        "n_terms": int(n_terms),
        "n_components": int(n_components),
        "explained_variance_ratio_sum": float(svd.explained_variance_ratio_.sum()),
        "source": source_name,
        "min_term_genes": int(min_term_genes),
        "max_term_genes": int(max_term_genes),
        "seed": int(seed),
        "weighting": "tf-idf (binary tf, idf = log(n_genes / n_genes_with_term)), rows L2-normalised",
    }
    return genes, matrix, info


def _l2_rows_sparse(x: sp.csr_matrix) -> sp.csr_matrix:
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return (sp.diags(1.0 / norms) @ x).tocsr()


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def go_gene_embedding(
    n_components: int = 64,
    *,
    min_term_genes: int = 3,
    max_term_genes: int = 1000,
    seed: int = 0,
    path: str | os.PathLike | None = None,
) -> GOEmbedding:
    """A deterministic genome-wide gene embedding from GO biological-process annotations.

    Builds the binary gene × term matrix over the terms annotated to between ``min_term_genes`` and
    ``max_term_genes`` genes (genes with none of those terms are left out), weights it by TF-IDF
    (``idf = log(n_genes / n_genes_with_term)``), L2-normalises the rows, reduces it with
    :class:`sklearn.decomposition.TruncatedSVD` (``random_state=seed``) and L2-normalises the output
    rows, so cosine similarity is a dot product. Results are cached per argument tuple.

    Parameters
    ----------
    n_components
        Width of the embedding.
    min_term_genes, max_term_genes
        Keep terms annotated to at least / at most this many genes (drops singletons and very broad terms).
    seed
        Random state of the randomized SVD; a fixed seed gives identical output.
    path
        A table written by :func:`build_go_table`; ``None`` uses the shipped :data:`GO_TABLE`.

    Returns
    -------
    A :class:`GOEmbedding` (read-only arrays).

    Examples
    --------
    >>> from celljepa.data.go import go_gene_embedding
    >>> emb = go_gene_embedding(32)
    >>> emb.matrix.shape[1], emb.info["source"]
    (32, 'go_bp_2022-09.tsv.gz')
    """
    n_components = _check_int("n_components", n_components, 1)
    min_term_genes = _check_int("min_term_genes", min_term_genes, 1)
    max_term_genes = _check_int("max_term_genes", max_term_genes, 1)
    seed = _check_int("seed", seed, 0)
    if max_term_genes < min_term_genes:
        raise InputError(f"max_term_genes ({max_term_genes}) must be >= min_term_genes ({min_term_genes}).")
    genes, matrix, info = _embedding(n_components, min_term_genes, max_term_genes, seed, _source_key(path))
    return GOEmbedding(genes=genes, matrix=matrix, info=dict(info))
