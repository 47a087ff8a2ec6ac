"""`celljepa slurm`: scripts written under the run folder, wrapped arguments checked, sweeps, submission."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _main(argv: list[str]) -> int:
    from celljepa import cli

    return cli.main(argv)


@pytest.fixture
def cwd(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _srun(text: str) -> list[str]:
    return shlex.split(next(line for line in text.splitlines() if line.startswith("srun ")))[1:]


def _flag(text: str, name: str) -> str | None:
    for line in text.splitlines():
        if line.startswith(f"#SBATCH --{name}="):
            return shlex.split(line.split("=", 1)[1])[0]
    return None


def test_pretrain_script_written_into_the_run_folder(cwd, capsys):
    argv = [
        "slurm",
        "pretrain",
        "--time",
        "12:00:00",
        "--gpus-per-node",
        "1",
        "--cpus-per-task",
        "8",
        "--mem",
        "64G",
        "--partition",
        "gpu",
        "--setup",
        "source .venv/bin/activate",
        "--sbatch",
        "qos=long",
        "--sbatch",
        "exclusive",
        "--",
        "data/my screen.h5ad",
        "--out",
        "runs/p1",
        "--set",
        "train.ema=off",
    ]
    assert _main(argv) == 0
    out, err = capsys.readouterr()
    script = cwd / "runs/p1/slurm/pretrain.sbatch"
    assert script.is_file() and script.stat().st_mode & 0o111
    assert out == script.read_text()
    assert err.splitlines()[-1] == "# written to runs/p1/slurm/pretrain.sbatch"
    assert _srun(out) == [
        "celljepa",
        "pretrain",
        "data/my screen.h5ad",
        "--out",
        "runs/p1",
        "--set",
        "train.ema=off",
        "--no-progress",
    ]
    assert _flag(out, "chdir") == str(cwd)
    assert _flag(out, "output") == str(cwd / "runs/p1/slurm/%x-%j.out")
    assert _flag(out, "job-name") == "celljepa-pretrain"
    assert _flag(out, "signal") == "USR1@300" and "#SBATCH --requeue" in out and "scontrol requeue" in out
    assert _flag(out, "time") == "12:00:00" and _flag(out, "partition") == "gpu" and _flag(out, "qos") == "long"
    assert "#SBATCH --exclusive" in out and "\nsource .venv/bin/activate\n" in out
    assert "MASTER_ADDR" not in out


def test_pretrain_keeps_no_progress_once_and_can_drop_the_signal(cwd, capsys):
    assert (
        _main(
            [
                "slurm",
                "pretrain",
                "--signal-seconds",
                "0",
                "--no-requeue",
                "--job-name",
                "j",
                "--",
                "d.h5ad",
                "--out",
                "/abs/run",
                "--no-progress",
                "--restart",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert _srun(out)[-3:] == ["/abs/run", "--no-progress", "--restart"]
    assert _srun(out).count("--no-progress") == 1
    assert "--signal" not in out and "--requeue" not in out and _flag(out, "job-name") == "j"
    assert _flag(out, "output") == "/abs/run/slurm/%x-%j.out"


def test_restart_in_a_requeueable_job_is_refused(cwd, capsys):
    assert _main(["slurm", "pretrain", "--", "d.h5ad", "--out", "run", "--restart"]) == 1
    assert "--restart" in capsys.readouterr().err and not (cwd / "run").exists()


def test_distributed_pretrain_and_transition(cwd, capsys):
    assert (
        _main(
            [
                "slurm",
                "pretrain",
                "--nodes",
                "2",
                "--ntasks-per-node",
                "4",
                "--gpus-per-node",
                "4",
                "--",
                "d.h5ad",
                "--out",
                "run",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "export MASTER_ADDR=" in out and "export MASTER_PORT=" in out
    assert _flag(out, "nodes") == "2" and _flag(out, "ntasks-per-node") == "4"
    argv = [
        "slurm",
        "transition",
        "--ntasks-per-node",
        "2",
        "--",
        "d.h5ad",
        "--jepa",
        "run",
        "--split-file",
        "s.json",
        "--out",
        "tr",
    ]
    assert _main(argv) == 0
    out = capsys.readouterr().out
    assert (cwd / "tr/slurm/transition.sbatch").read_text() == out
    assert _srun(out)[:6] == ["celljepa", "train-transition", "d.h5ad", "--jepa", "run", "--split-file"]
    assert "MASTER_ADDR" in out
    assert "--signal" not in out and "scontrol requeue" not in out, "transition does not resume mid-run"
    assert _flag(out, "job-name") == "celljepa-transition"


def test_wrapped_typo_fails_before_anything_is_written(cwd, capsys):
    assert _main(["slurm", "pretrain", "--", "d.h5ad", "--outt", "run"]) == 2
    err = capsys.readouterr().err
    assert "error in the arguments after --" in err and "--outt" in err and "usage: celljepa pretrain" in err
    assert list(cwd.iterdir()) == []
    assert _main(["slurm", "pretrain", "--", "d.h5ad", "--out", "run", "--set", "no-dot"]) == 2
    assert "SECTION.KEY=VALUE" in capsys.readouterr().err
    assert _main(["slurm", "transition", "--", "d.h5ad", "--out", "run"]) == 2  # --jepa and --split-file missing
    assert "--jepa" in capsys.readouterr().err
    assert list(cwd.iterdir()) == []


def test_missing_wrapped_arguments(cwd, capsys):
    assert _main(["slurm", "benchmark", "--time", "10"]) == 2
    assert "put them after --" in capsys.readouterr().err


def test_slurm_without_a_subcommand_prints_help(capsys):
    assert _main(["slurm"]) == 2
    assert "pretrain" in capsys.readouterr().out


def test_benchmark_is_not_distributed(cwd, capsys):
    assert _main(["slurm", "benchmark", "--nodes", "2", "--", "--out", "b"]) == 1
    err = capsys.readouterr().err
    assert "does not train distributed" in err and "--nodes 1" in err
    assert list(cwd.iterdir()) == []


def test_benchmark_array_of_fold_tasks_and_collect(cwd, capsys):
    """One array task per fold task (the demo, one fold per split: 5), requeued on SIGUSR1; then a collect job."""
    assert (
        _main(
            [
                "slurm",
                "benchmark",
                "--gpus-per-node",
                "1",
                "--max-parallel",
                "3",
                "--",
                "--out",
                "b",
                "--max-folds",
                "1",
                "--no-jepa",
            ]
        )
        == 0
    )
    out, err = capsys.readouterr()
    array = (cwd / "b/slurm/benchmark.sbatch").read_text()
    collect = (cwd / "b/slurm/collect.sbatch").read_text()
    assert out == array + collect and "afterany" in err
    assert _flag(array, "array") == "0-4%3" and _flag(array, "signal") == "USR1@300"
    assert _srun(array) == [
        "celljepa",
        "benchmark",
        "--out",
        "b",
        "--max-folds",
        "1",
        "--no-jepa",
        "--task",
        "${SLURM_ARRAY_TASK_ID}",
        "--no-progress",
    ]
    assert "scontrol requeue" in array  # exit 75 (a task stopped by SIGUSR1) requeues it
    assert _srun(collect) == ["celljepa", "benchmark", "--out", "b", "--max-folds", "1", "--no-jepa", "--collect"]
    assert _flag(collect, "array") is None and "--requeue" not in collect
    assert _main(["slurm", "benchmark", "--", "--out", "c", "--max-folds", "1", "--task", "2"]) == 1
    assert "--task" in capsys.readouterr().err


def test_bad_sbatch_values_are_input_errors(cwd, capsys):
    assert _main(["slurm", "pretrain", "--time", "48h", "--", "d.h5ad", "--out", "run"]) == 1
    assert "Fix: use D-HH:MM:SS" in capsys.readouterr().err
    assert _main(["slurm", "pretrain", "--sbatch", "time=1", "--", "d.h5ad", "--out", "run"]) == 1
    assert "collides" in capsys.readouterr().err
    assert _main(["slurm", "pretrain", "--sbatch", "qos=a", "--sbatch", "qos=b", "--", "d.h5ad", "--out", "r"]) == 1
    assert "given twice" in capsys.readouterr().err
    assert list(cwd.iterdir()) == []


GRID = """\
seeds: [0]
max_folds: 1
jepa:
  train.max_steps: 10
datasets:
  demo:
    norman2019: [S1_unseen_perturbation]
ablations:
  default: {}
  ema_off: {train.ema: false}
  module_masks: {mask.kind: module}
"""


def test_sweep_array_and_collect(cwd, capsys):
    (cwd / "grid.yaml").write_text(GRID)
    argv = [
        "slurm",
        "sweep",
        "--gpus-per-node",
        "1",
        "--max-parallel",
        "2",
        "--account",
        "lab",
        "--",
        "--grid",
        "grid.yaml",
        "--out",
        "runs/sw",
    ]
    assert _main(argv) == 0
    out, err = capsys.readouterr()
    sweep = (cwd / "runs/sw/slurm/sweep.sbatch").read_text()
    collect = (cwd / "runs/sw/slurm/collect.sbatch").read_text()
    assert out == sweep + collect
    assert "# written to runs/sw/slurm/sweep.sbatch" in err and "afterany" in err
    assert _flag(sweep, "array") == "0-2%2"
    assert _flag(sweep, "output") == str(cwd / "runs/sw/slurm/%x-%A_%a.out")
    srun = next(line for line in sweep.splitlines() if line.startswith("srun "))
    assert srun == ('srun celljepa sweep --grid grid.yaml --out runs/sw --task "${SLURM_ARRAY_TASK_ID}" --no-progress')
    assert _flag(collect, "array") is None and _flag(collect, "gpus-per-node") is None
    assert _srun(collect) == ["celljepa", "sweep", "--grid", "grid.yaml", "--out", "runs/sw", "--collect"]
    assert _flag(collect, "job-name") == "celljepa-sweep-collect" and _flag(collect, "account") == "lab"
    assert _flag(collect, "cpus-per-task") == "1" and "--requeue" not in collect

    assert _main(["slurm", "sweep", "--", "--grid", "grid.yaml", "--out", "runs/sw2"]) == 0
    assert _flag(capsys.readouterr().out, "array") == "0-2"


def test_sweep_refuses_task_and_parallel_tasks(cwd, capsys):
    (cwd / "grid.yaml").write_text(GRID)
    assert _main(["slurm", "sweep", "--", "--grid", "grid.yaml", "--out", "o", "--task", "1"]) == 1
    assert "--task" in capsys.readouterr().err
    assert _main(["slurm", "sweep", "--ntasks-per-node", "2", "--", "--grid", "grid.yaml", "--out", "o"]) == 1
    assert "--max-parallel" in capsys.readouterr().err
    assert _main(["slurm", "sweep", "--", "--grid", "missing.yaml", "--out", "o"]) == 1
    assert "missing.yaml does not exist" in capsys.readouterr().err
    assert [p.name for p in cwd.iterdir()] == ["grid.yaml"]


def test_submit_without_sbatch_names_sbatch(cwd, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(cwd / "empty"))
    assert _main(["slurm", "pretrain", "--submit", "--", "d.h5ad", "--out", "run"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "sbatch was not found on PATH" in err and "drop --submit" in err
    assert (cwd / "run/slurm/pretrain.sbatch").is_file(), "the script is kept for a manual sbatch"


def test_registered_in_the_main_cli(cwd, capsys):
    from celljepa import cli

    assert cli.main(["slurm", "pretrain", "--", "d.h5ad", "--out", "run"]) == 0
    assert capsys.readouterr().out == (cwd / "run/slurm/pretrain.sbatch").read_text()
    assert cli.main(["slurm", "benchmark", "--nodes", "3", "--", "--out", "b"]) == 1
    assert capsys.readouterr().err.startswith("celljepa slurm: error: celljepa benchmark does not train distributed")


def test_holdout_arrays_encoders_then_folds_then_collect(cwd, capsys):
    argv = [
        "slurm",
        "holdout",
        "--max-parallel",
        "2",
        "--",
        "--data",
        "demo",
        "--holdout",
        "sciplex_gxe",
        "--max-folds",
        "2",
        "--out",
        "h",
    ]
    assert _main(argv) == 0
    out, err = capsys.readouterr()
    enc = (cwd / "h/slurm/holdout-encoders.sbatch").read_text()
    folds = (cwd / "h/slurm/holdout-folds.sbatch").read_text()
    collect = (cwd / "h/slurm/collect.sbatch").read_text()
    assert out == enc + folds + collect
    # norman2019 is pretrained on (one model seed) and sciplex_gxe alone: 2 encoder tasks, then 2 folds
    assert _flag(enc, "array") == "0-1%2" and _flag(folds, "array") == "2-3%2"
    assert _srun(folds)[-3:] == ["--task", "${SLURM_ARRAY_TASK_ID}", "--no-progress"]
    assert _srun(collect)[-1] == "--collect" and _flag(collect, "array") is None
    assert "--dependency=afterok:$j0" in err and "--dependency=afterany:$j1" in err
