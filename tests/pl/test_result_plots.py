"""cj.pl.benchmark and cj.pl.edistance, headless: saved PNGs are non-empty and the axes hold the methods."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

import celljepa as cj  # noqa: E402

METRICS = {
    "dataset_id": "d",
    "split": "S1_unseen_perturbation",
    "fold": 0,
    "best_baseline": "ridge",
    "methods": {
        m: {
            "edistance": {"mean": v, "ci_low": v - 0.1, "ci_high": v + 0.1, "n": 5},
            "delta_pearson": {"mean": 1 - v, "ci_low": 0.5 - v, "ci_high": 1.2 - v, "n": 5},
        }
        for m, v in (("no_change", 0.9), ("mean_shift", 0.6), ("ridge", 0.4))
    },
}


def test_benchmark_plot(tmp_path):
    path = tmp_path / "bars.png"
    fig = cj.pl.benchmark(METRICS, save=path, show=False, return_fig=True)
    assert path.stat().st_size > 5000
    assert len(fig.axes) == 2
    for ax in fig.axes:
        assert [t.get_text() for t in ax.get_xticklabels()] == ["no_change", "mean_shift", "ridge"]
        assert len(ax.patches) == 3
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights == pytest.approx([0.9, 0.6, 0.4])
    plt.close(fig)
    with pytest.raises(cj.InputError, match="not in the results"):
        cj.pl.benchmark(METRICS, metrics_to_show=["mrr"], show=False)


def test_edistance_plots(tmp_path):
    mat = pd.DataFrame([[0, 1.0, 2.0], [1.0, 0, 1.5], [2.0, 1.5, 0]], index=list("abc"), columns=list("abc"))
    fig = cj.pl.edistance(distances=mat, save=tmp_path / "heat.png", show=False, return_fig=True)
    assert (tmp_path / "heat.png").stat().st_size > 3000
    assert sorted(t.get_text() for t in fig.axes[0].get_xticklabels()) == ["a", "b", "c"]
    plt.close(fig)
    series = pd.Series([0.5, 0.0, 2.0], index=["x", "control", "y"])
    fig = cj.pl.edistance(distances=series, show=False, return_fig=True)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["control", "x", "y"]
    plt.close(fig)
    with pytest.raises(cj.InputError, match="cj.tl.edistance"):
        cj.pl.edistance(cj.datasets.demo(), show=False)
    assert np.isfinite(mat.to_numpy()).all()


def _verdict(outcome, diff, low, high):
    return {
        "dataset_id": "d",
        "split": "S1",
        "verdict": {
            "model": "jepa_set",
            "baseline": "ridge",
            "outcome": outcome,
            "n": 12,
            "edistance": {"diff": diff, "ci_low": low, "ci_high": high, "n": 12, "outcome": outcome},
            "secondary": {
                "delta_pearson": {
                    "vs_comparator": {"diff": -diff, "ci_low": -high, "ci_high": -low, "n": 12, "outcome": outcome}
                }
            },
        },
    }


def test_verdict_forest_plot(tmp_path):
    combined = {
        "results": {
            "a/S1": _verdict("wins", -0.3, -0.5, -0.1),
            "b/S2": _verdict("loses", 0.2, 0.1, 0.3),
            "c/S3": _verdict("no detectable difference", 0.0, -0.1, 0.1),
        }
    }
    (tmp_path / "metrics_combined.json").write_text(__import__("json").dumps(combined))
    fig = cj.pl.verdict(tmp_path, save=tmp_path / "v.png", show=False, return_fig=True)
    assert (tmp_path / "v.png").stat().st_size > 5000 and len(fig.axes) == 2
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels[0].startswith("a/S1 (jepa_set vs ridge)") and len(labels) == 3
    xs = sorted(float(c.lines[0].get_xdata()[0]) for c in fig.axes[0].containers)
    assert xs == pytest.approx([-0.3, 0.0, 0.2])
    assert {t.get_text() for t in fig.axes[1].get_legend().get_texts()} == {"wins", "no detectable difference", "loses"}
    plt.close(fig)
    with pytest.raises(cj.InputError, match="no verdicts"):
        cj.pl.verdict({"results": {"a/S1": {"methods": {}}}}, show=False)
