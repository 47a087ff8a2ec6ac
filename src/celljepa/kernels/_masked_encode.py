"""Masked sparse encoding, the first layer of the JEPA encoder: ``h = (x ⊙ keep) · W + b``.

``x`` is a CSR batch of cells × genes; ``keep`` is never materialised: the kernels recompute it per
nonzero from ``(seed, cell_offset + row, unit)`` with a counter-based 64-bit hash (splitmix64
finaliser; see :mod:`celljepa.kernels._reference_masked_encode` and ``csrc/masked_encode/mask_rng.hpp``),
so the CUDA kernel, the C++ kernel, the pure-torch reference and :func:`mask_for` agree bit for bit.

Mask kinds (``ratio`` = probability that a unit is hidden, ``0 <= ratio < 1``):

``"none"``
    Full view (the teacher's input).
``"random"``
    Every gene of every cell is hidden independently (unit = gene index).
``"block"``
    Contiguous gene blocks: the gene axis of each cell is cut into blocks of ``block_size``
    consecutive gene indices, shifted by a per-cell random phase ``p`` in ``[0, block_size)``; gene
    ``g`` belongs to block ``(g + p) // block_size`` and each block is hidden with probability
    ``ratio`` (so block boundaries differ between cells; the first and last blocks may be shorter).
``"module"``
    Gene modules (pathways): ``gene_to_module[g]`` is the module id of gene ``g`` (int32, ``-1`` = no
    module; all ``-1`` genes form one bucket hidden together). Whole modules are hidden with
    probability ``ratio``. Build the map with :func:`celljepa.data.genesets.gene_module_map`.
``"explicit"``
    A given keep mask (tests, ablations): ``keep`` is a boolean ``(B, G)`` array (True = kept) or one
    sequence of kept gene ids per cell.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .._errors import InputError
from . import _reference_masked_encode as ref
from ._ext import cuda_kernel_id, load_core, load_cuda, resolve_backend
from ._reference_masked_encode import MaskSpec

__all__ = ["mask_for", "masked_encode", "module_mask_for"]

MASK_KINDS = ("none", "random", "block", "module", "explicit")


# ---------------------------------------------------------------------------------------- inputs
def _as_csr(x, device: torch.device):
    """``(crow int64, col int64, values, n_rows, n_genes)`` from a torch CSR, a scipy CSR or a tuple."""
    if isinstance(x, torch.Tensor):
        if x.layout != torch.sparse_csr:
            raise InputError(
                f"x must be a CSR batch (torch.sparse_csr_tensor, scipy CSR or (crow, col, values, n_genes)); "
                f"got a {x.layout} tensor. Convert with x.to_sparse_csr()."
            )
        crow, col, values = x.crow_indices(), x.col_indices(), x.values()
        n_rows, n_genes = int(x.shape[0]), int(x.shape[1])
    elif isinstance(x, tuple):
        if len(x) != 4:
            raise InputError("x as a tuple must be (crow_indices, col_indices, values, n_genes).")
        crow, col, values, n_genes = x
        crow = torch.as_tensor(crow, device=device)
        n_rows, n_genes = crow.numel() - 1, int(n_genes)
        col, values = torch.as_tensor(col, device=crow.device), torch.as_tensor(values, device=crow.device)
    elif hasattr(x, "format") and hasattr(x, "indptr"):
        if x.format != "csr":
            raise InputError(f"x must be CSR; got a scipy sparse matrix in {x.format!r} format (use x.tocsr()).")
        if x.dtype not in (np.float32, np.float64):
            raise InputError(f"x values must be float32 or float64, got {x.dtype}.")
        crow = torch.from_numpy(np.asarray(x.indptr, dtype=np.int64)).to(device)
        col = torch.from_numpy(np.asarray(x.indices, dtype=np.int64)).to(device)
        values = torch.from_numpy(np.asarray(x.data)).to(device)
        n_rows, n_genes = int(x.shape[0]), int(x.shape[1])
    else:
        raise InputError(
            f"x must be a torch.sparse_csr_tensor, a scipy CSR matrix or a (crow, col, values, n_genes) tuple; "
            f"got {type(x).__name__}."
        )
    for name, t in (("crow_indices", crow), ("col_indices", col)):
        if t.dtype not in (torch.int64, torch.int32):
            raise InputError(f"{name} must be int64 (or int32), got {t.dtype}.")
        if t.dim() != 1:
            raise InputError(f"{name} must be 1-D, got shape {tuple(t.shape)}.")
    if values.dtype not in (torch.float32, torch.float64):
        raise InputError(f"x values must be float32 or float64, got {values.dtype}.")
    if values.dim() != 1:
        raise InputError(f"x values must be 1-D (one per nonzero), got shape {tuple(values.shape)}.")
    return crow.to(torch.int64).contiguous(), col.to(torch.int64).contiguous(), values, n_rows, n_genes


def _check_csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, n_rows: int, n_genes: int) -> None:
    nnz = col.numel()
    if n_rows < 0 or crow.numel() != n_rows + 1:
        raise InputError(f"crow_indices must have n_rows + 1 = {n_rows + 1} entries, got {crow.numel()}.")
    if values.numel() != nnz:
        raise InputError(f"col_indices has {nnz} entries but values has {values.numel()}; they must match.")
    core = load_core() if crow.device.type == "cpu" else None
    if core is not None:  # one O(nnz) pass in C++; the torch checks below only name the problem
        if core.check_csr(crow.data_ptr(), col.data_ptr(), n_rows, nnz, n_genes) == 0:
            return
    if int(crow[0]) != 0 or int(crow[-1]) != nnz:
        raise InputError(f"crow_indices must start at 0 and end at nnz={nnz}; got {int(crow[0])} .. {int(crow[-1])}.")
    if n_rows and bool((crow[1:] < crow[:-1]).any()):
        raise InputError("crow_indices must be non-decreasing (invalid CSR).")
    if nnz:
        if int(col.min()) < 0 or int(col.max()) >= n_genes:
            raise InputError(f"col_indices must lie in [0, {n_genes}); got {int(col.min())} .. {int(col.max())}.")
        if nnz > 1:
            step_ok = col[1:] > col[:-1]
            row_start = torch.zeros(nnz, dtype=torch.bool, device=col.device)
            row_start[crow[1:-1][crow[1:-1] < nnz]] = True
            if not bool((step_ok | row_start[1:]).all()):
                raise InputError(
                    "col_indices must be strictly increasing within each row (sorted, no duplicates); "
                    "call scipy's x.sum_duplicates() / x.sort_indices() or torch's coalesce() first."
                )
    if core is not None:  # pragma: no cover - the C++ and torch checks disagree
        raise InputError("x is not a valid CSR matrix.")


def _check_int(name: str, v, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise InputError(f"{name} must be an integer, got {v!r}.")
    v = int(v)
    if not lo <= v < hi:
        raise InputError(f"{name} must be in [{lo}, {hi}), got {v}.")
    return v


def _make_spec(
    kind: str,
    ratio: float,
    seed: int,
    cell_offset: int,
    n_rows: int,
    n_genes: int,
    gene_to_module,
    block_size: int,
    device: torch.device,
) -> MaskSpec:
    if kind not in MASK_KINDS:
        raise InputError(f"kind must be one of {MASK_KINDS}, got {kind!r}.")
    try:
        ratio = float(ratio)
    except (TypeError, ValueError):
        raise InputError(f"ratio must be a number in [0, 1), got {ratio!r}.") from None
    if not (0.0 <= ratio < 1.0) or math.isnan(ratio):
        raise InputError(f"ratio (the hide probability) must be in [0, 1), got {ratio}.")
    seed = _check_int("seed", seed, 0, 1 << 64)
    cell_offset = _check_int("cell_offset", cell_offset, 0, (1 << 63) - max(n_rows, 0))
    block_size = _check_int("block_size", block_size, 1, 1 << 62)
    module = None
    if kind == "module":
        if gene_to_module is None:
            raise InputError(
                "kind='module' needs gene_to_module (int32, one module id per gene; see "
                "celljepa.data.genesets.gene_module_map)."
            )
        module = torch.as_tensor(
            np.asarray(gene_to_module) if not isinstance(gene_to_module, torch.Tensor) else gene_to_module
        )
        if module.dim() != 1 or module.numel() != n_genes:
            raise InputError(
                f"gene_to_module must have one entry per gene ({n_genes}), got shape {tuple(module.shape)}."
            )
        if module.dtype.is_floating_point or module.dtype == torch.bool or module.is_complex():
            raise InputError(f"gene_to_module must be an integer array, got {module.dtype}.")
        if module.numel() and (int(module.min()) < -1 or int(module.max()) > np.iinfo(np.int32).max):
            raise InputError("gene_to_module values must be module ids >= 0 or -1 (no module), within int32.")
        module = module.to(device=device, dtype=torch.int32).contiguous()
    kind_core = "none" if kind == "explicit" else kind
    return MaskSpec(
        kind=kind_core,
        seed=seed,
        cell_offset=cell_offset,
        thr=ref.ratio_threshold(ratio),
        block_size=block_size,
        gene_to_module=module,
    )


def _explicit_keep(keep, crow: torch.Tensor, col: torch.Tensor, n_rows: int, n_genes: int) -> torch.Tensor:
    """Per-nonzero keep flags (bool, nnz) from a (B, G) boolean mask or per-cell kept gene ids."""
    if keep is None:
        raise InputError("kind='explicit' needs keep: a boolean (B, G) mask (True = kept) or kept gene ids per cell.")
    rows = ref._nonzero_rows(crow)
    if isinstance(keep, (torch.Tensor, np.ndarray)):
        k = torch.as_tensor(keep).to(col.device)
        if k.dtype != torch.bool or tuple(k.shape) != (n_rows, n_genes):
            raise InputError(f"keep must be a boolean ({n_rows}, {n_genes}) mask, got {k.dtype} {tuple(k.shape)}.")
        return k[rows, col]
    if len(keep) != n_rows:
        raise InputError(f"keep must list kept gene ids for each of the {n_rows} cells, got {len(keep)} lists.")
    dense = torch.zeros(n_rows, n_genes, dtype=torch.bool)
    for i, ids in enumerate(keep):
        ids = torch.as_tensor(list(ids), dtype=torch.int64)
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= n_genes):
            raise InputError(f"keep[{i}] has gene ids outside [0, {n_genes}).")
        dense[i, ids] = True
    return dense.to(col.device)[rows, col]


# ---------------------------------------------------------------------------------------- backends
def _ptr(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


def _module_ptr(spec: MaskSpec) -> int:
    return _ptr(spec.gene_to_module) if spec.kind == "module" else 0


def _cpu_forward(crow, col, values, weight, bias, spec):
    out = torch.empty(crow.numel() - 1, weight.shape[1], dtype=weight.dtype)
    load_core().masked_encode_forward(
        _ptr(crow),
        _ptr(col),
        _ptr(values),
        crow.numel() - 1,
        _ptr(weight),
        weight.shape[1],
        _ptr(bias),
        _ptr(out),
        weight.dtype == torch.float64,
        spec.kind_id,
        spec.seed,
        spec.cell_offset,
        spec.thr,
        spec.block_size,
        _module_ptr(spec),
    )
    return out


def _cpu_grad_weight(crow, col, values, dout, n_genes, spec):
    dW = torch.empty(n_genes, dout.shape[1], dtype=dout.dtype)
    load_core().masked_encode_grad_weight(
        _ptr(crow),
        _ptr(col),
        _ptr(values),
        crow.numel() - 1,
        _ptr(dout),
        dout.shape[1],
        n_genes,
        _ptr(dW),
        dout.dtype == torch.float64,
        spec.kind_id,
        spec.seed,
        spec.cell_offset,
        spec.thr,
        spec.block_size,
        _module_ptr(spec),
    )
    return dW


def _cpu_grad_values(crow, col, weight, dout, spec):
    dv = torch.empty(col.numel(), dtype=dout.dtype)
    load_core().masked_encode_grad_values(
        _ptr(crow),
        _ptr(col),
        crow.numel() - 1,
        _ptr(weight),
        weight.shape[1],
        _ptr(dout),
        _ptr(dv),
        dout.dtype == torch.float64,
        spec.kind_id,
        spec.seed,
        spec.cell_offset,
        spec.thr,
        spec.block_size,
        _module_ptr(spec),
    )
    return dv


def _stream(t: torch.Tensor) -> int:
    return torch.cuda.current_stream(t.device).cuda_stream


def _cuda_forward(crow, col, values, weight, bias, spec):
    out = torch.empty(crow.numel() - 1, weight.shape[1], dtype=weight.dtype, device=weight.device)
    with torch.cuda.device(weight.device):
        load_cuda().masked_encode_forward(
            _ptr(crow),
            _ptr(col),
            _ptr(values),
            crow.numel() - 1,
            _ptr(weight),
            weight.shape[1],
            _ptr(bias),
            _ptr(out),
            weight.dtype == torch.float64,
            spec.kind_id,
            spec.seed,
            spec.cell_offset,
            spec.thr,
            spec.block_size,
            _module_ptr(spec),
            _stream(weight),
            cuda_kernel_id(),
            weight.shape[0],
        )
    return out


def _cuda_grad_weight(crow, col, values, dout, n_genes, spec):
    dW = torch.zeros(n_genes, dout.shape[1], dtype=dout.dtype, device=dout.device)
    with torch.cuda.device(dout.device):
        load_cuda().masked_encode_grad_weight(
            _ptr(crow),
            _ptr(col),
            _ptr(values),
            crow.numel() - 1,
            _ptr(dout),
            dout.shape[1],
            _ptr(dW),
            dout.dtype == torch.float64,
            spec.kind_id,
            spec.seed,
            spec.cell_offset,
            spec.thr,
            spec.block_size,
            _module_ptr(spec),
            _stream(dout),
            cuda_kernel_id(),
            n_genes,
        )
    return dW


def _cuda_grad_values(crow, col, weight, dout, spec):
    dv = torch.empty(col.numel(), dtype=dout.dtype, device=dout.device)
    with torch.cuda.device(dout.device):
        load_cuda().masked_encode_grad_values(
            _ptr(crow),
            _ptr(col),
            crow.numel() - 1,
            _ptr(weight),
            weight.shape[1],
            _ptr(dout),
            _ptr(dv),
            dout.dtype == torch.float64,
            spec.kind_id,
            spec.seed,
            spec.cell_offset,
            spec.thr,
            spec.block_size,
            _module_ptr(spec),
            _stream(dout),
        )
    return dv


_FORWARD = {"reference": ref.forward_reference, "cpu": _cpu_forward, "cuda": _cuda_forward}
_GRAD_WEIGHT = {"reference": ref.grad_weight_reference, "cpu": _cpu_grad_weight, "cuda": _cuda_grad_weight}
_GRAD_VALUES = {"reference": ref.grad_values_reference, "cpu": _cpu_grad_values, "cuda": _cuda_grad_values}


# ---------------------------------------------------------------------------------------- registered ops
# The forward and the two gradients are torch ops (celljepa::masked_encode_*), registered with a fake
# (shape) function and, for the forward, an autograd formula; every backend ("reference", "cpu",
# "cuda") runs through the same ops, only the ``backend`` string argument differs. The mask travels as
# plain ints: ``kind_id`` (see ref.KINDS), ``seed``, ``cell_offset``, ``thr`` and ``block_size``, plus the
# optional ``gene_to_module`` tensor (kind "module" only).
#
# A torch ``int`` in an op schema is a signed int64, but the mask seed is a uint64 (0 <= seed < 2**64) and
# the pybind11 kernels take it (and thr, <= 2**53) as unsigned ints. The seed therefore crosses the op
# boundary as the int64 with the same 64 bits (``_to_i64``: seed - 2**64 when seed >= 2**63) and is turned
# back into the unsigned value (``_to_u64``: % 2**64) before the kernels are called; thr, cell_offset
# (< 2**63) and block_size (< 2**62) fit in int64 and go through the same round trip unchanged.
_KIND_NAMES = {v: k for k, v in ref.KINDS.items()}


def _to_i64(v: int) -> int:
    """A uint64 value (``0 <= v < 2**64``) as the int64 with the same bits, for an ``int`` op argument."""
    return v - (1 << 64) if v >= 1 << 63 else v


def _to_u64(v: int) -> int:
    """Inverse of :func:`_to_i64`: the unsigned value the kernels (pybind11 ``uint64_t``) expect."""
    return int(v) % (1 << 64)


def _op_mask_args(spec: MaskSpec) -> tuple:
    """``(kind_id, seed, cell_offset, thr, block_size, gene_to_module)`` as op arguments (seed as int64 bits)."""
    return (
        spec.kind_id,
        _to_i64(spec.seed),
        spec.cell_offset,
        spec.thr,
        spec.block_size,
        spec.gene_to_module if spec.kind == "module" else None,
    )


def _spec_of(
    kind_id: int, seed: int, cell_offset: int, thr: int, block_size: int, gene_to_module: torch.Tensor | None
) -> MaskSpec:
    """The :class:`MaskSpec` an op's mask arguments describe (seed back to uint64)."""
    return MaskSpec(
        kind=_KIND_NAMES[int(kind_id)],
        seed=_to_u64(seed),
        cell_offset=int(cell_offset),
        thr=_to_u64(thr),
        block_size=int(block_size),
        gene_to_module=gene_to_module,
    )


@torch.library.custom_op("celljepa::masked_encode_forward", mutates_args=())
def _forward_op(
    crow: torch.Tensor,
    col: torch.Tensor,
    values: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    kind_id: int,
    seed: int,
    cell_offset: int,
    thr: int,
    block_size: int,
    gene_to_module: torch.Tensor | None,
    backend: str,
) -> torch.Tensor:
    """``(x ⊙ keep) · W + b`` for the CSR ``(crow, col, values)`` on ``backend``; ``(B, H)``."""
    spec = _spec_of(kind_id, seed, cell_offset, thr, block_size, gene_to_module)
    return _FORWARD[backend](crow, col, values, weight, bias, spec)


@_forward_op.register_fake
def _(crow, col, values, weight, bias, kind_id, seed, cell_offset, thr, block_size, gene_to_module, backend):
    return weight.new_empty((crow.shape[0] - 1, weight.shape[1]))


@torch.library.custom_op("celljepa::masked_encode_grad_weight", mutates_args=())
def _grad_weight_op(
    crow: torch.Tensor,
    col: torch.Tensor,
    values: torch.Tensor,
    dout: torch.Tensor,
    n_genes: int,
    kind_id: int,
    seed: int,
    cell_offset: int,
    thr: int,
    block_size: int,
    gene_to_module: torch.Tensor | None,
    backend: str,
) -> torch.Tensor:
    """``dW = (x ⊙ keep)ᵀ · dout``, ``(n_genes, H)``, over the nonzeros only."""
    spec = _spec_of(kind_id, seed, cell_offset, thr, block_size, gene_to_module)
    return _GRAD_WEIGHT[backend](crow, col, values, dout, n_genes, spec)


@_grad_weight_op.register_fake
def _(crow, col, values, dout, n_genes, kind_id, seed, cell_offset, thr, block_size, gene_to_module, backend):
    return dout.new_empty((n_genes, dout.shape[1]))


@torch.library.custom_op("celljepa::masked_encode_grad_values", mutates_args=())
def _grad_values_op(
    crow: torch.Tensor,
    col: torch.Tensor,
    weight: torch.Tensor,
    dout: torch.Tensor,
    kind_id: int,
    seed: int,
    cell_offset: int,
    thr: int,
    block_size: int,
    gene_to_module: torch.Tensor | None,
    backend: str,
) -> torch.Tensor:
    """``dvalues[k] = keep(k) · <dout[row k], W[col k]>``, ``(nnz,)``."""
    spec = _spec_of(kind_id, seed, cell_offset, thr, block_size, gene_to_module)
    return _GRAD_VALUES[backend](crow, col, weight, dout, spec)


@_grad_values_op.register_fake
def _(crow, col, weight, dout, kind_id, seed, cell_offset, thr, block_size, gene_to_module, backend):
    return dout.new_empty((col.shape[0],))


def _forward_setup(ctx, inputs, output):
    crow, col, values, weight, _bias, kind_id, seed, cell_offset, thr, block_size, gene_to_module, backend = inputs
    ctx.save_for_backward(crow, col, values, weight, gene_to_module)
    ctx.mask = (kind_id, seed, cell_offset, thr, block_size)
    ctx.backend = backend


def _forward_backward(ctx, dout):
    """Gradients for values (index 2), weight (3) and bias (4); only those autograd asks for are computed."""
    crow, col, values, weight, gene_to_module = ctx.saved_tensors
    dout = dout.contiguous()
    dv = dW = db = None
    if ctx.needs_input_grad[2]:
        dv = _grad_values_op(crow, col, weight, dout, *ctx.mask, gene_to_module, ctx.backend)
    if ctx.needs_input_grad[3]:
        dW = _grad_weight_op(crow, col, values, dout, weight.shape[0], *ctx.mask, gene_to_module, ctx.backend)
    if ctx.needs_input_grad[4]:
        db = dout.sum(0)
    return None, None, dv, dW, db, None, None, None, None, None, None, None


torch.library.register_autograd("celljepa::masked_encode_forward", _forward_backward, setup_context=_forward_setup)


# ---------------------------------------------------------------------------------------- public API
def masked_encode(
    x,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    kind: str = "none",
    ratio: float = 0.0,
    seed: int = 0,
    cell_offset: int = 0,
    gene_to_module=None,
    block_size: int = 16,
    keep=None,
    backend: str | None = None,
    validate: bool = True,
) -> torch.Tensor:
    """Masked sparse linear encoding ``h = (x ⊙ keep) · W + b`` of a CSR batch, differentiable.

    Gradients flow to ``weight`` (``dW = (x ⊙ keep)ᵀ · dh``, accumulated over nonzeros only), ``bias``
    and, when they require grad, the CSR ``values``. The keep mask is generated inside the kernel from
    ``(seed, cell_offset + row, unit)`` and is identical on every backend (see :func:`mask_for`).

    Parameters
    ----------
    x
        Cells × genes batch: a ``torch.sparse_csr_tensor``, a scipy CSR matrix/array, or a tuple
        ``(crow_indices, col_indices, values, n_genes)`` (int64 indices; values float32/float64 and
        may require grad). Column indices must be sorted and unique within each row.
    weight
        ``(G, H)`` weight, same dtype and device as the values.
    bias
        Optional ``(H,)`` bias.
    kind
        ``"none"``, ``"random"``, ``"block"``, ``"module"`` or ``"explicit"`` (see the module docstring).
    ratio
        Probability that a unit (gene, block, module) is hidden, in ``[0, 1)``.
    seed
        Mask seed, ``0 <= seed < 2**64``.
    cell_offset
        Global index of the first row: row ``i`` is masked as cell ``cell_offset + i``, so a batch drawn
        from a large dataset is masked reproducibly wherever it starts.
    gene_to_module
        ``kind="module"``: int32 module id per gene (``-1`` = no module; those genes form one bucket).
    block_size
        ``kind="block"``: genes per block.
    keep
        ``kind="explicit"``: boolean ``(B, G)`` keep mask or per-cell kept gene ids (tests only).
    backend
        ``"cuda"``, ``"cpu"``, ``"reference"`` or ``None`` (``cj.settings.kernel_backend``; ``auto``
        dispatches CUDA → C++ → reference).
    validate
        Check the CSR structure (sorted, in-range, duplicate-free columns); O(nnz).

    Returns
    -------
    ``(B, H)`` tensor of the weight's dtype and device.

    Examples
    --------
    >>> import torch, scipy.sparse as sp
    >>> from celljepa.kernels import masked_encode
    >>> x = sp.random(8, 50, density=0.1, format="csr", dtype="float32", random_state=0)
    >>> w = torch.randn(50, 4, requires_grad=True)
    >>> h = masked_encode(x, w, kind="random", ratio=0.25, seed=1)
    >>> h.shape
    torch.Size([8, 4])
    >>> h.sum().backward(); w.grad.shape
    torch.Size([50, 4])
    """
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise InputError(f"weight must be a 2-D tensor (genes × hidden), got {getattr(weight, 'shape', type(weight))}.")
    if weight.dtype not in (torch.float32, torch.float64):
        raise InputError(f"weight must be float32 or float64, got {weight.dtype}.")
    crow, col, values, n_rows, n_genes = _as_csr(x, weight.device)
    if values.device != weight.device or crow.device != weight.device or col.device != weight.device:
        raise InputError(f"x is on {values.device} but weight is on {weight.device}; move them to one device.")
    if weight.shape[0] != n_genes:
        raise InputError(f"weight has {weight.shape[0]} rows but x has {n_genes} genes (columns); they must match.")
    if values.dtype != weight.dtype:
        raise InputError(f"x values are {values.dtype} but weight is {weight.dtype}; use one dtype.")
    if bias is not None:
        if not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (weight.shape[1],):
            raise InputError(f"bias must have shape ({weight.shape[1]},), got {getattr(bias, 'shape', type(bias))}.")
        if bias.dtype != weight.dtype or bias.device != weight.device:
            raise InputError(f"bias must be {weight.dtype} on {weight.device}, got {bias.dtype} on {bias.device}.")
    if validate:
        _check_csr(crow, col, values, n_rows, n_genes)
    spec = _make_spec(kind, ratio, seed, cell_offset, n_rows, n_genes, gene_to_module, block_size, weight.device)
    if kind == "explicit":
        values = values * _explicit_keep(keep, crow, col, n_rows, n_genes).to(values.dtype)
    elif keep is not None:
        raise InputError("keep is only used with kind='explicit'.")
    chosen = resolve_backend(backend, on_cuda_tensor=weight.is_cuda)
    if chosen == "cuda" and not weight.is_cuda:
        raise InputError("backend='cuda' needs the data and weight on a CUDA device.")
    if chosen == "cpu" and weight.device.type != "cpu":
        raise InputError(f"backend='cpu' needs CPU tensors, got {weight.device}.")
    return _forward_op(
        crow,
        col,
        values.contiguous(),
        weight.contiguous(),
        None if bias is None else bias.contiguous(),
        *_op_mask_args(spec),
        chosen,
    )


def mask_for(
    seed: int,
    cells,
    n_genes: int,
    *,
    kind: str,
    ratio: float,
    gene_to_module=None,
    block_size: int = 16,
    cell_offset: int = 0,
    device=None,
    backend: str | None = None,
) -> torch.Tensor:
    """The hidden mask :func:`masked_encode` uses, as a dense boolean tensor (for tests and plots).

    Parameters
    ----------
    seed, kind, ratio, gene_to_module, block_size, cell_offset
        As in :func:`masked_encode` (``kind`` not ``"explicit"``).
    cells
        Number of rows (``int``: rows ``0..cells-1``) or a 1-D array of row indices; row ``i`` is the
        global cell ``cell_offset + i``.
    n_genes
        Number of genes ``G``.
    device
        Device of the result (default CPU).
    backend
        ``"cuda"``, ``"cpu"`` (the compiled ``mask_bits`` kernels), ``"reference"`` (pure torch) or
        ``None`` (dispatch as :func:`masked_encode`); all give the same bits.

    Returns
    -------
    ``(len(cells), n_genes)`` bool tensor, True where the gene is hidden (its value is zeroed).

    Examples
    --------
    >>> from celljepa.kernels import mask_for
    >>> m = mask_for(0, 4, 1000, kind="random", ratio=0.3)
    >>> m.shape, round(m.float().mean().item(), 1)
    (torch.Size([4, 1000]), 0.3)
    """
    if kind == "explicit":
        raise InputError("mask_for cannot compute an explicit mask; it is the keep argument itself.")
    rows = torch.arange(int(cells)) if isinstance(cells, (int, np.integer)) else torch.as_tensor(cells).to(torch.int64)
    if rows.dim() != 1:
        raise InputError(f"cells must be an int or a 1-D array of row indices, got shape {tuple(rows.shape)}.")
    n_genes = _check_int("n_genes", n_genes, 0, 1 << 62)
    device = torch.device("cpu") if device is None else torch.device(device)
    top = int(rows.max()) + 1 if rows.numel() else 0
    if rows.numel() and int(rows.min()) < 0:
        raise InputError("cells must be non-negative row indices.")
    spec = _make_spec(kind, ratio, seed, cell_offset, top, n_genes, gene_to_module, block_size, device)
    rows = rows.to(device)
    chosen = resolve_backend(backend, on_cuda_tensor=device.type == "cuda")
    if chosen == "reference" or (chosen == "cuda") != (device.type == "cuda") or spec.kind == "none":
        genes = torch.arange(n_genes, device=device)
        return ref.hidden_units(spec, (rows + spec.cell_offset)[:, None], genes[None, :])
    cells = (rows + spec.cell_offset).contiguous()
    out = torch.empty(cells.numel(), n_genes, dtype=torch.uint8, device=device)
    args = (spec.kind_id, spec.seed, spec.thr, spec.block_size, _module_ptr(spec))
    if chosen == "cpu":
        load_core().mask_bits(cells.data_ptr(), cells.numel(), n_genes, out.data_ptr(), *args)
    else:
        with torch.cuda.device(device):
            for start in range(0, cells.numel(), 65535):  # the CUDA launch takes up to 65535 cells at a time
                part = cells[start : start + 65535]
                load_cuda().mask_bits(
                    part.data_ptr(),
                    part.numel(),
                    n_genes,
                    out[start:].data_ptr(),
                    *args,
                    torch.cuda.current_stream(device).cuda_stream,
                )
    return out.bool()


def module_mask_for(seed: int, cells, n_modules: int, *, ratio: float, cell_offset: int = 0) -> torch.Tensor:
    """Hidden flags per module id for ``kind="module"``.

    Column ``m < n_modules`` is module ``m``; the last column is the ``-1`` ("no module") bucket.

    Examples
    --------
    >>> from celljepa.kernels import module_mask_for
    >>> module_mask_for(0, 3, 5, ratio=0.5).shape
    torch.Size([3, 6])
    """
    rows = torch.arange(int(cells)) if isinstance(cells, (int, np.integer)) else torch.as_tensor(cells).to(torch.int64)
    spec = _make_spec(
        "random", ratio, seed, cell_offset, int(rows.max()) + 1 if rows.numel() else 0, 1, None, 1, torch.device("cpu")
    )
    units = torch.cat([torch.arange(int(n_modules)), torch.tensor([-1])])
    keys = ref.row_keys(spec.seed, rows + spec.cell_offset)
    return ref._srl(ref.unit_hash(keys[:, None], units[None, :]), 11) < spec.thr
