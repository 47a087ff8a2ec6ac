"""Cross-dataset holdout on the demo's two studies: transfer, prediction with another dataset's encoder, report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from celljepa import InputError
from celljepa.bench import RunConfig, demo_datasets
from celljepa.bench.holdout import holdout_rows, holdout_run, transfer_rows
from celljepa.cli import main
from celljepa.models.transition import TransitionConfig
from celljepa.train.config import load_config

JEPA = {"train": {"max_steps": 12, "batch_size": 64}, "model": {"n_hidden": 32, "predictor_hidden": 32, "n_latent": 16}}


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    from celljepa.bench import holdout as holdout_module

    d = demo_datasets()
    out = tmp_path_factory.mktemp("holdout") / "sciplex_gxe"
    real, seen = holdout_module._pretrain, []

    def pretrain(*args, **kwargs):  # records whether the claims family was on disk before the first fit
        seen.append((out / "claims.json").is_file())
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(holdout_module, "_pretrain", pretrain)
        res = holdout_run(
            {"norman2019": d["norman2019"], "sciplex_gxe": d["sciplex_gxe"]},
            "sciplex_gxe",
            out=out,
            run=RunConfig(jepa=load_config(overrides=JEPA), transition=TransitionConfig(max_steps=20)),
            max_folds=1,
            progress=False,
        )
    res["_claims_before_first_fit"] = seen[0]
    return out, res, d


def test_the_held_out_dataset_is_never_seen_by_the_encoder_from_elsewhere(result):
    out, res, d = result
    assert res["split"] == "S4_holdout_dataset" and res["pretrained_on"] == ["norman2019"]
    assert res["encoders"]["others"]["n_train_cells"] == d["norman2019"].n_obs
    assert res["encoders"]["self"]["n_train_cells"] == d["sciplex_gxe"].n_obs
    assert res["encoders"]["others"]["n_genes"] == res["feature_set"]["n_genes"] == res["encoders"]["self"]["n_genes"]
    assert json.loads((out / "holdout.json").read_text())["holdout"] == "sciplex_gxe"
    assert (out / "feature_set.txt").is_file() and (out / "holdout.md").read_text().startswith("# Cross-dataset")


def test_transfer_scores_three_embeddings_of_the_held_out_cells(result):
    _, res, _ = result
    rows = {r["label"]: r for r in transfer_rows(res)}
    assert set(rows) == {"cell_type", "perturbation_id"} and rows["cell_type"]["n_classes"] == 3
    for r in rows.values():
        for key in ("X_jepa_others", "X_jepa_self", "X_pca_self"):
            assert 0.0 <= r[key] <= 1.0
    assert rows["cell_type"]["X_pca_self"] > 0.9  # three cell lines separate on their own PCA


def test_prediction_compares_the_two_encoders_on_the_same_conditions(result):
    _, res, _ = result
    m = res["prediction"]["S1_unseen_perturbation"]
    assert {"jepa_set_self", "jepa_set_others", "jepa_prototype_self", "jepa_prototype_others"} <= set(m["methods"])
    assert m["roles"][m["comparator"]] in ("baseline", "pca_twin") and m["primary"] == "jepa_set_others"
    assert m["roles"]["jepa_set_self"] == m["roles"]["jepa_set_others"] == "jepa"
    (row,) = [r for r in holdout_rows(res) if r["model"] == "jepa_set"]
    # the paired difference is over the same conditions (those with an effect): the difference of the two means
    assert row["n"] == m["n_effect_conditions"] > 0
    assert row["diff"] == pytest.approx(row["edistance_others"] - row["edistance_self"], abs=1e-9)
    assert row["ci_low"] <= row["diff"] <= row["ci_high"] and 0 < row["p"] <= 1
    # one fold of the demo's sci-Plex study holds too few conditions for any claim: not in the claims family
    assert row["n"] < 10 and row["outcome"] == "not claimable" and np.isfinite(row["edistance_comparator"])
    v = m["verdict"]
    assert not v["claimable"] and m["holm_family_size"] == 0
    assert m["others_vs_self"]["set"]["outcome"] == "not claimable" and m["others_vs_self"]["set"]["p_holm"] is None


def test_the_claims_family_is_fixed_from_the_data_before_any_encoder_is_trained(result):
    out, res, _ = result
    assert res.pop("_claims_before_first_fit") is True
    claims = json.loads((out / "claims.json").read_text())
    assert claims == res["claims"] and claims["computed"].endswith("before any model was fitted")
    row = claims["rows"]["sciplex_gxe/S1_unseen_perturbation"]
    m = res["prediction"]["S1_unseen_perturbation"]
    assert row["n_effect"] == m["n_effect_conditions"] and row["claimable"] is False


@pytest.mark.extended
def test_cli_and_the_report_merge_holdout_runs(tmp_path, capsys):
    out = tmp_path / "h"
    args = [
        "holdout",
        "--data",
        "demo",
        "--holdout",
        "norman2019",
        "--max-folds",
        "1",
        "--jepa-steps",
        "12",
        "--jepa-set",
        "train.batch_size=64",
        "--jepa-set",
        "model.n_hidden=32",
        "--jepa-set",
        "model.predictor_hidden=32",
        "--jepa-set",
        "model.n_latent=16",
        "--transition-set",
        "max_steps=20",
        "--no-progress",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "# Cross-dataset holdout: norman2019" in printed and "sciplex_gxe" in printed
    assert main(["report", "--runs", str(out), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Cross-dataset holdout" in md and "| norman2019 | S1_unseen_perturbation |" in md
    assert "Embedding transfer" in md and "elsewhere − own, jepa_set" in md
    assert main([*args[:4], "kang2018", *args[5:]]) == 1
    assert "is not one of the --data datasets" in capsys.readouterr().err


def test_a_holdout_needs_another_dataset():
    d = demo_datasets()
    with pytest.raises(InputError, match="at least two datasets"):
        holdout_run({"norman2019": d["norman2019"]}, "norman2019", out="unused", run=RunConfig(jepa=load_config()))


def test_a_restarted_holdout_reads_back_its_encoders_and_folds(result, caplog, monkeypatch):
    """A second run on the same folder trains and scores nothing: encoders and folds are read back by digest."""
    from celljepa.bench import evaluate as evaluate_module
    from celljepa.bench import holdout as holdout_module

    out, res, d = result
    assert (out / "encoders" / "others_seed0" / "inputs.json").is_file()
    assert (out / "S1_unseen_perturbation" / "split_seed0" / "fold0" / "fold.json").is_file()

    def no_training(*args, **kwargs):
        raise AssertionError("a finished encoder was trained again")

    monkeypatch.setattr(holdout_module, "_pretrain", no_training)
    monkeypatch.setattr(evaluate_module, "score_fold", no_training)
    again = holdout_run(
        {"norman2019": d["norman2019"], "sciplex_gxe": d["sciplex_gxe"]},
        "sciplex_gxe",
        out=out,
        run=RunConfig(jepa=load_config(overrides=JEPA), transition=TransitionConfig(max_steps=20)),
        max_folds=1,
        progress=False,
    )

    def same(a, b):  # NaN-safe
        return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)

    assert same(again["prediction"], res["prediction"]) and same(again["transfer"], res["transfer"])
    assert same(again["encoders"], res["encoders"])


@pytest.mark.extended
def test_holdout_tasks_run_apart_then_collect_equals_one_run(result, tmp_path):
    """Encoder tasks, then fold tasks (as two Slurm arrays would run them), then --collect: the same numbers."""
    from celljepa.bench.holdout import holdout_tasks

    out, res, d = result
    data = {"norman2019": d["norman2019"], "sciplex_gxe": d["sciplex_gxe"]}
    run = RunConfig(jepa=load_config(overrides=JEPA), transition=TransitionConfig(max_steps=20))
    apart = tmp_path / "apart"
    listed = holdout_tasks(data, "sciplex_gxe", out=apart, run=run, max_folds=1)
    assert [(k, label) for k, label, _ in listed] == [
        ("encoder", "others_seed0"),
        ("encoder", "self"),
        ("fold", "S1_unseen_perturbation split_seed0 fold0"),
    ]
    kw = dict(out=apart, run=run, max_folds=1, progress=False)
    with pytest.raises(InputError, match=r"encoder task\(s\) \[0, 1\] .* are not finished"):
        holdout_run(data, "sciplex_gxe", tasks=[2], **kw)
    with pytest.raises(InputError, match=r"3 of 3 holdout tasks are not finished .* task\(s\) 0, 1, 2"):
        holdout_run(data, "sciplex_gxe", collect=True, **kw)
    assert not (apart / "claims.json").exists()  # refused before any work: nothing written
    assert holdout_run(data, "sciplex_gxe", tasks=[1, 0], **kw) == {"tasks": {0: "done", 1: "done"}}
    assert not (apart / "claims.json").exists()  # encoder tasks score no condition
    assert holdout_run(data, "sciplex_gxe", tasks=[2], **kw) == {"tasks": {2: "done"}}
    claims = json.loads((apart / "claims.json").read_text())  # fixed by the fold task before it fitted
    assert claims["computed"].endswith("before the first fold task fitted a model")
    assert not (apart / "holdout.json").exists()
    merged = holdout_run(data, "sciplex_gxe", collect=True, **kw)
    assert merged["claims"] == claims and claims["rows"] == res["claims"]["rows"]

    def same(a, b):  # NaN-safe
        return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)

    assert same(merged["prediction"], res["prediction"]) and same(merged["transfer"], res["transfer"])


def test_a_holdout_of_other_inputs_never_replaces_a_finished_one(result, tmp_path):
    """Another run into a finished holdout folder is refused before anything is written, or --overwrite."""
    import hashlib

    from celljepa.bench import benchmark

    out, _res, d = result

    def tree(folder):
        return {
            p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        }

    data = {"norman2019": d["norman2019"], "sciplex_gxe": d["sciplex_gxe"]}
    before = tree(out)
    other = RunConfig(jepa=load_config(overrides=JEPA), transition=TransitionConfig(max_steps=21))
    for tasks in (None, [2]):
        with pytest.raises(InputError, match=r"holds a finished holdout task made with other inputs.*--overwrite"):
            holdout_run(data, "sciplex_gxe", out=out, run=other, max_folds=1, progress=False, tasks=tasks)
        assert tree(out) == before
    # a run of another kind into it is refused too, and a holdout into a benchmark run
    with pytest.raises(InputError, match=r"holds a finished holdout run \(holdout.json\): a benchmark run must not"):
        benchmark(
            {"sciplex_gxe": d["sciplex_gxe"]},
            {"sciplex_gxe": {"S2_unseen_context": 3}},
            out=out,
            progress=False,
            max_folds=1,
        )
    assert tree(out) == before
    bench = tmp_path / "bench"
    benchmark(
        {"sciplex_gxe": d["sciplex_gxe"]},
        {"sciplex_gxe": {"S2_unseen_context": 3}},
        out=bench,
        progress=False,
        max_folds=1,
    )
    done = tree(bench)
    with pytest.raises(InputError, match=r"holds a finished benchmark run \(metrics_combined.json\): a holdout run"):
        holdout_run(data, "sciplex_gxe", out=bench, run=other, max_folds=1, progress=False)
    assert tree(bench) == done
