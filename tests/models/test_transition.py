"""Transition models on synthetic sets: residual parameterisation, the set loss, determinism, persistence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from celljepa._errors import InputError
from celljepa.eval.edistance import edistance_sets
from celljepa.models.base import Condition, TrainData
from celljepa.models.baselines import MeanShift
from celljepa.models.transition import ActionFeaturizer, JEPATransition, TransitionConfig, load_transition_config

D = 6


def _synthetic(contract: float = 0.3, seed: int = 0):
    """Four contexts; perturbation P shifts cells AND contracts them towards the context centre.

    Training contexts a, b; validation c; test d (only its controls are visible). A mean shift cannot
    reproduce the contraction, a per-cell map can.
    """
    rng = np.random.default_rng(seed)
    centres = {c: rng.normal(0, 3, D) for c in "abcd"}
    shift = np.r_[2.0, -1.0, np.zeros(D - 2)]
    z, obs, conds = [], [], {}
    row = 0
    for ctx, centre in centres.items():
        ctrl = centre + rng.normal(size=(200, D))
        z.append(ctrl)
        obs += [(ctx, "control", "control:CTRL", True)] * 200
        row += 200
        pert = centre + shift + contract * rng.normal(size=(200, D))
        z.append(pert)
        obs += [(ctx, "P", "gene:P", False)] * 200
        conds[ctx] = (Condition(ctx, "P", ("gene:P",)), np.arange(row, row + 200))
        row += 200
    frame = pd.DataFrame(obs, columns=["context_id", "perturbation_id", "perturbation_tokens", "is_control"])
    z = np.vstack(z)
    test_cond, test_rows = conds["d"]
    visible = np.setdiff1d(np.arange(len(z)), test_rows)
    remap = -np.ones(len(z), dtype=int)
    remap[visible] = np.arange(visible.size)
    train = TrainData(
        z=z[visible],
        obs=frame.iloc[visible].reset_index(drop=True),
        train_conditions=[(conds[c][0], remap[conds[c][1]]) for c in "ab"],
        val_conditions=[(conds["c"][0], remap[conds["c"][1]])],
        embedding=z[visible].copy(),
    )
    return train, test_cond, z[test_rows]


def _edist(pred, obs):
    return float(edistance_sets([pred], [obs], cap=256, n_resamples=5, seed=0)[0])


def test_untrained_model_is_exactly_the_mean_shift_baseline():
    train, cond, _ = _synthetic()
    model = JEPATransition("set", TransitionConfig(max_steps=1, lr=0.0, eval_every=1)).fit(train)
    de = np.mean([train.shift(c, r) for c, r in train.train_conditions], axis=0)
    np.testing.assert_allclose(model.predict(cond), train.control_cells("d") + de, atol=1e-4)
    assert model.params()["best_step"] == 0 and model.params()["init_val_edistance"] == model.val_edistance_
    assert model.init_ == "mean_shift"


def test_start_is_no_change_when_validation_prefers_it():
    train, cond, _ = _synthetic()
    # validation context c: make its perturbed cells look like its controls, so a zero residual wins
    ((c_cond, c_rows),) = train.val_conditions
    ctrl = train.control_rows("c")
    train.z[c_rows] = train.z[ctrl]
    train.embedding[c_rows] = train.embedding[ctrl]
    model = JEPATransition("set", TransitionConfig(max_steps=1, lr=0.0, eval_every=1)).fit(train)
    assert model.init_ == "no_change"
    np.testing.assert_allclose(model.predict(cond), train.control_cells("d"), atol=1e-5)


def test_set_model_learns_the_contraction_a_mean_shift_cannot():
    train, cond, observed = _synthetic()
    ms = MeanShift().fit(train)
    # one context-free map: with two training contexts a context vector would only let the map memorise them
    cfg = TransitionConfig(max_steps=300, eval_every=25, patience=20, seed=1, use_context=False)
    model = JEPATransition("set", cfg).fit(train)
    e_set, e_ms = _edist(model.predict(cond), observed), _edist(ms.predict(cond), observed)
    assert e_set < 0.5 * e_ms, (e_set, e_ms)
    pred = model.predict(cond)
    assert pred.std(axis=0).mean() < 0.7 * train.control_cells("d").std(axis=0).mean()
    assert model.val_edistance_ < model.init_val_edistance_


def test_prototype_model_shifts_the_controls_by_one_vector():
    train, cond, observed = _synthetic()
    model = JEPATransition("prototype", TransitionConfig(max_steps=150, eval_every=25)).fit(train)
    pred, ctrl = model.predict(cond), train.control_cells("d")
    delta = pred - ctrl
    np.testing.assert_allclose(delta, np.broadcast_to(delta[0], delta.shape), atol=1e-4)
    # the mean is learned: closer to the observed mean than the controls are
    assert np.linalg.norm(pred.mean(0) - observed.mean(0)) < np.linalg.norm(ctrl.mean(0) - observed.mean(0))


@pytest.mark.parametrize("loss_space", ["decoded", "jepa"])
def test_fit_is_deterministic_for_a_seed(loss_space):
    train, cond, _ = _synthetic()
    cfg = TransitionConfig(max_steps=40, eval_every=10, loss_space=loss_space, seed=3)
    a = JEPATransition("set", cfg).fit(train).predict(cond)
    b = JEPATransition("set", cfg).fit(train).predict(cond)
    np.testing.assert_array_equal(a, b)
    c = JEPATransition("set", cfg.replace(seed=4)).fit(train).predict(cond)
    assert not np.array_equal(a, c)


def test_save_and_load_round_trip(tmp_path):
    train, cond, _ = _synthetic()
    model = JEPATransition("set", TransitionConfig(max_steps=30, eval_every=10)).fit(train)
    model.save(tmp_path / "m")
    back = JEPATransition.load(tmp_path / "m")
    ctrl = train.control_rows("d")
    expected = model.predict_cells(cond, train.embedding[ctrl], train.z[ctrl])
    got = back.predict_cells(cond, train.embedding[ctrl], train.z[ctrl])
    np.testing.assert_allclose(got[1], expected[1], atol=1e-6)
    np.testing.assert_allclose(got[0], expected[0], atol=1e-6)
    assert back.kind == "set" and back.vocab_ == model.vocab_
    with pytest.raises(InputError, match="no transition model"):
        JEPATransition.load(tmp_path / "nothing")


def test_errors_name_the_fix():
    train, cond, _ = _synthetic()
    train.embedding = None
    with pytest.raises(InputError, match="needs JEPA embeddings"):
        JEPATransition("set").fit(train)
    with pytest.raises(InputError, match="kind must be one of"):
        JEPATransition("diffusion")
    with pytest.raises(InputError, match="loss_space"):
        TransitionConfig(loss_space="pca")
    with pytest.raises(InputError, match="unknown transition setting 'set_sise'.*set_size"):
        TransitionConfig().replace(set_sise=3)
    with pytest.raises(InputError, match="not fitted"):
        JEPATransition("set").predict(cond)


def test_config_file_and_overrides(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("transition:\n  set_size: 32\n  loss_space: jepa\n")
    cfg = load_transition_config(path, {"max_steps": 7})
    assert (cfg.set_size, cfg.loss_space, cfg.max_steps) == (32, "jepa", 7)
    assert load_transition_config() == TransitionConfig()


def test_config_values_are_typed_like_the_jepa_config(tmp_path):
    # YAML 1.1 reads 3e-4 as a string and "no" as a string in quotes: both become what the setting is
    path = tmp_path / "t.yaml"
    path.write_text("lr: 3e-4\nuse_context: 'no'\nmax_steps: 20.0\n")
    cfg = load_transition_config(path)
    assert (cfg.lr, cfg.use_context, cfg.max_steps) == (3e-4, False, 20)
    assert isinstance(cfg.lr, float) and isinstance(cfg.max_steps, int)
    for bad, message in [
        ({"lr": "fast"}, "lr must be a number, got 'fast'"),
        ({"use_context": "maybe"}, "use_context must be on/off"),
        ({"max_steps": 2.5}, "max_steps must be an integer"),
        ({"lr": -1.0}, "lr must be >= 0"),
        ({"weight_decay": -0.1}, "weight_decay must be >= 0"),
        ({"decoder": "residul"}, "Did you mean 'residual'"),
        ({"device": "gpu"}, "device must be auto, cpu, cuda"),
    ]:
        with pytest.raises(InputError, match=message):
            load_transition_config(overrides=bad)


def test_bad_transition_set_is_a_clean_cli_error(tmp_path, capsys):
    from celljepa.cli import main

    out = tmp_path / "run"
    code = main(["benchmark", "--data", "demo", "--out", str(out), "--transition-set", "lr=fast"])
    assert code == 1
    err = capsys.readouterr().err
    assert "transition config: lr must be a number, got 'fast'" in err and "Traceback" not in err
    assert not out.exists(), "a bad setting is refused before anything is written"


def test_featurizer_marks_known_and_unknown_tokens():
    feats = ActionFeaturizer.build(pca_loadings={"A": np.array([1.0, 0.0]), "B": np.array([0.0, 2.0])})
    a, unknown = feats.token("gene:A"), feats.token("gene:ZZZ")
    assert feats.dim == 2 + 1 + 0 + 1 and a[2] == 1.0 and not unknown.any()
    assert not feats.token("drug:aspirin").any()


def test_shipped_default_config_is_the_built_in_default():
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "configs" / "transition" / "default.yaml"
    assert load_transition_config(path) == TransitionConfig()


def test_pca_twin_needs_no_embedding():
    train, cond, observed = _synthetic()
    train.embedding = None
    twin = JEPATransition("set", TransitionConfig(max_steps=30, eval_every=10), space="pca").fit(train)
    assert twin.name == "pca_set" and twin.role == "pca_twin" and not twin.is_baseline
    assert twin.predict(cond).shape == train.control_cells("d").shape
    assert train.embedding is None  # the caller's TrainData is left as it was
    with pytest.raises(InputError, match="space must be"):
        JEPATransition("set", space="umap")


def test_a_zero_residual_predicts_the_controls_exactly():
    train, cond, _ = _synthetic()
    train.z = train.z + 1e-3 * np.pi  # coordinates that float32 cannot hold exactly
    train.embedding = train.z.astype(np.float32)
    model = JEPATransition("set", TransitionConfig(max_steps=1, lr=0.0, eval_every=1, ensemble=1)).fit(train)
    with __import__("torch").no_grad():
        model.net_.body[-1].bias.zero_()
    np.testing.assert_array_equal(model.predict(cond), train.control_cells("d"))


def test_verdict_never_calls_rounding_a_win_or_a_loss():
    from celljepa.bench.pooling import summarize

    rows = []
    for i in range(12):
        base = 0.02 + 0.01 * i
        rows += [
            {"method": "no_change", "role": "baseline", "condition": f"c{i}", "edistance": base},
            {"method": "jepa_set", "role": "jepa", "condition": f"c{i}", "edistance": base + 1e-10},
        ]
    frame = pd.DataFrame(rows)
    for k in ("mse", "cosine_distance", "delta_pearson", "delta_pearson_top20_de", "top1", "mrr"):
        frame[k] = 0.5
    frame["model_seed"], frame["split_seed"], frame["fold"] = np.nan, 0, 0
    assert summarize(frame, per_seed=frame, n_boot=200)["verdict"]["outcome"] == "no detectable difference"
    frame.loc[frame["method"] == "jepa_set", "edistance"] += 0.01
    assert summarize(frame, per_seed=frame, n_boot=200)["verdict"]["outcome"] == "loses"


def test_learning_rate_warm_up_and_cosine_schedule():
    model = JEPATransition("set", TransitionConfig(max_steps=1000, lr_warmup=100, lr_schedule="cosine"))
    assert model._lr_factor(1) == pytest.approx(0.01 * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * 0.001))))
    assert model._lr_factor(100) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * 0.1)))
    assert model._lr_factor(500) == pytest.approx(0.55)
    assert model._lr_factor(1000) == pytest.approx(0.1)
    flat = JEPATransition("set", TransitionConfig())
    assert {flat._lr_factor(s) for s in (1, 400, 800)} == {1.0}
    with pytest.raises(InputError, match="lr_schedule"):
        TransitionConfig(lr_schedule="linear")
    with pytest.raises(InputError, match="ensemble"):
        TransitionConfig(ensemble=0)


def test_later_settings_stay_out_of_the_record_at_the_value_earlier_runs_used():
    # a run frozen before lr_warmup / lr_schedule / ensemble existed recorded none of them: one network
    single = TransitionConfig(ensemble=1)
    assert not {"lr_warmup", "lr_schedule", "ensemble"} & set(single.to_dict())
    assert TransitionConfig.from_dict(single.to_dict()) == single
    # the ensemble of 3 is the default now, and is recorded (so it never matches an earlier run's digest)
    assert TransitionConfig().ensemble == 3 and TransitionConfig().to_dict()["ensemble"] == 3
    changed = TransitionConfig(lr_warmup=50).to_dict()
    assert changed["ensemble"] == 3 and changed["lr_warmup"] == 50 and "lr_schedule" not in changed
    assert TransitionConfig.from_dict(changed) == TransitionConfig(lr_warmup=50)


def test_ensemble_predicts_the_mean_of_its_members_and_round_trips(tmp_path):
    train, cond, _ = _synthetic()
    cfg = TransitionConfig(max_steps=60, eval_every=10, seed=2)
    ens = JEPATransition("set", cfg.replace(ensemble=3)).fit(train)
    members = [JEPATransition("set", cfg.replace(seed=2 + 1000 * k, ensemble=1)).fit(train) for k in range(3)]
    ctrl = train.control_rows("d")
    z, e = train.embedding[ctrl], train.z[ctrl]
    mean_residual = np.mean([m.predict_cells(cond, z, e)[0] - z for m in members], axis=0)
    np.testing.assert_allclose(ens.predict_cells(cond, z, e)[0] - z, mean_residual, atol=1e-5)
    assert ens.params()["member_best_steps"] == [m.best_step_ for m in members]
    assert ens.best_step_ == max(m.best_step_ for m in members)
    # the ensemble's validation score is its own, not a member's
    assert np.isfinite(ens.val_edistance_)
    ens.save(tmp_path / "e")
    back = JEPATransition.load(tmp_path / "e")
    np.testing.assert_allclose(back.predict_cells(cond, z, e)[1], ens.predict_cells(cond, z, e)[1], atol=1e-6)
    again = JEPATransition("set", cfg.replace(ensemble=3)).fit(train)
    np.testing.assert_array_equal(again.predict(cond), ens.predict(cond))


def test_a_single_network_saved_without_the_ensemble_key_loads_as_one_network(tmp_path):
    train, cond, _ = _synthetic()
    single = JEPATransition("set", TransitionConfig(max_steps=10, eval_every=5, ensemble=1)).fit(train)
    single.save(tmp_path / "one")
    back = JEPATransition.load(tmp_path / "one")
    assert back.config.ensemble == 1 and type(back.net_).__name__ == "TransitionNet"
    ctrl = train.control_rows("d")
    got = back.predict_cells(cond, train.embedding[ctrl], train.z[ctrl])[1]
    np.testing.assert_allclose(got, single.predict(cond), atol=1e-6)
