"""cj.pl.condition_counts draws one bar segment per (perturbation, context) and the threshold line."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

import celljepa as cj  # noqa: E402


def test_condition_counts_plot(demo, tmp_path):
    path = tmp_path / "counts.png"
    ax = cj.pl.condition_counts(demo, save=path, show=False)
    assert path.stat().st_size > 10_000
    n_pert = demo.obs["perturbation_id"].nunique()
    n_ctx = demo.obs["context_id"].nunique()
    assert len(ax.patches) == n_pert * n_ctx
    heights = sum(p.get_height() for p in ax.patches)
    assert heights == demo.n_obs
    assert ax.get_xticklabels()[0].get_text() == "control"
    assert ax.lines[0].get_ydata()[0] == 10
    plt.close(ax.figure)
