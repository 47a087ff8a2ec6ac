"""``cj.datasets.simulate``: a negative-binomial perturbation screen with known effects."""

from __future__ import annotations

from anndata import AnnData

from ..data._normalize import log_normalize
from ..data._standardize import set_provenance
from ..data.simulate import SimulationSpec
from ..data.simulate import simulate as _simulate_counts


def simulate(
    n_cells: int,
    n_genes: int,
    n_perturbations: int,
    n_contexts: int,
    *,
    combos: int = 0,
    n_programs: int = 10,
    control_fraction: float = 0.1,
    chunk_size: int = 100_000,
    seed: int = 0,
    preprocessed: bool = True,
) -> AnnData:
    """Simulate a perturbation screen: NB counts from a latent program model with known effects.

    Each context shifts the activity of K latent gene programs; each perturbation shifts a few
    programs and knocks down its target gene; combinations add their singles plus a small known
    interaction. The ground truth is in ``adata.uns['simulation']``. For data that do not fit in
    memory, iterate :func:`celljepa.data.simulate.simulate_chunks` instead.

    Parameters
    ----------
    n_cells, n_genes, n_perturbations, n_contexts
        Size of the screen (perturbation *j* targets gene *j*, so ``n_perturbations <= n_genes``).
    combos
        Number of two-gene combinations added to the singles.
    n_programs
        Number of latent programs K.
    control_fraction
        Fraction of control cells in every context.
    chunk_size
        Cells generated at a time (results depend on it, as each chunk has its own random stream).
    seed
        Random seed; equal arguments give equal data.
    preprocessed
        ``True``: counts kept in ``layers['counts']``, ``X`` log1p-normalised and provenance set,
        so :func:`celljepa.pp.validate` passes. ``False``: raw counts in ``X``.

    Returns
    -------
    AnnData with the contract columns in ``obs`` and the ground truth in ``uns['simulation']``.

    Examples
    --------
    >>> import celljepa as cj
    >>> adata = cj.datasets.simulate(5_000, 200, 20, 3, combos=5, seed=0)
    >>> cj.pp.validate(adata)
    """
    adata = _simulate_counts(SimulationSpec(n_cells, n_genes, n_perturbations, n_contexts, combos=combos,
                                            n_programs=n_programs, control_fraction=control_fraction,
                                            chunk_size=chunk_size, seed=seed))
    if preprocessed:
        log_normalize(adata, assume="counts")
        set_provenance(adata, dataset_id=f"simulated_seed{seed}", source="celljepa.datasets.simulate")
        adata.uns["celljepa"] = {"format": "simulated", "min_cells": 1}
    return adata
