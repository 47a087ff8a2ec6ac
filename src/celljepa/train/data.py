"""Cells served as CSR batches, from memory or streamed in chunks from a backed .h5ad.

The data order is a pure function of ``(seed, step)``: each epoch permutes the chunks of the file
(``chunk_size`` consecutive rows) and the cells inside each chunk, both with generators keyed by
``(seed, epoch)``, and batch ``i`` of the epoch is the ``i``-th slice of that order. Resuming at
step ``s`` therefore needs nothing but ``s``, and an in-memory run and a backed run with the same
``chunk_size`` see exactly the same batches.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .._errors import InputError

__all__ = ["BalancedBatchPlan", "BatchPlan", "CellSource"]


def to_csr32(x) -> sp.csr_matrix:
    """``x`` as float32 CSR with sorted indices (dense float16, which scipy.sparse cannot hold, is widened first)."""
    if not sp.issparse(x) and np.asarray(x).dtype.kind == "f" and np.asarray(x).dtype.itemsize < 4:
        x = np.asarray(x, dtype=np.float32)
    x = sp.csr_matrix(x) if not sp.issparse(x) else x.tocsr()
    if x.dtype != np.float32:
        x = x.astype(np.float32)
    if not x.has_sorted_indices:
        x = x.sorted_indices()
    return x


def _check_values(x: sp.csr_matrix, where: str) -> None:
    if x.nnz and not np.isfinite(x.data).all():
        raise InputError(f"{where} holds NaN or infinite values; the JEPA encoder needs finite log-normalised values.")
    if x.nnz and float(x.data.min()) < 0:
        raise InputError(
            f"{where} holds negative values; pass log-normalised expression (celljepa ingest / "
            "cj.pp.normalize), not scaled or centred data."
        )


class CellSource:
    """Rows of a cells × genes matrix, read as float32 CSR.

    Use :meth:`from_adata` for an in-memory AnnData (X or a layer, dense or sparse; converted to CSR
    once) and :meth:`from_h5ad` to stream rows of an ``.h5ad`` on disk (only the requested chunks are
    read; at most ``cache_chunks`` chunks are held in memory).
    """

    def __init__(
        self,
        n_obs: int,
        n_vars: int,
        *,
        matrix=None,
        h5ad_path: str | os.PathLike | None = None,
        layer: str | None = None,
        chunk_size: int = 65_536,
        cache_chunks: int = 2,
    ):
        self.n_obs, self.n_vars, self.layer = int(n_obs), int(n_vars), layer
        self.chunk_size = int(chunk_size)
        self._matrix = matrix
        self._path = None if h5ad_path is None else Path(h5ad_path)
        self._file = None
        self._dataset = None
        self._cache: OrderedDict[int, sp.csr_matrix] = OrderedDict()
        self._cache_chunks = max(1, int(cache_chunks))
        self.where = f"layers[{layer!r}]" if layer else "X"
        self._columns: np.ndarray | None = None

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_adata(cls, adata, layer: str | None = None, *, chunk_size: int = 65_536) -> CellSource:
        """Serve an in-memory AnnData's ``X`` (or ``layers[layer]``); a backed AnnData is streamed."""
        if getattr(adata, "isbacked", False):
            return cls.from_h5ad(
                adata.filename, layer=layer, chunk_size=chunk_size, n_obs=adata.n_obs, n_vars=adata.n_vars
            )
        if layer is not None and layer not in adata.layers:
            raise InputError(
                f"layer {layer!r} is not in adata.layers (layers: {', '.join(adata.layers) or 'none'}). "
                "Fix: pass layer=None to use X, or one of the listed layers."
            )
        x = to_csr32(adata.layers[layer] if layer is not None else adata.X)
        src = cls(adata.n_obs, adata.n_vars, matrix=x, layer=layer, chunk_size=chunk_size)
        _check_values(x, src.where)
        return src

    @classmethod
    def from_h5ad(
        cls,
        path: str | os.PathLike,
        layer: str | None = None,
        *,
        chunk_size: int = 65_536,
        n_obs: int | None = None,
        n_vars: int | None = None,
        cache_chunks: int = 2,
    ) -> CellSource:
        """Stream rows of ``X`` (or ``layers[layer]``) of the ``.h5ad`` at ``path``."""
        src = cls(
            n_obs or 0, n_vars or 0, h5ad_path=path, layer=layer, chunk_size=chunk_size, cache_chunks=cache_chunks
        )
        ds = src._open()
        shape = tuple(ds.shape)
        src.n_obs, src.n_vars = int(shape[0]), int(shape[1])
        return src

    def select_columns(self, columns) -> CellSource:
        """Serve only these columns (gene positions, in this order) from now on; returns ``self``."""
        cols = np.asarray(columns, dtype=np.int64)
        width = self.n_vars if self._columns is None else int(self._columns.size)
        if cols.ndim != 1 or (cols.size and (cols.min() < 0 or cols.max() >= width)):
            raise InputError(f"columns must be gene positions in [0, {width}).")
        self._columns = cols if self._columns is None else self._columns[cols]
        self.n_vars = int(cols.size)
        if self._matrix is not None:  # in memory: slice once
            self._matrix = self._matrix[:, self._columns].tocsr()
            self._matrix.sort_indices()
            self._columns = None
        return self

    # ------------------------------------------------------------------ reading
    @property
    def backed(self) -> bool:
        return self._path is not None

    def _open(self):
        if self._dataset is None:
            import h5py
            from anndata.io import sparse_dataset

            self._file = h5py.File(self._path, "r")
            key = f"layers/{self.layer}" if self.layer else "X"
            if key not in self._file:
                self.close()
                raise InputError(f"{self._path}: no {self.where} in the file. Fix: check --layer / data.layer.")
            node = self._file[key]
            import h5py as _h5

            self._dataset = node if isinstance(node, _h5.Dataset) else sparse_dataset(node)
            if isinstance(node, _h5.Group) and getattr(self._dataset, "format", "csr") != "csr":
                fmt = self._dataset.format
                self.close()
                raise InputError(
                    f"{self._path}: {self.where} is stored as {fmt.upper()}; streaming needs CSR rows. "
                    "Fix: rewrite the file with a CSR matrix (adata.X = adata.X.tocsr())."
                )
        return self._dataset

    def close(self) -> None:
        """Close the backing file (reopened on the next read)."""
        if self._file is not None:
            self._file.close()
        self._file = self._dataset = None
        self._cache.clear()

    def _chunk(self, c: int) -> sp.csr_matrix:
        if c in self._cache:
            self._cache.move_to_end(c)
            return self._cache[c]
        ds = self._open()
        start, stop = c * self.chunk_size, min((c + 1) * self.chunk_size, self.n_obs)
        x = to_csr32(ds[start:stop])
        _check_values(x, f"{self._path}: {self.where} rows {start}..{stop - 1}")
        self._cache[c] = x
        while len(self._cache) > self._cache_chunks:
            self._cache.popitem(last=False)
        return x

    def read(self, rows) -> sp.csr_matrix:
        """The given rows (any order) as a float32 CSR with sorted column indices."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.n_obs):
            raise InputError(f"row indices must lie in [0, {self.n_obs}).")
        if not self.backed:
            return self._matrix[rows]
        out = self._read_backed(rows)
        if self._columns is not None:
            out = out[:, self._columns].tocsr()
            out.sort_indices()
        return out

    def _read_backed(self, rows: np.ndarray) -> sp.csr_matrix:
        chunks = rows // self.chunk_size
        parts, order = [], []
        for c in np.unique(chunks):
            sel = np.flatnonzero(chunks == c)
            parts.append(self._chunk(int(c))[rows[sel] - int(c) * self.chunk_size])
            order.append(sel)
        out = sp.vstack(parts, format="csr") if len(parts) > 1 else parts[0]
        inverse = np.empty(rows.size, dtype=np.int64)
        inverse[np.concatenate(order)] = np.arange(rows.size)
        return out[inverse] if len(parts) > 1 else out

    def iter_rows(self, rows, batch_size: int):
        """Yield ``(rows_slice, csr)`` over ``rows`` in order, ``batch_size`` at a time."""
        rows = np.asarray(rows, dtype=np.int64)
        for i in range(0, rows.size, batch_size):
            sl = rows[i : i + batch_size]
            yield sl, self.read(sl)


class BatchPlan:
    """Which rows form the batch of each step; a pure function of ``(rows, chunk_size, batch_size, seed, step)``.

    Parameters
    ----------
    rows
        Row indices the model may train on (e.g. a split's training cells).
    batch_size
        Cells per batch; the last incomplete batch of an epoch is dropped (unless the data are smaller
        than one batch, then every batch is all rows).
    chunk_size
        Rows per chunk of the file; chunks are the unit of shuffling across the file.
    seed
        Shuffling seed.

    Examples
    --------
    >>> import numpy as np
    >>> from celljepa.train.data import BatchPlan
    >>> plan = BatchPlan(np.arange(10), batch_size=4, chunk_size=5, seed=0)
    >>> plan.batches_per_epoch, len(plan.rows_for_step(0)), bool((plan.rows_for_step(2) == plan.rows_for_step(2)).all())
    (2, 4, True)
    """

    def __init__(self, rows, *, batch_size: int, chunk_size: int, seed: int):
        self.rows = np.sort(np.asarray(rows, dtype=np.int64))
        if self.rows.size < 2:
            raise InputError(f"training needs at least 2 cells, got {self.rows.size}.")
        self.batch_size = min(int(batch_size), self.rows.size)
        self.chunk_size, self.seed = int(chunk_size), int(seed)
        self.batches_per_epoch = self.rows.size // self.batch_size
        self._epoch, self._order = -1, None

    def epoch_order(self, epoch: int) -> np.ndarray:
        """All training rows in the order of ``epoch``: chunks shuffled, then cells inside each chunk."""
        rng = np.random.default_rng([self.seed, 0x7EA1, epoch])
        chunk_of = self.rows // self.chunk_size
        bounds = np.flatnonzero(np.diff(chunk_of)) + 1
        groups = np.split(self.rows, bounds)
        return np.concatenate([rng.permutation(groups[i]) for i in rng.permutation(len(groups))])

    def rows_for_step(self, step: int) -> np.ndarray:
        epoch, i = divmod(int(step), self.batches_per_epoch)
        if epoch != self._epoch:
            self._epoch, self._order = epoch, self.epoch_order(epoch)
        return self._order[i * self.batch_size : (i + 1) * self.batch_size]


class BalancedBatchPlan:
    """Batches with an equal share of cells from every group (e.g. dataset), a pure function of the step.

    Each group is an endless stream of its own rows, reshuffled every time it is used up; step ``s``
    takes the next ``batch_size // n_groups`` rows of every stream (the first ``batch_size % n_groups``
    groups one more). A small dataset is thus revisited more often than a large one, so neither
    dominates the embedding. Rows are read in random order (no chunk locality).

    Parameters
    ----------
    rows
        Row indices the model may train on.
    groups
        Group label of every row of the *file* (indexed by row), e.g. ``obs["dataset_id"]``.
    batch_size
        Cells per batch over all groups (at least one per group).
    seed
        Shuffling seed.

    Examples
    --------
    >>> import numpy as np
    >>> from celljepa.train.data import BalancedBatchPlan
    >>> plan = BalancedBatchPlan(np.arange(12), np.array(["a"] * 10 + ["b"] * 2), batch_size=4, seed=0)
    >>> rows = plan.rows_for_step(0)
    >>> len(rows), int((rows >= 10).sum())
    (4, 2)
    """

    def __init__(self, rows, groups, *, batch_size: int, seed: int):
        self.rows = np.sort(np.asarray(rows, dtype=np.int64))
        labels = np.asarray(groups).astype(str)[self.rows]
        self.group_names = sorted(set(labels.tolist()))
        if self.rows.size < 2:
            raise InputError(f"training needs at least 2 cells, got {self.rows.size}.")
        self.batch_size = min(int(batch_size), self.rows.size)
        if self.batch_size < len(self.group_names):
            raise InputError(
                f"a batch of {self.batch_size} cells cannot hold one cell of each of the "
                f"{len(self.group_names)} groups. Fix: raise train.batch_size."
            )
        self.seed = int(seed)
        self._rows = [self.rows[labels == g] for g in self.group_names]
        base, extra = divmod(self.batch_size, len(self.group_names))
        self._take = [base + (i < extra) for i in range(len(self.group_names))]
        self._orders: dict[tuple[int, int], np.ndarray] = {}

    def _order(self, g: int, epoch: int) -> np.ndarray:
        key = (g, epoch)
        if key not in self._orders:
            if len(self._orders) > 4 * len(self._rows):
                self._orders.clear()
            rng = np.random.default_rng([self.seed, 0xBA1, g, epoch])
            self._orders[key] = rng.permutation(self._rows[g])
        return self._orders[key]

    def rows_for_step(self, step: int) -> np.ndarray:
        out = []
        for g, (pool, take) in enumerate(zip(self._rows, self._take, strict=True)):
            start = int(step) * take
            picked = []
            while take > 0:
                epoch, offset = divmod(start, pool.size)
                chunk = self._order(g, epoch)[offset : offset + take]
                picked.append(chunk)
                take -= chunk.size
                start += chunk.size
            out.append(np.concatenate(picked))
        return np.concatenate(out)
