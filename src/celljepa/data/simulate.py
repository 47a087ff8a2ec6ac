"""Synthetic perturbation screens from a latent-program negative-binomial model with known effects.

Celljepa's one home for simulation: the model and its chunks (:func:`simulate_chunks`, :func:`simulate`), the
user-facing screen with normalisation and provenance (:func:`simulate_screen`, which is
``cj.datasets.simulate``) and a file written chunk by chunk in bounded memory (:func:`write_simulated_h5ad`).
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import anndata
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata.io import sparse_dataset, write_elem
from tqdm.auto import tqdm

from .._errors import InputError
from .._io import atomic_path
from .._logging import log_step
from . import contract as C
from ._keys import suggest
from ._normalize import log_normalize
from ._standardize import set_provenance
from .contract import (
    CONTEXT_ID,
    CONTROL_ID,
    CONTROL_TOKEN,
    DOSE,
    IS_CONTROL,
    PERTURBATION_ID,
    PERTURBATION_TOKENS,
    TIME_HOURS,
    join_tokens,
    make_token,
    perturbation_id_from_tokens,
)

__all__ = ["SimulationSpec", "simulate", "simulate_chunks", "simulate_screen", "write_simulated_h5ad"]

# Fixed model constants (stored in ``uns["simulation"]`` so the truth is fully recoverable).
_TARGET_LOG_FOLD_CHANGE = -2.0  # natural-log change of a targeted gene's rate (about 7.4-fold knock-down)
_LOADING_DENSITY = 0.3  # probability that a gene loads on a program
_LOADING_SHAPE, _LOADING_SCALE = 2.0, 0.3  # gamma distribution of nonzero loadings
_BASELINE_SD = 1.0  # sd of gene baseline log-rates
_CONTEXT_SD = 0.5  # sd of context program offsets
_EFFECT_NONZERO = 3  # programs moved by each single perturbation
_EFFECT_LOW, _EFFECT_HIGH = 0.6, 1.5  # magnitude range of a single perturbation's program effect
_INTERACTION_SD = 0.2  # sd of the combination interaction vector
_CELL_NOISE_SD = 0.3  # sd of per-cell Gaussian program noise
_LIBRARY_LOG_SD = 0.3  # sd of log library size
_DISPERSION_LOG_MEAN, _DISPERSION_LOG_SD = math.log(5.0), 0.5  # NB inverse dispersion (theta), lognormal
_BLOCK_ELEMENTS = 1 << 22  # cells x genes drawn at once inside a chunk (bounds temporary memory)
_MAX_CELLS = (1 << 32) - 1


def _check_int(name: str, value, minimum: int, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{name} must be an integer, got {value!r} ({type(value).__name__}). Fix: {fix}")
    if value < minimum:
        raise InputError(f"{name} must be >= {minimum}, got {value}. Fix: {fix}")
    return int(value)


def _validate(n_cells, n_genes, n_perturbations, n_contexts, combos, n_programs, control_fraction, chunk_size, seed):
    n_cells = _check_int("n_cells", n_cells, 1, "pass a positive number of cells.")
    if n_cells > _MAX_CELLS:
        raise InputError(f"n_cells must be <= {_MAX_CELLS}, got {n_cells}. Fix: simulate fewer cells per call.")
    n_genes = _check_int("n_genes", n_genes, 1, "pass a positive number of genes.")
    n_perturbations = _check_int("n_perturbations", n_perturbations, 1, "pass a positive number of perturbations.")
    n_contexts = _check_int("n_contexts", n_contexts, 1, "pass a positive number of contexts.")
    combos = _check_int("combos", combos, 0, "pass 0 for no combinations or a positive number of pairs.")
    n_programs = _check_int("n_programs", n_programs, 1, "pass a positive number of latent programs.")
    chunk_size = _check_int("chunk_size", chunk_size, 1, "pass a positive number of cells per chunk.")
    seed = _check_int("seed", seed, 0, "pass a nonnegative integer seed.")
    if isinstance(control_fraction, bool) or not isinstance(control_fraction, numbers.Real):
        raise InputError(
            f"control_fraction must be a number, got {control_fraction!r}. Fix: pass a fraction such as 0.1."
        )
    control_fraction = float(control_fraction)
    if not (0.0 < control_fraction < 1.0):
        raise InputError(
            f"control_fraction must lie strictly between 0 and 1, got {control_fraction}. "
            "Fix: pass a fraction such as 0.1."
        )
    if n_perturbations > n_genes:
        raise InputError(
            f"n_perturbations ({n_perturbations}) must be <= n_genes ({n_genes}): "
            "perturbation j targets gene j. "
            "Fix: lower n_perturbations or raise n_genes."
        )
    max_pairs = n_perturbations * (n_perturbations - 1) // 2
    if combos > max_pairs:
        raise InputError(
            f"combos ({combos}) exceeds the {max_pairs} distinct pairs of "
            f"{n_perturbations} single perturbations. "
            f"Fix: pass combos <= {max_pairs} or raise n_perturbations."
        )
    n_conditions = n_contexts * (n_perturbations + combos + 1)
    if n_cells < n_conditions:
        raise InputError(
            f"n_cells ({n_cells}) is too small: every context needs control cells and every perturbation, "
            f"i.e. at least n_contexts * (n_perturbations + combos + 1) = {n_conditions} cells. "
            f"Fix: raise n_cells to >= {n_conditions} or lower n_contexts, n_perturbations or combos."
        )
    return dict(
        n_cells=n_cells,
        n_genes=n_genes,
        n_perturbations=n_perturbations,
        n_contexts=n_contexts,
        combos=combos,
        n_programs=n_programs,
        control_fraction=control_fraction,
        chunk_size=chunk_size,
        seed=seed,
    )


@dataclass(frozen=True)
class SimulationSpec:
    """Size, layout and seed of a simulated screen, checked on creation (the arguments of every simulator).

    Attributes
    ----------
    n_cells
        Total number of cells, at least ``n_contexts * (n_perturbations + combos + 1)``.
    n_genes
        Number of genes (var_names ``GENE00000``, ...).
    n_perturbations
        Number of single-gene perturbations; at most ``n_genes`` (perturbation ``j`` targets gene ``j``).
    n_contexts
        Number of contexts (``ctx0``, ...).
    combos
        Number of distinct pairs of singles added as combination perturbations, chosen from the seed.
    n_programs
        Number of latent programs.
    control_fraction
        Fraction of each context's cells that are controls, strictly between 0 and 1.
    chunk_size
        Cells simulated at a time (the draws depend on it: each chunk has its own random stream).
    seed
        Nonnegative seed; equal specs give equal data.

    Raises
    ------
    InputError
        On a non-positive size, ``control_fraction`` outside (0, 1), ``n_perturbations > n_genes``, more
        combos than pairs, or too few cells for every condition (each message says the fix).

    Examples
    --------
    >>> from celljepa.data.simulate import SimulationSpec
    >>> SimulationSpec(2_000, 100, 8, 2, combos=3).n_conditions
    24
    """

    n_cells: int
    n_genes: int
    n_perturbations: int
    n_contexts: int
    combos: int = 0
    n_programs: int = 10
    control_fraction: float = 0.1
    chunk_size: int = 100_000
    seed: int = 0

    def __post_init__(self):
        for key, value in _validate(**asdict(self)).items():
            object.__setattr__(self, key, value)

    @classmethod
    def of(cls, n_cells: int, n_genes: int, n_perturbations: int, n_contexts: int, **options) -> SimulationSpec:
        """The spec of a screen from its size and named options, with a clear error for an unknown option.

        Examples
        --------
        >>> SimulationSpec.of(2_000, 100, 8, 2, seed=3).seed
        3
        """
        names = [f.name for f in fields(cls)]
        for key in options:
            if key not in names[4:]:
                raise InputError(
                    f"{key!r} is not a simulation option.{suggest(key, names[4:])} Options: {', '.join(names[4:])}."
                )
        return cls(n_cells, n_genes, n_perturbations, n_contexts, **options)

    @property
    def n_conditions(self) -> int:
        """Contexts × (perturbations + combinations + control)."""
        return self.n_contexts * (self.n_perturbations + self.combos + 1)


def _pair_from_index(k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decode pair indices ``k = j*(j-1)/2 + i`` (``0 <= i < j``) into ``(i, j)``."""
    k = np.asarray(k, dtype=np.int64)
    j = ((1 + np.sqrt(1 + 8 * k.astype(np.float64))) // 2).astype(np.int64)
    # Correct floating-point rounding at the edges.
    j = np.where(j * (j - 1) // 2 > k, j - 1, j)
    j = np.where((j + 1) * j // 2 <= k, j + 1, j)
    i = k - j * (j - 1) // 2
    return i, j


def _dense_to_csr(x: np.ndarray) -> sp.csr_matrix:
    """CSR of a dense 2-D array (faster than ``scipy.sparse.csr_matrix`` on dense input); sorted indices."""
    nonzero = x != 0
    indptr = np.zeros(x.shape[0] + 1, dtype=np.int64)
    np.cumsum(nonzero.sum(axis=1), out=indptr[1:])
    flat = np.flatnonzero(nonzero)
    index_dtype = np.int32 if flat.size < np.iinfo(np.int32).max else np.int64
    indices = (flat % x.shape[1]).astype(index_dtype)
    return sp.csr_matrix((x.ravel()[flat], indices, indptr.astype(index_dtype)), shape=x.shape)


class _Model:
    """Global parameters of one simulation (drawn from ``SeedSequence([seed])``) and the cell layout."""

    def __init__(self, p: dict):
        self.p = p
        n, G, P, C, K = p["n_cells"], p["n_genes"], p["n_perturbations"], p["n_contexts"], p["n_programs"]
        combos = p["combos"]
        rng = np.random.default_rng(np.random.SeedSequence([p["seed"]]))

        # Genes and programs.
        mask = rng.random((K, G)) < _LOADING_DENSITY
        self.gene_loadings = rng.gamma(_LOADING_SHAPE, _LOADING_SCALE, size=(K, G)) * mask
        self.gene_baseline = rng.normal(0.0, _BASELINE_SD, size=G)
        self.gene_dispersion = np.exp(rng.normal(_DISPERSION_LOG_MEAN, _DISPERSION_LOG_SD, size=G))

        # Contexts.
        self.context_names = [f"ctx{c}" for c in range(C)]
        self.context_effects = rng.normal(0.0, _CONTEXT_SD, size=(C, K))

        # Single perturbations: a few programs each, and a knock-down of the target gene.
        singles = np.zeros((P, K))
        n_nz = min(_EFFECT_NONZERO, K)
        for j in range(P):
            idx = rng.choice(K, size=n_nz, replace=False)
            magnitude = rng.uniform(_EFFECT_LOW, _EFFECT_HIGH, size=n_nz)
            singles[j, idx] = magnitude * rng.choice([-1.0, 1.0], size=n_nz)

        # Combinations: distinct pairs, effect = sum of singles + a small interaction.
        if combos:
            n_pairs = P * (P - 1) // 2
            ks = np.sort(rng.choice(n_pairs, size=combos, replace=False))
            a, b = _pair_from_index(ks)
            self.combo_pairs = np.stack([a, b], axis=1).astype(np.int64)
            self.combo_interactions = rng.normal(0.0, _INTERACTION_SD, size=(combos, K))
            combo_effects = singles[a] + singles[b] + self.combo_interactions
        else:
            self.combo_pairs = np.zeros((0, 2), dtype=np.int64)
            self.combo_interactions = np.zeros((0, K))
            combo_effects = np.zeros((0, K))
        self.perturbation_effects = np.concatenate([singles, combo_effects], axis=0)

        self.var_names = [f"GENE{g:05d}" for g in range(G)]
        self.perturbation_names = [self.var_names[j] for j in range(P)] + [
            f"{self.var_names[i]}+{self.var_names[j]}" for i, j in self.combo_pairs
        ]
        # targets[q] for condition-local perturbation code q (0 = control): up to two gene indices, -1 = none.
        P_total = P + combos
        targets = np.full((P_total + 1, 2), -1, dtype=np.int64)
        targets[1 : P + 1, 0] = np.arange(P)
        targets[P + 1 :, :] = self.combo_pairs
        self.targets = targets
        # Effects indexed by perturbation code (row 0 = control = no effect).
        self.code_effects = np.concatenate([np.zeros((1, K)), self.perturbation_effects], axis=0)

        # Per-code strings, computed once.
        tokens = [[CONTROL_TOKEN]] + [
            [make_token("gene", g) for g in name.split("+")] for name in self.perturbation_names
        ]
        self.code_labels = [CONTROL_ID] + list(self.perturbation_names)
        self.code_ids = [perturbation_id_from_tokens(t) for t in tokens]
        self.code_tokens = [join_tokens(t) for t in tokens]

        # Library size: median 20 counts per gene, kept within [1e3, 2e4].
        self.library_log_mean = math.log(min(max(20.0 * G, 1e3), 2e4))

        # Layout: condition counts per (context, perturbation code), exact for the whole dataset.
        n_codes = P_total + 1
        per_ctx = np.full(C, n // C, dtype=np.int64)
        per_ctx[: n % C] += 1
        counts = np.zeros((C, n_codes), dtype=np.int64)
        for c in range(C):
            n_c = int(per_ctx[c])
            n_ctrl = int(min(max(round(p["control_fraction"] * n_c), 1), n_c - P_total))
            rest = n_c - n_ctrl
            counts[c, 0] = n_ctrl
            counts[c, 1:] = rest // P_total
            counts[c, 1 : 1 + rest % P_total] += 1
        self.condition_counts = counts
        self.n_codes = n_codes
        self._cum = np.concatenate([[0], np.cumsum(counts.ravel())])
        # Cell i sits at position (a*i + b) mod n of the condition-sorted layout: an exact bijection that
        # spreads every condition evenly over the cell index (so every chunk holds a representative mix).
        if n > 1:
            a = int(round(n * (math.sqrt(5) - 1) / 2)) + int(rng.integers(0, max(1, n // 100)))
            a = a % n or 1
            while math.gcd(a, n) != 1:
                a = a % (n - 1) + 1
        else:
            a = 1
        self._a = np.uint64(a)
        self._b = np.uint64(rng.integers(0, n))

    def conditions(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Context index and perturbation code (0 = control) of cells ``start..stop-1``."""
        n = np.uint64(self.p["n_cells"])
        i = np.arange(start, stop, dtype=np.uint64)
        pos = ((self._a * i) % n + self._b) % n
        q = np.searchsorted(self._cum, pos.astype(np.int64), side="right") - 1
        return q // self.n_codes, q % self.n_codes

    def uns(self) -> dict:
        return {
            "params": dict(self.p),
            "perturbation_names": list(self.perturbation_names),
            "perturbation_program_effects": self.perturbation_effects.copy(),
            "context_names": list(self.context_names),
            "context_program_effects": self.context_effects.copy(),
            "gene_loadings": self.gene_loadings.copy(),
            "gene_baseline": self.gene_baseline.copy(),
            "target_log_fold_change": float(_TARGET_LOG_FOLD_CHANGE),
            "gene_dispersion": self.gene_dispersion.copy(),
            "combo_pairs": self.combo_pairs.copy(),
            "combo_interactions": self.combo_interactions.copy(),
            "cell_noise_sd": float(_CELL_NOISE_SD),
            "library_size_log_mean": float(self.library_log_mean),
            "library_size_log_sd": float(_LIBRARY_LOG_SD),
            "condition_counts": self.condition_counts.copy(),
        }

    def counts(self, rng: np.random.Generator, ctx: np.ndarray, code: np.ndarray) -> sp.csr_matrix:
        """Draw the count matrix of cells with the given contexts and perturbation codes."""
        G, K = self.p["n_genes"], self.p["n_programs"]
        m = len(ctx)
        block = max(1, _BLOCK_ELEMENTS // G)
        parts = []
        for s in range(0, m, block):
            c, q = ctx[s : s + block], code[s : s + block]
            mb = len(c)
            noise = rng.normal(0.0, _CELL_NOISE_SD, size=(mb, K))
            activity = self.context_effects[c] + self.code_effects[q] + noise
            log_rate = activity @ self.gene_loadings
            log_rate += self.gene_baseline
            rows = np.arange(mb)
            for col in range(2):
                t = self.targets[q, col]
                hit = t >= 0
                r, t = rows[hit], t[hit]
                # A target's rate is its control-level rate times the knock-down: the perturbation's own
                # program effect does not reach its targets (so the knock-down is never masked).
                own = np.einsum("ik,ki->i", self.code_effects[q[hit]], self.gene_loadings[:, t])
                log_rate[r, t] += _TARGET_LOG_FOLD_CHANGE - own
            log_rate -= log_rate.max(axis=1, keepdims=True)
            np.exp(log_rate, out=log_rate)
            library = np.exp(rng.normal(self.library_log_mean, _LIBRARY_LOG_SD, size=mb))
            log_rate *= (library / log_rate.sum(axis=1))[:, None]  # now the NB mean
            lam = rng.standard_gamma(self.gene_dispersion, size=(mb, G))
            log_rate /= self.gene_dispersion
            lam *= log_rate  # gamma(shape=theta, scale=mean/theta)
            parts.append(_dense_to_csr(rng.poisson(lam).astype(np.float32)))
        return parts[0] if len(parts) == 1 else sp.vstack(parts, format="csr")

    def chunk(self, index: int, start: int, stop: int) -> anndata.AnnData:
        p = self.p
        rng = np.random.default_rng(np.random.SeedSequence([p["seed"], index]))
        ctx, code = self.conditions(start, stop)
        order = rng.permutation(stop - start)
        ctx, code = ctx[order], code[order]
        X = self.counts(rng, ctx, code)

        width = max(7, len(str(p["n_cells"] - 1)))
        obs_names = pd.Index([f"sim_cell_{i:0{width}d}" for i in range(start, stop)])

        def cat(codes, categories):
            return pd.Categorical.from_codes(np.asarray(codes, dtype=np.int32), categories=categories)

        m = stop - start
        obs = pd.DataFrame(
            {
                "perturbation": cat(code, self.code_labels),
                "context": cat(ctx, self.context_names),
                PERTURBATION_ID: cat(code, self.code_ids),
                IS_CONTROL: code == 0,
                CONTEXT_ID: cat(ctx, self.context_names),
                PERTURBATION_TOKENS: cat(code, self.code_tokens),
                DOSE: np.full(m, np.nan),
                TIME_HOURS: np.full(m, np.nan),
            },
            index=obs_names,
        )
        var = pd.DataFrame(index=pd.Index(self.var_names))
        return anndata.AnnData(X=X, obs=obs, var=var, uns={"simulation": self.uns()})


def simulate_chunks(spec: SimulationSpec) -> Iterator[anndata.AnnData]:
    """Simulate perturbation data with known effects, yielding AnnData chunks of at most ``chunk_size`` cells.

    Model: ``K = n_programs`` latent programs with nonnegative sparse gene loadings ``W`` (K x G) and gene
    baseline log-rates ``b``. Each context has a program offset; each single perturbation ``j`` targets gene
    ``j`` (its name is that gene's var_name) and moves a few programs, and knocks its target down by a
    natural-log fold change of ``target_log_fold_change`` (-2). A combination ``A+B`` moves the programs by
    the sum of its singles plus a small known interaction vector and knocks both targets down. Per cell,
    program activity = context offset + perturbation effect + Gaussian noise; log-rate = ``b + activity @ W``,
    except that a targeted gene's log-rate is its control-level log-rate (without the perturbation's program
    effect) plus ``target_log_fold_change``, so the knock-down is never masked; library size is lognormal;
    the mean is ``library * softmax(log-rate)``; counts are negative binomial (gamma-Poisson with a per-gene
    dispersion).
    The expected log-fold-change of perturbation ``p`` in context ``c`` is therefore
    ``log_softmax(l_p) - log_softmax(l_0)`` with ``l_0 = b + e_c @ W`` and ``l_p = l_0 + e_p @ W`` outside the
    targets, ``l_0 + target_log_fold_change`` on them (up to the cell-noise averaging).

    Every context holds control cells (about ``control_fraction`` of its cells) and every perturbation; cells
    are spread over conditions by a seeded bijection of the cell index, so each chunk holds a representative
    mix. Memory is bounded by the chunk: no array of all cells x genes is ever built.

    Parameters
    ----------
    spec
        The screen's size, layout and seed (:class:`SimulationSpec`). Global parameters come from
        ``SeedSequence([seed])`` and chunk ``i`` from ``SeedSequence([seed, i])``, so the output is identical for
        identical specs; the counts depend on ``chunk_size`` too (a different chunking gives different draws,
        with the same truth).

    Yields
    ------
    anndata.AnnData
        Raw counts as float32 CSR ``X``; obs columns ``perturbation`` and ``context`` (raw labels) and the
        contract columns ``perturbation_id``, ``is_control``, ``context_id``, ``perturbation_tokens``,
        ``dose`` and ``time_hours`` (NaN); obs_names ``sim_cell_0000000``, ... unique across chunks;
        ``uns["simulation"]`` holds the parameters and the true effects (identical in every chunk).

    Examples
    --------
    >>> from celljepa.data.simulate import SimulationSpec, simulate_chunks
    >>> sizes = [chunk.n_obs for chunk in simulate_chunks(SimulationSpec(2_500, 50, 5, 2, chunk_size=1_000))]
    >>> sizes
    [1000, 1000, 500]
    """
    if not isinstance(spec, SimulationSpec):
        raise InputError(
            f"simulate_chunks takes a SimulationSpec, got {type(spec).__name__}. Fix: "
            "simulate_chunks(SimulationSpec(n_cells, n_genes, n_perturbations, n_contexts, ...))."
        )
    return _iter_chunks(_Model(asdict(spec)))


def _iter_chunks(model: _Model) -> Iterator[anndata.AnnData]:
    n, size = model.p["n_cells"], model.p["chunk_size"]
    for index, start in enumerate(range(0, n, size)):
        yield model.chunk(index, start, min(start + size, n))


def simulate(spec: SimulationSpec) -> anndata.AnnData:
    """Simulate perturbation data with known effects as one AnnData (the concatenated chunks).

    See :func:`simulate_chunks` for the model and the determinism guarantees; the result equals the
    concatenation of its chunks, with a CSR ``X`` of raw counts. ``cj.datasets.simulate`` is the user-facing
    form (with normalisation and provenance).

    Parameters
    ----------
    spec
        The screen's size, layout and seed (:class:`SimulationSpec`).

    Returns
    -------
    AnnData of raw counts with the contract columns and the ground truth in ``uns["simulation"]``.

    Examples
    --------
    >>> from celljepa.data.simulate import SimulationSpec, simulate
    >>> adata = simulate(SimulationSpec(2_000, 100, 8, 2, combos=3, seed=1))
    >>> adata.shape
    (2000, 100)
    >>> sorted(adata.obs["context_id"].unique())
    ['ctx0', 'ctx1']
    >>> adata.uns["simulation"]["perturbation_program_effects"].shape
    (11, 10)
    """
    chunks = list(simulate_chunks(spec))
    if len(chunks) == 1:
        return chunks[0]
    X = sp.vstack([c.X for c in chunks], format="csr")
    obs = pd.concat([c.obs for c in chunks], axis=0)
    return anndata.AnnData(X=X, obs=obs, var=chunks[0].var.copy(), uns=chunks[0].uns)


def simulate_screen(
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
) -> anndata.AnnData:
    """Simulate a perturbation screen: NB counts from a latent program model with known effects.

    Each context shifts the activity of K latent gene programs; each perturbation shifts a few
    programs and knocks down its target gene; combinations add their singles plus a small known
    interaction. The ground truth is in ``adata.uns['simulation']``. For data that do not fit in
    memory, iterate :func:`simulate_chunks` or write the file chunk by chunk with :func:`write_simulated_h5ad`.
    ``cj.datasets.simulate`` is this function.

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
    adata = simulate(
        SimulationSpec(
            n_cells,
            n_genes,
            n_perturbations,
            n_contexts,
            combos=combos,
            n_programs=n_programs,
            control_fraction=control_fraction,
            chunk_size=chunk_size,
            seed=seed,
        )
    )
    if preprocessed:
        log_normalize(adata, assume="counts")
        set_provenance(adata, dataset_id=f"simulated_seed{seed}", source="celljepa.datasets.simulate")
        adata.uns["celljepa"] = {"format": "simulated", "min_cells": 1}
    return adata


# ------------------------------------------------------------------ straight to an .h5ad file, chunk by chunk
_SOURCE = "celljepa.data.simulate"
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
    >>> from celljepa.data.simulate import write_simulated_h5ad
    >>> path = write_simulated_h5ad(
    ...     f"{tempfile.mkdtemp()}/screen.h5ad", 5_000, 200, 20, 3, chunk_size=2_000, progress=False
    ... )
    >>> backed = anndata.read_h5ad(path, backed="r")
    >>> backed.shape, backed.X[10:20].shape
    ((5000, 200), (10, 200))
    >>> cj.pp.validate(anndata.read_h5ad(path))
    """
    if compression not in _COMPRESSIONS:
        raise InputError(f"compression={compression!r} is not supported. Fix: pass None, 'gzip' or 'lzf'.")
    # Validates the arguments now (the chunks themselves are drawn lazily).
    spec = SimulationSpec.of(n_cells, n_genes, n_perturbations, n_contexts, **options)
    chunks = simulate_chunks(spec)
    n_chunks = -(-spec.n_cells // spec.chunk_size)
    dataset_kwargs = {"compression": compression} if compression else {}
    sparse_kwargs = {**dataset_kwargs, "chunks": (_H5_CHUNK,)}

    target = Path(path)
    with log_step("write_simulated_h5ad", [str(target)]), atomic_path(target) as tmp, h5py.File(tmp, "w") as f:
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
