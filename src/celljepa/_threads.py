"""How many threads celljepa runs, and how they wait: sized to the CPUs the process may use.

On a shared node or a laptop running other jobs, a pool with more threads than the process's share of the CPUs,
whose idle threads spin instead of sleeping, slows everything down many times over what a fair share explains:
a thread spins on a core that the thread it waits for needs. Two rules prevent that:

* **Size**: never more threads than the CPUs the process may use: the smallest of its CPU affinity mask, its
  cgroup CPU quota (containers, Kubernetes, systemd slices) and ``SLURM_CPUS_PER_TASK`` (:func:`cpu_budget`).
* **Spin briefly**: an idle OpenMP thread spins a short while for the next parallel region, then sleeps
  (``GOMP_SPINCOUNT=1000``, the count libgomp itself falls back to when a process has more threads than CPUs),
  instead of spinning for ~300,000 iterations. Sleeping at once (``OMP_WAIT_POLICY=PASSIVE``) shares the cores
  as well but made a demo run alone half as slow again: the transition models' many small parallel regions
  each wait for a sleeping thread to wake (docs/kernels.md, ``benchmarks/results/threads``).

A ``celljepa`` command is its own process and applies both before anything starts a thread pool
(:func:`prepare_command`). ``import celljepa`` never changes a user's environment or thread pools; in a notebook
or script, :func:`limit_threads` (``cj.limit_threads()``) does the same for the session.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping, MutableMapping
from pathlib import Path

from ._errors import InputError
from ._logging import logger
from ._settings import align_numba_threads

__all__ = ["cpu_budget", "limit_threads", "prepare_command"]

#: libgomp's spin count for idle threads in a command (its own value under oversubscription; default 300,000)
SPIN_COUNT = "1000"
#: the same rule for LLVM / Intel OpenMP (libomp, libiomp5: macOS and conda MKL builds of torch): milliseconds an
#: idle thread waits before it sleeps (their default 200)
BLOCK_TIME = "1"


def _affinity() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count() or 1


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _cgroup_quota(root: Path, proc_cgroup: str | None) -> float | None:
    """The CPU quota (CPUs, fractional) of this process's cgroup and its ancestors, or None when unlimited."""
    v1_path = v2_path = None
    for line in (proc_cgroup or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            v2_path = parts[2]
        elif "cpu" in parts[1].split(","):
            v1_path = parts[2]
    quotas = []

    def ancestors(base: Path, rel: str | None):
        rel_parts = [p for p in (rel or "/").split("/") if p]
        for i in range(len(rel_parts), -1, -1):
            yield base.joinpath(*rel_parts[:i])

    for d in ancestors(root, v2_path):  # cgroup v2: "<quota> <period>" or "max <period>"
        text = _read(d / "cpu.max")
        if text and not text.startswith("max"):
            quota, _, period = text.partition(" ")
            if quota.isdigit() and period.isdigit() and int(period) > 0:
                quotas.append(int(quota) / int(period))
    for base in (root / "cpu", root / "cpu,cpuacct", root / "cpuacct,cpu"):  # cgroup v1
        if not base.is_dir():
            continue
        for d in ancestors(base, v1_path):
            quota, period = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
            if quota and period and quota.lstrip("-").isdigit() and period.isdigit() and int(quota) > 0:
                quotas.append(int(quota) / int(period))
        break
    return min(quotas) if quotas else None


def cpu_budget(
    environ: Mapping[str, str] | None = None,
    *,
    affinity: int | None = None,
    cgroup_root: str | os.PathLike = "/sys/fs/cgroup",
    proc_cgroup: str | None = None,
) -> tuple[int, str]:
    """The number of CPUs this process may use, and what set it.

    The smallest of the CPU affinity mask (``taskset``, Slurm's binding), the cgroup CPU quota rounded up
    (cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``, of the process's cgroup and its ancestors) and
    ``SLURM_CPUS_PER_TASK``; at least 1.

    Parameters
    ----------
    environ
        The environment to read ``SLURM_CPUS_PER_TASK`` from (default ``os.environ``).
    affinity, cgroup_root, proc_cgroup
        For tests: the affinity count, the cgroup mount and the text of ``/proc/self/cgroup``.

    Returns
    -------
    ``(cpus, source)``, ``source`` one of ``"affinity"``, ``"cgroup"``, ``"SLURM_CPUS_PER_TASK"``.

    Examples
    --------
    >>> from celljepa._threads import cpu_budget
    >>> cpu_budget({"SLURM_CPUS_PER_TASK": "1"})
    (1, 'SLURM_CPUS_PER_TASK')
    """
    environ = os.environ if environ is None else environ
    candidates = [(affinity if affinity is not None else _affinity(), "affinity")]
    if proc_cgroup is None:
        proc_cgroup = _read(Path("/proc/self/cgroup"))
    quota = _cgroup_quota(Path(cgroup_root), proc_cgroup)
    if quota is not None:
        candidates.append((max(1, math.ceil(quota - 1e-9)), "cgroup"))
    slurm = environ.get("SLURM_CPUS_PER_TASK", "").strip()
    if slurm.isdigit() and int(slurm) > 0:
        candidates.append((int(slurm), "SLURM_CPUS_PER_TASK"))
    cpus, source = min(candidates, key=lambda c: c[0])
    return max(1, int(cpus)), source


def prepare_command(environ: MutableMapping[str, str] | None = None, modules: Mapping | None = None) -> list[str]:
    """Size and quieten the thread pools of a ``celljepa`` command's own process, before any pool starts.

    * ``OMP_NUM_THREADS``: set to :func:`cpu_budget` when unset; lowered to it when set higher (torch, MKL,
      OpenBLAS and celljepa's C++ kernels read it when they load).
    * ``GOMP_SPINCOUNT=1000`` when neither it nor ``OMP_WAIT_POLICY`` is set: idle OpenMP threads spin
      briefly, then sleep, instead of spinning for ~300,000 iterations on cores other jobs need.
      ``KMP_BLOCKTIME=1`` (ms, default 200) likewise for the LLVM / Intel OpenMP runtimes (libomp, libiomp5) that
      macOS and conda MKL builds of torch load; each runtime ignores the other's variable.
    * ``NUMBA_NUM_THREADS`` follows ``OMP_NUM_THREADS`` (scanpy's numba kernels would otherwise start one thread
      per core of the machine and raise torch's threads with them).
    * Pools already started (numpy's OpenBLAS is loaded with the command line) are capped with threadpoolctl.

    A value the user exported and that fits is kept. Returns what was done, one line each (logged at info).
    """
    environ = os.environ if environ is None else environ
    modules = sys.modules if modules is None else modules
    cpus, source = cpu_budget(environ)
    done = []
    omp = environ.get("OMP_NUM_THREADS", "").strip()
    if not omp.isdigit() or int(omp) < 1:
        environ["OMP_NUM_THREADS"] = str(cpus)
        done.append(f"OMP_NUM_THREADS={cpus} (the CPUs this process may use, from {source})")
    elif int(omp) > cpus:
        environ["OMP_NUM_THREADS"] = str(cpus)
        done.append(f"OMP_NUM_THREADS lowered from {omp} to {cpus}: this process may use {cpus} CPUs ({source})")
    if not environ.get("OMP_WAIT_POLICY") and not environ.get("GOMP_SPINCOUNT"):
        environ["GOMP_SPINCOUNT"] = SPIN_COUNT
        done.append(f"GOMP_SPINCOUNT={SPIN_COUNT} (idle OpenMP threads spin briefly, then sleep)")
    if not environ.get("OMP_WAIT_POLICY") and not environ.get("KMP_BLOCKTIME"):
        environ["KMP_BLOCKTIME"] = BLOCK_TIME
        done.append(f"KMP_BLOCKTIME={BLOCK_TIME} (the same for LLVM/Intel OpenMP runtimes)")
    why = align_numba_threads(environ, modules)
    if why == "set":
        done.append(f"NUMBA_NUM_THREADS={environ['OMP_NUM_THREADS']}")
    elif why is not None:
        logger.warning(why)
    if any(name in modules for name in ("numpy", "torch")):
        _cap_started_pools(int(environ["OMP_NUM_THREADS"]), modules)
    return done


def _cap_started_pools(n: int, modules: Mapping) -> dict[str, int]:
    """Cap every thread pool already loaded in this process at ``n``; ``{pool: threads}`` afterwards."""
    from threadpoolctl import threadpool_info, threadpool_limits

    threadpool_limits(limits=n)  # every loaded BLAS and OpenMP runtime (torch's, celljepa's kernels', numpy's)
    out = {f"{i['internal_api']}:{Path(i['filepath']).name}": int(i["num_threads"]) for i in threadpool_info()}
    torch = modules.get("torch")
    if torch is not None:
        if torch.get_num_threads() > n:
            torch.set_num_threads(n)
        out["torch"] = torch.get_num_threads()
    numba = modules.get("numba")
    if numba is not None:
        numba.set_num_threads(min(n, int(numba.config.NUMBA_NUM_THREADS)))
        out["numba"] = int(numba.get_num_threads())
    return out


def limit_threads(n: int | None = None) -> dict[str, int]:
    """Size this session's thread pools to the CPUs it may use (or to ``n``); call it once, early.

    What a ``celljepa`` command does for its own process, for a notebook or script: torch's intra-op threads,
    every BLAS and OpenMP runtime already loaded (through threadpoolctl: MKL, OpenBLAS, the OpenMP runtime that
    torch and celljepa's C++ kernels share) and numba's threads are capped at :func:`cpu_budget` (affinity mask,
    cgroup quota, ``SLURM_CPUS_PER_TASK``) or ``n``. It changes no environment variable. How long idle OpenMP
    threads spin before they sleep can only be chosen before Python starts: export ``GOMP_SPINCOUNT=1000`` in the
    job script or shell where jobs share the cores (``docs/kernels.md``).

    Parameters
    ----------
    n
        Threads per pool; default: the CPUs the process may use.

    Returns
    -------
    ``{pool: threads}`` after the change (``"torch"``, ``"numba"`` where imported, one entry per runtime).

    Examples
    --------
    >>> import celljepa as cj
    >>> pools = cj.limit_threads(1)
    >>> pools["torch"]
    1
    """
    import torch

    if n is None:
        n, source = cpu_budget()
    else:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InputError(f"limit_threads: n must be a positive integer (threads per pool), got {n!r}.")
        source = "n"
    torch.set_num_threads(n)  # exactly n (a command only ever lowers it)
    pools = _cap_started_pools(n, sys.modules)
    if not os.environ.get("GOMP_SPINCOUNT") and not os.environ.get("OMP_WAIT_POLICY"):
        logger.info(
            "limit_threads: idle OpenMP threads spin ~300,000 iterations between parallel regions; export "
            f"GOMP_SPINCOUNT={SPIN_COUNT} before starting Python where jobs share the cores."
        )
    logger.info(f"limit_threads: {n} threads per pool ({source})")
    return pools
