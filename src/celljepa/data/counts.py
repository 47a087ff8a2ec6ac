"""Counts for depth experiments: binomial thinning, and counts recovered from log-normalised data.

Thinning gives the same cells, sequenced less deeply; recovery applies where the counts come out integer.

Every read of a cell is kept independently with probability ``fraction``, so a count ``x`` becomes
``Binomial(x, fraction)``: the thinned cell is what a shallower run of the same library would have seen, and
its expected total is ``fraction`` times the original (Poisson or negative-binomial counts stay in their
family, with the mean scaled). This is the usual way to simulate dropout (e.g. scVI's and Cell-JEPA's
robustness experiments); it is not :func:`scanpy.pp.downsample_counts`, which draws a fixed number of reads
per cell without replacement.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._errors import InputError
from ._normalize import check_counts

__all__ = ["binomial_split", "binomial_thin", "recover_counts"]


def binomial_thin(counts, fraction: float, *, seed: int = 0, where: str = "counts"):
    """Keep each read of ``counts`` (cells × genes) with probability ``fraction``; seeded, integer-valued.

    Parameters
    ----------
    counts
        Raw UMI counts, a dense array or a scipy sparse matrix (non-negative integers; any float or int dtype).
    fraction
        Share of reads kept, in ``(0, 1]``; ``1`` returns an unchanged copy.
    seed
        Seed of the generator (:func:`numpy.random.default_rng`): the same seed gives the same thinned matrix.
    where
        Name of the matrix in error messages (e.g. ``"adata.layers['counts']"``).

    Returns
    -------
    A matrix of the same kind, shape and dtype (sparse input: CSR with explicit zeros removed).

    Examples
    --------
    >>> import numpy as np
    >>> from celljepa.data.counts import binomial_thin
    >>> x = np.full((2000, 50), 20)
    >>> y = binomial_thin(x, 0.25, seed=0)
    >>> round(float(y.sum() / x.sum()), 2)
    0.25
    """
    fraction = float(fraction)
    if not 0.0 < fraction <= 1.0:
        raise InputError(f"fraction must be in (0, 1], got {fraction}.")
    check_counts(counts, where=where)
    rng = np.random.default_rng(seed)
    if sp.issparse(counts):
        out = sp.csr_matrix(counts, copy=True)
        if fraction < 1.0:
            out.data = rng.binomial(np.rint(out.data).astype(np.int64), fraction).astype(out.dtype)
            out.eliminate_zeros()
        return out
    x = np.asarray(counts)
    if fraction == 1.0:
        return x.copy()
    return rng.binomial(np.rint(x).astype(np.int64), fraction).astype(x.dtype)


def binomial_split(counts, *, seed: int = 0, where: str = "counts"):
    """Split every cell's reads in two halves at random: ``A ~ Binomial(counts, 1/2)`` and ``B = counts - A``.

    The two halves are independent draws of the same cell at half the depth (for Poisson counts exactly), so a
    representation that is robust to sampling noise embeds them close together. Used by
    :func:`celljepa.eval.embedding.split_half_retrieval`, a label-free diagnostic.

    Returns
    -------
    ``(A, B)``, each like :func:`binomial_thin`'s output, with ``A + B == counts``.

    Examples
    --------
    >>> import numpy as np
    >>> from celljepa.data.counts import binomial_split
    >>> x = np.array([[4, 0, 7], [1, 2, 0]])
    >>> a, b = binomial_split(x, seed=0)
    >>> bool((a + b == x).all())
    True
    """
    a = binomial_thin(counts, 0.5, seed=seed, where=where)
    if sp.issparse(a):
        b = sp.csr_matrix(counts, dtype=a.dtype) - a
        b.eliminate_zeros()
        return a, sp.csr_matrix(b)
    return a, (np.asarray(counts) - a).astype(a.dtype)


def recover_counts(x, *, tolerance: float = 0.02, min_integer_share: float = 0.999, where: str = "X"):
    """Counts behind log-normalised values ``log1p(s_i * counts)``, when they come out integer; else an error.

    Each cell's values are ``expm1``-ed and divided by the cell's smallest non-zero value, taken as 1 UMI
    (the size factor ``s_i`` need not be known). The result is accepted only if, in every cell, at least
    ``min_integer_share`` of the non-zero values lie within ``tolerance`` of an integer; the recovered values
    are then rounded. A cell with no gene at exactly 1 UMI would come out scaled down by an integer factor:
    check the totals against a stored count column where one exists.

    Parameters
    ----------
    x
        Log-normalised values (dense or sparse), cells × genes.
    tolerance, min_integer_share
        The integrality test.
    where
        Name of the matrix in the error message.

    Returns
    -------
    ``(counts, report)``: a CSR matrix of integer counts (float32) and a dict with ``integer_share_min``
    (the worst cell's share of near-integer values) and ``cells``.

    Examples
    --------
    >>> import numpy as np
    >>> from celljepa.data.counts import recover_counts
    >>> counts = np.array([[1, 0, 3], [2, 1, 0]])
    >>> logged = np.log1p(counts * np.array([[0.37], [2.5]]))
    >>> c, report = recover_counts(logged)
    >>> c.toarray().astype(int).tolist(), report["integer_share_min"]
    ([[1, 0, 3], [2, 1, 0]], 1.0)
    """
    m = sp.csr_matrix(x, dtype=np.float64, copy=True)
    m.data = np.expm1(m.data)
    m.eliminate_zeros()
    if m.nnz == 0 or (m.data < 0).any():
        raise InputError(f"{where} does not look like log1p of non-negative values; no counts can be recovered.")
    n = m.shape[0]
    nnz_per_cell = np.diff(m.indptr)
    unit = np.ones(n)
    has = nnz_per_cell > 0
    unit[has] = np.minimum.reduceat(m.data, m.indptr[:-1][has])
    m.data /= np.repeat(unit, nnz_per_cell)
    near = np.abs(m.data - np.rint(m.data)) <= tolerance
    share = np.ones(n)
    share[has] = np.add.reduceat(near.astype(np.float64), m.indptr[:-1][has]) / nnz_per_cell[has]
    worst = float(share.min())
    if worst < min_integer_share:
        raise InputError(
            f"{where}: counts are not recoverable: in the worst cell only {worst:.1%} of the non-zero values come "
            f"out within {tolerance} of an integer (needed {min_integer_share:.1%}). Use the raw counts instead."
        )
    m.data = np.rint(m.data)
    return m.astype(np.float32), {"integer_share_min": worst, "cells": int(n)}
