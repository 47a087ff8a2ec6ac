"""The peer mechanism on a real fold: work folder, subprocess, projection, coverage, errors, the benchmark.

The peer here is a gene-space mean shift run by ``_shift_runner.py`` in a child process through the same
exchange as scGen, GEARS and CPA; the real tools have their own smoke tests (``test_peer_tools.py``).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from celljepa._errors import InputError, PeerError
from celljepa.bench.config import RunConfig
from celljepa.bench.evaluate import EvalConfig, prepare_fold, score_fold
from celljepa.bench.reuse import _check_baselines
from celljepa.bench.run import benchmark, demo_datasets
from celljepa.cli import main
from celljepa.data import contract as C
from celljepa.eval.space import EvaluationSpace
from celljepa.models.baselines import MeanShift, NoChange
from celljepa.peers import PEERS, NoSpaceError, PeerModel, PeerSpec, install_peer, parse_peers, peer_status
from celljepa.peers import _env as peers_env
from celljepa.peers._env import RUNNERS, _find_python, _share_identical_files
from celljepa.splits import make_split_folds

HERE = Path(__file__).resolve().parent


@pytest.fixture
def shift_peer(monkeypatch, tmp_path):
    """Register the test runner as peer ``shift`` (it runs in this interpreter: its module is ``json``)."""
    folder = tmp_path / "runner"
    folder.mkdir()
    shutil.copy(RUNNERS / "_common.py", folder / "_common.py")
    shutil.copy(HERE / "_shift_runner.py", folder / "shift.py")
    monkeypatch.setitem(
        PEERS,
        "shift",
        PeerSpec(name="shift", title="mean shift (test)", module="json", runner=str(folder / "shift.py"), install=()),
    )
    monkeypatch.setenv("CELLJEPA_PEERS_HOME", str(tmp_path / "home"))
    return "shift"


@pytest.fixture(scope="module")
def sciplex_fold():
    adata = demo_datasets()["sciplex_gxe"]
    fold = make_split_folds(adata.obs, "S2_unseen_context", dataset_id="sciplex_gxe", n_folds=3)[0]
    return adata, fold


def _expected(adata, train, cond, refit=True):
    """The mean-shift prediction computed here, in gene space, from the cells the peer may fit on."""
    genes = train.space.gene_indices(adata.var_names)
    x = np.asarray(
        adata.X[train.positions][:, genes].toarray()
        if hasattr(adata.X, "toarray")
        else adata.X[train.positions][:, genes],
        dtype=np.float64,
    )
    obs = train.obs
    ctrl = obs[C.IS_CONTROL].to_numpy(bool)
    ctx = obs[C.CONTEXT_ID].astype(str).to_numpy()
    fit = np.zeros(len(obs), bool)
    for _, rows in train.fitting_conditions(refit):
        fit[rows] = True
    fit |= ctrl & train.fit_mask()
    rows = fit & (obs[C.PERTURBATION_ID].astype(str).to_numpy() == cond.perturbation_id)
    shift = np.mean(
        [x[rows & (ctx == c)].mean(0) - x[fit & ctrl & (ctx == c)].mean(0) for c in np.unique(ctx[rows])], axis=0
    )
    return x[train.start_rows(cond.context_id)] + shift


def test_peer_model_predicts_through_its_own_process(shift_peer, sciplex_fold, tmp_path):
    adata, fold = sciplex_fold
    space, train, test = prepare_fold(adata, fold, EvalConfig())
    conds = [c for c, _ in train.val_conditions] + [c for c, _ in test]
    model = PeerModel(shift_peer, seed=3, workdir=tmp_path / "work").fit(train, refit=True)
    preds = model.predict_many(conds)
    for cond in conds:
        expected = _expected(adata, train, cond)
        assert preds[cond].shape == (len(train.start_rows(cond.context_id)), space.n_pcs)
        np.testing.assert_allclose(model.native_[cond], expected, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(preds[cond], space.transform(expected), rtol=1e-3, atol=1e-3)
        assert model.covers(cond)
    # the held-out context's controls were inputs only, the test cells never sent
    work = tmp_path / "work" / "trainval_seed3"
    request = json.loads((work / "request.json").read_text())
    assert request["seed"] == 3 and len(request["queries"]) == len(conds)
    assert request["fitted_on"] == "training + validation conditions" and request["refit"] is True
    assert {"request.json", "result.json", "runner.log"} <= {p.name for p in work.iterdir()}
    assert not (work / "train.h5ad").exists()  # exchange files removed once read
    params = model.params()
    assert params["version"] == "test" and params["fit_s"] >= 0 and params["wall_s"] > 0
    assert params["environment"] == "current" and params["n_not_covered"] == 0
    assert model.predict(conds[0]) is preds[conds[0]]  # cached: no second run


def _roles(work: Path) -> pd.DataFrame:
    obs = ad.read_h5ad(work / "train.h5ad").obs
    for col in ("context", "perturbation", "role"):
        obs[col] = obs[col].astype(str)
    return obs


def test_validation_fit_and_refit_use_different_cells(shift_peer, sciplex_fold, tmp_path):
    """refit=False: training conditions only (validation unseen); refit=True: training + validation, trained again."""
    adata, fold = sciplex_fold
    _, train, test = prepare_fold(adata, fold, EvalConfig())
    assert PeerModel.refits_on_validation and "validation conditions unseen" in PeerModel.val_selection_
    assert not PeerModel.tunes_on_validation  # its own validation split comes from the cells it is fitted on
    val = [c for c, _ in train.val_conditions]
    model = PeerModel(shift_peer, seed=1, workdir=tmp_path / "w", keep_files=True)
    first = model.fit(train, refit=False).predict_many(val)
    record = model.params()
    obs = _roles(tmp_path / "w" / "train_seed1")
    fitted = obs[(obs["role"] == "train") & ~obs["is_control"]]
    keys = set(fitted["context"] + "|" + fitted["perturbation"])
    assert keys == {c.key for c, _ in train.train_conditions}  # no validation condition's cells sent
    assert not keys & {c.key for c in val}
    assert record["fitted_on"] == "training conditions" and record["n_conditions_fit"] == len(train.train_conditions)
    assert record["n_cells_fit"] == int((obs["role"] == "train").sum())

    second = model.fit(train, refit=True).predict_many(val + [c for c, _ in test])
    obs = _roles(tmp_path / "w" / "trainval_seed1")
    fitted = obs[(obs["role"] == "train") & ~obs["is_control"]]
    assert set(fitted["context"] + "|" + fitted["perturbation"]) == keys | {c.key for c in val}
    record = model.params()
    assert record["fitted_on"] == "training + validation conditions"
    assert record["n_conditions_fit"] == len(train.train_conditions) + len(train.val_conditions)
    first_fit = model.fits_["training conditions"]
    assert record["n_cells_fit"] > first_fit["n_cells_fit"] and first_fit["n_conditions_fit"] == len(
        train.train_conditions
    )
    # the refit trained again: the validation conditions' own cells now move their perturbations' shifts
    changed = [c for c in val if not np.allclose(first[c], second[c])]
    assert changed
    for c in val:
        np.testing.assert_allclose(model.native_[c], _expected(adata, train, c, refit=True), rtol=1e-4, atol=1e-4)


def test_each_fit_records_what_it_did(shift_peer, sciplex_fold):
    adata, fold = sciplex_fold
    _, train, test = prepare_fold(adata, fold, EvalConfig())
    model = PeerModel(shift_peer, seed=5).fit(train, refit=True)
    assert model.params()["fitted_on"] == "training + validation conditions"  # known before the run
    model.predict_many([c for c, _ in test])
    params = model.params()
    for key in (
        "fitted_on",
        "n_cells_fit",
        "n_conditions_fit",
        "seed",
        "epochs_trained",
        "max_epochs",
        "best_epoch",
        "stopped_by",
        "train_loss_last",
        "val_loss_last",
        "validation",
        "scaling",
        "fit_s",
        "predict_s",
        "wall_s",
        "n_cells_used",
        "n_conditions_used",
        "version",
        "environment",
    ):
        assert key in params, key
    assert params["seed"] == 5 and params["epochs_trained"] == 1 and params["train_loss_last"] == [0.0]
    assert params["n_conditions_used"] == params["n_conditions_fit"]  # what the runner saw is what was sent
    assert list(model.fits_) == ["training + validation conditions"]  # no fit on training conditions only was run


def test_transductive_makes_held_out_controls_fittable(shift_peer, sciplex_fold, tmp_path):
    adata, fold = sciplex_fold
    for transductive in (False, True):
        _, train, test = prepare_fold(adata, fold, EvalConfig(transductive=transductive))
        work = tmp_path / f"t{int(transductive)}"
        PeerModel(shift_peer, workdir=work, keep_files=True).fit(train).predict_many([c for c, _ in test])
        obs = _roles(work / "trainval_seed0")
        held_out = obs["context"].isin({c.context_id for c, _ in test})
        expected = "train" if transductive else "input"
        assert set(obs.loc[held_out & obs["is_control"], "role"]) == {expected}
        assert not (held_out & ~obs["is_control"]).any()  # a test condition's cells are never sent


def test_uncovered_conditions_are_not_answered(shift_peer, sciplex_fold):
    adata, fold = sciplex_fold
    space, train, test = prepare_fold(adata, fold, EvalConfig())
    seen = {c.perturbation_id for c, _ in train.fitting_conditions(True)}
    cond = test[0][0]
    # a condition whose perturbation has no training cells: rename it
    unseen = type(cond)(cond.context_id, "NOT_A_GENE", ("gene:NOT_A_GENE",))
    assert unseen.perturbation_id not in seen
    model = PeerModel(shift_peer).fit(train)
    preds = model.predict_many([cond, unseen])
    assert model.covers(cond) and not model.covers(unseen)
    assert preds[unseen] is None and model.predict(unseen) is None  # n/a, not another method's answer
    assert preds[cond].shape == (len(train.start_rows(cond.context_id)), space.n_pcs)
    assert unseen not in model.native_
    assert model.not_covered_ == {unseen.key: "perturbation unseen in training"}
    assert model.params()["n_not_covered"] == 1


def test_a_runner_is_seeded(shift_peer, sciplex_fold):
    """The request carries the seed; the runners seed Python, numpy and torch from it (``seed_everything``)."""
    import importlib.util
    import random

    spec = importlib.util.spec_from_file_location("peer_common", RUNNERS / "_common.py")
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    draws = []
    for _ in range(2):
        common.seed_everything(7, 1)
        draws.append((random.random(), np.random.rand(), float(__import__("torch").rand(1))))
    assert draws[0] == draws[1]


def test_a_failing_peer_names_its_log(shift_peer, sciplex_fold, tmp_path):
    adata, fold = sciplex_fold
    _, train, test = prepare_fold(adata, fold, EvalConfig())
    model = PeerModel(shift_peer, params={"fail": True}, workdir=tmp_path / "w").fit(train)
    failed = r"(?s)failed \(exit status 1\).*kept at .*w/trainval_seed0/runner.log.*asked to fail"
    with pytest.raises(PeerError, match=failed):
        model.predict(test[0][0])
    with pytest.raises(PeerError, match="ran past 1 s"):
        PeerModel(shift_peer, params={"sleep": 30}, timeout_s=1).fit(train).predict(test[0][0])


def test_score_fold_puts_a_peer_in_the_comparator_pool(shift_peer, sciplex_fold):
    adata, fold = sciplex_fold
    result = score_fold(adata, fold, methods=[NoChange(), MeanShift(), PeerModel(shift_peer)])
    per = result.per_condition
    assert set(per.loc[per["method"] == "shift", "role"]) == {"peer"}
    assert result.metrics["roles"]["shift"] == "peer"
    entry = result.metrics["comparator_choice"]["validation"]["shift"]
    assert entry["eligible"] and entry["role"] == "peer" and entry["coverage"] == 1.0
    assert result.params["shift"]["peer"] == "mean shift (test)"
    assert (result.validation["method"] == "shift").sum() > 0


def test_benchmark_with_a_peer_and_resume(shift_peer, tmp_path):
    d = {"sciplex_gxe": demo_datasets()["sciplex_gxe"]}
    plan = {"sciplex_gxe": {"S2_unseen_context": 3}}
    run = RunConfig(peers=("shift",), peer_params={"shift": {"sleep": 0}})
    combined = benchmark(d, plan, out=tmp_path / "run", run=run, progress=False, max_folds=1, predictions=True)
    m = combined["sciplex_gxe/S2_unseen_context"]
    assert "shift" in m["methods"] and m["roles"]["shift"] == "peer"
    fold = tmp_path / "run/sciplex_gxe/S2_unseen_context/split_seed0/fold0"
    config = json.loads((fold / "config.json").read_text())
    assert config["peers"]["shift"]["params"] == {"sleep": 0}
    work = next((fold / "peers/shift").rglob("trainval_seed0"))  # the refit; train_seed0 holds the validation fit
    result = work / "result.json"
    assert result.is_file() and (work.parent / "train_seed0/result.json").is_file()
    fitted = json.loads(result.read_text())["fit"]
    assert (
        fitted["n_conditions_used"]
        > json.loads((work.parent / "train_seed0/result.json").read_text())["fit"]["n_conditions_used"]
    )
    per = pd.read_csv(fold / "per_condition.csv")
    assert (per["method"] == "shift").any()
    # the fold's predictions, cell-eval's layout: the peer's cells keep their own gene-space values
    pred = ad.read_h5ad(fold / "predictions.h5ad")
    shift = pred[pred.obs["method"] == "shift"]
    assert set(shift.obs["gene_space"]) == {"native"} and set(shift.obs["role"]) == {"peer"}
    assert set(pred.obs.loc[pred.obs["method"] == "mean_shift", "gene_space"]) == {"reconstructed"}
    assert set(shift.obs["condition"]) == set(per.loc[per["method"] == "shift", "condition"])
    space = EvaluationSpace.load(fold / "eval_space.npz")
    np.testing.assert_allclose(shift.obsm["X_eval"], space.transform(np.asarray(shift.X, dtype=np.float64)), atol=1e-3)
    # the same run again reads the fold back (the peer is not run a second time)
    result.unlink()
    again = benchmark(d, plan, out=tmp_path / "run", run=run, progress=False, max_folds=1, predictions=True)
    key = "sciplex_gxe/S2_unseen_context"
    assert again[key]["methods"]["shift"]["edistance"] == combined[key]["methods"]["shift"]["edistance"]
    assert not result.exists()


def test_peer_names_settings_and_status(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("CELLJEPA_PEERS_HOME", str(tmp_path))
    monkeypatch.setattr(peers_env, "_free_gb", lambda folder: 1e3)  # whatever this disk has free
    assert parse_peers("GEARS, scgen,gears") == ("gears", "scgen")
    with pytest.raises(InputError, match="unknown peer 'scgem'; known: scgen, gears, cpa, state"):
        parse_peers("scgem")
    with pytest.raises(InputError, match=r"settings for peer\(s\) \['cpa'\]"):
        RunConfig(peers=("gears",), peer_params={"cpa": {"max_epochs": 1}})
    status = peer_status("cpa", check_import=False)
    assert not status["available"] and "celljepa peers install cpa" in status["reason"]
    assert "needs Python 3.10" in status["reason"]
    with pytest.raises(InputError, match="failed"):
        install_peer("gears", python=str(tmp_path / "no-python"))
    with pytest.raises(InputError, match=r"needs Python 3.99 and none was found.*--python"):
        _find_python("3.99")
    assert list(tmp_path.iterdir()) == []  # nothing half-made
    capsys.readouterr()
    assert main(["peers", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["scgen", "gears", "cpa", "state"]
    assert all(r["reason"] for r in rows if not r["available"])
    code = main(["benchmark", "--out", str(tmp_path / "b"), "--no-jepa", "--peers", "cpa"])
    assert code != 0 and "peer(s) not available: cpa" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["benchmark", "--out", str(tmp_path / "b"), "--peer-set", "gears=5"])
    assert usage.value.code == 2 and "expected PEER.KEY=VALUE" in capsys.readouterr().err


def test_reuse_adds_a_peer_to_a_finished_run(shift_peer, tmp_path):
    d = {"sciplex_gxe": demo_datasets()["sciplex_gxe"]}
    plan = {"sciplex_gxe": {"S2_unseen_context": 3}}
    first = benchmark(d, plan, out=tmp_path / "a", run=RunConfig(), progress=False, max_folds=1)
    added = benchmark(
        d, plan, out=tmp_path / "b", run=RunConfig(peers=("shift",)), progress=False, max_folds=1, reuse=tmp_path / "a"
    )
    a, b = first["sciplex_gxe/S2_unseen_context"], added["sciplex_gxe/S2_unseen_context"]
    assert set(b["methods"]) == set(a["methods"]) | {"shift"}
    for method, stats in a["methods"].items():  # the stored methods' scores are carried over exactly
        assert b["methods"][method]["edistance"]["mean"] == stats["edistance"]["mean"]
    fold = "sciplex_gxe/S2_unseen_context/split_seed0/fold0"
    metrics = json.loads((tmp_path / "b" / fold / "metrics.json").read_text())
    assert metrics["reused"]["methods_added"] == ["shift"] and metrics["reused"]["baselines_checked"] > 0
    assert "shift" in metrics["comparator_choice"]["validation"]
    # a stored run that is not the same fold (here: a baseline's score edited) is refused, nothing merged
    stored = pd.read_csv(tmp_path / "a" / fold / "per_condition.csv")
    here = pd.read_csv(tmp_path / "b" / fold / "per_condition.csv")
    _check_baselines(here, stored, tmp_path / "a")  # the same fold: accepted
    stored.loc[stored["method"] == "mean_shift", "edistance"] += 0.01
    with pytest.raises(InputError, match=r"differ from the ones stored .*edistance: max difference 0.01"):
        _check_baselines(here, stored, tmp_path / "a")
    with pytest.raises(InputError, match="lacks 1 baseline row"):
        _check_baselines(here, stored.drop(index=stored.index[stored["role"] == "baseline"][0]), tmp_path / "a")
    with pytest.raises(InputError, match="name them with --peers"):
        benchmark(d, plan, out=tmp_path / "c", run=RunConfig(), progress=False, reuse=tmp_path / "a")


def test_install_needs_room_on_the_disk(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("CELLJEPA_PEERS_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(peers_env, "_free_gb", lambda folder: 2.0)
    with pytest.raises(NoSpaceError, match=r"'gears' needs about 2\.5 GB .* has 2\.0 GB free; nothing was installed"):
        install_peer("gears")
    with pytest.raises(NoSpaceError, match="keeping 3 GB free"):
        install_peer("scgen", keep_free_gb=3)
    assert not (tmp_path / "home").exists()
    capsys.readouterr()
    assert main(["peers", "install", "gears", "cpa", "--if-space"]) == 0  # skipped, said so, no failure
    out = capsys.readouterr().out
    assert "skipped gears: peer 'gears' needs about 2.5 GB" in out and "skipped cpa" in out
    assert main(["peers", "install", "--if-space", "--keep-free", "1", "scgen"]) == 0  # options before the name
    said = capsys.readouterr().out
    assert "skipped scgen: peer 'scgen' needs about 3.0 GB of disk to install, keeping 1 GB free" in said
    assert main(["peers", "install", "gears"]) != 0  # without --if-space it is an error
    assert "CELLJEPA_PEERS_HOME" in capsys.readouterr().err
    assert main(["peers", "list", "--available"]) == 0
    assert "gears" not in capsys.readouterr().out.split()


def test_identical_files_are_shared_between_environments(tmp_path):
    def env(name: str, files: dict) -> Path:
        site = tmp_path / name / "lib" / "python3.11" / "site-packages"
        for rel, data in files.items():
            (site / rel).parent.mkdir(parents=True, exist_ok=True)
            (site / rel).write_bytes(data)
        return tmp_path / name

    big, other = b"t" * 200_000, b"u" * 200_000
    old = env("old", {"torch/lib.so": big, "torch/small.py": b"s" * 10, "scipy/x.so": big, "numpy/core.so": other})
    new = env("new", {"torch/lib.so": big, "torch/small.py": b"s" * 10, "scipy/x.so": other, "numpy/core.so": big})
    elsewhere = env("py310", {"torch/lib.so": big})
    (elsewhere / "lib" / "python3.11").rename(elsewhere / "lib" / "python3.10")
    site_new, site_old = (p / "lib" / "python3.11" / "site-packages" for p in (new, old))
    assert _share_identical_files(new, [old, elsewhere]) == len(big)  # same path, same bytes: only torch/lib.so
    assert (site_new / "torch/lib.so").stat().st_ino == (site_old / "torch/lib.so").stat().st_ino
    for rel in ("torch/small.py", "scipy/x.so", "numpy/core.so"):  # too small, different bytes, different path
        assert (site_new / rel).stat().st_ino != (site_old / rel).stat().st_ino
    assert _share_identical_files(new, [old]) == 0  # already shared
    shutil.rmtree(old)  # removing one environment leaves the other whole
    assert (site_new / "torch/lib.so").read_bytes() == big


@pytest.mark.parametrize("rule", ["seen_perturbation", "seen_names_in_context", "genes"])
def test_a_fit_asked_only_for_what_the_peer_cannot_predict_is_not_run(shift_peer, monkeypatch, rule):
    """The coverage rule mirrors the runner's first check: nothing to predict, no fit, every answer n/a."""
    adata = demo_datasets()["norman2019"]
    fold = make_split_folds(adata.obs, "S1_unseen_perturbation", dataset_id="norman2019", n_folds=3)[0]
    _, train, test = prepare_fold(adata, fold, EvalConfig())
    spec = PEERS["shift"]
    monkeypatch.setitem(PEERS, "shift", PeerSpec(**{**spec.__dict__, "coverage": rule}))
    peer = PeerModel("shift", seed=3).fit(train, refit=False)
    names = {t for c, _ in train.train_conditions for t in c.tokens}
    # S1: every test perturbation is unseen in the data it fits on; some of its pairs hold seen genes, so for the
    # rule on names, only those with a gene never seen
    unseen = [c for c, _ in test if rule != "seen_names_in_context" or not set(c.tokens) <= names]
    assert unseen
    seen = train.train_conditions[0][0]
    if rule == "genes":  # a gene rule covers these: the runner runs (and answers what it can)
        assert peer._cannot_predict(unseen) is None
        return
    out = peer.predict_many(unseen)
    assert all(x is None for x in out.values()) and not any(peer.covers(c) for c in unseen)
    assert peer.result_.keys() == {"skipped"} and peer.params()["skipped"] and peer.params()["seed"] == 3
    assert peer.params()["fitted_on"] == "training conditions"
    assert peer._cannot_predict(unseen + [seen]) is None  # one condition it may predict: the runner decides
    kinds = {"k562": "drug"}  # a drug screen: the gene rule has nothing to predict either
    drug = [dataclasses.replace(c, tokens=("drug:x",)) for c in unseen]
    monkeypatch.setitem(PEERS, "shift", PeerSpec(**{**spec.__dict__, "coverage": "genes"}))
    assert PeerModel("shift").fit(train)._cannot_predict(drug) and kinds
