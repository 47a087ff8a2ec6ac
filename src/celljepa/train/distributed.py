"""torch.distributed for celljepa training: who am I, start and stop the process group, small collectives.

celljepa trains with :class:`torch.nn.parallel.DistributedDataParallel` when it is started by
``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT``) or by ``srun``
with several tasks (``SLURM_PROCID``/``SLURM_NTASKS``/``SLURM_LOCALID``; the address of the first node of
the step and a port derived from the job id stand in when ``MASTER_ADDR``/``MASTER_PORT`` are not set).
NCCL is used when the processes train on CUDA devices, gloo on the CPU.

Every rank builds the same global batch of a step and trains on its slice; rank 0 alone writes logs,
metrics and checkpoints, which hold the plain module weights, so a checkpoint of a distributed run
resumes in one process and the other way round.

Examples
--------
Two processes on one machine (CPU, gloo)::

    torchrun --standalone --nproc-per-node 2 --no-python celljepa pretrain data.h5ad --out runs/ddp

Two nodes with four GPUs each under Slurm (``celljepa slurm pretrain --nodes 2 --ntasks-per-node 4
--gpus-per-node 4 -- ...`` writes this script)::

    srun celljepa pretrain data.h5ad --out runs/ddp
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .._errors import InputError
from .._logging import logger

__all__ = [
    "DistInfo",
    "any_rank",
    "barrier",
    "broadcast_float",
    "current",
    "distributed_session",
    "env_info",
    "is_main",
    "training_device",
    "world_size",
]


@dataclass(frozen=True)
class DistInfo:
    """The place of one process in a distributed run."""

    rank: int
    world_size: int
    local_rank: int
    launcher: str  # "torchrun" or "srun"


def _int_env(name: str) -> int | None:
    value = os.environ.get(name)
    return None if value in (None, "") else int(value)


def env_info() -> DistInfo | None:
    """The rank layout the launcher put in the environment; ``None`` for a single process.

    ``torchrun`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``. Under ``srun``, a step (``SLURM_STEP_ID``)
    with several tasks sets ``SLURM_PROCID``/``SLURM_STEP_NUM_TASKS``/``SLURM_LOCALID``; the batch script
    itself (which also sees ``SLURM_PROCID=0`` and ``SLURM_NTASKS``, but no step id) is one process and
    is not treated as distributed.
    """
    world = _int_env("WORLD_SIZE")
    if world is not None and _int_env("RANK") is not None:
        if world <= 1:
            return None
        return DistInfo(_int_env("RANK"), world, _int_env("LOCAL_RANK") or 0, "torchrun")
    step = os.environ.get("SLURM_STEP_ID", "")
    world = _int_env("SLURM_STEP_NUM_TASKS")
    if step.isdigit() and world is not None and world > 1 and _int_env("SLURM_PROCID") is not None:
        return DistInfo(_int_env("SLURM_PROCID"), world, _int_env("SLURM_LOCALID") or 0, "srun")
    return None


def _first_host(nodelist: str) -> str:
    """The first host of a Slurm node list (``scontrol show hostnames``, or a simple parse without it)."""
    try:
        out = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist], check=True, capture_output=True, text=True, timeout=30
        ).stdout.split()
        if out:
            return out[0]
    except (OSError, subprocess.SubprocessError):
        pass
    m = re.match(r"([^,\[]+)(?:\[(\d+))?", nodelist)
    if not m:
        raise InputError(f"cannot read the first host of the Slurm node list {nodelist!r}. Fix: export MASTER_ADDR.")
    return m.group(1) + (m.group(2) or "")


def _rendezvous_env(info: DistInfo) -> None:
    if info.launcher != "srun":
        return
    if not os.environ.get("MASTER_ADDR"):
        nodelist = os.environ.get("SLURM_STEP_NODELIST") or os.environ.get("SLURM_JOB_NODELIST")
        if not nodelist:
            raise InputError(
                "srun started several tasks but neither MASTER_ADDR nor SLURM_STEP_NODELIST is set. "
                "Fix: export MASTER_ADDR (the first node's host name) and MASTER_PORT."
            )
        os.environ["MASTER_ADDR"] = _first_host(nodelist)
    if not os.environ.get("MASTER_PORT"):
        job = _int_env("SLURM_JOB_ID") or 0
        os.environ["MASTER_PORT"] = str(20000 + job % 20000)


def current() -> DistInfo | None:
    """The layout of the initialised process group with more than one rank, else ``None``."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return None
    info = env_info()
    local = info.local_rank if info is not None else 0
    return DistInfo(dist.get_rank(), dist.get_world_size(), local, info.launcher if info else "custom")


def world_size() -> int:
    """Number of ranks training together (1 without a process group)."""
    info = current()
    return 1 if info is None else info.world_size


def is_main() -> bool:
    """True on rank 0 (and in a single process): the rank that logs and writes files."""
    info = current()
    return info is None or info.rank == 0


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if current() is not None:
        dist.barrier()


def broadcast_float(value: float, src: int = 0) -> float:
    """Rank ``src``'s ``value`` on every rank (identity in a single process)."""
    if current() is None:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=_collective_device())
    dist.broadcast(t, src)
    return float(t.item())


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on at least one (identity in a single process)."""
    if current() is None:
        return bool(flag)
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def training_device(requested: str | None) -> str | None:
    """The device of this rank: ``cuda:LOCAL_RANK`` when the run uses CUDA, the request otherwise."""
    info = current()
    if info is None or requested == "cpu" or not torch.cuda.is_available():
        return requested
    if requested not in (None, "auto", "cuda") and not str(requested).startswith("cuda"):
        return requested
    return f"cuda:{info.local_rank % torch.cuda.device_count()}"


@contextlib.contextmanager
def distributed_session(device: str | None = None) -> Iterator[DistInfo | None]:
    """Start the process group when a launcher started several processes; stop it on exit.

    On ranks other than 0 the celljepa logger only shows warnings and errors. Yields the layout, or
    ``None`` in a single process (then nothing is started).
    """
    info = env_info()
    if info is None or (dist.is_available() and dist.is_initialized()):
        yield current()
        return
    if not dist.is_available():
        raise InputError("this torch build has no torch.distributed; run a single process.")
    _rendezvous_env(info)
    use_cuda = torch.cuda.is_available() and device != "cpu"
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(info.local_rank % torch.cuda.device_count())
    dist.init_process_group(backend=backend, init_method="env://", rank=info.rank, world_size=info.world_size)
    level = logger.level
    if info.rank != 0:
        logger.setLevel(logging.WARNING)
    logger.info("distributed: %d ranks (%s, %s backend)", info.world_size, info.launcher, backend)
    try:
        yield info
    finally:
        logger.setLevel(level)
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
