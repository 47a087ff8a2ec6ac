"""RunConfig: one carrier for the seeds, steps and device of a run; every stage asks it."""

from __future__ import annotations

import pytest

from celljepa import InputError
from celljepa.bench import EvalConfig, RunConfig
from celljepa.bench.run import provisional_reason
from celljepa.models.transition import TransitionConfig
from celljepa.train.config import JEPAConfig


def test_each_stage_gets_its_seed_steps_and_device_from_the_run():
    jepa = JEPAConfig().replace(train={"max_steps": 77, "seed": 5})
    run = RunConfig(
        split_seeds=[3, 4],
        model_seeds=(1, 2),
        jepa=jepa,
        transition=TransitionConfig(seed=9),
        jepa_steps=40,
        device="cpu",
    )
    assert run.split_seeds == (3, 4) and run.model_seeds == (1, 2)
    assert run.evaluation.seed == 3 and run.evaluation_for(4).seed == 4
    enc = run.jepa_for(2)
    assert (enc.train.seed, enc.train.max_steps, enc.train.device) == (2, 40, "cpu")
    assert (run.transition_for(1).seed, run.transition_for(1).device) == (1, "cpu")
    # without jepa_steps / device the configs keep their own
    plain = RunConfig(jepa=jepa)
    assert plain.jepa_for(0).train.max_steps == 77 and plain.jepa_for(0).train.device == "auto"
    # the report's rule reads the run's seeds: 1 x 1 is provisional, 3 x 3 is not
    assert provisional_reason(plain.split_seeds, plain.model_seeds, jepa=True).startswith("1 split seed and 1 model")
    full = RunConfig(split_seeds=(0, 1, 2), model_seeds=(0, 1, 2), jepa=jepa)
    assert provisional_reason(full.split_seeds, full.model_seeds, jepa=True) is None
    assert RunConfig().jepa is None


def test_a_seed_is_given_once():
    # EvalConfig.seed is not a second carrier of the split seed
    with pytest.raises(InputError, match="split seeds are given once"):
        RunConfig(split_seeds=(0,), evaluation=EvalConfig(seed=1))
    assert RunConfig(split_seeds=(1, 2), evaluation=EvalConfig(seed=1)).evaluation.seed == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"split_seeds": ()}, "split_seeds must be distinct"),
        ({"model_seeds": (1, 1)}, "model_seeds must be distinct"),
        ({"split_seeds": ("a",)}, "split_seeds must be integers"),
        ({"jepa_steps": 0}, "jepa_steps must be a positive integer"),
        ({"device": "gpu"}, "device must be auto, cpu, cuda"),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(InputError, match=message):
        RunConfig(**kwargs)
    with pytest.raises(InputError, match="no JEPA config"):
        RunConfig().jepa_for(0)
