"""OMP_NUM_THREADS holds for the whole process: scanpy's numba kernels must not raise torch's threads."""

from __future__ import annotations

import os
import subprocess
import sys

from celljepa._settings import align_numba_threads

CODE = """
import os, sys
{imports}
import numpy as np, scipy.sparse as sp, anndata as ad, scanpy as sc, torch
a = ad.AnnData(sp.csr_matrix(np.random.default_rng(0).poisson(0.3, (400, 200)).astype("float32")))
sc.pp.normalize_total(a)
sc.pp.log1p(a)
print(torch.get_num_threads(), len(os.listdir("/proc/self/task")))
"""


def _run(imports: str, **env) -> tuple[list[int], str]:
    # a clean slate for the thread pools (MKL_NUM_THREADS, for one, changes which OpenMP runtime numba uses)
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "MKL_", "OPENBLAS_", "OMP_"))}
    environ.update(env)
    proc = subprocess.run(
        [sys.executable, "-c", CODE.format(imports=imports)], env=environ, capture_output=True, text=True, check=True
    )
    return [int(x) for x in proc.stdout.split()], proc.stderr


# what a `celljepa` command does first (here `celljepa info --help`, which exits after printing)
CLI_FIRST = """
import contextlib, io
from celljepa.cli import main
try:
    with contextlib.redirect_stdout(io.StringIO()):
        main(["info", "--help"])
except SystemExit:
    pass
"""


def test_importing_celljepa_leaves_the_environment_alone():
    code = (
        "import os, celljepa, celljepa.pp, celljepa.tl; print(sorted(os.environ.get(k, '-') for k in "
        "('NUMBA_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS')))"
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "MKL_", "OPENBLAS_"))}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "['-', '-', '-']"


def test_numba_follows_omp_num_threads_in_a_celljepa_command():
    (torch_threads, os_threads), _ = _run(CLI_FIRST, OMP_NUM_THREADS="1")
    assert torch_threads == 1
    assert os_threads <= 2  # the main thread and at most one helper, never a second OpenMP worker
    # the same without celljepa: numba's one thread per core raises torch's threads (the hazard this guards)
    if (os.cpu_count() or 1) > 1:
        (torch_threads, _), _ = _run("", OMP_NUM_THREADS="1")
        assert torch_threads > 1


def test_what_align_numba_threads_does():
    env = {"OMP_NUM_THREADS": "4"}
    assert align_numba_threads(env, {}) == "set" and env["NUMBA_NUM_THREADS"] == "4"
    assert align_numba_threads({"OMP_NUM_THREADS": "4", "NUMBA_NUM_THREADS": "8"}, {}) is None  # the user's choice
    assert align_numba_threads({}, {}) is None and align_numba_threads({"OMP_NUM_THREADS": "x"}, {}) is None
    late = {"OMP_NUM_THREADS": "2"}
    warning = align_numba_threads(late, {"numba": object()})
    assert "NUMBA_NUM_THREADS" not in late and "export NUMBA_NUM_THREADS=2" in warning


# ---------------------------------------------------------------- the CPUs a process may use


def _cgroup_v2(tmp_path, quota: str, nested: str | None = None):
    root = tmp_path / "cg"
    (root / "job").mkdir(parents=True)
    (root / "cpu.max").write_text("max 100000\n")
    (root / "job" / "cpu.max").write_text(quota + "\n")
    if nested:
        (root / "job" / "step").mkdir()
        (root / "job" / "step" / "cpu.max").write_text(nested + "\n")
    return root


def test_cpu_budget_is_the_smallest_of_affinity_quota_and_slurm(tmp_path):
    from celljepa._threads import cpu_budget

    root = _cgroup_v2(tmp_path, "150000 100000")  # 1.5 CPUs: rounded up to 2
    assert cpu_budget({}, affinity=8, cgroup_root=root, proc_cgroup="0::/job\n") == (2, "cgroup")
    assert cpu_budget({}, affinity=1, cgroup_root=root, proc_cgroup="0::/job\n") == (1, "affinity")
    assert cpu_budget({"SLURM_CPUS_PER_TASK": "1"}, affinity=8, cgroup_root=root, proc_cgroup="0::/job\n") == (
        1,
        "SLURM_CPUS_PER_TASK",
    )
    # an ancestor's quota binds a child without one of its own; "max" is no limit
    root2 = _cgroup_v2(tmp_path / "b", "300000 100000", nested="max 100000")
    assert cpu_budget({}, affinity=16, cgroup_root=root2, proc_cgroup="0::/job/step\n") == (3, "cgroup")
    assert cpu_budget({}, affinity=16, cgroup_root=root2, proc_cgroup="0::/\n") == (16, "affinity")
    # cgroup v1: cpu.cfs_quota_us / cpu.cfs_period_us under the cpu controller; -1 is no limit
    v1 = tmp_path / "v1"
    (v1 / "cpu" / "slurm").mkdir(parents=True)
    (v1 / "cpu" / "slurm" / "cpu.cfs_quota_us").write_text("400000\n")
    (v1 / "cpu" / "slurm" / "cpu.cfs_period_us").write_text("100000\n")
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu_budget({}, affinity=64, cgroup_root=v1, proc_cgroup="2:cpu,cpuacct:/slurm\n") == (4, "cgroup")
    # nonsense is ignored, never below 1
    assert cpu_budget({"SLURM_CPUS_PER_TASK": "x"}, affinity=3, cgroup_root=tmp_path / "none", proc_cgroup="") == (
        3,
        "affinity",
    )
    assert cpu_budget({}, affinity=0, cgroup_root=tmp_path / "none", proc_cgroup="")[0] == 1


def test_this_machine_budget_is_within_its_cpus():
    from celljepa._threads import cpu_budget

    cpus, source = cpu_budget({})
    assert 1 <= cpus <= (os.cpu_count() or 1) and source in ("affinity", "cgroup")


def test_prepare_command_sets_what_is_unset_and_caps_what_is_too_high(monkeypatch):
    from celljepa import _threads

    monkeypatch.setattr(_threads, "cpu_budget", lambda environ: (2, "cgroup"))
    env: dict[str, str] = {}
    done = _threads.prepare_command(env, {})
    assert env == {"OMP_NUM_THREADS": "2", "GOMP_SPINCOUNT": "1000", "KMP_BLOCKTIME": "1", "NUMBA_NUM_THREADS": "2"}
    assert any("from cgroup" in line for line in done)
    env = {"OMP_NUM_THREADS": "16", "OMP_WAIT_POLICY": "active"}
    done = _threads.prepare_command(env, {})
    assert env["OMP_NUM_THREADS"] == "2" and env["OMP_WAIT_POLICY"] == "active"  # the user's policy is kept
    assert "GOMP_SPINCOUNT" not in env and "KMP_BLOCKTIME" not in env
    env = {"KMP_BLOCKTIME": "0"}
    _threads.prepare_command(env, {})
    assert env["KMP_BLOCKTIME"] == "0" and env["GOMP_SPINCOUNT"] == "1000"  # each runtime's own setting is kept
    assert any("lowered from 16 to 2" in line for line in done)
    env = {"OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    _threads.prepare_command(env, {})
    assert env["OMP_NUM_THREADS"] == "1"  # a value that fits is kept


COMMAND_POOLS = """
import contextlib, io, os, sys
from celljepa.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    main(["info"])
import torch
from threadpoolctl import threadpool_info
print(os.environ["OMP_NUM_THREADS"], os.environ["GOMP_SPINCOUNT"], torch.get_num_threads(),
      max(i["num_threads"] for i in threadpool_info()))
"""


def test_a_command_sizes_its_pools_to_slurm_cpus_per_task():
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "MKL_", "OPENBLAS_", "OMP_"))}
    environ["SLURM_CPUS_PER_TASK"] = "1"
    out = subprocess.run(
        [sys.executable, "-c", COMMAND_POOLS], env=environ, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["1", "1000", "1", "1"]


def test_limit_threads_caps_the_session_and_leaves_the_environment():
    code = (
        # (importing threadpoolctl sets a KMP_ variable: it is imported before the snapshot)
        "import os, json, celljepa as cj, numpy, torch, threadpoolctl\n"
        "before = dict(os.environ)\n"
        "pools = cj.limit_threads(1)\n"
        "from threadpoolctl import threadpool_info\n"
        "print(json.dumps([pools['torch'], torch.get_num_threads(), max(i['num_threads'] for i in threadpool_info()),"
        " dict(os.environ) == before]))"
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "MKL_", "OPENBLAS_", "OMP_"))}
    out = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[1, 1, 1, true]"


def test_limit_threads_refuses_nonsense():
    import pytest

    from celljepa import InputError, limit_threads

    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(InputError, match="positive integer"):
            limit_threads(bad)
