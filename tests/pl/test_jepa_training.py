"""cj.pl.jepa_training draws from a model, a run folder or several runs."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

import celljepa as cj  # noqa: E402
from celljepa import InputError  # noqa: E402


@pytest.fixture(scope="module")
def trained(demo_processed, tmp_path_factory):
    cells = demo_processed[demo_processed.obs["context_id"] == "k562"][:600].copy()
    run = tmp_path_factory.mktemp("run")
    model = cj.models.CellJEPA(cells, n_latent=8, mask="random")
    model.train(max_steps=10, batch_size=64, progress=False, run_dir=run)
    return model, run


def test_from_model_and_run_folder(trained, tmp_path):
    model, run = trained
    fig = cj.pl.jepa_training(model, show=False, save=tmp_path / "a.png", return_fig=True)
    assert (tmp_path / "a.png").stat().st_size > 0
    assert [ax.get_title() for ax in fig.axes] == [
        "Training loss",
        "Effective rank (share of dims)",
        "Smallest per-dimension std",
        "Mean pairwise cosine similarity",
    ]
    assert len(fig.axes[0].lines) == 2  # the training curve and the evaluation-batch points
    plt.close(fig)
    fig = cj.pl.jepa_training({"a": run, "b": run / "metrics.jsonl"}, metrics=("loss",), show=False, return_fig=True)
    assert len(fig.axes) == 1 and fig.axes[0].get_legend() is not None
    plt.close(fig)


def test_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        cj.pl.jepa_training(tmp_path / "nope", show=False)
    with pytest.raises(InputError, match="no metrics records"):
        cj.pl.jepa_training([], show=False)
    with pytest.raises(InputError, match="cannot read training metrics"):
        cj.pl.jepa_training(3, show=False)


def test_from_anndata_after_jepa_embed(demo_processed):
    adata = demo_processed[:400].copy()
    with pytest.raises(InputError, match="run cj.tl.jepa_embed"):
        cj.pl.jepa_training(adata, show=False)
    cj.tl.jepa_embed(adata, n_latent=8, max_steps=10, batch_size=64, mask="random", progress=False)
    fig = cj.pl.jepa_training(adata, show=False, return_fig=True)
    assert len(fig.axes[0].lines) == 1 and len(fig.axes[0].lines[0].get_xdata()) == 1  # log_every=10: one point
    plt.close(fig)
