"""A final verdict (`celljepa benchmark --final`): a clean tree, and its commit and configuration frozen first."""

from __future__ import annotations

import dataclasses
import json

import pytest

from celljepa._errors import CelljepaError, InputError
from celljepa.bench import RunConfig, benchmark, demo_datasets
from celljepa.bench import claims as C
from celljepa.bench import run as R

PLAN = {"sciplex_gxe": {"S2_unseen_context": 3}}


@pytest.fixture(scope="module")
def sciplex():
    return {"sciplex_gxe": demo_datasets()["sciplex_gxe"]}


def _tree(commit="a" * 40, changed=()):
    return lambda **_: {"root": "/repo", "commit": commit, "changed": list(changed)}


def test_a_final_run_refuses_a_dirty_tree_and_an_unknown_commit(sciplex, tmp_path, monkeypatch):
    monkeypatch.setattr(R, "tree_state", _tree(changed=["src/celljepa/x.py", "notes.txt"]))
    with pytest.raises(InputError, match="dirty tree: 2 file") as err:
        benchmark(sciplex, PLAN, out=tmp_path / "dirty", final=True, max_folds=1, progress=False)
    assert "notes.txt" in str(err.value) and not (tmp_path / "dirty").exists()
    monkeypatch.setattr(R, "tree_state", lambda **_: None)
    with pytest.raises(InputError, match="pip install -e"):
        benchmark(sciplex, PLAN, out=tmp_path / "none", final=True, max_folds=1, progress=False)
    with pytest.raises(InputError, match="add --final"):
        benchmark(sciplex, PLAN, out=tmp_path / "x", held_out_datasets=["sciplex_gxe"], max_folds=1, progress=False)


def test_the_configuration_is_frozen_before_the_first_fold(sciplex, tmp_path, monkeypatch):
    monkeypatch.setattr(R, "tree_state", _tree())
    seen = []
    real = R.score_fold

    def spy(*args, **kwargs):  # the record and the claims family exist before any fold is scored
        seen.append(((tmp_path / "f" / "final.json").is_file(), (tmp_path / "f" / "claims.json").is_file()))
        return real(*args, **kwargs)

    monkeypatch.setattr(R, "score_fold", spy)
    combined = benchmark(
        sciplex, PLAN, out=tmp_path / "f", final=True, held_out_datasets=["sciplex_gxe"], max_folds=1, progress=False
    )
    assert seen == [(True, True)]
    record = json.loads((tmp_path / "f" / "final.json").read_text())
    assert record["commit"] == "a" * 40 and len(record["config_digest"]) == 16
    assert record["config"]["split_seeds"] == [0] and record["config"]["plan"] == PLAN
    assert "sciplex_gxe" in record["held_out"] and "hold nothing out" in record["not_held_out"]
    saved = json.loads((tmp_path / "f" / "metrics_combined.json").read_text())
    assert saved["final"] == record and combined["sciplex_gxe/S2_unseen_context"]["n_folds"] == 1
    report = (tmp_path / "f" / "report.md").read_text()
    assert "## Final verdict: frozen before its first fold" in report and record["config_digest"][:12] in report
    # the same command again (a resumed run, a fold task, a collect): the same commit and configuration
    monkeypatch.setattr(R, "score_fold", real)
    benchmark(
        sciplex,
        PLAN,
        out=tmp_path / "f",
        final=True,
        held_out_datasets=["sciplex_gxe"],
        max_folds=1,
        progress=False,
        collect=True,
    )
    # another commit, or another configuration, on the frozen folder: refused
    monkeypatch.setattr(R, "tree_state", _tree(commit="b" * 40))
    with pytest.raises(InputError, match="cannot change"):
        benchmark(
            sciplex,
            PLAN,
            out=tmp_path / "f",
            final=True,
            held_out_datasets=["sciplex_gxe"],
            max_folds=1,
            progress=False,
            collect=True,
        )
    monkeypatch.setattr(R, "tree_state", _tree())
    with pytest.raises(InputError, match="cannot change"):
        benchmark(
            sciplex,
            PLAN,
            out=tmp_path / "f",
            final=True,
            max_folds=1,
            progress=False,
            run=RunConfig(model_seeds=(0, 1)),
            collect=True,
        )
    assert json.loads((tmp_path / "f" / "final.json").read_text()) == record


def test_the_claims_family_is_written_from_the_data_before_fitting(sciplex, tmp_path):
    benchmark(sciplex, PLAN, out=tmp_path / "c", max_folds=2, progress=False)
    claims = json.loads((tmp_path / "c" / "claims.json").read_text())
    combined = json.loads((tmp_path / "c" / "metrics_combined.json").read_text())
    row = claims["rows"]["sciplex_gxe/S2_unseen_context"]
    m = combined["results"]["sciplex_gxe/S2_unseen_context"]
    assert row["n_effect"] == m["n_effect_conditions"] and row["claimable"] is (row["n_effect"] >= 10)
    assert combined["claims"]["rows"]["sciplex_gxe/S2_unseen_context"]["n_effect"] == row["n_effect"]
    assert "before any model was fitted" in claims["computed"]


def test_fold_tasks_fix_the_claims_family_before_their_first_fit_and_collect_checks_it(sciplex, tmp_path, monkeypatch):
    seen = []
    real = R.score_fold

    def spy(*args, **kwargs):
        seen.append((tmp_path / "t" / "claims.json").is_file())
        return real(*args, **kwargs)

    monkeypatch.setattr(R, "score_fold", spy)
    benchmark(sciplex, PLAN, out=tmp_path / "t", max_folds=2, progress=False, tasks="1")
    claims = json.loads((tmp_path / "t" / "claims.json").read_text())
    assert seen == [True] and "before the first fold task" in claims["computed"]
    assert claims["rows"]["sciplex_gxe/S2_unseen_context"]["n_test"] > 0
    benchmark(sciplex, PLAN, out=tmp_path / "t", max_folds=2, progress=False, tasks="0")
    assert json.loads((tmp_path / "t" / "claims.json").read_text()) == claims  # written once, never again
    combined = benchmark(sciplex, PLAN, out=tmp_path / "t", max_folds=2, progress=False, collect=True)
    saved = json.loads((tmp_path / "t" / "metrics_combined.json").read_text())
    assert saved["claims"]["fixed"] == claims["computed"]
    n = combined["sciplex_gxe/S2_unseen_context"]["n_effect_conditions"]
    assert n == claims["rows"]["sciplex_gxe/S2_unseen_context"]["n_effect"]
    # a claims family that the folds contradict is a bug, never silently accepted
    claims["rows"]["sciplex_gxe/S2_unseen_context"]["n_effect"] = n + 1
    (tmp_path / "t" / "claims.json").write_text(json.dumps(claims))
    with pytest.raises(CelljepaError, match="must not depend on the methods"):
        benchmark(sciplex, PLAN, out=tmp_path / "t", max_folds=2, progress=False, collect=True)


def test_fold_tasks_started_together_compute_the_claims_family_once(sciplex, tmp_path, monkeypatch):
    """A Slurm array's first tasks start together: one computes the family, the others wait and read it."""
    import threading
    import time

    calls = []
    real = C.claims_family

    def slow(*args, **kwargs):
        calls.append(threading.get_ident())
        time.sleep(0.5)  # the others arrive while the first still computes
        return real(*args, **kwargs)

    monkeypatch.setattr(C, "claims_family", slow)
    jobs = R.benchmark_tasks(sciplex, PLAN, run=RunConfig(), max_folds=2)
    got = [None] * 4

    def task(i):
        got[i] = C.fixed_claims(tmp_path / "a", sciplex, jobs, RunConfig(), when="by a fold task")

    threads = [threading.Thread(target=task, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1  # computed once
    assert not (tmp_path / "a" / ".claims.lock").exists()  # no lock file left in the run folder
    claims = json.loads((tmp_path / "a" / "claims.json").read_text())
    assert all(g[0] == claims for g in got)
    assert sum(bool(g[1]) for g in got) == 1  # only the task that computed it holds the folds' effect tables
    # the same inputs later (a restarted run): read back, not computed again
    again, effects = C.fixed_claims(tmp_path / "a", sciplex, jobs, RunConfig())
    assert len(calls) == 1 and not effects and again == claims
    # other inputs in the same folder (here the evaluation settings): computed again and replaced
    other = RunConfig(evaluation=dataclasses.replace(RunConfig().evaluation, effect_alpha=0.01))
    new, effects = C.fixed_claims(tmp_path / "a", sciplex, jobs, other)
    assert len(calls) == 2 and effects and new["inputs"] != claims["inputs"]
    assert json.loads((tmp_path / "a" / "claims.json").read_text()) == new


def test_a_restarted_run_reads_its_claims_family_back_and_a_refused_collect_writes_nothing(
    sciplex, tmp_path, monkeypatch
):
    calls = []
    real = C.claims_family

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(C, "claims_family", counted)
    with pytest.raises(InputError, match="not finished"):
        benchmark(sciplex, PLAN, out=tmp_path / "r", max_folds=2, progress=False, collect=True)
    assert calls == [] and not (tmp_path / "r" / "claims.json").exists()
    first = benchmark(sciplex, PLAN, out=tmp_path / "r", max_folds=2, progress=False)
    assert len(calls) == 1
    claims = json.loads((tmp_path / "r" / "claims.json").read_text())
    again = benchmark(sciplex, PLAN, out=tmp_path / "r", max_folds=2, progress=False)  # every fold read back
    assert len(calls) == 1 and json.loads((tmp_path / "r" / "claims.json").read_text()) == claims
    assert json.dumps(again, sort_keys=True, default=str) == json.dumps(first, sort_keys=True, default=str)
