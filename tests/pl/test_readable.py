"""Every cj.pl figure reads on its own: titles, axis labels and legends present, metric keys never shown raw."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from pl._plotcheck import assert_readable, legend_texts  # noqa: E402
from pl.test_contract import METRICS as TWO_METHODS  # noqa: E402
from pl.test_contract import ROWS, VERDICT  # noqa: E402

import celljepa as cj  # noqa: E402
from celljepa.bench.pooling import METRICS  # noqa: E402
from celljepa.eval.embedding import MIN_RANK_FRACTION, MIN_STD  # noqa: E402
from celljepa.pl._utils import METRIC_LABELS  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_every_benchmark_metric_has_a_readable_name():
    assert set(METRICS) | {"edistance_effect"} <= set(METRIC_LABELS)


def test_benchmark_of_a_real_fold(fold_predictions):
    metrics = fold_predictions[0].metrics
    fig = cj.pl.benchmark(metrics, show=False, return_fig=True)
    assert_readable(fig._suptitle.get_text(), "suptitle")
    assert "S1 (unseen perturbation)" in fig._suptitle.get_text()
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == len(METRICS) + 1  # edistance_effect too
    for t in titles:
        assert_readable(t, "panel title")
        assert t.endswith("(lower is better)") or t.endswith("(higher is better)")
    assert titles[0] == "E-distance to observed\n(lower is better)"
    assert any(t.startswith("E-distance to observed,\nconditions with an effect") for t in titles)
    assert fig.axes[0].get_ylabel() == "mean over test conditions"
    assert fig.axes[-1].get_xlabel() == "method"
    comparator = metrics["comparator"]
    legends = [ax for ax in fig.axes if ax.get_legend() is not None]
    assert len(legends) == 1
    assert legend_texts(legends[0]) == [
        f"{comparator}: comparator (best non-JEPA method on validation)",
        "other methods",
        "95% bootstrap CI",
    ]


def test_benchmark_legend_of_a_chosen_highlight_and_of_none():
    ax = cj.pl.benchmark(TWO_METHODS, highlight="ridge", show=False)
    assert legend_texts(ax) == ["ridge (highlighted)", "other methods", "95% bootstrap CI"]
    assert_readable(ax.figure._suptitle.get_text())
    ax = cj.pl.benchmark(TWO_METHODS, show=False)
    assert legend_texts(ax) == ["mean of each method", "95% bootstrap CI"]


def test_jepa_training_labels_its_panels_and_thresholds():
    records = [
        {"step": s, "split": split, "loss": 1.0 / (s + 1), "effective_rank_fraction": 0.8, "std_min": 0.1,
         "mean_cosine": 0.2}
        for s in range(1, 6)
        for split in ("train", "eval")
    ]  # fmt: skip
    fig = cj.pl.jepa_training(records, show=False, return_fig=True)
    assert fig._suptitle.get_text() == "JEPA pretraining: loss and collapse diagnostics"
    for ax in fig.axes:
        assert_readable(ax.get_title(), "title")
        assert_readable(ax.get_ylabel(), "y label")
        assert ax.get_xlabel() == "training step"
    assert legend_texts(fig.axes[0]) == ["training batches", "fixed evaluation batch"]
    assert legend_texts(fig.axes[1]) == [f"collapse threshold (rank < {MIN_RANK_FRACTION:.0%} of dims)"]
    assert legend_texts(fig.axes[2]) == [f"collapse threshold (min std < {MIN_STD:g})"]
    assert fig.axes[1].get_legend().legend_handles[0].get_linestyle() == "--"
    fig = cj.pl.jepa_training({"a": records, "b": records}, metrics=("loss",), title="two runs", show=False,
                              return_fig=True)  # fmt: skip
    assert legend_texts(fig.axes[0]) == ["a", "b", "training batches", "fixed evaluation batch"]
    assert fig._suptitle.get_text() == "two runs"


def test_condition_counts_is_labelled(demo):
    ax = cj.pl.condition_counts(demo, show=False)
    for text in (ax.get_title(), ax.get_xlabel(), ax.get_ylabel(), ax.get_legend().get_title().get_text()):
        assert_readable(text)
    assert ax.get_legend().get_title().get_text() == "context"
    assert "fewest cells a condition needs (10)" in legend_texts(ax)


def test_edistance_titles_and_labels():
    series = pd.Series([0.5, 0.0, 2.0], index=pd.Index(["x", "control", "y"], name="perturbation_id"))
    ax = cj.pl.edistance(distances=series, show=False)
    assert ax.get_title() == "E-distance of each perturbation to the control"
    assert ax.get_ylabel() == "perturbation" and ax.get_xlabel() == "E-distance to the control"
    names = pd.Index(["a", "b", "c"], name="perturbation_id")
    mat = pd.DataFrame([[0, 1.0, 2.0], [1.0, 0, 1.5], [2.0, 1.5, 0]], index=names, columns=names)
    ax = cj.pl.edistance(distances=mat, show=False)
    assert ax.get_title() == "E-distance between every pair of perturbations"
    assert ax.get_xlabel() == ax.get_ylabel() == "perturbation"
    colorbar = ax.figure.axes[-1]
    assert colorbar.get_ylabel().startswith("E-distance")
    # the run folder's heatmap (celljepa benchmark: test conditions × methods)
    table = pd.DataFrame([[0.4, 0.2]], index=pd.Index(["k|A"], name="test condition"),
                         columns=pd.Index(["no_change", "ridge"], name="method"))  # fmt: skip
    ax = cj.pl.edistance(distances=table, cluster=False, show=False)
    assert ax.get_title() == "E-distance per test condition and method"
    assert ax.get_title() != cj.pl.edistance(distances=table, title="mine", show=False).get_title()


def test_verdict_and_where_jepa_helps_are_labelled():
    axes = cj.pl.verdict({"results": {"d/S1": VERDICT}}, show=False)
    assert [ax.get_title() for ax in axes] == ["E-distance", "Pearson-Δ"]
    assert axes[0].get_ylabel() == "dataset / split (JEPA model vs comparator)"
    for ax in axes:
        assert "JEPA better" in ax.get_xlabel()
    assert legend_texts(axes[-1]) == ["no detectable difference"]
    assert_readable(axes[0].figure._suptitle.get_text())
    ax = cj.pl.where_jepa_helps(ROWS, show=False)
    assert_readable(ax.figure._suptitle.get_text())
    assert ax.get_ylabel() and "E-distance" in ax.get_xlabel()
    right = [a for a in ax.figure.axes if a is not ax][0]
    assert right.get_ylabel().startswith("Δ E-distance [95% CI]")


def test_predicted_vs_observed_is_labelled(fold_predictions):
    pred = fold_predictions[0].predictions
    for genes in (None, 3):
        ax = cj.pl.predicted_vs_observed(pred, "k562|KLF1", "ridge", genes=genes, show=False)
        for text in (ax.get_title(), ax.get_xlabel(), ax.get_ylabel(), *legend_texts(ax)):
            assert_readable(text)
