"""GEARS's Gene Ontology gene graph over every gene with GO biological-process terms, built once and cached.

GEARS (``gears.utils.get_similarity_network(network_type="go")``) links perturbable genes by the Jaccard
similarity of their GO term sets: ``make_GO`` lists every ordered gene pair with Jaccard > 0.1 (sources, then
targets, in the order of GEARS's sorted gene list), and GEARS keeps, per target gene, the ``k + 1`` edges of
highest similarity (``nlargest``: ties go to the edge listed first, the one with the smaller source). GEARS's
published graph spans about 10,000 "essential" genes it downloads; here it spans every gene of celljepa's
shipped GO table (:func:`celljepa.data.go.read_go_table`, 18,708 genes, built from
``human_gene_go_2022-09.csv.gz``), so a perturbed gene is in the graph whenever it has a GO annotation.

The graph is computed without any dense gene x gene matrix: the gene x term incidence matrix (sparse) is
multiplied by its transpose one block of 1,024 genes at a time, the Jaccard similarities of each block are
thresholded, and each gene keeps its ``k + 1`` best neighbours (a sort of the block's surviving pairs by gene,
similarity and neighbour). It depends only on the table and ``k``, so it is cached on disk (see
:func:`go_graph_cache_dir`), keyed by the table's SHA-256 and ``k``, and written atomically.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .._errors import InputError
from .._io import write_atomic
from .._logging import logger

__all__ = ["GOGraph", "go_graph", "go_graph_cache_dir"]

#: GEARS's ``make_GO`` keeps a pair when its Jaccard similarity is above this.
JACCARD_MIN = 0.1
_BLOCK = 1024
_FORMAT = 1  # bump when the cached file's layout or the rule changes


@dataclass(frozen=True, eq=False)
class GOGraph:
    """GEARS's GO graph: per target gene, its ``k + 1`` most GO-similar source genes (itself usually first).

    Attributes
    ----------
    genes
        Every gene of the table with at least one GO term, sorted (GEARS's ``pert_names`` order).
    source, target
        Gene indices of the edges (``source -> target``), sorted by target, then decreasing importance, then
        source: the first ``k' + 1`` edges of a target are its graph for any ``k' <= k``.
    importance
        The Jaccard similarity of the two genes' GO term sets (float64, as GEARS computes it).
    k
        Neighbours kept per gene besides the ``+ 1`` (GEARS's ``num_similar_genes_go_graph``).
    digest
        SHA-256 of the GO table file the graph was built from.
    n_pairs
        Ordered gene pairs with Jaccard > 0.1 before the top-k selection (GEARS's ``make_GO`` output size).
    build_s
        Seconds it took to build (when first built; the cache keeps the number).
    cached
        Whether this call read it from the cache.
    """

    genes: np.ndarray
    source: np.ndarray
    target: np.ndarray
    importance: np.ndarray
    k: int
    digest: str
    n_pairs: int
    build_s: float
    cached: bool = False

    @property
    def n_edges(self) -> int:
        return int(len(self.source))

    def top(self, k: int) -> GOGraph:
        """The graph GEARS keeps with ``k`` neighbours (``k <= self.k``): each target's first ``k + 1`` edges."""
        if k > self.k:
            raise InputError(
                f"the GO graph keeps {self.k} neighbours per gene; {k} were asked for. Fix: build it "
                f"with go_graph(k={k})."
            )
        if k == self.k:
            return self
        first = np.searchsorted(self.target, self.target, side="left")
        keep = (np.arange(len(self.target)) - first) < k + 1
        return GOGraph(
            self.genes,
            self.source[keep],
            self.target[keep],
            self.importance[keep],
            int(k),
            self.digest,
            self.n_pairs,
            self.build_s,
            self.cached,
        )

    def receptive_field(self, genes, layers: int = 1) -> GOGraph:
        """The part of the graph a GEARS model with ``layers`` GO-graph layers reads for ``genes``, exactly.

        GEARS's perturbation embedding of gene ``i`` is a graph convolution (``SGConv``, GCN normalisation with
        self-loops) over ``layers`` hops of in-edges, and only the embeddings of perturbed genes enter its
        predictions. The subgraph keeps every in-edge of the genes within ``layers − 1`` hops of ``genes`` (the
        *expanded* nodes), and the sources of those edges as *boundary* nodes. A boundary node's own output is
        never read, but its degree enters the normalisation of its messages, so its in-edges are replaced by one
        self-loop whose weight is its full weighted in-degree (GCN normalisation counts a missing self-loop as 1;
        an existing one keeps its weight). Every output GEARS reads is then the same as on the whole graph; only
        the random initialisation of the learnable embeddings is drawn over fewer nodes. Genes not in the graph
        (no GO terms) are ignored. Node order stays sorted (GEARS's ``pert_names`` order).

        Examples
        --------
        >>> g = go_graph(20)                                               # doctest: +SKIP
        >>> sub = g.receptive_field(["STAT1", "JAK2"])                     # doctest: +SKIP
        >>> len(sub.genes) < 50 < len(g.genes)                             # doctest: +SKIP
        True
        """
        n = len(self.genes)
        index = {str(g): i for i, g in enumerate(self.genes)}
        core = np.array(sorted({index[str(g)] for g in genes if str(g) in index}), dtype=np.int64)
        has_self = np.zeros(n, dtype=bool)
        has_self[self.target[self.source == self.target]] = True
        degree = np.bincount(self.target, weights=self.importance, minlength=n) + (~has_self)  # GCN's degree
        expanded = np.zeros(n, dtype=bool)
        expanded[core] = True
        for _ in range(max(int(layers), 1) - 1):
            expanded[self.source[expanded[self.target]]] = True
        keep = expanded[self.target]
        nodes = expanded.copy()
        nodes[self.source[keep]] = True
        boundary = np.flatnonzero(nodes & ~expanded)
        old = np.flatnonzero(nodes)
        new_of = np.full(n, -1, dtype=np.int64)
        new_of[old] = np.arange(len(old))
        src = np.concatenate([new_of[self.source[keep]], new_of[boundary]])
        dst = np.concatenate([new_of[self.target[keep]], new_of[boundary]])
        imp = np.concatenate([self.importance[keep], degree[boundary]])
        order = np.lexsort((src, -imp, dst))  # the file's order: target, decreasing importance, source
        return GOGraph(
            self.genes[old],
            src[order],
            dst[order],
            imp[order],
            self.k,
            self.digest,
            self.n_pairs,
            self.build_s,
            self.cached,
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write the graph to ``path`` (``.npz``, no pickled objects), atomically."""

        def _write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez(
                    fh,
                    genes=np.asarray(self.genes, dtype=str),
                    source=self.source,
                    target=self.target,
                    importance=self.importance,
                    meta=np.array([_FORMAT, self.k, self.n_pairs], dtype=np.int64),
                    digest=np.array(self.digest),
                    build_s=np.array(self.build_s),
                )

        return write_atomic(path, _write)

    @classmethod
    def load(cls, path: str | os.PathLike) -> GOGraph:
        """Read a graph written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as f:
            fmt, k, n_pairs = (int(v) for v in f["meta"])
            if fmt != _FORMAT:
                raise InputError(
                    f"GO graph file '{path}' has format {fmt}, this celljepa writes {_FORMAT}. "
                    "Fix: delete it; it is rebuilt."
                )
            return cls(
                f["genes"],
                f["source"],
                f["target"],
                f["importance"],
                k,
                str(f["digest"]),
                n_pairs,
                float(f["build_s"]),
                cached=True,
            )


def go_graph_cache_dir() -> Path:
    """Where built GO graphs are kept: ``$CELLJEPA_CACHE/go_graph``, else ``<peers folder>/_cache/go_graph``."""
    if os.environ.get("CELLJEPA_CACHE"):
        return Path(os.environ["CELLJEPA_CACHE"]).expanduser() / "go_graph"
    from ._env import peers_home

    return peers_home() / "_cache" / "go_graph"


def _table_path(table: str | os.PathLike | None) -> Path:
    from ..data.go import _shipped_table_path

    path = _shipped_table_path() if table is None else Path(table)
    if not path.is_file():
        raise InputError(f"GO table not found: '{path}'. Fix: pass a table written by celljepa.data.go.build_go_table.")
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _build(gene2go: dict, k: int, digest: str) -> GOGraph:
    t0 = time.perf_counter()
    genes = np.asarray(sorted(g for g, terms in gene2go.items() if terms), dtype=str)
    terms = sorted({t for g in genes for t in gene2go[g]})
    col = {t: i for i, t in enumerate(terms)}
    sizes = np.fromiter((len(set(gene2go[g])) for g in genes), dtype=np.int64, count=len(genes))
    rows = np.repeat(np.arange(len(genes)), sizes)
    cols = np.fromiter((col[t] for g in genes for t in sorted(set(gene2go[g]))), dtype=np.int64, count=len(rows))
    # float32 counts are exact integers far beyond any gene's number of terms
    inc = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(genes), len(terms)))
    inc_t = inc.T.tocsr()
    parts, n_pairs = [], 0
    for start in range(0, len(genes), _BLOCK):
        inter = (inc[start : start + _BLOCK] @ inc_t).tocoo()  # target rows of this block x every source gene
        tgt = inter.row.astype(np.int64) + start
        src = inter.col.astype(np.int64)
        n = np.rint(inter.data).astype(np.int64)
        score = n / (sizes[tgt] + sizes[src] - n)  # GEARS: len(intersection) / len(union), in float64
        keep = score > JACCARD_MIN
        tgt, src, score = tgt[keep], src[keep], score[keep]
        n_pairs += len(tgt)
        order = np.lexsort((src, -score, tgt))
        tgt, src, score = tgt[order], src[order], score[order]
        rank = np.arange(len(tgt)) - np.searchsorted(tgt, tgt, side="left")
        best = rank < k + 1
        parts.append((src[best], tgt[best], score[best]))
    source = np.concatenate([p[0] for p in parts]).astype(np.int32)
    target = np.concatenate([p[1] for p in parts]).astype(np.int32)
    importance = np.concatenate([p[2] for p in parts])
    return GOGraph(genes, source, target, importance, int(k), digest, int(n_pairs), round(time.perf_counter() - t0, 3))


def go_graph(k: int = 20, *, table: str | os.PathLike | None = None, cache: bool = True) -> GOGraph:
    """GEARS's GO gene graph over every gene of a GO table, with ``k`` neighbours per gene (cached on disk).

    Parameters
    ----------
    k
        GEARS's ``num_similar_genes_go_graph`` (its default: 20); each gene keeps ``k + 1`` in-edges.
    table
        A GO table written by :func:`celljepa.data.go.build_go_table`; None: the one shipped with celljepa.
    cache
        Read and write the cache (:func:`go_graph_cache_dir`); a cache that cannot be written is skipped with
        a warning.

    Returns
    -------
    :class:`GOGraph`

    Examples
    --------
    >>> from celljepa.peers._gograph import go_graph
    >>> graph = go_graph(20)                                    # doctest: +SKIP
    >>> len(graph.genes), graph.n_edges                          # doctest: +SKIP
    (18708, 350826)
    """
    from ..data.go import read_go_table

    k = int(k)
    if k < 1:
        raise InputError(f"num_similar_genes_go_graph must be at least 1, not {k}.")
    path = _table_path(table)
    digest = _sha256(path)
    cached = go_graph_cache_dir() / f"go_graph-{digest[:16]}-k{k}.npz"
    if cache and cached.is_file():
        try:
            graph = GOGraph.load(cached)
            if graph.digest == digest and graph.k == k:
                return graph
        except (OSError, ValueError, KeyError, InputError) as err:
            logger.warning("GO graph cache %s unreadable (%s); building it again", cached, err)
    graph = _build(read_go_table(None if table is None else path), k, digest)
    logger.info(
        "GO graph: %d genes, %d pairs with Jaccard > %g, %d edges kept (k=%d) in %.1f s",
        len(graph.genes),
        graph.n_pairs,
        JACCARD_MIN,
        graph.n_edges,
        k,
        graph.build_s,
    )
    if cache:
        try:
            graph.save(cached)
        except (OSError, InputError) as err:
            logger.warning("GO graph not cached at %s: %s", cached, err)
    return graph
