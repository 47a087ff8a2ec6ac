"""Write a simulated perturbation screen straight to an ``.h5ad`` file, one chunk at a time."""

from __future__ import annotations

import os
from pathlib import Path

import anndata
import h5py
import numpy as np
import pandas as pd
from anndata.io import sparse_dataset, write_elem
from tqdm.auto import tqdm

from .._errors import InputError
from .._io import atomic_path
from .._logging import log_step
from . import contract as C
from ._normalize import log_normalize
from ._standardize import set_provenance
from .simulate import SimulationSpec, simulate_chunks

__all__ = ["write_simulated_h5ad"]

_SOURCE = "celljepa.data.simulate_h5ad"
_COMPRESSIONS = (None, "gzip", "lzf")
# HDF5 chunk of the sparse arrays, in elements: 1 MiB of float32 values, small enough that reading a few
# rows in backed mode stays cheap and large enough that appending is not dominated by per-chunk overhead.
_H5_CHUNK = 1 << 18


def _append_csr(group: h5py.Group, key: str, matrix, dataset_kwargs: dict) -> None:
    """Create the on-disk CSR ``group[key]`` from ``matrix``, or append ``matrix``'s rows to it."""
    if key in group:
        sparse_dataset(group[key]).append(matrix)
    else:
        # 64-bit indptr from the start, so the file can grow past 2**31 stored values.
        write_elem(group, key, matrix, dataset_kwargs={**dataset_kwargs, "indptr_dtype": np.int64})


def write_simulated_h5ad(
    path: str | os.PathLike,
    n_cells: int,
    n_genes: int,
    n_perturbations: int,
    n_contexts: int,
    *,
    layer_counts: bool = False,
    compression: str | None = None,
    progress: bool = True,
    **options,
) -> Path:
    """Simulate a perturbation screen and write it to an ``.h5ad`` file with memory bounded by ``chunk_size``.

    The chunks of :func:`celljepa.data.simulate.simulate_chunks` are normalised one at a time
    (:func:`celljepa.pp.normalize`: library size to ``target_sum`` then log1p, a per-cell operation) and
    their rows appended to a CSR ``X`` on disk, so no matrix of all cells is ever held in memory; only
    ``obs`` (small, categorical columns) is gathered across chunks. The file is written to a temporary
    file beside ``path`` and renamed at the end, so an interrupted run leaves no partial file.

    For equal arguments the result equals :func:`celljepa.datasets.simulate` (``X``, ``obs``, ``var``,
    ``uns['simulation']``), except that the raw counts are stored only with ``layer_counts=True``.

    Parameters
    ----------
    path
        Target ``.h5ad`` file; its folder is created if needed and an existing file is replaced.
    n_cells, n_genes, n_perturbations, n_contexts
        Size of the screen (perturbation *j* targets gene *j*, so ``n_perturbations <= n_genes``).
    layer_counts
        Also store the raw counts in ``layers['counts']`` (about doubles the file size).
    compression
        HDF5 compression of the stored arrays: ``None`` (fastest, largest), ``"gzip"`` or ``"lzf"``.
    progress
        Show a progress bar over the chunks.
    **options
        The screen's options, as in :func:`celljepa.datasets.simulate`: ``combos``, ``n_programs``,
        ``control_fraction``, ``chunk_size`` and ``seed`` (see :class:`celljepa.data.simulate.SimulationSpec`).
        ``chunk_size`` cells are simulated, normalised and written at a time: peak memory grows with it,
        not with ``n_cells``. Equal arguments give equal files (up to ``uns['created_at']``).

    Returns
    -------
    pathlib.Path
        ``path``. The file holds ``X`` (float32 CSR, log1p of library-size normalised counts, 64-bit
        ``indptr``), the contract columns in ``obs`` (categoricals), ``var_names`` ``GENE00000``, ...,
        the ground truth in ``uns['simulation']``, the ``uns['preprocess']`` record, the provenance
        (``dataset_id`` ``simulated_seed{seed}``, ``source``, ``created_at``, ``feature_set``) and
        ``uns['celljepa'] = {'format': 'simulated', 'min_cells': 1}``.

    Raises
    ------
    InputError
        On invalid simulation arguments (see :func:`celljepa.data.simulate.simulate_chunks`) or an
        unknown ``compression``; nothing is written then.

    Examples
    --------
    >>> import tempfile, anndata
    >>> import celljepa as cj
    >>> from celljepa.data.simulate_h5ad import write_simulated_h5ad
    >>> path = write_simulated_h5ad(
    ...     f"{tempfile.mkdtemp()}/screen.h5ad", 5_000, 200, 20, 3, chunk_size=2_000, progress=False
    ... )
    >>> backed = anndata.read_h5ad(path, backed="r")
    >>> backed.shape, backed.X[10:20].shape
    ((5000, 200), (10, 200))
    >>> cj.pp.validate(anndata.read_h5ad(path))
    """
    if compression not in _COMPRESSIONS:
        raise InputError(
            f"compression={compression!r} is not supported. Fix: pass None, 'gzip' or 'lzf'."
        )
    # Validates the arguments now (the chunks themselves are drawn lazily).
    spec = SimulationSpec.of(n_cells, n_genes, n_perturbations, n_contexts, **options)
    chunks = simulate_chunks(spec)
    n_chunks = -(-spec.n_cells // spec.chunk_size)
    dataset_kwargs = {"compression": compression} if compression else {}
    sparse_kwargs = {**dataset_kwargs, "chunks": (_H5_CHUNK,)}

    target = Path(path)
    with log_step("simulate_h5ad", [str(target)]), atomic_path(target) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["encoding-type"] = "anndata"
        f.attrs["encoding-version"] = "0.1.0"
        layers = f.create_group("layers") if layer_counts else None
        obs_parts: list[pd.DataFrame] = []
        first: anndata.AnnData | None = None
        bar = tqdm(total=n_chunks, desc="simulate", unit="chunk", disable=not progress or None)
        try:
            for chunk in chunks:
                log_normalize(chunk, assume="counts")
                _append_csr(f, "X", chunk.X, sparse_kwargs)
                if layers is not None:
                    _append_csr(layers, C.COUNTS_LAYER, chunk.layers[C.COUNTS_LAYER], sparse_kwargs)
                obs_parts.append(chunk.obs)
                if first is None:  # keep var and uns, not the matrices
                    first = anndata.AnnData(var=chunk.var.copy(), uns=dict(chunk.uns))
                del chunk  # free this chunk's matrices before the next one is drawn
                bar.update(1)
        finally:
            bar.close()

        obs = pd.concat(obs_parts, axis=0) if len(obs_parts) > 1 else obs_parts[0]
        del obs_parts
        set_provenance(first, dataset_id=f"simulated_seed{spec.seed}", source=_SOURCE)
        first.uns["celljepa"] = {"format": "simulated", "min_cells": 1}
        if not layer_counts:
            first.uns["preprocess"] = {**first.uns["preprocess"], "counts_layer": ""}

        write_elem(f, "obs", obs, dataset_kwargs=dataset_kwargs)
        write_elem(f, "var", first.var, dataset_kwargs=dataset_kwargs)
        for key in ("obsm", "varm", "obsp", "varp"):
            write_elem(f, key, {})
        if layers is None:
            write_elem(f, "layers", {})
        else:
            layers.attrs["encoding-type"] = "dict"
            layers.attrs["encoding-version"] = "0.1.0"
        write_elem(f, "uns", dict(first.uns), dataset_kwargs=dataset_kwargs)
    return target
