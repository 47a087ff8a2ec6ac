"""The tiny sweep grid the sweep tests share (importable as ``_grids``): a seconds-long JEPA and transition
fit on one split of the demo's sci-Plex dataset."""

from __future__ import annotations

TINY_FITS = (
    "jepa: {train.max_steps: 12, train.batch_size: 64, model.n_hidden: 32, model.predictor_hidden: 32,"
    " model.n_latent: 16}\n"
    "transition: {max_steps: 20, eval_every: 10}\n"
    "datasets:\n"
    "  demo: {sciplex_gxe: [S2_unseen_context]}\n"
)


def tiny_grid(*head: str, ablations: tuple[str, ...] = ("default: {}",)) -> str:
    """The YAML of a tiny sweep grid: ``head`` lines (seeds, folds, rule), the tiny fits, then ``ablations``.

    >>> print(tiny_grid("seeds: [0]").splitlines()[0])
    seeds: [0]
    """
    return "".join(f"{line}\n" for line in head) + TINY_FITS + "ablations:\n" + "".join(f"  {a}\n" for a in ablations)
