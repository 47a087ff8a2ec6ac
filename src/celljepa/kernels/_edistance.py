"""Batched E-distance: all-pairs or per-pair over ragged groups, and the E-distance set loss."""

from __future__ import annotations

import contextlib

import torch

from .._errors import InputError
from .._settings import settings
from . import _reference as ref
from ._ext import CUDA_KERNELS, cuda_kernel_id, load_core, load_cuda, resolve_backend


def _check_groups(x: torch.Tensor, offsets: torch.Tensor, name: str = "x") -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise InputError(f"{name} must be a 2-D tensor (cells × features), got {getattr(x, 'shape', type(x))}.")
    if x.dtype not in (torch.float32, torch.float64):
        raise InputError(f"{name} must be float32 or float64, got {x.dtype}.")
    offsets = torch.as_tensor(offsets, dtype=torch.int64).cpu()
    if offsets.dim() != 1 or offsets.numel() < 2:
        raise InputError(f"offsets of {name} must be a 1-D tensor with at least 2 entries (G + 1 boundaries).")
    if int(offsets[0]) != 0 or int(offsets[-1]) != x.shape[0]:
        raise InputError(
            f"offsets of {name} must start at 0 and end at {x.shape[0]} (its number of rows); got "
            f"{int(offsets[0])} .. {int(offsets[-1])}."
        )
    sizes = offsets[1:] - offsets[:-1]
    if (sizes <= 0).any():
        empty = torch.nonzero(sizes <= 0).flatten().tolist()
        raise InputError(f"group(s) {empty[:10]} of {name} are empty; every group needs at least one cell.")
    return offsets


def cross_distance_means(
    x: torch.Tensor,
    offsets: torch.Tensor,
    *,
    squared: bool = False,
    pairs: torch.Tensor | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Mean distances between groups (cross pairs) and within groups (distinct pairs).

    Parameters
    ----------
    x
        Cells × features, float32 or float64, rows sorted by group.
    offsets
        ``G + 1`` boundaries: group ``g`` is ``x[offsets[g]:offsets[g + 1]]``.
    squared
        Use squared Euclidean distances.
    pairs
        Optional ``(P, 2)`` group indices; then only those blocks are computed.
    backend
        ``"cuda"``, ``"cpu"``, ``"reference"`` or ``None`` (``cj.settings.kernel_backend``). With
        ``squared=True`` and the ``"auto"`` backend the exact closed form is used
        (:func:`squared_distance_means`, O(N·d)); a forced backend runs its pairwise kernel.

    Returns
    -------
    ``(G, G)`` float64 matrix, or ``(P, 3)`` rows ``[M_ab, M_aa, M_bb]`` with ``pairs``. Within-group
    means of a single-cell group are NaN. For a pair ``(a, a)``, ``M_ab`` averages all ``n²`` ordered
    pairs (self pairs included), as the reference does.

    Notes
    -----
    Kernels (``celljepa._core`` on CPU, ``celljepa._cuda`` on GPU; the pure-torch reference otherwise)
    stream over tiles of at most 256 × 256 (CPU) or 64 × 64 (CUDA) pairs and never hold an ``N × N``
    matrix. Each unordered block ``a ≤ b`` is computed once and within-group blocks only over their upper
    triangle. Squared distances use ``‖x‖² + ‖y‖² − 2 x·y`` with row norms computed once (in float64)
    and are floored at 0: values below ``8 ε (‖x‖² + ‖y‖²)`` count as 0 (``ε`` of the input dtype), so
    coincident points have distance exactly 0. Dot products run in the input dtype (float32 or float64);
    per-tile sums and all means are float64. Offsets and indices are int64 throughout. Only the groups
    a block touches are read, so with ``pairs`` the rows of other groups are never accessed.
    """
    offsets = _check_groups(x, offsets)
    if pairs is not None:
        pairs = torch.as_tensor(pairs, dtype=torch.int64).cpu().reshape(-1, 2)
        g = offsets.numel() - 1
        if pairs.numel() and (pairs.min() < 0 or pairs.max() >= g):
            raise InputError(f"pairs must index groups 0..{g - 1}.")
    if squared and (backend or settings.kernel_backend) == "auto":
        return squared_distance_means(x, offsets, pairs=pairs)
    backend = resolve_backend(backend, on_cuda_tensor=x.is_cuda)
    return _DISPATCH_MEANS[backend](x, offsets, squared=squared, pairs=pairs)


def squared_distance_means(
    x: torch.Tensor, offsets: torch.Tensor, *, pairs: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean *squared* distances between and within groups in closed form: O(N·d), no pair is visited.

    With group means ``μ`` and mean squared deviations ``v = mean‖x − μ‖²`` (both in float64):
    cross ``mean‖x − y‖² = ‖μ_a − μ_b‖² + v_a + v_b``, within (distinct pairs) ``2 n v / (n − 1)``, and for
    a pair ``(a, a)`` (all ``n²`` pairs) ``2 v``. Exact: the same numbers as the pairwise sums up to
    rounding, and better conditioned (deviations from the group mean, never ``‖x‖² − ‖μ‖²``). Same layout,
    NaNs and devices as :func:`cross_distance_means`; differentiable.

    Examples
    --------
    >>> import torch
    >>> from celljepa.kernels import cross_distance_means, squared_distance_means
    >>> x = torch.randn(500, 8, dtype=torch.float64); offsets = torch.tensor([0, 200, 500])
    >>> ref = cross_distance_means(x, offsets, squared=True, backend="reference")
    >>> torch.allclose(squared_distance_means(x, offsets), ref)
    True
    """
    offsets = _check_groups(x, offsets)
    sizes = (offsets[1:] - offsets[:-1]).to(x.device)
    n = sizes.to(torch.float64)
    group = torch.repeat_interleave(torch.arange(len(sizes), device=x.device), sizes)
    x64 = x.to(torch.float64)
    mu = torch.zeros(len(sizes), x.shape[1], dtype=torch.float64, device=x.device).index_add(0, group, x64)
    mu = mu / n[:, None]
    dev = (x64 - mu[group]).square().sum(dim=1)
    v = torch.zeros(len(sizes), dtype=torch.float64, device=x.device).index_add(0, group, dev) / n
    within = torch.where(n > 1, 2 * n * v / (n - 1).clamp(min=1), torch.full_like(v, float("nan")))
    if pairs is None:
        cross = torch.cdist(mu, mu, compute_mode="donot_use_mm_for_euclid_dist").square() + v[:, None] + v[None, :]
        return cross - torch.diag_embed(torch.diagonal(cross)) + torch.diag_embed(within)
    pairs = torch.as_tensor(pairs, dtype=torch.int64).reshape(-1, 2).to(x.device)
    a, b = pairs[:, 0], pairs[:, 1]
    cross = (mu[a] - mu[b]).square().sum(dim=1) + v[a] + v[b]
    return torch.stack([cross, within[a], within[b]], dim=1)


def edistance(
    x: torch.Tensor,
    offsets: torch.Tensor,
    *,
    pairs: torch.Tensor | None = None,
    squared: bool = False,
    include_self_pairs: bool = False,
    backend: str | None = None,
) -> torch.Tensor:
    """E-distance between groups of cells: ``2·mean‖x−y‖ − mean‖x−x'‖ − mean‖y−y'‖``.

    Within-group means are over distinct pairs (the unbiased U-statistic, ``n(n−1)``) unless
    ``include_self_pairs=True`` (pertpy 1.0 / cell-eval: ``n²``). ``squared=True`` uses squared
    distances (scPerturb). Never holds an N × N matrix: blocks are streamed tile by tile.

    Parameters
    ----------
    x, offsets
        Cells × features and the ``G + 1`` group boundaries (see :func:`cross_distance_means`).
    pairs
        ``(P, 2)`` group indices; ``None`` gives the full ``(G, G)`` matrix.
    squared, include_self_pairs
        Estimator options (see above).
    backend
        Force a backend; default ``cj.settings.kernel_backend``.

    Returns
    -------
    float64 tensor ``(G, G)`` (zero diagonal) or ``(P,)``.

    Notes
    -----
    Built on :func:`cross_distance_means` (same kernels, tiling and numerics). For a one-sided
    comparison against a control group pass ``pairs=[[ctrl, g] for g in groups]``: only those cross blocks
    and the needed within-group blocks are computed, and memory stays bounded by the tiles (the C++
    kernel holds the ``N`` row norms and one packed 256-row tile per thread).

    Examples
    --------
    >>> import torch
    >>> from celljepa.kernels import edistance
    >>> x = torch.randn(300, 10); x[100:] += 1.0
    >>> edistance(x, torch.tensor([0, 100, 300]))[0, 1] > 0
    tensor(True)
    """
    offsets = _check_groups(x, offsets)
    sizes = (offsets[1:] - offsets[:-1]).to(torch.float64)
    if not include_self_pairs and (sizes < 2).any():
        small = torch.nonzero(sizes < 2).flatten().tolist()
        raise InputError(
            f"group(s) {small[:10]} have a single cell: the distinct-pair E-distance needs at least 2 cells "
            "per group (or include_self_pairs=True)."
        )
    means = cross_distance_means(x, offsets, squared=squared, pairs=pairs, backend=backend)
    sizes = sizes.to(means.device)
    if pairs is None:
        diag = torch.diagonal(means).nan_to_num(0.0)
        e = ref.edistance_from_means(
            means, diag[:, None], diag[None, :], sizes[:, None], sizes[None, :], include_self_pairs=include_self_pairs
        )
        e.fill_diagonal_(0.0)
        return e
    pairs = torch.as_tensor(pairs, dtype=torch.int64).reshape(-1, 2).to(means.device)
    return ref.edistance_from_means(
        means[:, 0],
        means[:, 1].nan_to_num(0.0),
        means[:, 2].nan_to_num(0.0),
        sizes[pairs[:, 0]],
        sizes[pairs[:, 1]],
        include_self_pairs=include_self_pairs,
    )


def edistance_loss(
    pred: torch.Tensor,
    pred_offsets: torch.Tensor,
    obs: torch.Tensor,
    obs_offsets: torch.Tensor,
    *,
    squared: bool = False,
    backend: str | None = None,
) -> torch.Tensor:
    """Per-condition E-distance between predicted (differentiable) and observed sets, for training.

    Set ``k`` of ``pred`` is compared with set ``k`` of ``obs``; sets may differ in size. Returns a
    ``(B,)`` tensor; gradients flow to ``pred`` (and ``obs`` if it requires grad).

    Parameters
    ----------
    pred, pred_offsets
        Predicted cells (float32/float64, ``(N_pred, d)``) and the ``B + 1`` set boundaries.
    obs, obs_offsets
        Observed cells (same dtype and device) and their ``B + 1`` boundaries.
    squared
        Squared Euclidean distances.
    backend
        Force a backend; default ``cj.settings.kernel_backend``.

    Returns
    -------
    ``(B,)`` tensor in the dtype of ``pred``:
    ``L_k = 2·mean‖p−o‖ − mean_{i≠i'}‖p_i−p_i'‖ − mean_{j≠j'}‖o_j−o_j'‖`` (a within-set term of a
    one-cell set is 0).

    Notes
    -----
    On the ``cpu`` / ``cuda`` backends the gradient is analytic and computed by the kernels, tile by tile,
    with no autograd graph over pairwise distances: ``∂/∂p_i`` of ``mean_j‖p_i−o_j‖`` is
    ``mean_j (p_i−o_j)/‖p_i−o_j‖`` with a zero subgradient where the distance is 0 (never NaN), and
    ``2 (p_i−o_j)`` per pair for squared distances; within-set pairs likewise. Because ``L_k`` is linear
    in the incoming gradient, the forward pass computes ``∂L_k/∂pred`` (and ``∂L_k/∂obs`` when ``obs``
    requires grad) whenever autograd needs them, and the backward only scales each set's rows by
    ``grad_out[k]``: the op is differentiable once (no double backward). On CPU each set is handled by
    one thread (sets in parallel), so very large single sets do not parallelise.
    """
    pred_offsets = _check_groups(pred, pred_offsets, "pred")
    obs_offsets = _check_groups(obs, obs_offsets, "obs")
    if pred_offsets.numel() != obs_offsets.numel():
        raise InputError(f"pred has {pred_offsets.numel() - 1} sets but obs has {obs_offsets.numel() - 1}.")
    if pred.shape[1] != obs.shape[1]:
        raise InputError(f"pred has {pred.shape[1]} features but obs has {obs.shape[1]}.")
    backend = resolve_backend(backend, on_cuda_tensor=pred.is_cuda)
    return _DISPATCH_LOSS[backend](pred, pred_offsets, obs, obs_offsets, squared=squared)


# ------------------------------------------------------------------------------------------ compiled backends
#: The C++ kernels: "centered" (each block's tiles packed around the mean of its first group, the default) and
#: "tiles" (the first kernel, raw rows: kept as the reference the centred one is tested and benchmarked against).
CPU_KERNELS = {"centered": 1, "tiles": 0}
_kernel = {"cpu": "centered"}


@contextlib.contextmanager
def _use_kernel(device: str, name: str, known: dict):
    if name not in known:
        raise InputError(f"unknown {device.upper()} kernel {name!r}; one of {', '.join(known)}.")
    before, _kernel[device] = _kernel[device], name
    try:
        yield
    finally:
        _kernel[device] = before


def cpu_kernel(name: str):
    """Run the C++ E-distance kernels as ``name`` inside the block (tests and benchmarks of the kernels).

    >>> import torch
    >>> from celljepa.kernels._edistance import cpu_kernel
    >>> from celljepa.kernels import edistance
    >>> x = torch.randn(40, 5, dtype=torch.float64); offsets = torch.tensor([0, 20, 40])
    >>> with cpu_kernel("tiles"):
    ...     old = edistance(x, offsets, backend="cpu")
    >>> torch.allclose(old, edistance(x, offsets, backend="cpu"))
    True
    """
    return _use_kernel("cpu", name, CPU_KERNELS)


# The CPU tile edge is internal to the C++ kernel; CUDA work items are tiles of
# celljepa._cuda.edistance_tile x edistance_tile pairs, listed here with torch (int64).


def _blocks_for(g: int, pairs: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Blocks ``(K, 2)`` (a <= b) to sum, and for ``pairs`` the ``(P, 3)`` block index of each output entry."""
    if pairs is None:
        return torch.triu_indices(g, g).T.contiguous(), None
    lo, hi = pairs.min(dim=1).values, pairs.max(dim=1).values
    diag = torch.unique(pairs.flatten())
    cand = torch.cat([torch.stack([lo, hi], 1), torch.stack([diag, diag], 1)])
    blocks, inv = torch.unique(cand, dim=0, return_inverse=True)
    p = pairs.shape[0]
    # index of the diagonal block of each group, via the inverse of the diagonal candidates
    diag_pos = torch.full((g,), -1, dtype=torch.int64)
    diag_pos[diag] = inv[p:]
    index = torch.stack([inv[:p], diag_pos[pairs[:, 0]], diag_pos[pairs[:, 1]]], 1)
    return blocks.contiguous(), index


def _means_from_sums(sums: torch.Tensor, blocks: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    na, nb = sizes[blocks[:, 0]], sizes[blocks[:, 1]]
    same = blocks[:, 0] == blocks[:, 1]
    denom = torch.where(same, na * (na - 1) / 2.0, na * nb)
    means = sums / denom
    return torch.where(same & (na < 2), torch.full_like(means, float("nan")), means)


def _assemble(means: torch.Tensor, blocks: torch.Tensor, index: torch.Tensor | None, g: int) -> torch.Tensor:
    if index is None:
        out = torch.empty((g, g), dtype=torch.float64, device=means.device)
        out[blocks[:, 0], blocks[:, 1]] = means
        out[blocks[:, 1], blocks[:, 0]] = means
        return out
    return means[index] if index.numel() else torch.empty((0, 3), dtype=torch.float64, device=means.device)


def _tile_items(offsets: torch.Tensor, blocks: torch.Tensor, tile: int) -> torch.Tensor:
    """CUDA work items ``(I, 3)`` int64: block index, first row (in group a), first column (in group b).

    Diagonal blocks (a == b) keep only tiles with column tile >= row tile (the kernel masks j > i).
    """
    dev = blocks.device
    offsets = offsets.to(dev)
    sizes = offsets[1:] - offsets[:-1]
    ta = (sizes[blocks[:, 0]] + tile - 1) // tile
    tb = (sizes[blocks[:, 1]] + tile - 1) // tile
    cnt = ta * tb
    total = int(cnt.sum())
    bidx = torch.repeat_interleave(torch.arange(blocks.shape[0], device=dev), cnt, output_size=total)
    start = torch.cumsum(cnt, 0) - cnt
    local = torch.arange(total, device=dev) - start[bidx]
    ti, tj = local // tb[bidx], local % tb[bidx]
    keep = (blocks[bidx, 0] != blocks[bidx, 1]) | (tj >= ti)
    return torch.stack([bidx[keep], ti[keep] * tile, tj[keep] * tile], 1).contiguous()


def _centred(x: torch.Tensor) -> torch.Tensor:
    """``x`` less the float64 mean of its rows, in its dtype.

    Distances are unchanged, and the CUDA kernels' expanded form then loses digits to the spread of the data, not
    to its distance from the origin. (The C++ kernel centres each block on its own group instead, docs/kernels.md.)
    """
    return (x.to(torch.float64) - x.to(torch.float64).mean(dim=0)).to(x.dtype)


def _group_means(x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """``(G, d)`` float32 means of the groups (float64 sums): the centres of the tensor-core kernel's blocks."""
    sizes = offsets[1:] - offsets[:-1]
    gid = torch.repeat_interleave(torch.arange(sizes.numel(), device=x.device), sizes, output_size=x.shape[0])
    sums = torch.zeros(sizes.numel(), x.shape[1], dtype=torch.float64, device=x.device)
    sums.index_add_(0, gid, x.to(torch.float64))
    return (sums / sizes.to(torch.float64)[:, None]).to(torch.float32).contiguous()


def _centred_sets(p, pred_offsets, o, obs_offsets):
    """Both sides of every set less the float64 mean of the set's observed cells.

    A constant shift per set: distances and their gradients are unchanged.
    """
    b = pred_offsets.numel() - 1
    dev = p.device
    n_p = (pred_offsets[1:] - pred_offsets[:-1]).to(dev)
    n_o = (obs_offsets[1:] - obs_offsets[:-1]).to(dev)
    set_p = torch.repeat_interleave(torch.arange(b, device=dev), n_p, output_size=p.shape[0])
    set_o = torch.repeat_interleave(torch.arange(b, device=dev), n_o, output_size=o.shape[0])
    o64 = o.to(torch.float64)
    centre = torch.zeros(b, o.shape[1], dtype=torch.float64, device=dev).index_add_(0, set_o, o64)
    centre = centre / n_o.to(torch.float64)[:, None]
    return (
        (p.to(torch.float64) - centre[set_p]).to(p.dtype).contiguous(),
        (o64 - centre[set_o]).to(o.dtype).contiguous(),
    )


def _stream(dev: torch.device) -> int:
    return int(torch.cuda.current_stream(dev).cuda_stream)


def _has_tf32(dev: torch.device) -> bool:
    """Whether ``dev`` has tf32 tensor cores (sm_80+).

    Elsewhere the launcher takes the SIMT kernel, which needs its input centred. (A CPU device here is the tests'
    emulation of the CUDA kernels.)
    """
    return dev.type != "cuda" or torch.cuda.get_device_capability(dev)[0] >= 8


def _on_cuda(t: torch.Tensor) -> bool:
    """Whether ``t`` takes the CUDA kernel path (a hook: tests emulate the CUDA kernels on CPU)."""
    return t.is_cuda


@torch.library.custom_op("celljepa::edistance_block_sums", mutates_args=())
def _block_sums_op(x: torch.Tensor, offsets: torch.Tensor, blocks: torch.Tensor, squared: bool) -> torch.Tensor:
    """Float64 distance sums of ``blocks`` (unordered distinct pairs on a == b); C++ or CUDA by device."""
    x = x.contiguous()
    n, d = x.shape
    k = blocks.shape[0]
    if _on_cuda(x):
        dev = x.device
        offs = offsets.to(dev, torch.int64).contiguous()
        tensor = cuda_kernel_id() == CUDA_KERNELS["tensor"] and x.dtype == torch.float32 and _has_tf32(dev)
        # the tensor-core kernel centres each block on its first group's mean; the SIMT kernel takes x centred
        means = _group_means(x, offs) if tensor else None
        if not tensor:
            x = _centred(x)
        blk = blocks.to(dev, torch.int64).contiguous()
        items = _tile_items(offs, blk, load_cuda().edistance_tile)  # built on the device
        norms = torch.empty(n, dtype=x.dtype, device=dev)
        part = torch.empty(items.shape[0], dtype=torch.float64, device=dev)
        if items.shape[0]:
            load_cuda().edistance_block_sums(
                x.data_ptr(),
                n,
                d,
                norms.data_ptr(),
                offs.data_ptr(),
                blk.data_ptr(),
                items.data_ptr(),
                items.shape[0],
                squared,
                x.dtype == torch.float64,
                part.data_ptr(),
                _stream(dev),
                cuda_kernel_id(),
                means.data_ptr() if means is not None else 0,
            )
        return torch.zeros(k, dtype=torch.float64, device=dev).index_add_(0, items[:, 0], part)
    offs = offsets.to(torch.int64).contiguous()
    blk = blocks.to(torch.int64).contiguous()
    out = torch.empty(k, dtype=torch.float64)
    load_core().edistance_block_sums(
        x.data_ptr(),
        n,
        x.data_ptr(),
        n,
        d,
        offs.data_ptr(),
        offs.data_ptr(),
        blk.data_ptr(),
        k,
        True,
        squared,
        x.dtype == torch.float64,
        out.data_ptr(),
        CPU_KERNELS[_kernel["cpu"]],
    )
    return out


@_block_sums_op.register_fake
def _(x, offsets, blocks, squared):
    return x.new_empty((blocks.shape[0],), dtype=torch.float64)


def _means_compiled(
    x: torch.Tensor, offsets: torch.Tensor, *, squared: bool = False, pairs: torch.Tensor | None = None
) -> torch.Tensor:
    g = offsets.numel() - 1
    blocks, index = _blocks_for(g, pairs)
    if blocks.shape[0] == 0:
        return torch.empty((0, 3), dtype=torch.float64, device=x.device)
    sums = _block_sums_op(x.detach(), offsets, blocks, squared)
    dev = sums.device
    sizes = (offsets[1:] - offsets[:-1]).to(torch.float64)
    means = _means_from_sums(sums.cpu() if dev.type != "cpu" else sums, blocks, sizes)
    out = _assemble(means, blocks, index, g)
    if pairs is not None and pairs.numel():
        # a pair (a, a): the cross mean runs over all n^2 ordered pairs, self pairs (distance 0) included
        self_pair = pairs[:, 0] == pairs[:, 1]
        if self_pair.any():
            n = sizes[pairs[self_pair, 0]]
            out[self_pair, 0] = torch.where(n > 1, out[self_pair, 1] * (n - 1) / n, torch.zeros_like(n))
    return out.to(dev)


def _loss_sums_and_grads(pred, pred_offsets, obs, obs_offsets, squared, need_p, need_o):
    """Run the compiled set loss: returns sums ``(B, 3)`` [S_po, U_pp, U_oo] and the per-set gradients of L_k."""
    p, o = pred.detach().contiguous(), obs.detach().contiguous()
    b = pred_offsets.numel() - 1
    dev = p.device
    gp = torch.zeros_like(p) if need_p else None
    go = torch.zeros_like(o) if need_o else None
    is_double = p.dtype == torch.float64
    if _on_cuda(p):
        poff, ooff = pred_offsets.to(dev), obs_offsets.to(dev)
        p, o = _centred_sets(p, poff, o, ooff)
        items = _loss_items(poff, ooff, load_cuda().edistance_tile)
        part = torch.empty(items.shape[0], dtype=torch.float64, device=dev)
        pn = torch.empty(p.shape[0], dtype=p.dtype, device=dev)
        on = torch.empty(o.shape[0], dtype=o.dtype, device=dev)
        load_cuda().edistance_set_loss(
            p.data_ptr(),
            p.shape[0],
            o.data_ptr(),
            o.shape[0],
            p.shape[1],
            pn.data_ptr(),
            on.data_ptr(),
            poff.data_ptr(),
            ooff.data_ptr(),
            b,
            items.data_ptr(),
            items.shape[0],
            squared,
            is_double,
            part.data_ptr(),
            gp.data_ptr() if gp is not None else 0,
            go.data_ptr() if go is not None else 0,
            _stream(dev),
        )
        sums = torch.zeros(b * 3, dtype=torch.float64, device=dev).index_add_(0, items[:, 0] * 3 + items[:, 1], part)
        return sums.view(b, 3), gp, go
    poff, ooff = pred_offsets.contiguous(), obs_offsets.contiguous()
    sums = torch.empty((b, 3), dtype=torch.float64)
    load_core().edistance_set_loss(
        p.data_ptr(),
        p.shape[0],
        o.data_ptr(),
        o.shape[0],
        p.shape[1],
        poff.data_ptr(),
        ooff.data_ptr(),
        b,
        squared,
        is_double,
        sums.data_ptr(),
        gp.data_ptr() if gp is not None else 0,
        go.data_ptr() if go is not None else 0,
        CPU_KERNELS[_kernel["cpu"]],
    )
    return sums, gp, go


def _loss_items(pred_offsets: torch.Tensor, obs_offsets: torch.Tensor, tile: int) -> torch.Tensor:
    """CUDA work items ``(I, 4)`` of the set loss: set, kind (0 pred-obs, 1 pred-pred, 2 obs-obs), row0, col0."""
    n = pred_offsets[1:] - pred_offsets[:-1]
    m = obs_offsets[1:] - obs_offsets[:-1]
    b = n.numel()
    dev = n.device
    # three blocks per set, as a block table over "groups" 0..b-1 (pred) and b..2b-1 (obs)
    sizes = torch.cat([n, m])
    offs = torch.cat([torch.zeros(1, dtype=torch.int64, device=dev), torch.cumsum(sizes, 0)])
    k = torch.arange(b, device=dev)
    blocks = torch.stack(
        [torch.stack([k, k + b], 1), torch.stack([k, k], 1), torch.stack([k + b, k + b], 1)], 1
    ).reshape(-1, 2)
    items = _tile_items(offs, blocks, tile)
    blk = items[:, 0]
    return torch.stack([blk // 3, blk % 3, items[:, 1], items[:, 2]], 1).contiguous()


def _loss_from_sums(sums: torch.Tensor, n: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    n, m = n.to(sums), m.to(sums)
    wp = torch.where(n > 1, 2.0 * sums[:, 1] / (n * (n - 1)).clamp_min(1.0), torch.zeros_like(n))
    wo = torch.where(m > 1, 2.0 * sums[:, 2] / (m * (m - 1)).clamp_min(1.0), torch.zeros_like(m))
    return 2.0 * sums[:, 0] / (n * m) - wp - wo


@torch.library.custom_op("celljepa::edistance_set_loss", mutates_args=())
def _set_loss_op(
    pred: torch.Tensor,
    obs: torch.Tensor,
    pred_offsets: torch.Tensor,
    obs_offsets: torch.Tensor,
    squared: bool,
    need_pred_grad: bool,
    need_obs_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Set loss ``(B,)`` and, where asked, ``dL_k/dpred`` and ``dL_k/dobs`` (else empty tensors).

    ``L_k`` is linear in the incoming gradient, so the kernels compute the per-set gradients in the same
    tile pass as the loss; the registered backward only scales each set's rows by ``grad_out[k]``.
    """
    sums, gp, go = _loss_sums_and_grads(pred, pred_offsets, obs, obs_offsets, squared, need_pred_grad, need_obs_grad)
    n = (pred_offsets[1:] - pred_offsets[:-1]).to(sums.device)
    m = (obs_offsets[1:] - obs_offsets[:-1]).to(sums.device)
    loss = _loss_from_sums(sums, n, m).to(pred.dtype)
    return (loss, gp if gp is not None else pred.new_empty(0), go if go is not None else obs.new_empty(0))


@_set_loss_op.register_fake
def _(pred, obs, pred_offsets, obs_offsets, squared, need_pred_grad, need_obs_grad):
    b = pred_offsets.shape[0] - 1
    return (
        pred.new_empty((b,)),
        pred.new_empty(pred.shape if need_pred_grad else (0,)),
        obs.new_empty(obs.shape if need_obs_grad else (0,)),
    )


def _set_loss_setup(ctx, inputs, output):
    pred, obs, pred_offsets, obs_offsets, _squared, need_p, need_o = inputs
    _, gp, go = output
    ctx.mark_non_differentiable(gp, go)
    ctx.save_for_backward(gp, go, pred_offsets, obs_offsets)
    ctx.need = (need_p, need_o)


def _set_loss_backward(ctx, grad_loss, _grad_gp, _grad_go):
    gp, go, pred_offsets, obs_offsets = ctx.saved_tensors
    grad_p = grad_o = None
    if ctx.need[0]:
        n = (pred_offsets[1:] - pred_offsets[:-1]).to(gp.device)
        grad_p = gp * torch.repeat_interleave(grad_loss.to(gp.dtype), n, output_size=gp.shape[0])[:, None]
    if ctx.need[1]:
        m = (obs_offsets[1:] - obs_offsets[:-1]).to(go.device)
        grad_o = go * torch.repeat_interleave(grad_loss.to(go.dtype), m, output_size=go.shape[0])[:, None]
    return grad_p, grad_o, None, None, None, None, None


torch.library.register_autograd("celljepa::edistance_set_loss", _set_loss_backward, setup_context=_set_loss_setup)


def _loss_compiled(pred, pred_offsets, obs, obs_offsets, *, squared=False):
    if obs.dtype != pred.dtype:
        raise InputError(f"pred ({pred.dtype}) and obs ({obs.dtype}) must have the same dtype.")
    if obs.device != pred.device:
        raise InputError(f"pred ({pred.device}) and obs ({obs.device}) must be on the same device.")
    grad_on = torch.is_grad_enabled()
    loss, _, _ = _set_loss_op(
        pred, obs, pred_offsets, obs_offsets, squared, grad_on and pred.requires_grad, grad_on and obs.requires_grad
    )
    return loss


def _on(device: str, *tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t if t.device.type == device else t.to(device) for t in tensors]


def _means_cpu(x, offsets, *, squared=False, pairs=None):
    return _means_compiled(*_on("cpu", x), offsets, squared=squared, pairs=pairs).to(x.device)


def _means_cuda(x, offsets, *, squared=False, pairs=None):
    return _means_compiled(*_on("cuda", x), offsets, squared=squared, pairs=pairs)


def _loss_cpu(pred, pred_offsets, obs, obs_offsets, *, squared=False):
    p, o = _on("cpu", pred, obs)
    return _loss_compiled(p, pred_offsets, o, obs_offsets, squared=squared).to(pred.device)


def _loss_cuda(pred, pred_offsets, obs, obs_offsets, *, squared=False):
    p, o = _on("cuda", pred, obs)
    return _loss_compiled(p, pred_offsets, o, obs_offsets, squared=squared)


_DISPATCH_MEANS = {
    "reference": ref.cross_distance_means_reference,
    "cpu": _means_cpu,
    "cuda": _means_cuda,
}
_DISPATCH_LOSS = {
    "reference": ref.edistance_loss_reference,
    "cpu": _loss_cpu,
    "cuda": _loss_cuda,
}
