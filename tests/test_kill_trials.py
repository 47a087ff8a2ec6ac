"""SIGKILL at a random point of a benchmark, a pretrain and a report: a run folder never mixes two runs.

Each trial starts a second run into a folder that holds a finished first run (``--overwrite``, ``--restart``, a
new report), kills it (SIGKILL: no handler, no clean-up) at a random moment of its measured duration, and checks
the folder: it is the old run, or the complete new one, never a mix; the next run finishes, with nothing left
beside the folder.
Slow (about 15 minutes for ``CELLJEPA_KILL_TRIALS`` = 10 per kind); run with ``pytest -m slow
tests/test_kill_trials.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from celljepa._io import LOCK_NAME

pytestmark = pytest.mark.slow

TRIALS = int(os.environ.get("CELLJEPA_KILL_TRIALS", "10"))
FOLD_FILES = (
    "config.json",
    "per_condition.csv",
    "split.json",
    "eval_space.npz",
    "report.md",
    "fold_frames.h5",
    "metrics.json",
)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "celljepa.cli", *args]


def _run(argv: list[str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    return time.perf_counter() - t0


def _killed(argv: list[str], after: float) -> bool:
    """Start ``argv``, SIGKILL it ``after`` seconds later; whether it was still running."""
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    try:
        proc.wait(timeout=after)
        return False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return True


def _kill_trials(argv: list[str], duration: float, seed: int):
    """Run ``argv`` TRIALS times, each SIGKILLed at a seeded random 5-100 % of ``duration``.

    Yields ``(trial, seconds, whether it was still running)``.
    """
    rng = random.Random(seed)
    for trial in range(TRIALS):
        after = rng.uniform(0.05, 1.0) * duration
        yield trial, after, _killed(argv, after)


def _tree(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != LOCK_NAME
    }


def _asides(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if "~" in p.name)


def _fold_digest(folder: Path) -> str | None:
    """The config digest of a complete fold folder, None when absent; fails on a partial or mixed one."""
    files = {p.name for p in folder.iterdir() if p.name != LOCK_NAME} if folder.is_dir() else set()
    if not files:
        return None
    missing = [f for f in FOLD_FILES if f not in files]
    assert not missing, f"{folder} is partial: {sorted(files)} lacks {missing}"
    metrics = json.loads((folder / "metrics.json").read_text())
    config = json.loads((folder / "config.json").read_text())
    assert metrics["config_digest"] == config["config_digest"], f"{folder} mixes two runs"
    return metrics["config_digest"]


@pytest.fixture(scope="module")
def kang(ingested):
    return ingested["kang2018"]


def test_benchmark_killed_anywhere_leaves_whole_folds_and_resumes(kang, tmp_path):
    base = ["benchmark", "--data", f"kang2018={kang}", "--splits", "S2_unseen_context:3", "--no-jepa", "--no-progress"]
    reference = tmp_path / "reference"
    duration = _run(_cli(*base, "--transductive", "--out", str(reference)))
    new = {f.name: _fold_digest(f) for f in sorted(reference.rglob("fold*")) if f.is_dir()}
    rng = random.Random(0)
    killed = 0
    for trial in range(TRIALS):
        out = tmp_path / f"trial{trial}"
        _run(_cli(*base, "--out", str(out)))  # the finished first run (inductive)
        old = {f.name: _fold_digest(f) for f in sorted(out.rglob("fold*")) if f.is_dir()}
        after = rng.uniform(0.05, 1.0) * duration
        killed += _killed(_cli(*base, "--transductive", "--overwrite", "--out", str(out)), after)
        now = {f.name: _fold_digest(f) for f in sorted(out.rglob("fold*")) if f.is_dir()}
        # every fold folder is whole (checked in _fold_digest), and the whole folder is the old run or the new one
        combined = out / "metrics_combined.json"
        assert now in (old, new), f"trial {trial}: folds of two runs"
        assert combined.is_file(), f"trial {trial}: the combined result is gone"
        state = "old run" if now == old else "new run"
        print(f"benchmark trial {trial}: killed at {after:.1f} s of {duration:.1f} s: {state}")
        _run(_cli(*base, "--transductive", "--overwrite", "--out", str(out)))  # resumes, replaces what is left
        assert _asides(out / "kang2018" / "S2_unseen_context" / "split_seed0") == []
        result = json.loads(combined.read_text())
        expected = json.loads((reference / "metrics_combined.json").read_text())
        assert result["results"] == expected["results"], f"trial {trial}: the resumed run differs"
    assert killed >= TRIALS // 2, f"only {killed} of {TRIALS} runs were still running when killed"


def test_pretrain_restart_killed_anywhere_keeps_the_finished_run(kang, tmp_path):
    base = [
        "pretrain",
        str(kang),
        "--no-progress",
        "--set",
        "mask.kind=random",
        "--set",
        "train.log_every=1",
        "--set",
        "train.checkpoint_every=5",
        "--set",
        "model.n_hidden=64",
        "--set",
        "model.n_latent=16",
    ]
    out = tmp_path / "run"
    _run(_cli(*base, "--set", "train.max_steps=10", "--out", str(out)))
    old = _tree(out)
    new_args = [*base, "--set", "train.max_steps=30", "--restart", "--out", str(out)]
    duration = _run(_cli(*new_args[:-2], "--out", str(tmp_path / "timing")))
    killed = 0
    for trial, after, running in _kill_trials(_cli(*new_args), duration, seed=1):
        killed += running
        now = _tree(out)
        print(
            f"pretrain trial {trial}: killed at {after:.1f} s of {duration:.1f} s: "
            f"{'old run' if now == old else 'new run'}"
        )
        if now != old:  # the new run complete and swapped in
            assert (out / "eval.json").is_file()
            assert "max_steps: 30" in (out / "config.yaml").read_text()
            _run(_cli(*base, "--set", "train.max_steps=10", "--restart", "--out", str(out)))
            old = _tree(out)
        else:
            assert "max_steps: 10" in (out / "config.yaml").read_text()
    _run(_cli(*new_args))
    assert "max_steps: 30" in (out / "config.yaml").read_text() and (out / "eval.json").is_file()
    assert _asides(tmp_path) == []
    assert killed >= TRIALS // 2


def test_report_killed_anywhere_is_the_old_or_the_new_report(kang, tmp_path):
    runs = tmp_path / "runs"
    base = [
        "benchmark",
        "--data",
        f"kang2018={kang}",
        "--splits",
        "S2_unseen_context:3",
        "--no-jepa",
        "--no-progress",
        "--max-folds",
        "1",
    ]
    _run(_cli(*base, "--out", str(runs / "a")))
    _run(_cli(*base, "--transductive", "--out", str(runs / "b")))
    out = tmp_path / "report"
    _run(_cli("report", "--runs", str(runs / "a"), "--out", str(out), "--title", "old"))
    old = _tree(out)
    new = ["report", "--runs", str(runs / "a"), str(runs / "b"), "--out", str(out), "--title", "new"]
    duration = _run(_cli(*new[:-4], "--out", str(tmp_path / "timing"), "--title", "new"))
    killed = 0
    for trial, after, running in _kill_trials(_cli(*new), duration, seed=2):
        killed += running
        now = _tree(out)
        print(
            f"report trial {trial}: killed at {after:.1f} s of {duration:.1f} s: "
            f"{'old report' if now == old else 'new report'}"
        )
        if now != old:
            report = json.loads((out / "report.json").read_text())
            assert report["title"] == "new" and len(report["runs"]) == 2
            assert "new" in (out / "report.md").read_text().splitlines()[0]
            _run(_cli("report", "--runs", str(runs / "a"), "--out", str(out), "--title", "old"))
            old = _tree(out)
    _run(_cli(*new))
    assert json.loads((out / "report.json").read_text())["title"] == "new" and _asides(tmp_path) == []
    assert killed >= TRIALS // 2
