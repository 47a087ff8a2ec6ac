"""Every cj.pl function takes ax=, show=, save= and return_fig= the same way, and returns the same things."""

from __future__ import annotations

import inspect
import json

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

import celljepa as cj  # noqa: E402

VERDICT = {
    "dataset_id": "d",
    "split": "S1",
    "verdict": {
        "model": "jepa_set",
        "baseline": "ridge",
        "outcome": "no detectable difference",
        "n": 12,
        "edistance": {"diff": -0.1, "ci_low": -0.3, "ci_high": 0.1, "n": 12, "outcome": "no detectable difference"},
        "secondary": {
            "delta_pearson": {
                "vs_comparator": {
                    "diff": 0.1,
                    "ci_low": -0.1,
                    "ci_high": 0.3,
                    "n": 12,
                    "outcome": "no detectable difference",
                }
            }
        },
    },
}
METRICS = {
    "methods": {
        m: {"edistance": {"mean": v, "ci_low": v - 0.1, "ci_high": v + 0.1, "n": 5}}
        for m, v in (("no_change", 0.9), ("ridge", 0.4))
    }
}
ROWS = [
    {
        "dataset_id": "d",
        "split": "S1",
        "run": "r",
        "model": "jepa_set",
        "baseline": "ridge",
        "outcome": "no detectable difference",
        "n": 12,
        "old_protocol": False,
        "edistance": {"diff": -0.1, "ci_low": -0.3, "ci_high": 0.1},
    }
]


def _calls(demo, pred=None):
    distances = pd.Series([0.5, 0.0, 2.0], index=["x", "control", "y"])
    records = [{"step": s, "split": "train", "loss": 1.0 / (s + 1)} for s in range(5)]
    return {
        "benchmark": lambda **kw: cj.pl.benchmark(METRICS, **kw),
        "condition_counts": lambda **kw: cj.pl.condition_counts(demo, **kw),
        "edistance": lambda **kw: cj.pl.edistance(distances=distances, **kw),
        "jepa_training": lambda **kw: cj.pl.jepa_training(records, metrics=("loss",), **kw),
        "verdict": lambda **kw: cj.pl.verdict({"results": {"d/S1": VERDICT}}, metrics=("edistance",), **kw),
        "where_jepa_helps": lambda **kw: cj.pl.where_jepa_helps(ROWS, **kw),
        "predicted_vs_observed": lambda **kw: cj.pl.predicted_vs_observed(pred, "k562|KLF1", "ridge", **kw),
    }


def test_every_plot_function_has_the_same_keywords():
    for name in cj.pl.__all__:
        params = inspect.signature(getattr(cj.pl, name)).parameters
        for key, default in (("ax", None), ("show", None), ("save", None), ("return_fig", False)):
            assert key in params and params[key].kind is inspect.Parameter.KEYWORD_ONLY, (name, key)
            assert params[key].default is default, (name, key)


def test_every_plot_function_is_annotated_and_documented():
    for name in cj.pl.__all__:
        func = getattr(cj.pl, name)
        assert inspect.signature(func).return_annotation == "Figure | Axes | list[Axes] | None", name
        doc = inspect.getdoc(func)
        for section in ("Parameters\n----------", "Returns\n-------", "Examples\n--------"):
            assert section in doc, (name, section)


@pytest.mark.parametrize(
    "name",
    [
        "benchmark",
        "condition_counts",
        "edistance",
        "jepa_training",
        "verdict",
        "where_jepa_helps",
        "predicted_vs_observed",
    ],
)
def test_one_contract(name, demo, tmp_path, fold_predictions):
    call = _calls(demo, fold_predictions[0].predictions)[name]
    # the default: axes back (one panel here), nothing shown on a non-interactive backend
    ax = call(show=False)
    assert isinstance(ax, plt.Axes)
    plt.close(ax.figure)
    # return_fig: the figure; save: a complete file, written through a temporary name
    path = tmp_path / f"{name}.png"
    fig = call(save=path, return_fig=True)
    assert isinstance(fig, plt.Figure) and path.read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    plt.close(fig)
    # ax=: drawn into the caller's axes, the caller's figure untouched in size
    given_fig, given = plt.subplots(figsize=(5, 4))
    out = call(ax=given, show=False)
    assert out is given and given.figure is given_fig and tuple(given_fig.get_size_inches()) == (5, 4)
    plt.close(given_fig)
    # show=True on Agg: plt.show is called and nothing is returned
    assert call(show=True) is None
    plt.close("all")


def test_ax_is_refused_for_a_plot_of_several_panels(tmp_path):
    metrics = {
        "methods": {
            "a": {
                "edistance": {"mean": 1, "ci_low": 0, "ci_high": 2, "n": 3},
                "mse": {"mean": 1, "ci_low": 0, "ci_high": 2, "n": 3},
            }
        }
    }
    fig, ax = plt.subplots()
    with pytest.raises(cj.InputError, match="ax= takes a plot of one panel; 2 metrics"):
        cj.pl.benchmark(metrics, ax=ax, show=False)
    axes = cj.pl.benchmark(metrics, show=False)
    assert isinstance(axes, list) and len(axes) == 2
    plt.close("all")
    (tmp_path / "metrics_combined.json").write_text(json.dumps({"results": {"d/S1": VERDICT}}))
    assert len(cj.pl.verdict(tmp_path, show=False)) == 2
    plt.close("all")
