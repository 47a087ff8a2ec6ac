"""Faulty inputs as a new user makes them: each ends in a named error that says what to fix, nothing half-written.

One test per case of the hostile-input battery (wrong or lost silently, raw tracebacks, misleading errors).
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from _realdata import real_path

import celljepa as cj
from celljepa._errors import InputError
from celljepa._io import folder_lock
from celljepa.cli import main

S2 = ["--split", "S2_unseen_context", "--fold", "0", "--folds", "3"]


def _files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_integer_log_data_is_not_log_normalised_twice():
    """(a) log data that happen to be integers, with uns['log1p']: refused, never logged a second time."""
    a = cj.datasets.simulate(600, 40, 4, 2, seed=0, preprocessed=False)
    a.X = sp.csr_matrix(np.log1p(a.X.toarray()).round())  # log data rounded to integers
    a.uns["log1p"] = {"base": None}
    before = a.X.copy()
    with pytest.raises(InputError, match=r"uns\['log1p'\] says it was log-transformed.*assume='log1p'"):
        cj.pp.normalize(a)
    assert (a.X != before).nnz == 0 and "counts" not in a.layers
    cj.pp.normalize(a, assume="log1p")
    assert (a.X != before).nnz == 0 and a.uns["preprocess"]["normalized_here"] is False


def test_second_run_on_one_out_folder_is_refused(ingested, tmp_path, capsys):
    """(b) two eval-baselines runs on one --out: the second is refused, not interleaved."""
    out = tmp_path / "run"
    with folder_lock(out):  # the first run, still working
        code = main(["eval-baselines", str(ingested["kang2018"]), *S2, "--out", str(out), "--n-pcs", "12"])
        assert code == 1
    err = capsys.readouterr().err
    assert "is in use by process" in err and "two runs must not write one folder" in err
    assert _files(out) == []


def test_failed_run_keeps_a_folder_another_run_completed(ingested, tmp_path, monkeypatch):
    """(c) a run that fails never deletes what a finished run wrote into the same folder."""
    from celljepa.bench import run as run_module

    out = tmp_path / "run"
    assert main(["eval-baselines", str(ingested["kang2018"]), *S2, "--out", str(out)]) == 0
    done = _files(out)
    assert "metrics.json" in done

    def boom(*args, **kwargs):
        raise RuntimeError("node failure")

    monkeypatch.setattr(run_module, "score_fold", boom)
    with pytest.raises(RuntimeError):
        cj.bench.run.eval_baselines(
            ad.read_h5ad(ingested["kang2018"]), split="S2_unseen_context", fold=0, n_folds=3, out=out
        )
    assert _files(out) == done


@pytest.fixture
def raw_counts_file(tmp_path):
    path = tmp_path / "raw.h5ad"
    cj.datasets.simulate(600, 40, 4, 2, seed=0, preprocessed=False).write_h5ad(path)
    return path


def test_pretrain_on_raw_counts_is_refused(raw_counts_file, tmp_path, capsys):
    """(d) pretraining reads log-normalised data: raw counts are refused before a run folder exists."""
    out = tmp_path / "p"
    assert main(["pretrain", str(raw_counts_file), "--out", str(out), "--fast-dev", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "holds raw counts" in err and "`celljepa ingest` the file first" in err
    assert not out.exists()


@pytest.mark.parametrize("damage", ["truncated", "nan"])
def test_pretrain_on_a_damaged_file_leaves_no_run_folder(tmp_path, capsys, damage):
    a = cj.datasets.simulate(600, 40, 4, 2, seed=0)
    path = tmp_path / "d.h5ad"
    if damage == "nan":
        a.X = a.X.toarray()
        a.X[5, 3] = np.nan
        a.write_h5ad(path)
        match = "NaN/inf"
    else:
        a.write_h5ad(path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        match = "damaged or cut short"
    out = tmp_path / "p"
    assert main(["pretrain", str(path), "--out", str(out), "--fast-dev", "--no-progress"]) == 1
    assert match in capsys.readouterr().err
    assert not out.exists()  # not a folder with only config.yaml


def test_dataset_id_cannot_climb_out_of_out(tmp_path, capsys):
    """(e) --dataset-id .. would write one level above --out."""
    out = tmp_path / "processed"
    code = main(
        [
            "ingest",
            str(real_path("scgen/valid.h5ad")),
            "--dataset-id",
            "..",
            "--out",
            str(out),
            "--format",
            "generic",
            "--perturbation-key",
            "condition",
            "--control-values",
            "control",
            "--context-key",
            "cell_type",
        ]
    )
    assert code == 1
    assert "dataset_id='..'" in capsys.readouterr().err
    assert _files(tmp_path) == []


def test_dataset_id_error_names_the_rule():
    with pytest.raises(InputError, match="does not start with a dot"):
        cj.pp.standardize(
            cj.datasets.demo(preprocessed=False),
            perturbation_key="perturbation",
            control_values="control",
            dataset_id="..",
        )


def test_out_that_is_a_file_is_a_clear_error(ingested, tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("a file")
    assert main(["eval-baselines", str(ingested["kang2018"]), *S2, "--out", str(target)]) == 1
    assert "is a file, not a folder" in capsys.readouterr().err
    assert target.read_text() == "a file"


def test_nan_in_x_is_named_before_scoring(ingested, tmp_path, capsys):
    a = ad.read_h5ad(ingested["kang2018"])
    a.X = a.X.toarray() if sp.issparse(a.X) else a.X
    a.X[:50, 0] = np.nan
    path = tmp_path / "nan.h5ad"
    a.write_h5ad(path)
    out = tmp_path / "run"
    assert main(["eval-baselines", str(path), *S2, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "NaN/inf value(s)" in err and "celljepa validate" in err and "Bin edges" not in err
    assert not out.exists()


def test_zero_pcs_is_blamed_on_the_option(ingested, tmp_path, capsys):
    assert main(["eval-baselines", str(ingested["kang2018"]), *S2, "--out", str(tmp_path / "r"), "--n-pcs", "0"]) == 1
    err = capsys.readouterr().err
    assert "n_pcs=0" in err and "--n-pcs" in err and "cells" not in err.split("n_pcs=0")[0]
    assert not (tmp_path / "r").exists()


def test_no_overwrite_error_names_a_real_option(tmp_path, capsys):
    args = [
        "ingest",
        str(real_path("scgen/valid.h5ad")),
        "--dataset-id",
        "kang",
        "--out",
        str(tmp_path),
        "--format",
        "generic",
        "--perturbation-key",
        "condition",
        "--control-values",
        "control",
        "--context-key",
        "cell_type",
    ]
    assert main(args) == 0
    assert main([*args, "--no-overwrite"]) == 1
    err = capsys.readouterr().err
    assert "drop --no-overwrite" in err and "--overwrite)" not in err


PYTHON_YAML = "!!python/object/apply:os.system ['echo pwned']\n"


def test_python_yaml_tags_are_refused_everywhere(tmp_path, capsys):
    from celljepa.bench.sweep import load_grid
    from celljepa.models.transition import load_transition_config
    from celljepa.train.config import load_config

    bad = tmp_path / "bad.yaml"
    bad.write_text(PYTHON_YAML)
    for load in (load_grid, load_transition_config, load_config):
        with pytest.raises(InputError, match="not plain YAML.*builds a Python object"):
            load(bad)
    with pytest.raises(SystemExit) as stop:
        main(
            [
                "train-transition",
                "X.h5ad",
                "--jepa",
                "J",
                "--split-file",
                "S.json",
                "--out",
                "O",
                "--set",
                "lr=!!python/name:os.system",
            ]
        )
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "not plain YAML" in err and "Traceback" not in err


def test_a_pickle_is_not_a_model_file(tmp_path):
    import pickle

    from celljepa.models.transition import JEPATransition

    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    folder = tmp_path / "model"
    folder.mkdir()
    with open(folder / "transition.pt", "wb") as fh:
        pickle.dump({"kind": Payload()}, fh)
    with pytest.raises(InputError, match="is not a celljepa transition model.*never unpickled"):
        JEPATransition.load(folder)
    torch.save({"x": torch.zeros(1)}, tmp_path / "ok.pt")  # a plain tensor file still loads with torch


def test_cells_without_counts_are_dropped_and_reported(tmp_path, caplog):
    a = cj.datasets.simulate(900, 40, 4, 2, seed=1, preprocessed=False)
    x = a.X.tolil()
    x[[3, 7], :] = 0
    a.X = x.tocsr()
    empty = list(a.obs_names[[3, 7]])
    with caplog.at_level("WARNING", logger="celljepa"):
        cj.data.ingest_anndata(
            a,
            dataset_id="sim",
            source="test",
            format="generic",
            perturbation_key="perturbation",
            control_values="control",
            context_key="context",
            min_cells=1,
        )
    assert "dropped 2 cell(s) with no counts" in caplog.text
    assert not set(empty) & set(a.obs_names) and a.uns["celljepa"]["dropped_empty_cells"] == 2
    assert np.isfinite(a.X.data).all()


def test_slurm_checks_set_values_before_writing_a_job(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(
        ["slurm", "pretrain", "--time", "1:00:00", "--", "data.h5ad", "--out", "runs/p", "--set", "train.lr=fast"]
    )
    assert code != 0
    assert "lr" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    code = main(["slurm", "benchmark", "--time", "1:00:00", "--", "--out", "runs/b", "--transition-set", "n_layers=-2"])
    assert code != 0 and "n_layers" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_an_ablation_or_dataset_name_never_leaves_the_sweep_folder(tmp_path, capsys):
    from celljepa._io import folder_name

    out = tmp_path / "deep" / "runs"
    for name, line in (
        ("../../escape", "  ../../escape: {train.ema: false}"),
        ("a/b", "  a/b: {}"),
        (".hidden", "  .hidden: {}"),
    ):
        grid = tmp_path / "grid.yaml"
        grid.write_text(
            "seeds: [0]\ndatasets:\n  demo:\n    sciplex_gxe: [S2_unseen_context]\nablations:\n"
            f"  default: {{}}\n{line}\n"
        )
        for extra in (["--list"], ["--task", "1"]):
            assert main(["sweep", "--grid", str(grid), "--out", str(out), *extra]) == 1
            err = capsys.readouterr().err
            assert f"ablation={name!r} is not a folder name" in err and "Fix: rename it" in err
            assert "Traceback" not in err
    assert not (tmp_path / "escape").exists() and not out.exists()  # nothing written anywhere
    grid.write_text("datasets:\n  ../x:\n    h5ad: a.h5ad\nablations:\n  default: {}\n")
    assert main(["sweep", "--grid", str(grid), "--out", str(out), "--list"]) == 1
    assert "dataset='../x' is not a folder name" in capsys.readouterr().err
    assert folder_name("mask_ratio-0.75+ema", "ablation") == "mask_ratio-0.75+ema"


def _tree(folder):
    """Every file under ``folder`` (hidden ones included) with a digest of its bytes: what a run changed."""
    import hashlib
    from pathlib import Path

    folder = Path(folder)
    if not folder.exists():
        return {}
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_rounded_log_data_are_refused_and_a_counts_layer_is_never_overwritten(ingested):
    """Bad 1: integer log data (max 7) are not normalised a second time; an existing counts layer is kept."""
    a = ad.read_h5ad(ingested["papalexi2021"])[:3000].copy()
    counts = a.layers["counts"].copy()
    a.X = sp.csr_matrix(np.round(a.X.toarray()))  # log1p values rounded to integers, max about 7
    assert a.X.max() <= 15
    rounded = a.X.copy()
    del a.uns["log1p"], a.uns["preprocess"]  # no record says it was logged
    with pytest.raises(
        InputError,
        match=r"only integers from 0 to \d+ .* look like log-normalised values that "
        r"were rounded.*assume='counts'",
    ):
        cj.pp.normalize(a)
    assert (a.X != rounded).nnz == 0 and (a.layers["counts"] != counts).nnz == 0
    # declared as counts: X differs from the counts layer, so normalising it would replace the raw counts
    with pytest.raises(InputError, match=r"layers\['counts'\] already holds raw counts.*losing the raw counts"):
        cj.pp.normalize(a, assume="counts")
    assert (a.X != rounded).nnz == 0 and (a.layers["counts"] != counts).nnz == 0
    # the counts themselves in X: normalised, and the layer is the same counts as before
    a.X = counts.copy()
    cj.pp.normalize(a)
    assert (a.layers["counts"] != counts).nnz == 0 and a.uns["preprocess"]["normalized_here"] is True
    assert not np.allclose(a.X.toarray(), np.round(a.X.toarray()))


def test_raw_counts_never_reach_the_encoder_on_any_door(ingested, tmp_path, capsys):
    """Bad 6: jepa_embed on raw counts and pretrain on layers['counts'] are named errors, not silent training."""
    a = ad.read_h5ad(ingested["papalexi2021"])[:600].copy()
    raw = a.copy()
    raw.X = raw.layers["counts"].copy()
    del raw.uns["log1p"], raw.uns["preprocess"]
    with pytest.raises(InputError, match=r"X holds raw counts.*cj.pp.normalize\(adata\)"):
        cj.tl.jepa_embed(raw, max_steps=2)
    assert "X_jepa" not in raw.obsm
    with pytest.raises(InputError, match=r"layers\['counts'\] holds raw counts.*not the counts layer"):
        cj.tl.jepa_embed(a, layer="counts", max_steps=2)
    assert "X_jepa" not in a.obsm
    out = tmp_path / "p"
    code = main(
        [
            "pretrain",
            str(ingested["papalexi2021"]),
            "--out",
            str(out),
            "--fast-dev",
            "--no-progress",
            "--set",
            "data.layer=counts",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "layers['counts'] of" in err and "holds raw counts" in err and "Traceback" not in err
    assert not out.exists()
    # the evaluation space is the same door for eval-baselines and benchmark
    full = ad.read_h5ad(ingested["papalexi2021"])
    full.X = full.layers["counts"]
    del full.uns["log1p"], full.uns["preprocess"]
    path = tmp_path / "raw.h5ad"
    full.write_h5ad(path)
    code = main(
        [
            "eval-baselines",
            str(path),
            "--split",
            "S1_unseen_perturbation",
            "--fold",
            "0",
            "--folds",
            "3",
            "--out",
            str(tmp_path / "e"),
        ]
    )
    assert code == 1
    assert "X holds raw counts" in capsys.readouterr().err and not (tmp_path / "e").exists()


def test_a_yaml_alias_bomb_is_refused_at_once(ingested, tmp_path, capsys):
    """Bad 8: a 400-byte config whose nested aliases expand to 9**9 labels is refused before any expansion."""
    import signal
    import time

    lines = [
        "eval:",
        "  labels: &l0 [cell_type, cell_type, cell_type, cell_type, cell_type, cell_type, cell_type, "
        "cell_type, cell_type]",
    ]
    lines += [f"x{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    text = "\n".join(lines) + "\n"
    assert len(text) < 600
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(text)
    out = tmp_path / "p"
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("the alias bomb was expanded")))
    signal.alarm(60)
    try:
        t0 = time.perf_counter()
        code = main(["pretrain", str(ingested["kang2018"]), "--config", str(bomb), "--out", str(out), "--no-progress"])
    finally:
        signal.alarm(0)
    assert code == 1 and time.perf_counter() - t0 < 30
    err = capsys.readouterr().err
    assert "uses a YAML alias (line 3: alias *l0)" in err and "Fix: write the values out" in err
    assert not out.exists()


def _kang_benchmark(path, out, *extra):
    return main(
        [
            "benchmark",
            "--data",
            f"kang2018={path}",
            "--splits",
            "S2_unseen_context:3",
            "--max-folds",
            "1",
            "--no-jepa",
            "--no-progress",
            "--out",
            str(out),
            *extra,
        ]
    )


def test_a_fold_task_never_writes_beside_a_full_run_or_over_its_folds(ingested, tmp_path, capsys):
    """Bad 2: --task --transductive against an inductive run in the same --out: refused, never a mixed folder."""
    from celljepa.bench.run import task_dir

    out = tmp_path / "run"
    kang = ingested["kang2018"]
    with folder_lock(out):  # a full run (or --collect) holds --out
        assert _kang_benchmark(kang, out, "--task", "0", "--transductive") == 1
        err = capsys.readouterr().err
        assert "is in use by a full run or --collect" in err and "a fold task must not write beside it" in err
    assert _tree(out) == {}
    fold0 = task_dir(out, "kang2018", "S2_unseen_context", 0, 0)
    with folder_lock(fold0, option="fold folder"):  # a fold task is computing fold 0: the full run must not write it
        assert _kang_benchmark(kang, out) == 1
        assert "fold folder" in capsys.readouterr().err
    assert not (out / "metrics_combined.json").exists() and not (fold0 / "metrics.json").exists()
    assert _kang_benchmark(kang, out) == 0  # the inductive run, finished
    before = _tree(out)
    assert _kang_benchmark(kang, out, "--task", "0", "--transductive") == 1
    err = capsys.readouterr().err
    assert "holds a finished run made with other inputs" in err and "evaluation.transductive: false → true" in err
    assert "Traceback" not in err and _tree(out) == before


def test_edited_data_never_replace_a_finished_run(ingested, tmp_path, capsys):
    """Bad 4: a run on edited data (same dataset id) into a finished --out is refused before any fold is written."""
    out = tmp_path / "run"
    assert (
        main(
            [
                "benchmark",
                "--data",
                f"kang2018={ingested['kang2018']}",
                "--splits",
                "S2_unseen_context:3",
                "--no-jepa",
                "--no-progress",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    before = _tree(out)
    a = ad.read_h5ad(ingested["kang2018"])
    a.X = a.X.copy()
    a.X[a.X.nonzero()[0][0], a.X.nonzero()[1][0]] += 0.5  # one value of one cell
    edited = tmp_path / "edited.h5ad"
    a.write_h5ad(edited)
    for backed in ([], ["--backed"]):  # in memory and streamed: both fingerprinted by content
        code = main(
            [
                "benchmark",
                "--data",
                f"kang2018={edited}",
                "--splits",
                "S2_unseen_context:3",
                "--no-jepa",
                "--no-progress",
                "--out",
                str(out),
                *backed,
            ]
        )
        assert code == 1
        err = capsys.readouterr().err
        assert "the data changed (content fingerprint" in err and "--overwrite" in err, err
        assert _tree(out) == before


def test_backed_data_and_pretrain_resume_are_fingerprinted_by_content(ingested, tmp_path, capsys):
    """Bad 5: values replaced with the same shape are new data, for --backed reruns and for pretrain's resume."""
    kang = ingested["kang2018"]
    out = tmp_path / "run"
    assert _kang_benchmark(kang, out, "--backed") == 0
    assert _kang_benchmark(kang, out, "--backed") == 0  # the same file: read back
    import json

    assert json.loads((out / "metrics_combined.json").read_text())["provenance"]["folds_resumed"] == 1
    a = ad.read_h5ad(kang)
    a.X = a.X.copy()
    a.X.data[:] = a.X.data[::-1]  # other values, same shape, same names and labels
    other = tmp_path / "same_shape.h5ad"
    a.write_h5ad(other)
    before = _tree(out)
    assert _kang_benchmark(other, out, "--backed") == 1
    assert "the data changed (content fingerprint" in capsys.readouterr().err
    assert _tree(out) == before
    # pretrain FILE2 --out <finished run on FILE1>: refused, not "resumed" and relabelled
    run = tmp_path / "jepa"
    args = ["--out", str(run), "--fast-dev", "--no-progress", "--set", "train.max_steps=4", "--set", "mask.kind=random"]
    assert main(["pretrain", str(kang), *args]) == 0
    before = _tree(run)
    assert main(["pretrain", str(other), *args]) == 1
    err = capsys.readouterr().err
    assert "holds a run trained on other data: the data changed" in err and "--restart" in err
    assert _tree(run) == before
    # a --restart whose input is refused deletes nothing (it used to remove the checkpoints first)
    raw = tmp_path / "raw.h5ad"
    r = ad.read_h5ad(ingested["papalexi2021"])
    r.X = r.layers["counts"]
    del r.uns["log1p"], r.uns["preprocess"]
    r.write_h5ad(raw)
    assert main(["pretrain", str(raw), *args, "--restart"]) == 1
    assert "holds raw counts" in capsys.readouterr().err and _tree(run) == before
    # --restart on other data: the finished run is replaced whole, once the new one is complete
    assert main(["pretrain", str(other), *args, "--restart"]) == 0
    assert json.loads((run / "eval.json").read_text())["source"] == str(other)
    assert json.loads((run / "inputs.json").read_text())["sources"] == [str(other)]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no staging left


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs under tmp_path (root only): a disk that fills up and can be made read-only."""
    import os
    import subprocess

    if os.geteuid() != 0:
        pytest.skip(
            "a full or read-only disk is made with a small tmpfs, which needs root; this test runs as "
            f"uid {os.geteuid()}"
        )
    disk = tmp_path / "disk"
    disk.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({made.stderr.strip()}): no full disk to test on")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk, leave: int) -> None:
    """Fill ``disk`` up to ``leave`` free bytes."""
    import os

    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    with open(disk / "filler", "wb") as fh:
        fh.write(b"\0" * max(free - leave, 0))


def test_a_full_disk_mid_rewrite_keeps_the_finished_run_whole(ingested, small_disk, capsys):
    """Bad 9 + weak (disk full): a rerun that fills the disk fails with a named error; the old run is untouched."""
    out = small_disk / "run"
    args = ["eval-baselines", str(ingested["kang2018"]), *S2, "--out", str(out)]
    assert main(args) == 0
    before = _tree(out)
    _fill(small_disk, 300_000)  # room for a few small files, not for a new evaluation space
    assert main([*args, "--n-pcs", "40", "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert "no space left on the device" in err and "no finished run was changed" in err and "Traceback" not in err
    assert _tree(out) == before
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "run"]  # no staging folder left
    # ingest onto the full disk: a named error and no partial file
    code = main(
        [
            "ingest",
            str(real_path("scgen/valid.h5ad")),
            "--dataset-id",
            "kang2018",
            "--out",
            str(small_disk / "processed"),
            "--format",
            "generic",
            "--perturbation-key",
            "condition",
            "--control-values",
            "control",
            "--context-key",
            "cell_type",
            "--cell-type-key",
            "cell_type",
        ]
    )
    assert code == 1
    assert "no space left on the device" in capsys.readouterr().err
    assert (
        not any(p.is_file() for p in (small_disk / "processed").rglob("*"))
        if (small_disk / "processed").exists()
        else True
    )


def test_a_full_disk_at_a_checkpoint_and_a_read_only_out_are_named(ingested, small_disk, capsys):
    """Weak: disk full at a checkpoint write, and a read-only --out: named errors, no half-started run folder."""
    import subprocess

    _fill(small_disk, 150_000)
    run = small_disk / "jepa"
    code = main(
        [
            "pretrain",
            str(ingested["kang2018"]),
            "--out",
            str(run),
            "--fast-dev",
            "--no-progress",
            "--set",
            "train.max_steps=4",
            "--set",
            "train.checkpoint_every=2",
            "--set",
            "mask.kind=random",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "no space left on the device" in err and "Traceback" not in err
    assert not run.exists()  # a new run that never wrote a checkpoint leaves no folder
    (small_disk / "filler").unlink()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    assert main(["eval-baselines", str(ingested["kang2018"]), *S2, "--out", str(small_disk / "run")]) == 1
    err = capsys.readouterr().err
    assert ("read-only" in err or "permission denied" in err) and "Traceback" not in err


def test_a_truncated_h5ad_is_named_on_every_door(ingested, tmp_path, capsys):
    """Weak: a truncated .h5ad gives a named error (not an h5py traceback) and no run folder, on each command."""
    data = ingested["kang2018"].read_bytes()
    cut = tmp_path / "cut.h5ad"
    cut.write_bytes(data[: len(data) // 2])
    for argv, out in (
        (["eval-baselines", str(cut), *S2], tmp_path / "e"),
        (["benchmark", "--data", f"kang2018={cut}", "--splits", "S2_unseen_context:3", "--no-jepa"], tmp_path / "b"),
        (["pretrain", str(cut), "--fast-dev"], tmp_path / "p"),
    ):
        assert main([*argv, "--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert ("not a readable AnnData" in err or "damaged or cut short" in err) and "Traceback" not in err, err
        assert not out.exists()


def test_misspelt_sections_options_and_zero_folds_are_named(ingested, tmp_path, capsys):
    """Weak: --set trian.x (was KeyError: 'trian'), --max-folds 0 (a KeyError later), --outt (named --out only)."""
    out = tmp_path / "p"
    assert main(["pretrain", str(ingested["kang2018"]), "--out", str(out), "--set", "trian.max_steps=3"]) == 1
    assert "unknown config section 'trian'. Did you mean 'train'?" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(SystemExit):
        main(["benchmark", "--data", "demo", "--max-folds", "0", "--out", str(tmp_path / "b")])
    assert "--max-folds: 0 scores no fold at all" in capsys.readouterr().err
    from celljepa.bench.run import benchmark_tasks, demo_datasets

    with pytest.raises(InputError, match="max_folds=0 scores no fold"):
        benchmark_tasks(demo_datasets(), {"norman2019": {"S1_unseen_perturbation": 3}}, max_folds=0)
    with pytest.raises(SystemExit):
        main(["benchmark", "--data", "demo", "--outt", str(tmp_path / "b")])
    assert "unknown option --outt. Did you mean '--out'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["slurm", "benchmark", "--tme", "1:00:00", "--", "--out", str(tmp_path / "b")])
    assert "unknown option --tme. Did you mean '--time'" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_float16_expression_trains_like_float32(ingested, tmp_path):
    """Weak: float16 X (accepted by the evaluation) ended pretraining in a scipy traceback."""
    a = ad.read_h5ad(ingested["kang2018"])
    a.X = a.X.toarray().astype(np.float16)
    path = tmp_path / "half.h5ad"
    a.write_h5ad(path)
    for backed in ([], ["--backed"]):
        out = tmp_path / f"p{len(backed)}"
        assert (
            main(
                [
                    "pretrain",
                    str(path),
                    "--out",
                    str(out),
                    "--fast-dev",
                    "--no-progress",
                    "--set",
                    "train.max_steps=2",
                    "--set",
                    "mask.kind=random",
                    *backed,
                ]
            )
            == 0
        )
        assert (out / "eval.json").is_file()


def test_a_condition_too_small_to_score_is_named(ingested, caplog):
    """Weak: a 1-cell test condition was dropped from scoring without a word."""
    import logging

    from celljepa.bench.evaluate import EvalConfig, prepare_fold
    from celljepa.splits import make_split_folds

    a = ad.read_h5ad(ingested["kang2018"])
    fold = make_split_folds(a.obs, "S2_unseen_context", dataset_id="kang2018", n_folds=3, seed=0)[0]
    test_ctx = set(fold["test_groups"]) if "test_groups" in fold else None
    perturbed = a.obs.index[(~a.obs["is_control"]) & (a.obs["context_id"].isin(test_ctx) if test_ctx else True)]
    keep = np.ones(a.n_obs, dtype=bool)
    ctx = a.obs.loc[perturbed[0], "context_id"]
    same = (a.obs["context_id"] == ctx) & ~a.obs["is_control"]
    keep[np.flatnonzero(same.to_numpy())[1:]] = False  # one perturbed cell left in that context
    small = a[keep].copy()
    fold = make_split_folds(small.obs, "S2_unseen_context", dataset_id="kang2018", n_folds=3, seed=0)
    caplog.set_level(logging.WARNING, logger="celljepa")
    for f in fold:
        try:
            prepare_fold(small, f, EvalConfig())
        except InputError:
            pass
    assert any(
        "have fewer than 2 cells and are not scored" in r.getMessage() and f"in {ctx} (1 cell)" in r.getMessage()
        for r in caplog.records
    ), [r.getMessage() for r in caplog.records]


def test_sbatch_submit_hint_quotes_paths(tmp_path, monkeypatch, capsys):
    """Weak: the printed submit line pasted 'runs/my run/...' unquoted, so it split at the space."""
    import shlex

    monkeypatch.chdir(tmp_path)
    assert (
        main(["slurm", "benchmark", "--time", "1:00:00", "--", "--data", "demo", "--no-jepa", "--out", "runs/my run"])
        == 0
    )
    hint = [line for line in capsys.readouterr().err.splitlines() if line.startswith("# submit all:")][0]
    words = shlex.split(
        hint.split("# submit all:", 1)[1]
        .split("(or rerun")[0]
        .split("&&")[0]
        .strip()
        .removeprefix("j0=$(")
        .removesuffix(")")
    )
    assert words == ["sbatch", "--parsable", "runs/my run/slurm/benchmark.sbatch"]


def test_an_unsafe_checkpoint_is_refused_without_advice_to_unpickle(tmp_path):
    """Weak: torch's message said to set weights_only=False, which runs code from the file."""
    import pickle

    from celljepa.train.checkpoint import load_checkpoint

    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "last.pt"
    with open(path, "wb") as fh:
        pickle.dump({"format": Payload()}, fh)
    with pytest.raises(InputError) as err:
        load_checkpoint(path)
    assert "never unpickled" in str(err.value) and "weights_only=False" not in str(err.value)


def test_validate_names_an_unsafe_dataset_id(ingested):
    """Weak: cj.pp.validate called uns['dataset_id'] = '../../x' valid; it names the run folders."""
    a = ad.read_h5ad(ingested["kang2018"])
    a.uns["dataset_id"] = "../../x"
    with pytest.raises(
        cj.ContractError,
        match=r"\[dataset_id\] uns\['dataset_id'\]: uns\['dataset_id'\]='../../x' "
        r"is not a folder name",
    ):
        cj.pp.validate(a)
