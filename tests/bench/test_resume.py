"""A benchmark stopped mid-way resumes: finished folds are read back (same numbers), the rest recomputed."""

from __future__ import annotations

import json
import math

import pytest
import scipy.sparse as sp

from celljepa._errors import InputError
from celljepa._io import folder_lock
from celljepa.bench import EvalConfig, RunConfig, benchmark, demo_datasets
from celljepa.bench.run import benchmark_tasks
from celljepa.bench.tasks import FRAMES_FILE, data_fingerprint

PLAN = {"sciplex_gxe": {"S2_unseen_context": 3}}
# what differs between two runs of the same work: clocks, hosts, how many folds were read back
RUN_ONLY = ("wall_time_s", "provenance", "timings", "fixed")  # "fixed": when the claims family was written


def _same(a, b) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = (set(a) | set(b)) - set(RUN_ONLY)
        return all(_same(a.get(k), b.get(k)) for k in keys)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


@pytest.fixture(scope="module")
def sciplex():
    return {"sciplex_gxe": demo_datasets()["sciplex_gxe"]}


def _combined(out):
    return json.loads((out / "metrics_combined.json").read_text())


@pytest.mark.extended
def test_restart_reads_finished_folds_back_and_redoes_the_rest(sciplex, tmp_path, caplog):
    whole = tmp_path / "whole"
    benchmark(sciplex, PLAN, out=whole, progress=False)
    reference = _combined(whole)
    assert reference["provenance"]["folds_resumed"] == 0
    fold_dirs = [
        tmp_path / "whole" / "sciplex_gxe" / "S2_unseen_context" / "split_seed0" / f"fold{k}" for k in range(3)
    ]
    config = json.loads((fold_dirs[0] / "config.json").read_text())
    assert config["data"] == data_fingerprint(sciplex["sciplex_gxe"])
    assert {"date", "host", "git_commit", "command", "torch", "threads"} <= set(config["provenance"])
    assert json.loads((fold_dirs[0] / "metrics.json").read_text())["config_digest"] == config["config_digest"]

    # the state a kill leaves: fold 1 stopped before its metrics.json, fold 2 wrote a torn result table
    (fold_dirs[1] / "metrics.json").unlink()
    (fold_dirs[2] / FRAMES_FILE).write_bytes(b"torn")
    (whole / "metrics_combined.json").unlink()
    with caplog.at_level("INFO", logger="celljepa"):
        benchmark(sciplex, PLAN, out=whole, progress=False)
    resumed = _combined(whole)
    assert resumed["provenance"]["folds_resumed"] == 1
    assert "1 of 3 folds were finished" in caplog.text
    assert _same(resumed, reference)
    assert not _same({**resumed, "results": {}}, reference)  # the comparison can fail
    assert (fold_dirs[1] / "metrics.json").is_file()

    # every fold finished: nothing is recomputed and the numbers are the same again
    benchmark(sciplex, PLAN, out=whole, progress=False)
    assert _combined(whole)["provenance"]["folds_resumed"] == 3 and _same(_combined(whole), reference)


def _tree(folder):
    import hashlib

    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_other_settings_or_other_data_are_refused_unless_overwrite(sciplex, tmp_path):
    """A finished run is never replaced by a run of other inputs, fold by fold, without --overwrite."""
    out = tmp_path / "run"
    benchmark(sciplex, PLAN, out=out, progress=False, max_folds=1)
    before = _tree(out)
    with pytest.raises(
        InputError,
        match=r"holds a finished run made with other inputs.*evaluation.n_pcs: 50 → 20"
        r".*Nothing was written.*--overwrite",
    ):
        benchmark(sciplex, PLAN, out=out, progress=False, max_folds=1, run=RunConfig(evaluation=EvalConfig(n_pcs=20)))
    assert _tree(out) == before
    benchmark(
        sciplex,
        PLAN,
        out=out,
        progress=False,
        max_folds=1,
        run=RunConfig(evaluation=EvalConfig(n_pcs=20)),
        overwrite=True,
    )
    assert _combined(out)["provenance"]["folds_resumed"] == 0
    edited = sciplex["sciplex_gxe"].copy()
    x = edited.X
    (x.data if sp.issparse(x) else x.reshape(-1))[0] += 1.0  # one value of one cell
    before = _tree(out)
    for tasks in (None, [0]):  # a full run and a fold task
        with pytest.raises(InputError, match=r"other inputs.*the data changed \(content fingerprint"):
            benchmark(
                {"sciplex_gxe": edited},
                PLAN,
                out=out,
                progress=False,
                max_folds=1,
                tasks=tasks,
                run=RunConfig(evaluation=EvalConfig(n_pcs=20)),
            )
        assert _tree(out) == before
    benchmark(
        {"sciplex_gxe": edited},
        PLAN,
        out=out,
        progress=False,
        max_folds=1,
        run=RunConfig(evaluation=EvalConfig(n_pcs=20)),
        overwrite=True,
    )
    assert _combined(out)["provenance"]["folds_resumed"] == 0


def test_a_second_benchmark_on_the_same_folder_is_refused(sciplex, tmp_path):
    out = tmp_path / "busy"
    with folder_lock(out):  # another run holds the folder
        with pytest.raises(InputError, match="is in use by process .* two runs must not write one folder"):
            benchmark(sciplex, PLAN, out=out, progress=False, max_folds=1)
    assert not any(out.iterdir())  # nothing written, and the other run's lock left alone until it ends


@pytest.mark.extended
def test_fold_tasks_run_apart_then_collect_equals_one_run(sciplex, tmp_path):
    """Array tasks: each fold task writes its folder; --collect merges them into the numbers of one whole run."""
    whole, apart = tmp_path / "whole", tmp_path / "apart"
    benchmark(sciplex, PLAN, out=whole, progress=False)
    assert len(benchmark_tasks(sciplex, PLAN)) == 3
    with pytest.raises(InputError, match=r"3 of 3 fold tasks are not finished .* task\(s\) 0, 1, 2"):
        benchmark(sciplex, PLAN, out=apart, progress=False, collect=True)
    assert not (apart / "metrics_combined.json").exists()
    assert benchmark(sciplex, PLAN, out=apart, tasks=[2, 0]) == {"tasks": {0: "computed", 2: "computed"}}
    assert not (apart / "metrics_combined.json").exists()  # a task writes its fold only
    with pytest.raises(InputError, match=r"1 of 3 fold tasks are not finished .* task\(s\) 1\. Fix"):
        benchmark(sciplex, PLAN, out=apart, progress=False, collect=True)
    assert benchmark(sciplex, PLAN, out=apart, tasks=[1, 2]) == {"tasks": {1: "computed", 2: "done"}}
    benchmark(sciplex, PLAN, out=apart, progress=False, collect=True)
    assert _same(_combined(apart), _combined(whole))
    with pytest.raises(InputError, match="task 3 does not exist: this benchmark has tasks 0..2"):
        benchmark(sciplex, PLAN, out=apart, tasks=[3])


def test_a_signal_stops_a_task_and_the_next_run_redoes_only_that_fold(sciplex, tmp_path, monkeypatch):
    import os
    import signal

    from celljepa.bench import run as run_module
    from celljepa.bench.tasks import TaskInterrupted

    out = tmp_path / "run"
    benchmark(sciplex, PLAN, out=out, tasks=[0])
    real = run_module.score_fold

    def preempted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGUSR1)  # Slurm's --signal=USR1@S, delivered mid-fold
        return real(*args, **kwargs)

    monkeypatch.setattr(run_module, "score_fold", preempted)
    with pytest.raises(TaskInterrupted, match="stopped by SIGUSR1: finished folds are kept"):
        benchmark(sciplex, PLAN, out=out, tasks=[0, 1])
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # the handler is gone again
    fold1 = out / "sciplex_gxe" / "S2_unseen_context" / "split_seed0" / "fold1"
    assert not (fold1 / "metrics.json").exists() and not (fold1 / ".celljepa.lock").exists()
    monkeypatch.setattr(run_module, "score_fold", real)
    assert benchmark(sciplex, PLAN, out=out, tasks=[0, 1]) == {"tasks": {0: "done", 1: "computed"}}


def test_cli_lists_tasks_and_stops_with_exit_75(ingested, tmp_path, capsys, monkeypatch):
    import os
    import signal

    from celljepa.bench import run as run_module
    from celljepa.cli import main

    args = [
        "benchmark",
        "--data",
        f"kang={ingested['kang2018']}",
        "--splits",
        "S2_unseen_context:7",
        "--max-folds",
        "2",
        "--no-jepa",
        "--out",
        str(tmp_path / "k"),
        "--no-progress",
    ]
    assert main([*args, "--task", "1"]) == 0
    assert capsys.readouterr().out.splitlines() == ["task 1: computed"]
    assert main([*args, "--list"]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [(r[0], r[1], r[2], r[4], r[5]) for r in rows] == [
        ("0", "kang", "S2_unseen_context", "fold0", "to do"),
        ("1", "kang", "S2_unseen_context", "fold1", "done"),
    ]
    monkeypatch.setattr(run_module, "score_fold", lambda *a, **k: os.kill(os.getpid(), signal.SIGUSR1))
    assert main([*args, "--task", "0-1"]) == 75
    assert "stopped by SIGUSR1" in capsys.readouterr().err
    assert main([*args, "--collect"]) == 1
    assert "1 of 2 fold tasks are not finished" in capsys.readouterr().err


def test_a_backed_file_scores_like_the_same_data_in_memory(sciplex, tmp_path):
    """eval-baselines on a backed file (X never loaded whole) gives the numbers of the in-memory run."""
    import anndata as ad
    import numpy as np
    import pandas as pd

    from celljepa.bench import eval_baselines

    path = tmp_path / "sciplex.h5ad"
    sciplex["sciplex_gxe"].write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    kw = dict(split="S2_unseen_context", fold=1, n_folds=3)
    mem = eval_baselines(sciplex["sciplex_gxe"], out=tmp_path / "mem", **kw)
    disk = eval_baselines(backed, out=tmp_path / "disk", **kw)
    backed.file.close()
    a, b = mem.per_condition, disk.per_condition
    pd.testing.assert_frame_equal(a[["method", "condition"]], b[["method", "condition"]])
    for col in ("edistance", "mse", "delta_pearson"):
        np.testing.assert_allclose(b[col].to_numpy(float), a[col].to_numpy(float), rtol=1e-6, atol=1e-9, err_msg=col)
    assert disk.metrics["comparator"] == mem.metrics["comparator"]


def test_backed_benchmark_asks_for_no_jepa(tmp_path, capsys):
    from celljepa.cli import main

    assert main(["benchmark", "--data", "x=missing.h5ad", "--backed", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "--backed" in err and "Fix: add --no-jepa" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.extended
def test_a_run_records_the_commit_it_started_from(sciplex, tmp_path, monkeypatch):
    import celljepa.bench.run as run_module

    real = run_module.provenance
    commits = iter(["aaaa", *["bbbb"] * 1000])  # the checkout moves on after the run started
    monkeypatch.setattr(run_module, "provenance", lambda **kw: {**real(**kw), "git_commit": next(commits)})
    benchmark(sciplex, PLAN, out=tmp_path / "r", progress=False)
    prov = _combined(tmp_path / "r")["provenance"]
    assert prov["git_commit"] == "aaaa" and prov["git_commit_at_end"] == "bbbb"
    assert prov["started"] <= prov["date"]
