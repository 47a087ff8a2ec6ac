"""DistributedDataParallel pretraining on the CPU (gloo, 2 processes) against single-process runs, on Kang."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from celljepa.cli import EXIT_INTERRUPTED
from celljepa.train.checkpoint import load_checkpoint
from celljepa.train.distributed import env_info

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="this torch build has no torch.distributed with gloo",
)

# The 2-rank run and the single process differ only in the order of float sums (the gradient of a batch
# split over two ranks, averaged by DDP); after 20 steps that is below 1e-6 on every weight.
WEIGHT_ATOL = 1e-5
TINY = [
    "--set",
    "model.n_latent=16",
    "--set",
    "model.n_hidden=32",
    "--set",
    "model.predictor_hidden=32",
    "--set",
    "model.pointer_dim=8",
    "--set",
    "train.batch_size=64",
    "--set",
    "train.device=cpu",
    "--set",
    "mask.kind=random",
    "--no-progress",
]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _args(h5ad, out, steps, every=10):
    return [
        "pretrain",
        str(h5ad),
        "--out",
        str(out),
        "--set",
        f"train.max_steps={steps}",
        "--set",
        "train.log_every=5",
        "--set",
        f"train.eval_every={every}",
        "--set",
        f"train.checkpoint_every={every}",
        *TINY,
    ]


def _single(h5ad, out, steps, **kw):
    return subprocess.run(
        [sys.executable, "-m", "celljepa.cli", *_args(h5ad, out, steps, **kw)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _torchrun(h5ad, out, steps, **kw):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "celljepa.cli",
            *_args(h5ad, out, steps, **kw),
        ],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ranks(h5ad, out, steps):
    """Two ranks started by hand with the variables torchrun sets (so each process can be signalled)."""
    port = _free_port()
    procs = []
    for rank in range(2):
        env = {
            **ENV,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "celljepa.cli", *_args(h5ad, out, steps)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return procs


def _weights(path):
    return torch.load(path, weights_only=True)["modules"]


def _assert_same_weights(a, b, atol=WEIGHT_ATOL):
    worst = 0.0
    for part in a:
        for name, tensor in a[part].items():
            worst = max(worst, float((tensor.float() - b[part][name].float()).abs().max()))
    assert worst <= atol, f"largest weight difference {worst:.2e} > {atol:.0e}"
    return worst


def _train_records(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"split"' not in x]


def test_env_info_reads_torchrun_and_srun_layouts(monkeypatch):
    for name in (
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "SLURM_PROCID",
        "SLURM_STEP_NUM_TASKS",
        "SLURM_LOCALID",
        "SLURM_STEP_ID",
    ):
        monkeypatch.delenv(name, raising=False)
    assert env_info() is None
    monkeypatch.setenv("SLURM_NTASKS", "4")  # the batch script of a 4-task job is still one process
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "4")
    monkeypatch.setenv("SLURM_PROCID", "0")
    assert env_info() is None
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    info = env_info()
    assert (info.rank, info.world_size, info.local_rank, info.launcher) == (3, 4, 1, "srun")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert env_info().launcher == "torchrun"  # torchrun's variables win inside an allocation
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert env_info() is None


@pytest.mark.extended
def test_two_rank_gloo_run_matches_single_process_with_the_same_global_batch(ingested, tmp_path):
    h5ad = ingested["kang2018"]
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    one = _single(h5ad, single, 20)
    assert one.returncode == 0, one.stderr
    two = _torchrun(h5ad, ddp, 20)
    assert two.returncode == 0, two.stderr
    assert "distributed: 2 ranks (torchrun, gloo backend)" in two.stderr
    worst = _assert_same_weights(_weights(single / "model" / "model.pt"), _weights(ddp / "model" / "model.pt"))
    print(f"2-rank vs 1-process, 20 steps: largest weight difference {worst:.2e}")
    # the teacher (EMA) is part of the weights compared; the metrics agree too, and only rank 0 wrote them
    a, b = _train_records(single), _train_records(ddp)
    assert [r["step"] for r in b] == [5, 10, 15, 20]
    for ra, rb in zip(a, b, strict=True):
        for key in ("loss", "pred_loss", "var_loss", "cov_loss", "effective_rank", "std_min"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-4, abs=1e-6), key
    assert json.loads((ddp / "eval.json").read_text())["n_train_cells"] == 1975
    assert not list(ddp.rglob("*.tmp"))


def test_ddp_refuses_a_batch_that_does_not_split_over_the_ranks(ingested, tmp_path):
    h5ad = ingested["kang2018"]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "celljepa.cli",
            *_args(h5ad, tmp_path / "odd", 4),
            "--set",
            "train.batch_size=63",
        ],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode != 0
    assert "cannot be split evenly over 2 ranks" in proc.stderr and "multiple of 2" in proc.stderr


@pytest.mark.extended
def test_resume_under_ddp_and_checkpoints_move_between_ddp_and_one_process(ingested, tmp_path):
    h5ad, steps = ingested["kang2018"], 200
    ref = tmp_path / "ref"
    assert _single(h5ad, ref, steps).returncode == 0
    reference = _weights(ref / "model" / "model.pt")

    # 1. a DDP run stopped by SIGUSR1 sent to rank 1 only: both ranks stop after the same step, rank 0 writes
    #    the checkpoint, both exit 75; a single process resumes it to the end.
    run = tmp_path / "ddp-then-single"
    procs = _ranks(h5ad, run, steps)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and all(p.poll() is None for p in procs):
        if (run / "checkpoints" / "last.pt").is_file():
            procs[1].send_signal(signal.SIGUSR1)
            break
        time.sleep(0.02)
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [EXIT_INTERRUPTED] * 2, errs
    assert "stopped by SIGUSR1" in errs[1] and "stopped by a signal on another rank" in errs[0]
    stopped = load_checkpoint(run / "checkpoints" / "last.pt")["step"]
    assert 10 <= stopped < steps
    done = _single(h5ad, run, steps)
    assert done.returncode == 0, done.stderr
    assert f"at step {stopped} of {steps}" in done.stderr
    _assert_same_weights(reference, _weights(run / "model" / "model.pt"))
    assert [r["step"] for r in _train_records(run)] == list(range(5, steps + 1, 5))

    # 2. a single process stopped by SIGUSR1, resumed under DDP (torchrun) to the end
    run = tmp_path / "single-then-ddp"
    proc = subprocess.Popen(
        [sys.executable, "-m", "celljepa.cli", *_args(h5ad, run, steps)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if (run / "checkpoints" / "last.pt").is_file():
            proc.send_signal(signal.SIGUSR1)
            break
        time.sleep(0.02)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_INTERRUPTED, err
    stopped = load_checkpoint(run / "checkpoints" / "last.pt")["step"]
    assert stopped < steps
    done = _torchrun(h5ad, run, steps)
    assert done.returncode == 0, done.stderr
    assert f"at step {stopped} of {steps}" in done.stderr
    _assert_same_weights(reference, _weights(run / "model" / "model.pt"))
