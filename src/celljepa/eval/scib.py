"""Embedding quality as the scverse world judges it: scib-metrics' bio-conservation and batch metrics.

A thin layer over `scib-metrics <https://scib-metrics.readthedocs.io>`_ (an optional dependency,
``pip install "celljepa[embedding]"``) with the choices of its ``Benchmarker`` made explicit, so that every
representation of a dataset is scored the same way:

- one exact kNN graph per embedding (scikit-learn, Euclidean; 90 neighbours, fewer on small data), subset to 15
  for the Leiden clusters, as the ``Benchmarker`` does;
- **bio conservation**: NMI and ARI of Leiden clusters (resolution optimised over 10 values by NMI, scib's rule),
  the silhouette of the labels, the isolated-label silhouette and cLISI; their mean is ``bio_conservation``;
- **batch correction** (only where a dataset has a real batch): silhouette of batches within labels, iLISI,
  kBET per label, graph connectivity and the principal-component-regression comparison against the
  unintegrated PCA; their mean is ``batch_correction``.

Every score is in [0, 1], higher is better. The labels only score an embedding; nothing is fitted on them.
"""

from __future__ import annotations

import numpy as np

from .._errors import InputError

__all__ = ["BATCH_METRICS", "BIO_METRICS", "embedding_scores", "require_scib_metrics"]

BIO_METRICS = ("nmi", "ari", "silhouette_label", "isolated_labels", "clisi")
BATCH_METRICS = ("silhouette_batch", "ilisi", "kbet", "graph_connectivity", "pcr_comparison")
N_NEIGHBORS = 90
CLUSTER_NEIGHBORS = 15


def require_scib_metrics():
    """Import and return :mod:`scib_metrics`, or raise an error that says how to install it."""
    try:
        import scib_metrics
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "The embedding metrics need scib-metrics (and scVI needs scvi-tools): pip install 'celljepa[embedding]'."
        ) from err
    return scib_metrics


def _neighbors(z: np.ndarray, k: int):
    from scib_metrics.nearest_neighbors import NeighborsResults
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k + 1).fit(z)
    dist, idx = nn.kneighbors(z)
    # drop each cell itself (the first column of an exact search, up to ties at distance 0)
    return NeighborsResults(indices=idx[:, 1:], distances=dist[:, 1:])


def embedding_scores(
    z,
    labels,
    batch=None,
    *,
    x_pre=None,
    n_neighbors: int = N_NEIGHBORS,
    seed: int = 0,
) -> dict[str, float]:
    """scib-metrics scores of one embedding.

    Parameters
    ----------
    z
        The embedding, cells × dims (e.g. ``adata.obsm["X_jepa"]``).
    labels
        Cell labels (cell types), one per cell; ``None`` for a dataset without labels: then only the batch
        metrics are computed, with every cell in one label.
    batch
        A real batch per cell, or ``None``: then the batch metrics are not computed and the isolated-label
        score treats the cells as one batch (every label counts as isolated).
    x_pre
        The unintegrated PCA of the same cells, for ``pcr_comparison`` (needed when ``batch`` is given).
    n_neighbors
        Neighbours of the kNN graph (at most ``cells - 1``); the Leiden clusters use the first 15.
    seed
        Seed of the Leiden clustering.

    Returns
    -------
    ``{metric: score}`` for :data:`BIO_METRICS` and ``bio_conservation`` (their mean) when ``labels`` are
    given; with ``batch`` also :data:`BATCH_METRICS` and ``batch_correction``.

    Examples
    --------
    >>> import numpy as np
    >>> from celljepa.eval.scib import embedding_scores
    >>> rng = np.random.default_rng(0)
    >>> labels = np.repeat(["a", "b", "c"], 100)
    >>> z = rng.normal(size=(300, 8))
    >>> z[:, :3] += 6 * (labels[:, None] == np.array(["a", "b", "c"]))   # three separated groups
    >>> s = embedding_scores(z, labels)
    >>> s["bio_conservation"] > 0.7
    True
    """
    sm = require_scib_metrics()
    z = np.asarray(z, dtype=np.float32)
    bio = labels is not None
    if not bio and batch is None:
        raise InputError("nothing to score: give labels, a batch, or both.")
    labels = np.asarray(labels).astype(str) if bio else np.zeros(z.shape[0] if z.ndim == 2 else 0, dtype=str)
    if z.ndim != 2 or z.shape[0] != labels.shape[0]:
        raise InputError(f"z must be cells × dims with one label per cell; got z {z.shape}, {labels.shape[0]} labels.")
    if not np.isfinite(z).all():
        raise InputError("the embedding holds NaN or inf values; it cannot be scored.")
    if bio and np.unique(labels).size < 2:
        raise InputError("bio-conservation needs at least 2 distinct labels.")
    n = z.shape[0]
    k = min(int(n_neighbors), n - 1)
    neigh = _neighbors(z, k)
    small = neigh.subset_neighbors(n=min(CLUSTER_NEIGHBORS, k))
    one_batch = np.zeros(n, dtype=int) if batch is None else np.asarray(batch).astype(str)
    out: dict[str, float] = {}
    if bio:
        out.update(_bio_scores(sm, z, labels, one_batch, neigh, small, seed))
    if batch is not None:
        out.update(_batch_scores(sm, z, labels, one_batch, neigh, small, x_pre))
    return out


def _bio_scores(sm, z, labels, one_batch, neigh, small, seed) -> dict[str, float]:
    out: dict[str, float] = {}
    nmi_ari = sm.nmi_ari_cluster_labels_leiden(small, labels, optimize_resolution=True, seed=seed)
    out["nmi"] = float(nmi_ari["nmi"])
    out["ari"] = float(nmi_ari["ari"])
    out["silhouette_label"] = float(sm.silhouette_label(z, labels))
    out["isolated_labels"] = float(sm.isolated_labels(z, labels, one_batch))
    out["clisi"] = float(sm.clisi_knn(neigh, labels))
    out["bio_conservation"] = float(np.mean([out[m] for m in BIO_METRICS]))
    return out


def _batch_scores(sm, z, labels, one_batch, neigh, small, x_pre) -> dict[str, float]:
    if np.unique(one_batch).size < 2:
        raise InputError("batch metrics need at least 2 batches; pass batch=None for a dataset without one.")
    if x_pre is None:
        raise InputError("batch metrics need x_pre, the unintegrated PCA of the same cells (pcr_comparison).")
    out: dict[str, float] = {}
    out["silhouette_batch"] = float(sm.silhouette_batch(z, labels, one_batch))
    out["ilisi"] = float(sm.ilisi_knn(neigh, one_batch))
    out["kbet"] = float(sm.kbet_per_label(neigh, one_batch, labels))
    out["graph_connectivity"] = float(sm.graph_connectivity(small, labels))
    out["pcr_comparison"] = float(
        sm.pcr_comparison(np.asarray(x_pre, dtype=np.float32), z, one_batch, categorical=True)
    )
    out["batch_correction"] = float(np.mean([out[m] for m in BATCH_METRICS]))
    return out
