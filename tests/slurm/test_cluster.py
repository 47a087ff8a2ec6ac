"""Against a real Slurm cluster (``tests/slurm/local_cluster.sh start``): a sweep job array, the SIGUSR1 →
checkpoint → requeue → resume cycle, and a 2-rank gloo run under ``srun``.

Without a responding cluster these tests are skipped with the reason; ``.ci/run`` starts one and sets
``CELLJEPA_REQUIRE_SLURM=1``, which turns that skip into a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _grids import tiny_grid

pytestmark = pytest.mark.slurm

BIN = str(Path(sys.executable).parent)
ENV = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1"}
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
]


def _cluster_reason() -> str | None:
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return "Slurm is not installed (sbatch/sinfo not on PATH); start one with tests/slurm/local_cluster.sh start"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except subprocess.SubprocessError as err:
        return f"sinfo did not answer: {err}"
    states = out.stdout.split()
    if out.returncode != 0 or not any(s.startswith(("idle", "mix", "alloc")) for s in states):
        return f"no Slurm node is up (sinfo: {out.stdout.strip() or out.stderr.strip()})"
    return None


@pytest.fixture(scope="module", autouse=True)
def cluster():
    reason = _cluster_reason()
    if reason is not None:
        if os.environ.get("CELLJEPA_REQUIRE_SLURM") == "1":
            pytest.fail(f"CELLJEPA_REQUIRE_SLURM=1 but {reason}")
        pytest.skip(reason)


def _celljepa(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "celljepa.cli", *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def _job(job_id: str) -> dict[str, str]:
    """``scontrol show job`` as a dict (the last record for an array: its tasks are listed one by one)."""
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=30)
    records = []
    for line in out.stdout.splitlines():
        records.append(dict(re.findall(r"(\w+)=(\S*)", line)))
    return {"records": records} if records else {}


def _states(job_id: str) -> list[str]:
    return [r.get("JobState", "?") for r in _job(job_id).get("records", [])]


def _wait(job_id: str, timeout: float = 600) -> list[dict]:
    """Wait until every record of the job has ended; returns the records."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = _job(job_id).get("records", [])
        if records and all(
            r.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL")
            for r in records
        ):
            return records
        time.sleep(1)
    pytest.fail(f"job {job_id} did not end within {timeout} s: {_states(job_id)}")


def _log(folder: Path) -> str:
    return "\n".join(p.read_text() for p in sorted(folder.glob("*.out")))


GRID = tiny_grid("seeds: [0]", "max_folds: 3", "fold_tasks: true")


def test_sweep_job_array_runs_every_task_and_the_collect_job_merges_them(tmp_path):
    (tmp_path / "grid.yaml").write_text(GRID)
    out = _celljepa(
        "slurm", "sweep", "--time", "20", "--submit", "--", "--grid", "grid.yaml", "--out", "sw", cwd=tmp_path
    ).stdout.split()
    assert len(out) == 2 and all(x.isdigit() for x in out), out
    array_id, collect_id = out
    tasks = _wait(array_id)
    logs = _log(tmp_path / "sw" / "slurm")
    assert sorted(r["ArrayTaskId"] for r in tasks) == ["0", "1", "2"], tasks
    assert [r["JobState"] for r in tasks] == ["COMPLETED"] * 3, logs
    (collect,) = _wait(collect_id)
    assert collect["JobState"] == "COMPLETED", logs
    assert collect["Dependency"] in ("(null)", "") or f"afterany:{array_id}" in collect["Dependency"]
    for fold in range(3):
        assert (tmp_path / "sw" / "default" / "seed0" / f"fold{fold}" / "metrics_combined.json").is_file()
    table = json.loads((tmp_path / "sw" / "ablation.json").read_text())
    assert table["finished"] == 3 and not table["missing"]
    (row,) = table["rows"]
    assert row["folds"] == 3 and row["dataset_split"] == "sciplex_gxe/S2_unseen_context"
    assert "3/3 tasks finished" in logs


def test_usr1_checkpoints_requeues_and_the_job_resumes(ingested, tmp_path):
    steps = 1500
    run = tmp_path / "run"
    job = _celljepa(
        "slurm",
        "pretrain",
        "--time",
        "30",
        "--signal-seconds",
        "60",
        "--submit",
        "--",
        str(ingested["kang2018"]),
        "--out",
        "run",
        "--set",
        f"train.max_steps={steps}",
        "--set",
        "train.log_every=50",
        "--set",
        "train.checkpoint_every=50",
        "--set",
        "train.eval_every=500",
        *TINY,
        cwd=tmp_path,
    ).stdout.strip()
    assert job.isdigit(), job
    deadline = time.monotonic() + 300
    while not (run / "checkpoints" / "last.pt").is_file():
        assert time.monotonic() < deadline, f"no checkpoint after 300 s: {_states(job)} {_log(run / 'slurm')}"
        time.sleep(0.2)
    # the job step (the srun'd celljepa pretrain), not the batch shell, gets the signal, as with --signal=USR1@S
    sent = subprocess.run(["scancel", "--signal=USR1", job], capture_output=True, text=True, timeout=30)
    assert sent.returncode == 0, sent.stderr
    (record,) = _wait(job, timeout=900)
    log = _log(run / "slurm")
    assert record["JobState"] == "COMPLETED", log
    assert record["Restarts"] == "1", record
    assert "stopped by SIGUSR1 after step" in log and f"requeueing job {job}" in log
    stopped = int(re.search(r"stopped by SIGUSR1 after step (\d+)", log).group(1))
    assert 0 < stopped < steps
    assert f"resuming from run/checkpoints/last.pt at step {stopped} of {steps}" in log
    from celljepa.train.checkpoint import load_checkpoint

    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == steps
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r.get("split") != "eval"] == list(range(50, steps + 1, 50))
    assert (run / "eval.json").is_file() and (run / "model" / "model.pt").is_file()


def test_srun_two_rank_gloo_run_matches_one_process(ingested, tmp_path):
    args = [str(ingested["kang2018"]), "--set", "train.max_steps=20", "--set", "train.log_every=5", *TINY]
    job = _celljepa(
        "slurm",
        "pretrain",
        "--time",
        "20",
        "--ntasks-per-node",
        "2",
        "--submit",
        "--",
        *args,
        "--out",
        "ddp",
        cwd=tmp_path,
    ).stdout.strip()
    single = subprocess.run(
        [sys.executable, "-m", "celljepa.cli", "pretrain", *args, "--out", "one", "--no-progress"],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr
    (record,) = _wait(job)
    log = _log(tmp_path / "ddp" / "slurm")
    assert record["JobState"] == "COMPLETED", log
    assert record["NumTasks"] == "2" or "distributed: 2 ranks" in log
    assert "distributed: 2 ranks (srun, gloo backend)" in log
    a = torch.load(tmp_path / "one" / "model" / "model.pt", weights_only=True)["modules"]
    b = torch.load(tmp_path / "ddp" / "model" / "model.pt", weights_only=True)["modules"]
    worst = max(float((a[p][n].float() - b[p][n].float()).abs().max()) for p in a for n in a[p])
    assert worst <= 1e-5, worst


def test_sbatch_refusal_reaches_the_user(tmp_path, monkeypatch, capsys):
    from celljepa.cli import main

    monkeypatch.chdir(tmp_path)
    code = main(["slurm", "pretrain", "--partition", "no-such-partition", "--submit", "--", "d.h5ad", "--out", "r"])
    err = capsys.readouterr().err
    assert code == 1 and "sbatch refused" in err and "invalid partition" in err.lower(), err
    assert (tmp_path / "r" / "slurm" / "pretrain.sbatch").is_file()  # kept, to submit by hand


BENCH = [
    "--max-folds",
    "1",
    "--jepa-steps",
    "400",
    "--jepa-set",
    "model.n_hidden=32",
    "--jepa-set",
    "model.predictor_hidden=32",
    "--jepa-set",
    "model.n_latent=16",
    "--jepa-set",
    "train.batch_size=64",
    "--transition-set",
    "max_steps=60",
]


def test_benchmark_array_requeues_a_signalled_task_and_collects(tmp_path):
    """5 fold tasks of the demo as a job array; task 0 gets SIGUSR1 mid-fold, exits 75, is requeued and finishes;
    the collect job then merges all 5 folds."""
    out = _celljepa(
        "slurm", "benchmark", "--time", "20", "--submit", "--", "--out", "bm", *BENCH, cwd=tmp_path
    ).stdout.split()
    assert len(out) == 2 and all(x.isdigit() for x in out), out
    array_id, collect_id = out
    lock = tmp_path / "bm" / "norman2019" / "S1_unseen_perturbation" / "split_seed0" / "fold0" / ".celljepa.lock"
    deadline = time.monotonic() + 300
    while not lock.is_file():  # task 0 is inside its fold: the handlers are installed, the fold is running
        assert time.monotonic() < deadline, f"task 0 did not start: {_states(array_id)}"
        time.sleep(0.05)
    # SIGUSR1 to the task's celljepa process (the lock names it), as Slurm's --signal=USR1@S sends it to the job
    # step. Not `scancel --signal`: for an array task slurmctld answers "try again later" while it delivers, and
    # scancel's retries signal the task again after its requeue.
    os.kill(json.loads(lock.read_text())["pid"], signal.SIGUSR1)
    tasks = _wait(array_id, timeout=900)
    logs = _log(tmp_path / "bm" / "slurm")
    assert sorted(r["ArrayTaskId"] for r in tasks) == ["0", "1", "2", "3", "4"], tasks
    assert [r["JobState"] for r in tasks] == ["COMPLETED"] * 5, logs
    restarts = {r["ArrayTaskId"]: r["Restarts"] for r in tasks}
    assert restarts["0"] == "1", (restarts, logs)
    assert "stopped by SIGUSR1: finished folds are kept" in logs and "requeueing job" in logs
    (collect,) = _wait(collect_id)
    assert collect["JobState"] == "COMPLETED", _log(tmp_path / "bm" / "slurm")
    combined = json.loads((tmp_path / "bm" / "metrics_combined.json").read_text())
    assert set(combined["results"]) == {
        "norman2019/S1_unseen_perturbation",
        "norman2019/S1g_unseen_genes",
        "norman2019/S3_unseen_combo",
        "sciplex_gxe/S1_unseen_perturbation",
        "sciplex_gxe/S2_unseen_context",
    }
    assert combined["provenance"]["folds_resumed"] == 5  # the collect job computed nothing
    assert "jepa_set" in combined["results"]["norman2019/S1_unseen_perturbation"]["methods"]


def test_holdout_encoder_array_then_fold_array_then_collect(tmp_path):
    """The holdout as three jobs: the encoders (array), the folds (array, afterok), the collect job (afterany)."""
    out = _celljepa(
        "slurm",
        "holdout",
        "--time",
        "20",
        "--submit",
        "--",
        "--data",
        "demo",
        "--holdout",
        "sciplex_gxe",
        "--max-folds",
        "1",
        "--jepa-steps",
        "12",
        "--jepa-set",
        "model.n_hidden=32",
        "--jepa-set",
        "model.predictor_hidden=32",
        "--jepa-set",
        "model.n_latent=16",
        "--jepa-set",
        "train.batch_size=64",
        "--transition-set",
        "max_steps=20",
        "--out",
        "ho",
        cwd=tmp_path,
    ).stdout.split()
    assert len(out) == 3 and all(x.isdigit() for x in out), out
    encoders, folds, collect = out
    logs = lambda: _log(tmp_path / "ho" / "slurm")  # noqa: E731
    assert [r["JobState"] for r in _wait(encoders)] == ["COMPLETED"] * 2, logs()
    fold_tasks = _wait(folds)
    assert [(r["ArrayTaskId"], r["JobState"]) for r in fold_tasks] == [("2", "COMPLETED")], logs()
    (record,) = _wait(collect)
    assert record["JobState"] == "COMPLETED", logs()
    result = json.loads((tmp_path / "ho" / "holdout.json").read_text())
    assert (
        result["holdout"] == "sciplex_gxe"
        and "jepa_set_others" in result["prediction"]["S1_unseen_perturbation"]["methods"]
    )
    assert (tmp_path / "ho" / "encoders" / "self" / "inputs.json").is_file()


LOCAL_CLUSTER = Path(__file__).with_name("local_cluster.sh")


def test_cold_start_after_the_daemons_died_mid_job_comes_up_idle(tmp_path):
    """Daemons killed while a job runs (a killed session, a reboot): the next ``start`` forgets that dead job.

    A controller that recovered it would count it as running on a node that has no such process: the node
    stays 'mix' and ``start`` fails waiting for 'idle'. Runs last in this file: it restarts the cluster.
    """
    conf = Path("/etc/slurm/slurm.conf")
    first = conf.read_text().splitlines()[0] if conf.is_file() else ""
    match = re.match(r"# Generated by tests/slurm/local_cluster.sh for state dir (.*)\.$", first)
    if match is None or os.geteuid() != 0:
        pytest.skip("the cluster was not started by local_cluster.sh as root; not restarting it")
    state = Path(match.group(1))
    job = subprocess.run(
        ["sbatch", "--parsable", "--wrap", "sleep 300"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        check=True,
    ).stdout.strip()
    deadline = time.monotonic() + 60
    while _states(job) != ["RUNNING"] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _states(job) == ["RUNNING"], _states(job)
    for name in ("slurmctld", "slurmd"):
        os.kill(int((state / f"{name}.pid").read_text()), signal.SIGKILL)
    subprocess.run(["pkill", "-KILL", "slurmstepd"], check=False)
    subprocess.run(["pkill", "-KILL", "-f", "^sleep 300$"], check=False)
    time.sleep(1)

    started = subprocess.run(
        ["bash", str(LOCAL_CLUSTER), "start", str(state)], capture_output=True, text=True, timeout=180
    )
    assert started.returncode == 0, started.stderr
    assert "forgetting the jobs of its last run" in started.stderr
    assert subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=20).stdout.split() == [
        "idle"
    ]
    after = subprocess.run(
        ["sbatch", "--parsable", "--wrap", "true"], capture_output=True, text=True, timeout=30, cwd=tmp_path, check=True
    ).stdout.strip()
    assert int(after) > int(job), (job, after)
    assert [r["JobState"] for r in _wait(after, timeout=120)] == ["COMPLETED"]
