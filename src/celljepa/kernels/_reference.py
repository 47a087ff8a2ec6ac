"""Pure-torch twins of every kernel: the fallback backend and the test oracle."""

from __future__ import annotations

import torch

# Tile edge for blockwise distance computation: a tile holds at most TILE x TILE distances.
TILE = 2048


def _block_distance_sum(a: torch.Tensor, b: torch.Tensor, *, squared: bool, same: bool) -> torch.Tensor:
    """Sum of pairwise distances between rows of ``a`` and ``b`` in float64, tile by tile.

    With ``same=True`` (``a is b``) the diagonal (self pairs) is excluded and each unordered pair
    counted twice, as in a full ordered double sum over distinct pairs.
    """
    total = torch.zeros((), dtype=torch.float64, device=a.device)
    for i in range(0, a.shape[0], TILE):
        ai = a[i : i + TILE]
        for j in range(0, b.shape[0], TILE):
            bj = b[j : j + TILE]
            d = torch.cdist(ai, bj, compute_mode="donot_use_mm_for_euclid_dist")
            if squared:
                d = d * d
            if same and i == j:
                d = d - torch.diag_embed(torch.diagonal(d))  # self pairs are excluded by the estimator
            total = total + d.sum(dtype=torch.float64)
    return total


def cross_distance_means_reference(
    x: torch.Tensor, offsets: torch.Tensor, *, squared: bool = False, pairs: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean pairwise distances between and within groups (rows of ``x`` grouped by ``offsets``).

    Off-diagonal entries average over all ``n_a * n_b`` cross pairs; diagonal entries over the
    ``n_a (n_a - 1)`` ordered distinct pairs (self pairs excluded). Returns a ``(G, G)`` float64
    matrix, or with ``pairs`` (``(P, 2)`` group indices) a ``(P, 3)`` matrix of
    ``[M[a, b], M[a, a], M[b, b]]``.
    """
    offs = offsets.tolist()
    g = len(offs) - 1
    sizes = [offs[i + 1] - offs[i] for i in range(g)]
    groups = [x[offs[i] : offs[i + 1]] for i in range(g)]

    def within(i: int) -> torch.Tensor:
        n = sizes[i]
        if n < 2:
            return torch.tensor(float("nan"), dtype=torch.float64, device=x.device)
        return _block_distance_sum(groups[i], groups[i], squared=squared, same=True) / (n * (n - 1))

    def cross(i: int, j: int) -> torch.Tensor:
        return _block_distance_sum(groups[i], groups[j], squared=squared, same=False) / (sizes[i] * sizes[j])

    if pairs is None:
        out = torch.empty((g, g), dtype=torch.float64, device=x.device)
        for i in range(g):
            out[i, i] = within(i)
            for j in range(i + 1, g):
                out[i, j] = out[j, i] = cross(i, j)
        return out
    diag_cache: dict[int, torch.Tensor] = {}
    rows = []
    for a, b in pairs.tolist():
        for k in (a, b):
            if k not in diag_cache:
                diag_cache[k] = within(k)
        rows.append(torch.stack([cross(a, b), diag_cache[a], diag_cache[b]]))
    return torch.stack(rows) if rows else torch.empty((0, 3), dtype=torch.float64, device=x.device)


def edistance_from_means(
    cross: torch.Tensor,
    within_a: torch.Tensor,
    within_b: torch.Tensor,
    n_a: torch.Tensor,
    n_b: torch.Tensor,
    *,
    include_self_pairs: bool,
) -> torch.Tensor:
    """E-distance ``2 M_ab - M_aa - M_bb`` from mean distances over distinct within-set pairs.

    ``include_self_pairs=True`` averages within-set distances over all ``n^2`` ordered pairs (self
    pairs contribute 0), i.e. scales the distinct-pair means by ``(n - 1) / n`` (pertpy 1.0, cell-eval).
    """
    if include_self_pairs:
        within_a = within_a * (n_a - 1) / n_a
        within_b = within_b * (n_b - 1) / n_b
    return 2.0 * cross - within_a - within_b


def edistance_loss_reference(
    pred: torch.Tensor,
    pred_offsets: torch.Tensor,
    obs: torch.Tensor,
    obs_offsets: torch.Tensor,
    *,
    squared: bool = False,
) -> torch.Tensor:
    """Per-condition E-distance between predicted and observed sets, differentiable by autograd.

    Set ``k`` of ``pred`` (rows ``pred_offsets[k]:pred_offsets[k+1]``) is compared with set ``k`` of
    ``obs``; returns a ``(B,)`` tensor in the dtype of ``pred``. Within-set means use distinct pairs.
    ``torch.cdist`` gives a zero subgradient at coincident points.
    """
    po, oo = pred_offsets.tolist(), obs_offsets.tolist()
    out = []
    for k in range(len(po) - 1):
        p, o = pred[po[k] : po[k + 1]], obs[oo[k] : oo[k + 1]]
        n, m = p.shape[0], o.shape[0]
        dpo = torch.cdist(p, o, compute_mode="donot_use_mm_for_euclid_dist")
        dpp = torch.cdist(p, p, compute_mode="donot_use_mm_for_euclid_dist")
        doo = torch.cdist(o, o, compute_mode="donot_use_mm_for_euclid_dist")
        if squared:
            dpo, dpp, doo = dpo * dpo, dpp * dpp, doo * doo
        wp = dpp.sum() / (n * (n - 1)) if n > 1 else dpp.sum() * 0.0
        wo = doo.sum() / (m * (m - 1)) if m > 1 else doo.sum() * 0.0
        out.append(2.0 * dpo.mean() - wp - wo)
    return torch.stack(out)
