"""Pure-torch twin of the masked sparse encoding kernel: the fallback backend and the test oracle.

The keep mask is recomputed from the counter-based hash in ``csrc/masked_encode/mask_rng.hpp``,
written here with wrapping int64 torch arithmetic (a logical right shift is emulated with a mask), so
it runs on any device and reproduces the C++/CUDA mask bit for bit.

Hash (all arithmetic modulo 2**64)::

    mix64(z)            = splitmix64 finaliser
    row_key(seed, cell) = mix64(mix64(seed ^ 0x5DEECE66DA3B7C9F) ^ cell)
    hash(key, unit)     = mix64(key ^ mix64(unit + 0x9E3779B97F4A7C15))
    hidden              = (hash >> 11) < ceil(ratio * 2**53)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

KINDS = {"none": 0, "random": 1, "block": 2, "module": 3}
_U64 = (1 << 64) - 1
_SEED_SALT = 0x5DEECE66DA3B7C9F
_GOLDEN = 0x9E3779B97F4A7C15
_PHASE_UNIT = 0xFFFFFFFFFFFFFFFE
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
_CHUNK = 1 << 15  # nonzeros per chunk in the reference (bounds its nnz × H temporaries)


def _s64(c: int) -> int:
    """A uint64 Python int as the int64 with the same bits."""
    c &= _U64
    return c - (1 << 64) if c >= 1 << 63 else c


def mix64_int(z: int) -> int:
    """splitmix64 finaliser on a Python int (uint64 semantics)."""
    z &= _U64
    z = ((z ^ (z >> 30)) * _M1) & _U64
    z = ((z ^ (z >> 27)) * _M2) & _U64
    return z ^ (z >> 31)


def _srl(x: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 bits."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def mix64(z: torch.Tensor) -> torch.Tensor:
    """splitmix64 finaliser on an int64 tensor holding uint64 bits (wrapping multiply)."""
    z = (z ^ _srl(z, 30)) * _s64(_M1)
    z = (z ^ _srl(z, 27)) * _s64(_M2)
    return z ^ _srl(z, 31)


def row_keys(seed: int, cells: torch.Tensor) -> torch.Tensor:
    """Per-cell keys ``mix64(mix64(seed ^ salt) ^ cell)`` for global cell indices ``cells`` (int64)."""
    return mix64(cells.to(torch.int64) ^ _s64(mix64_int(seed ^ _SEED_SALT)))


def unit_hash(keys: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    """``mix64(key ^ mix64(unit + golden))`` (int64 tensors with uint64 bits; broadcasting)."""
    return mix64(keys ^ mix64(units.to(torch.int64) + _s64(_GOLDEN)))


def ratio_threshold(ratio: float) -> int:
    """``ceil(ratio * 2**53)``: a unit is hidden iff ``(hash >> 11) < threshold``."""
    return int(math.ceil(float(ratio) * 2.0**53))


@dataclass(frozen=True)
class MaskSpec:
    """A validated mask description (internal).

    ``kind`` is one of :data:`KINDS`; ``gene_to_module`` is an int32 tensor on the data's device.
    """

    kind: str = "none"
    seed: int = 0
    cell_offset: int = 0
    thr: int = 0
    block_size: int = 1
    gene_to_module: torch.Tensor | None = None

    @property
    def kind_id(self) -> int:
        return KINDS[self.kind]

    @property
    def trivial(self) -> bool:
        return self.kind == "none" or self.thr == 0


def hidden_units(spec: MaskSpec, cells: torch.Tensor, genes: torch.Tensor) -> torch.Tensor:
    """Hidden flag of gene ``genes[k]`` in global cell ``cells[k]`` (broadcasting int64 tensors)."""
    cells, genes = torch.broadcast_tensors(cells.to(torch.int64), genes.to(torch.int64))
    if spec.trivial:
        return torch.zeros(cells.shape, dtype=torch.bool, device=cells.device)
    keys = row_keys(spec.seed, cells)
    if spec.kind == "random":
        units = genes
    elif spec.kind == "block":
        phase = _srl(unit_hash(keys, torch.full_like(keys, _s64(_PHASE_UNIT))), 11) % spec.block_size
        units = torch.div(genes + phase, spec.block_size, rounding_mode="floor")
    elif spec.kind == "module":
        units = spec.gene_to_module.to(device=genes.device, dtype=torch.int64)[genes]
    else:  # pragma: no cover - validated upstream
        raise ValueError(spec.kind)
    return _srl(unit_hash(keys, units), 11) < spec.thr


def _nonzero_rows(crow: torch.Tensor) -> torch.Tensor:
    n_rows = crow.numel() - 1
    return torch.repeat_interleave(torch.arange(n_rows, device=crow.device), crow[1:] - crow[:-1])


def kept_values(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, spec: MaskSpec) -> torch.Tensor:
    """``values * keep`` per nonzero (nonzero ``k`` of row ``i`` uses the mask of cell ``cell_offset + i``)."""
    if spec.trivial:
        return values
    rows = _nonzero_rows(crow)
    hidden = hidden_units(spec, rows + spec.cell_offset, col)
    return values.masked_fill(hidden, 0)


def forward_reference(crow, col, values, weight, bias, spec: MaskSpec) -> torch.Tensor:
    """``out = (x ⊙ keep) · W + b`` with x the CSR ``(crow, col, values)``; chunked over nonzeros."""
    n_rows, hidden = crow.numel() - 1, weight.shape[1]
    out = torch.zeros(n_rows, hidden, dtype=weight.dtype, device=weight.device)
    rows = _nonzero_rows(crow)
    sv = kept_values(crow, col, values, spec)
    for s in range(0, col.numel(), _CHUNK):
        e = s + _CHUNK
        out.index_add_(0, rows[s:e], sv[s:e, None] * weight[col[s:e]])
    if bias is not None:
        out += bias
    return out


def grad_weight_reference(crow, col, values, dout, n_genes: int, spec: MaskSpec) -> torch.Tensor:
    """``dW = (x ⊙ keep)^T · dout`` (n_genes × H) without densifying x."""
    dW = torch.zeros(n_genes, dout.shape[1], dtype=dout.dtype, device=dout.device)
    rows = _nonzero_rows(crow)
    sv = kept_values(crow, col, values, spec)
    for s in range(0, col.numel(), _CHUNK):
        e = s + _CHUNK
        dW.index_add_(0, col[s:e], sv[s:e, None] * dout[rows[s:e]])
    return dW


def grad_values_reference(crow, col, weight, dout, spec: MaskSpec) -> torch.Tensor:
    """``dvalues[k] = keep(k) · <dout[row k], W[col k]>``."""
    rows = _nonzero_rows(crow)
    dv = torch.empty(col.numel(), dtype=dout.dtype, device=dout.device)
    for s in range(0, col.numel(), _CHUNK):
        e = s + _CHUNK
        dv[s:e] = (dout[rows[s:e]] * weight[col[s:e]]).sum(1)
    if not spec.trivial:
        dv = dv.masked_fill(hidden_units(spec, rows + spec.cell_offset, col), 0)
    return dv


def masked_encode_reference(crow, col, values, weight, bias, spec: MaskSpec) -> torch.Tensor:
    """Differentiable reference built from plain torch ops (autograd through index_add_), for tests."""
    rows = _nonzero_rows(crow)
    sv = kept_values(crow, col, values, spec)
    out = torch.zeros(crow.numel() - 1, weight.shape[1], dtype=weight.dtype, device=weight.device)
    out = out.index_add(0, rows, sv[:, None] * weight[col])
    return out + bias if bias is not None else out
