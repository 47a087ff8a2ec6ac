"""`celljepa pretrain`: run folders on real data, splits, a real SIGUSR1 from outside, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from _realdata import read_quiet

from celljepa.cli import EXIT_INTERRUPTED, main
from celljepa.train.checkpoint import load_checkpoint

TINY = [
    "--set",
    "model.n_latent=16",
    "--set",
    "model.n_hidden=32",
    "--set",
    "model.predictor_hidden=32",
    "--set",
    "model.pointer_dim=8",
]


def test_fast_dev_run_on_kang_writes_every_output(ingested, tmp_path, capsys):
    out = tmp_path / "kang"
    args = [
        "pretrain",
        str(ingested["kang2018"]),
        "--out",
        str(out),
        "--fast-dev",
        "--no-progress",
        "--set",
        "mask.kind=module",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "effective rank" in printed and "cell_type" in printed
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
        "model/model.pt",
        "model/model.json",
        "embeddings.npz",
        "eval.json",
    ):
        assert (out / name).is_file(), name
    assert not list(out.rglob("*.tmp"))
    result = json.loads((out / "eval.json").read_text())
    assert result["diagnostics"]["dims"] == 128 and result["n_obs"] == 1975
    knn = result["knn"]
    for label in ("cell_type", "perturbation_id"):
        for emb in ("X_jepa", "X_pca"):
            assert 0.0 <= knn[label][emb]["accuracy"] <= 1.0
    assert knn["cell_type"]["X_pca"]["n_classes"] == 7 and result["pca"]["n_pcs"] == 50
    # the PCA side is plain scanpy: 50 zero-centred PCs of all genes, scored by the same kNN
    import scanpy as sc

    from celljepa.eval.embedding import knn_accuracy

    kang = sc.read_h5ad(ingested["kang2018"])
    sc.pp.pca(kang, n_comps=50, random_state=0)
    expected = knn_accuracy(kang.obsm["X_pca"], kang.obs["cell_type"], k=15, n_folds=5, seed=0)["accuracy"]
    assert knn["cell_type"]["X_pca"]["accuracy"] == pytest.approx(expected, abs=0.01)
    assert result["gene_sets"].startswith("builtin:hallmark")
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in lines if r.get("split") != "eval"]
    assert [r["step"] for r in train] == [5, 10, 15, 20]
    for key in ("loss", "std_mean", "std_min", "effective_rank", "mean_cosine"):
        assert all(np.isfinite(r[key]) for r in train), key
    with np.load(out / "embeddings.npz") as f:
        assert f["X_jepa"].shape == (1975, 128)
        z = f["X_jepa"]
    import celljepa as cj

    kang = cj.models.CellJEPA.load(out).get_latent_representation(read_quiet(ingested["kang2018"]))
    assert np.array_equal(kang, z)  # the run folder loads as a model and reproduces its embeddings
    best = cj.models.CellJEPA.load(out / "checkpoints" / "best.pt")
    assert best.var_names == cj.models.CellJEPA.load(out).var_names
    config = (out / "config.yaml").read_text()
    assert "max_steps: 20" in config and "kind: module" in config and "target: hidden" in config
    # a finished run, run again: nothing to train, same outputs
    assert main(args) == 0
    assert json.loads((out / "eval.json").read_text())["train_info"]["resumed_from"] == 20


def test_split_restricts_training_cells(ingested, tmp_path):
    splits = tmp_path / "splits"
    assert (
        main(
            ["splits", str(ingested["kang2018"]), "--split", "S2_unseen_context", "--folds", "3", "--out", str(splits)]
        )
        == 0
    )
    split = sorted(splits.glob("*fold0.json"))[0]
    fold = json.loads(split.read_text())
    out = tmp_path / "run"
    assert (
        main(
            [
                "pretrain",
                str(ingested["kang2018"]),
                "--split-file",
                str(split),
                "--out",
                str(out),
                "--fast-dev",
                "--no-progress",
                "--set",
                "mask.kind=random",
                *TINY,
            ]
        )
        == 0
    )
    result = json.loads((out / "eval.json").read_text())
    assert result["n_train_cells"] == len(fold["train_cells"]) < 1975
    assert result["split"]["split_name"] == "S2_unseen_context"
    assert result["train_info"]["n_eval_cells"] == min(256, len(fold["val_cells"]))


def test_config_mismatch_and_bad_override(ingested, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["pretrain", str(ingested["kang2018"]), "--out", str(out), "--fast-dev", "--no-progress", *TINY]
    assert main([*args, "--set", "train.max_steps=4"]) == 0
    assert main([*args, "--set", "train.max_steps=6"]) == 1
    assert "different config" in capsys.readouterr().err
    assert main([*args, "--set", "train.max_steps=6", "--restart"]) == 0
    assert main([*args, "--set", "train.emaa=off"]) == 1
    assert "Did you mean 'ema'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args, "--set", "noequals"])


def _pretrain_cmd(h5ad, out, steps):
    return [
        sys.executable,
        "-m",
        "celljepa.cli",
        "pretrain",
        str(h5ad),
        "--out",
        str(out),
        "--no-progress",
        "--set",
        "mask.kind=random",
        "--set",
        f"train.max_steps={steps}",
        "--set",
        "train.log_every=1",
        "--set",
        "train.checkpoint_every=1000",
        "--set",
        "train.eval_every=1000",
        *TINY,
    ]


@pytest.mark.extended
def test_sigusr1_from_outside_checkpoints_exits_75_and_resume_matches(ingested, tmp_path):
    h5ad, steps = ingested["kang2018"], 400
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = tmp_path / "ref"
    subprocess.run(_pretrain_cmd(h5ad, ref, steps), check=True, env=env, capture_output=True)
    run = tmp_path / "run"
    proc = subprocess.Popen(
        _pretrain_cmd(h5ad, run, steps), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 3:
            proc.send_signal(signal.SIGUSR1)
            break
        time.sleep(0.02)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert "stopped by SIGUSR1" in err
    stopped_at = load_checkpoint(run / "checkpoints" / "last.pt")["step"]
    assert 3 <= stopped_at < steps
    done = subprocess.run(_pretrain_cmd(h5ad, run, steps), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"resuming from {run / 'checkpoints' / 'last.pt'} at step {stopped_at}" in done.stderr
    a = torch.load(ref / "model" / "model.pt", weights_only=True)["modules"]
    b = torch.load(run / "model" / "model.pt", weights_only=True)["modules"]
    for part in a:
        for name, tensor in a[part].items():
            assert torch.equal(tensor, b[part][name]), f"{part}.{name}"
    records = [json.loads(x) for x in metrics.read_text().splitlines()]
    steps_logged = [r["step"] for r in records if r.get("split") != "eval"]
    assert steps_logged == list(range(1, steps + 1))
