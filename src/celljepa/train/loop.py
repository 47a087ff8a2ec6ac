"""The JEPA training loop: masked student, EMA teacher, predictor, anti-collapse, checkpoints that resume.

Everything a step depends on is a function of ``(config, step)``: the batch rows
(:class:`~celljepa.train.data.BatchPlan`), the mask seed (:func:`mask_seed`), the learning rate and the
EMA momentum. A checkpoint therefore holds the weights, the optimiser, the teacher and the torch RNG
state; resuming at step ``s`` replays exactly what an uninterrupted run would have done.

Under torch.distributed (``torchrun``/``srun``, see :mod:`celljepa.train.distributed`) every rank builds
the same global batch and trains on its slice through DistributedDataParallel; the VICReg terms are
computed on the embeddings gathered from all ranks, so a run on ``W`` ranks computes the gradient of the
same objective as one process with the same global batch. The teacher is updated from the synchronised
student on every rank; rank 0 alone writes metrics and checkpoints (plain module weights, loadable by a
single process).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .._errors import CelljepaError, InputError
from .._logging import logger
from ..eval.embedding import collapse_diagnostics
from ..nn.modules import (
    ActionPredictor,
    CSRBatch,
    JEPAPredictor,
    MaskedGeneEncoder,
    MaskParams,
    MaskPointer,
    covariance_loss,
    mlp,
    predictive_loss,
    variance_loss,
)
from . import distributed as D
from .checkpoint import MetricsLog, TrainingInterrupted, interrupt_signals, load_checkpoint, save_checkpoint
from .config import JEPAConfig
from .data import BalancedBatchPlan, BatchPlan, CellSource

__all__ = [
    "TrainResult",
    "build_modules",
    "ema_momentum",
    "fit",
    "learning_rate",
    "mask_seed",
    "resolve_device",
    "thinned_view",
]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"`` → the first CUDA device if one is usable, else the CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(
            f"device {str(device)!r} was requested but torch sees no CUDA device. Fix: use device='cpu' or 'auto'."
        )
    return device


def build_modules(
    n_genes: int,
    cfg: JEPAConfig,
    seed: int,
    n_covariates: int = 0,
    gene_features: torch.Tensor | None = None,
    n_action_tokens: int = 0,
) -> nn.ModuleDict:
    """Student encoder, teacher (a copy of the student when EMA is on), predictor and mask pointer.

    ``gene_features`` (``(n_genes, model.go_components)``) is required with ``model.gene_embedding='go'``;
    a model being loaded may pass zeros (the checkpoint holds the features). With ``train.action_weight > 0``
    an :class:`~celljepa.nn.modules.ActionPredictor` over ``n_action_tokens`` tokens is added (``"action"``).
    """
    m = cfg.model
    if m.gene_embedding == "go":
        if gene_features is None:
            gene_features = torch.zeros(n_genes, m.go_components)
        if tuple(gene_features.shape) != (n_genes, m.go_components):
            raise InputError(f"gene_features must be ({n_genes}, {m.go_components}), got {tuple(gene_features.shape)}.")
    else:
        gene_features = None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        student = MaskedGeneEncoder(
            n_genes,
            n_hidden=m.n_hidden,
            n_latent=m.n_latent,
            n_layers=m.n_layers,
            n_covariates=n_covariates,
            gene_features=gene_features,
        )
        modules = nn.ModuleDict(
            {
                "student": student,
                "predictor": JEPAPredictor(
                    m.n_latent, pointer_dim=m.pointer_dim, n_hidden=m.predictor_hidden, n_layers=m.predictor_layers
                ),
                "pointer": MaskPointer(n_genes, m.pointer_dim),
            }
        )
        if m.expander_dim:
            modules["expander"] = mlp(m.n_latent, m.expander_dim, m.expander_dim, 1)
        if cfg.train.action_weight > 0:
            modules["action"] = ActionPredictor(
                n_action_tokens, m.n_hidden, m.n_latent, n_hidden=m.predictor_hidden, n_layers=m.predictor_layers
            )
        if cfg.train.ema:
            teacher = MaskedGeneEncoder(
                n_genes,
                n_hidden=m.n_hidden,
                n_latent=m.n_latent,
                n_layers=m.n_layers,
                n_covariates=n_covariates,
                gene_features=gene_features,
            )
            teacher.load_state_dict(student.state_dict())
            teacher.requires_grad_(False)
            modules["teacher"] = teacher
    return modules


def embedding_encoder(modules: nn.ModuleDict) -> MaskedGeneEncoder:
    """The encoder whose full-view output is the cell embedding: the teacher, or the student without EMA."""
    return modules["teacher"] if "teacher" in modules else modules["student"]


def learning_rate(step: int, cfg: JEPAConfig) -> float:
    """Linear warm-up to ``lr``, then cosine decay to ``lr * lr_min_factor`` at ``max_steps``."""
    t = cfg.train
    if t.warmup_steps and step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    span = max(1, t.max_steps - t.warmup_steps)
    progress = min(1.0, (step - t.warmup_steps) / span)
    floor = t.lr * t.lr_min_factor
    return floor + (t.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def ema_momentum(step: int, cfg: JEPAConfig) -> float:
    """Teacher momentum: cosine from ``ema_momentum`` at step 0 to ``ema_momentum_end`` at ``max_steps``."""
    t = cfg.train
    progress = min(1.0, step / max(1, t.max_steps))
    return t.ema_momentum_end - (t.ema_momentum_end - t.ema_momentum) * 0.5 * (1.0 + math.cos(math.pi * progress))


def mask_seed(seed: int, step: int) -> int:
    """The 64-bit mask seed of a training step (eval batches use ``step = -1``)."""
    words = np.random.SeedSequence([int(seed), int(step) + 1, 0x4D41534B]).generate_state(2, np.uint32)
    return int(words[0]) | (int(words[1]) << 32)


def make_optimizer(modules: nn.ModuleDict, cfg: JEPAConfig) -> torch.optim.Optimizer:
    """AdamW; weight decay on matrices only (not on biases and LayerNorm gains); the teacher is not optimised."""
    decay, no_decay = [], []
    for name, p in modules.named_parameters():
        if name.startswith("teacher.") or not p.requires_grad:
            continue
        (decay if p.dim() >= 2 else no_decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.train.lr,
    )


@torch.no_grad()
def _ema_update(modules: nn.ModuleDict, momentum: float) -> None:
    if "teacher" not in modules:
        return
    for pt, ps in zip(modules["teacher"].parameters(), modules["student"].parameters(), strict=True):
        pt.mul_(momentum).add_(ps.detach(), alpha=1.0 - momentum)


def step_losses(
    modules: nn.ModuleDict,
    x: CSRBatch,
    mask: MaskParams,
    cfg: JEPAConfig,
    *,
    need_full: bool = True,
    gather: bool = False,
    present: torch.Tensor | None = None,
    covariate: torch.Tensor | None = None,
    x_student: CSRBatch | None = None,
):
    """``(total, terms, full_view_embedding)`` of one batch; ``terms`` are detached floats-to-be.

    The teacher's full-view embedding is the target when ``train.target`` is ``cell``; with ``hidden``
    it is computed only when ``need_full`` (for the diagnostics) and ``None`` otherwise. With ``gather``
    (distributed training) the VICReg terms see the embeddings of every rank's slice of the batch
    (an all-gather that carries gradients), as one process with the whole batch would. ``present``
    (cells × genes, bool) marks the genes each cell's dataset measures: absent genes are never
    prediction targets (they are not in the hidden set the pointer and the target see). ``x_student`` (same
    cells and genes) is what the student sees instead of ``x`` (count-aware views: :func:`thinned_view`); the
    teacher always sees ``x``.
    """
    t = cfg.train
    student = modules["student"]
    z = student(x if x_student is None else x_student, mask, covariate=covariate)
    hidden = mask.hidden(x.n_rows, x.n_genes, z.device)
    if present is not None:
        hidden = hidden & present
    pred = modules["predictor"](z, modules["pointer"](hidden))
    teacher = embedding_encoder(modules)
    with torch.no_grad():
        full = teacher(x, covariate=covariate) if t.target == "cell" or need_full else None
        target = full if t.target == "cell" else teacher(x, keep=hidden, covariate=covariate)
    pred_loss = predictive_loss(pred, target, t.loss)
    total = pred_loss
    terms = {"pred_loss": pred_loss.detach()}
    if t.anticollapse:
        e = modules["expander"](z) if "expander" in modules else z
        if gather:
            e = _GatherRows.apply(e)
        var, cov = variance_loss(e), covariance_loss(e)
        total = total + t.var_weight * var + t.cov_weight * cov
        terms.update(var_loss=var.detach(), cov_loss=cov.detach())
    terms["loss"] = total.detach()
    return total, terms, full


def action_loss(
    modules: nn.ModuleDict, x_ctrl: CSRBatch, x_pert: CSRBatch, batch: dict, sampler, covariates: tuple | None = None
) -> torch.Tensor:
    """The action-conditioned objective of one step (:mod:`celljepa.train.action`).

    The mean E-distance between the predicted and the teacher's embeddings of the perturbed sets, in latent space.
    """
    from ..kernels import edistance_loss

    student = modules["student"]
    cov_ctrl, cov_pert = covariates or (None, None)
    z = student(x_ctrl, covariate=cov_ctrl)
    with torch.no_grad():
        target = embedding_encoder(modules)(x_pert, covariate=cov_pert)
    sizes = torch.as_tensor(batch["sizes"], device=z.device)
    conds = batch["conditions"]
    pred = modules["action"](
        z,
        sizes,
        torch.as_tensor(batch["token_idx"], device=z.device),
        sampler.gene_vectors(student, conds),
        torch.as_tensor(sampler.token_mask[conds], device=z.device),
    )
    offsets = torch.cat([sizes.new_zeros(1), torch.cumsum(sizes, 0)])
    return edistance_loss(pred, offsets, target.to(pred.dtype), offsets).mean()


def _module_tensor(gene_to_module, device) -> torch.Tensor | None:
    return (
        None
        if gene_to_module is None
        else torch.as_tensor(np.asarray(gene_to_module), dtype=torch.int32, device=device)
    )


def _mask(cfg: JEPAConfig, seed: int, gene_to_module, cell_offset: int = 0) -> MaskParams:
    k = cfg.mask
    return MaskParams(
        kind=k.kind,
        ratio=k.ratio,
        seed=seed,
        block_size=k.block_size,
        gene_to_module=gene_to_module if k.kind == "module" else None,
        cell_offset=cell_offset,
    )


class _GatherRows(torch.autograd.Function):
    """All ranks' rows, concatenated in rank order, with gradients flowing back to each rank's own rows.

    Every rank computes the same loss of the gathered rows, so the gradient of a rank's rows is the sum
    of all ranks' gradients for them (all-reduce); DistributedDataParallel's averaging over ranks then
    leaves exactly the single-process gradient.
    """

    @staticmethod
    def forward(ctx, rows: torch.Tensor) -> torch.Tensor:
        world = torch.distributed.get_world_size()
        parts = [torch.empty_like(rows) for _ in range(world)]
        torch.distributed.all_gather(parts, rows.contiguous())
        ctx.rank, ctx.n = torch.distributed.get_rank(), rows.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        torch.distributed.all_reduce(grad)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


class _Objective(nn.Module):
    """The training loss as one module, so that DistributedDataParallel can wrap every trained part."""

    def __init__(self, modules: nn.ModuleDict, cfg: JEPAConfig, gather: bool):
        super().__init__()
        self.parts, self.cfg, self.gather = modules, cfg, gather

    def forward(
        self,
        x: CSRBatch,
        mask: MaskParams,
        need_full: bool,
        present: torch.Tensor | None = None,
        covariate: torch.Tensor | None = None,
        x_student: CSRBatch | None = None,
    ):
        return step_losses(
            self.parts,
            x,
            mask,
            self.cfg,
            need_full=need_full,
            gather=self.gather,
            present=present,
            covariate=covariate,
            x_student=x_student,
        )


def thinned_view(counts: CSRBatch, min_depth: float, seed: int, target_sum: float = 1e4) -> CSRBatch:
    """A count-aware student view: each cell's reads thinned binomially, then normalised and log1p-transformed.

    The share of reads kept is drawn per cell, uniformly in ``[min_depth, 1]``; each count ``c`` becomes
    ``Binomial(c, share)``; the thinned cell is scaled to ``target_sum`` and ``log1p``-ed, as ``cj.pp.normalize``
    does with full cells. The sparsity pattern stays (a count thinned to 0 is an explicit zero, which the encoder's
    sum over nonzeros ignores). Seeded: the same ``seed`` gives the same view on the same device.
    """
    dev = counts.values.device
    gen = torch.Generator(device=dev).manual_seed(int(seed) & 0x7FFF_FFFF_FFFF_FFFF)
    n = counts.n_rows
    share = min_depth + (1.0 - min_depth) * torch.rand(n, generator=gen, device=dev)
    lengths = counts.crow[1:] - counts.crow[:-1]
    prob = share.repeat_interleave(lengths)
    kept = torch.binomial(counts.values.float(), prob.float(), generator=gen)
    rows = torch.repeat_interleave(torch.arange(n, device=dev), lengths)
    totals = torch.zeros(n, device=dev, dtype=kept.dtype).index_add_(0, rows, kept)
    scale = torch.where(totals > 0, target_sum / totals.clamp_min(1.0), torch.zeros_like(totals))
    values = torch.log1p(kept * scale[rows]).to(counts.values.dtype)
    return CSRBatch(crow=counts.crow, col=counts.col, values=values, n_genes=counts.n_genes)


def _gathered(t: torch.Tensor, world: int) -> torch.Tensor:
    """Rows of every rank (no gradient), for the metrics of a distributed step."""
    if world == 1:
        return t
    with torch.no_grad():
        return _GatherRows.apply(t)


def _mean_over_ranks(value: torch.Tensor, world: int) -> torch.Tensor:
    if world == 1:
        return value
    value = value.clone()
    torch.distributed.all_reduce(value)
    return value / world


def _rows_digest(rows: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(rows, dtype=np.int64).tobytes()).hexdigest()[:16]


@dataclass
class TrainResult:
    """What :func:`fit` returns: the final step, the metrics records and where checkpoints went."""

    step: int
    history: list[dict]
    resumed_from: int
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    best: dict | None


def _diag_record(z: torch.Tensor) -> dict:
    d = collapse_diagnostics(z.detach().float().cpu().numpy(), max_cells=None)
    return {k: d[k] for k in ("std_mean", "std_min", "effective_rank", "effective_rank_fraction", "mean_cosine")}


@torch.no_grad()
def evaluate_batch(
    modules: nn.ModuleDict,
    x: CSRBatch,
    cfg: JEPAConfig,
    gene_to_module,
    present: torch.Tensor | None = None,
    covariate: torch.Tensor | None = None,
) -> dict:
    """Losses (fixed mask, ``mask_seed(seed, -1)``) and collapse diagnostics on a fixed batch."""
    _, terms, full = step_losses(
        modules, x, _mask(cfg, mask_seed(cfg.train.seed, -1), gene_to_module), cfg, present=present, covariate=covariate
    )
    return {**{k: float(v) for k, v in terms.items()}, **_diag_record(full), "n_cells": x.n_rows}


def _payload(modules, optimizer, step, cfg, var_names, rows_digest, best, extra) -> dict:
    return {
        "step": int(step),
        "config": cfg.to_dict(),
        "config_digest": cfg.digest(),
        "var_names": list(var_names),
        "modules": {k: v.state_dict() for k, v in modules.items()},
        "optimizer": optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "train_rows": rows_digest,
        "best": best,
        **extra,
    }


def fit(
    modules: nn.ModuleDict,
    source: CellSource,
    *,
    cfg: JEPAConfig,
    var_names,
    train_rows,
    eval_rows,
    device: torch.device,
    gene_to_module=None,
    run_dir: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
    handle_signals: bool | None = None,
    callback=None,
    extra_payload=None,
    groups=None,
    gene_present=None,
    covariates=None,
    action=None,
    counts_source: CellSource | None = None,
) -> TrainResult:
    """Train ``modules`` in place on the rows ``train_rows`` of ``source``.

    Parameters
    ----------
    modules
        From :func:`build_modules` (moved to ``device`` here).
    source
        The cells (in memory or streamed).
    cfg
        The resolved config.
    var_names
        Gene names (stored in checkpoints; a resumed run must have the same).
    train_rows, eval_rows
        Rows to train on and rows of the fixed evaluation batch (best.pt selection).
    device
        Where to train.
    gene_to_module
        int32 module id per gene (mask kind ``module``).
    run_dir
        Folder for ``metrics.jsonl`` and ``checkpoints/{last,best}.pt``; ``None`` keeps metrics in memory only.
    resume
        Continue from ``run_dir/checkpoints/last.pt`` when it exists (its config and rows must match).
    progress
        Show a tqdm bar with the loss and collapse metrics.
    handle_signals
        Catch SIGTERM/SIGUSR1: finish the step, checkpoint, raise :class:`TrainingInterrupted`.
        Default: on when ``run_dir`` is given.
    callback
        ``callback(step, record_or_None)`` after every step (tests, custom logging).
    extra_payload
        More (weights-only-safe) entries stored in every checkpoint.
    groups
        Group label of every row of ``source`` (e.g. its dataset): batches then hold an equal share of
        every group (:class:`~celljepa.train.data.BalancedBatchPlan`).
    gene_present
        ``(group_index, present)``: the group index of every row and a ``(n_groups, n_genes)`` boolean
        matrix of the genes each group measures; absent genes are never prediction targets.
    covariates
        Covariate index of every row of ``source`` (0 = none), for an encoder built with ``n_covariates``.
    action
        An :class:`~celljepa.train.action.ActionSampler` for the action-conditioned objective
        (``train.action_weight > 0``; one process only).
    counts_source
        The raw counts of the same cells and genes as ``source``, for count-aware views
        (``train.thin_views > 0``, :func:`thinned_view`).
    """
    from tqdm.auto import tqdm

    t = cfg.train
    run_dir = None if run_dir is None else Path(run_dir)
    ckpt_dir = None if run_dir is None else run_dir / "checkpoints"
    last_path = None if ckpt_dir is None else ckpt_dir / "last.pt"
    best_path = None if ckpt_dir is None else ckpt_dir / "best.pt"
    handle_signals = run_dir is not None if handle_signals is None else handle_signals
    extra_payload = dict(extra_payload or {})
    plan = (
        BatchPlan(train_rows, batch_size=t.batch_size, chunk_size=source.chunk_size, seed=t.seed)
        if groups is None
        else BalancedBatchPlan(train_rows, groups, batch_size=t.batch_size, seed=t.seed)
    )
    rows_digest = _rows_digest(plan.rows)
    layout = D.current()
    world, rank = (1, 0) if layout is None else (layout.world_size, layout.rank)
    main = rank == 0
    if plan.batch_size % world:
        raise InputError(
            f"the batch of {plan.batch_size} cells cannot be split evenly over {world} ranks. Fix: set "
            f"train.batch_size to a multiple of {world} (it is the global batch of all ranks)."
        )
    local = plan.batch_size // world
    if (action is not None) != (t.action_weight > 0):
        raise InputError(
            "train.action_weight > 0 needs an ActionSampler (action=...), and an ActionSampler needs "
            "train.action_weight > 0."
        )
    if action is not None and world > 1:
        raise InputError(
            "the action-conditioned objective (train.action_weight > 0) runs in one process; it is not "
            "available under torch.distributed. Fix: train.action_weight=0 for multi-GPU pretraining."
        )
    if (counts_source is not None) != (t.thin_views > 0):
        raise InputError(
            "train.thin_views > 0 needs the raw counts (counts_source=...), and counts_source is only read "
            "with train.thin_views > 0."
        )
    modules.to(device)
    optimizer = make_optimizer(modules, cfg)
    module_t = _module_tensor(gene_to_module, device)
    start, best = 0, None
    if last_path is not None and resume and last_path.is_file():
        payload = load_checkpoint(last_path, map_location=device)
        if payload["config_digest"] != cfg.digest():
            raise InputError(
                f"{last_path} was written with a different config; resuming would mix two runs. Fix: "
                "use a new --out folder, or --restart to start this one over."
            )
        if list(payload["var_names"]) != list(var_names) or payload["train_rows"] != rows_digest:
            raise InputError(
                f"{last_path} was trained on other genes or cells than these (a different file or "
                "split). Fix: use a new --out folder, or --restart."
            )
        for name, module in modules.items():
            module.load_state_dict(payload["modules"][name])
        optimizer.load_state_dict(payload["optimizer"])
        torch.set_rng_state(payload["torch_rng"])
        start, best = int(payload["step"]), payload.get("best")
        logger.warning("resuming from %s at step %d of %d", last_path, start, t.max_steps)
    metrics = MetricsLog(None if run_dir is None or not main else run_dir / "metrics.jsonl")
    metrics.load(up_to_step=start)
    eval_rows = np.asarray(eval_rows, dtype=np.int64)
    eval_x = CSRBatch.from_scipy(source.read(eval_rows), device) if eval_rows.size >= 2 and main else None

    def present_of(rows: np.ndarray) -> torch.Tensor | None:
        if gene_present is None:
            return None
        group_index, present = gene_present
        return torch.from_numpy(np.ascontiguousarray(present[group_index[rows]])).to(device)

    eval_present = present_of(eval_rows) if eval_x is not None else None

    def covariate_of(rows: np.ndarray) -> torch.Tensor | None:
        return None if covariates is None else torch.as_tensor(covariates[rows], dtype=torch.long, device=device)

    eval_covariate = covariate_of(eval_rows) if eval_x is not None else None
    objective = _Objective(modules, cfg, gather=world > 1)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        unused = "expander" in modules and not t.anticollapse
        # the batch is already on this rank's device: no device_ids, so DDP does not copy the inputs
        objective = DistributedDataParallel(objective, device_ids=None, find_unused_parameters=unused)

    def save(path, step):
        if path is not None and main:
            save_checkpoint(path, _payload(modules, optimizer, step, cfg, var_names, rows_digest, best, extra_payload))

    n_cells, t0, tick = 0, time.perf_counter(), time.perf_counter()
    best_state = None
    modules.train()
    with (
        interrupt_signals(handle_signals) as flag,
        tqdm(
            total=t.max_steps,
            initial=start,
            desc="JEPA pretraining",
            unit="step",
            disable=not (progress and main) or None,
            dynamic_ncols=True,
        ) as bar,
    ):
        for step in range(start, t.max_steps):
            rows = plan.rows_for_step(step)[rank * local : (rank + 1) * local]
            x = CSRBatch.from_scipy(source.read(rows), device)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, cfg)
            done = step + 1
            log_now = done % t.log_every == 0 or done == t.max_steps
            x_student = None
            if counts_source is not None:
                counts = CSRBatch.from_scipy(counts_source.read(rows), device)
                x_student = thinned_view(counts, t.thin_views, mask_seed(t.seed, step) ^ 0x7A1C5)
            total, terms, full = objective(
                x,
                _mask(cfg, mask_seed(t.seed, step), module_t, rank * local),
                log_now,
                present_of(rows),
                covariate_of(rows),
                x_student,
            )
            if action is not None:
                batch = action.sample(step)
                covs = (covariate_of(batch["ctrl_rows"]), covariate_of(batch["pert_rows"]))
                a_loss = action_loss(
                    modules,
                    CSRBatch.from_scipy(source.read(batch["ctrl_rows"]), device),
                    CSRBatch.from_scipy(source.read(batch["pert_rows"]), device),
                    batch,
                    action,
                    covs,
                )
                total = total + t.action_weight * a_loss
                terms["action_loss"] = a_loss.detach()
                terms["loss"] = total.detach()
            if D.any_rank(not torch.isfinite(total)):
                raise CelljepaError(
                    f"the loss became {float(total)} at step {step + 1}; lower train.lr or check the input values."
                )
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            if t.grad_clip:
                torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], t.grad_clip)
            optimizer.step()
            momentum = ema_momentum(step, cfg)
            _ema_update(modules, momentum)
            n_cells += x.n_rows * world
            record = None
            if log_now:
                terms["pred_loss"] = _mean_over_ranks(terms["pred_loss"], world)
                terms["loss"] = _mean_over_ranks(terms["loss"], world)
                full = _gathered(full, world)
                now = time.perf_counter()
                record = {
                    "step": done,
                    **{k: float(v) for k, v in terms.items()},
                    "lr": learning_rate(step, cfg),
                    "ema_momentum": momentum if t.ema else None,
                    **_diag_record(full),
                    "cells_per_s": n_cells / max(now - tick, 1e-9),
                    "elapsed_s": now - t0,
                }
                n_cells, tick = 0, now
                metrics.append(record)
                bar.set_postfix(
                    loss=f"{record['loss']:.4f}",
                    rank=f"{record['effective_rank']:.1f}",
                    std_min=f"{record['std_min']:.3f}",
                    refresh=False,
                )
            if eval_x is not None and (done % t.eval_every == 0 or done == t.max_steps):
                modules.eval()
                ev = {
                    "step": done,
                    "split": "eval",
                    **evaluate_batch(modules, eval_x, cfg, module_t, eval_present, eval_covariate),
                }
                modules.train()
                metrics.append(ev)
                if best is None or ev["loss"] < best["loss"]:
                    best = {"step": done, "loss": ev["loss"]}
                    save(best_path, done)
                    if t.keep == "best":
                        best_state = {
                            k: {n: v.detach().clone() for n, v in m.state_dict().items()} for k, m in modules.items()
                        }
            if done % t.checkpoint_every == 0 or done == t.max_steps:
                save(last_path, done)
            bar.update(1)
            if callback is not None:
                callback(done, record)
            if D.any_rank(flag["signal"] is not None) and done < t.max_steps:
                save(last_path, done)
                D.barrier()
                raise TrainingInterrupted(done, last_path, flag["signal"] or "a signal on another rank")
    if t.keep == "best" and best is not None:
        if best_state is None and best_path is not None and best_path.is_file():  # best step before a resume
            best_state = load_checkpoint(best_path, map_location=device)["modules"]
        if best_state is not None:
            for name, module in modules.items():
                module.load_state_dict(best_state[name])
    modules.eval()
    return TrainResult(
        step=t.max_steps,
        history=list(metrics.records),
        resumed_from=start,
        last_checkpoint=last_path,
        best_checkpoint=best_path if best is not None and best_path is not None else None,
        best=best,
    )
