"""cj.pl.predicted_vs_observed on a real fold: the scatter and the gene view hold exactly the condition's cells."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from pl._plotcheck import assert_readable, legend_texts  # noqa: E402

import celljepa as cj  # noqa: E402
from celljepa.eval.predictions import write_predictions  # noqa: E402

KEY = "k562|KLF1"


@pytest.fixture(scope="module")
def pred(fold_predictions):
    return fold_predictions[0].predictions


def _rows(pred, method: str, key: str = KEY) -> dict[str, np.ndarray]:
    """Rows of the control, observed and predicted cells of ``key``, read from obs independently of the plot."""
    obs = pred.obs
    m, c = obs["method"].astype(str).to_numpy(), obs["condition"].astype(str).to_numpy()
    ctrl = obs["is_control"].to_numpy(dtype=bool)
    ctx = key.split("|")[0]
    return {
        "control": np.flatnonzero((m == "observed") & ctrl & (obs["context_id"].astype(str).to_numpy() == ctx)),
        "observed": np.flatnonzero((m == "observed") & ~ctrl & (c == key)),
        "predicted": np.flatnonzero((m == method) & (c == key)),
    }


def test_scatter_holds_the_three_sets_of_the_condition(pred, tmp_path):
    rows = _rows(pred, "ridge")
    assert all(len(r) > 0 for r in rows.values())
    fig = cj.pl.predicted_vs_observed(pred, KEY, method="ridge", show=False, return_fig=True)
    ax = fig.axes[0]
    assert len(ax.collections) == 3
    for coll, name in zip(ax.collections, ("control", "observed", "predicted"), strict=True):
        offsets = np.asarray(coll.get_offsets())
        assert len(offsets) == len(rows[name]), name
        np.testing.assert_allclose(offsets, pred.obsm["X_eval"][rows[name]][:, :2])
    means = [np.array([line.get_xdata()[0], line.get_ydata()[0]]) for line in ax.lines]
    for mean, name in zip(means, ("control", "observed", "predicted"), strict=True):
        np.testing.assert_allclose(mean, pred.obsm["X_eval"][rows[name]][:, :2].mean(axis=0))
    # readable: title, axis labels, one legend entry per set with its count, and the means
    assert_readable(ax.get_title(), "title")
    assert "ridge" in ax.get_title() and "KLF1" in ax.get_title()
    assert ax.get_xlabel() == "evaluation space, PC1" and ax.get_ylabel() == "evaluation space, PC2"
    texts = legend_texts(ax)
    assert texts == [
        f"control cells of k562 (n = {len(rows['control'])})",
        f"observed KLF1 (n = {len(rows['observed'])})",
        f"predicted by ridge (n = {len(rows['predicted'])})",
        "mean of each set",
    ]
    fig.savefig(tmp_path / "scatter.png")
    plt.close(fig)


def test_condition_by_perturbation_id_path_and_other_components(pred, tmp_path):
    path = write_predictions(tmp_path / "fold0" / "predictions.h5ad", pred)
    rows = _rows(pred, "mean_shift")
    for source in (path, path.parent):
        ax = cj.pl.predicted_vs_observed(source, "KLF1", method="mean_shift", components=(2, 3), show=False)
        assert [len(c.get_offsets()) for c in ax.collections] == [len(rows[n]) for n in rows]
        np.testing.assert_allclose(ax.collections[2].get_offsets(), pred.obsm["X_eval"][rows["predicted"]][:, 1:3])
        assert ax.get_xlabel().endswith("PC2") and ax.get_ylabel().endswith("PC3")
        plt.close(ax.figure)


def test_gene_view_uses_the_named_genes(pred):
    genes = [str(g) for g in pred.var_names[[3, 0, 7]]]
    rows = _rows(pred, "ridge")
    ax = cj.pl.predicted_vs_observed(pred, KEY, method="ridge", genes=genes, show=False)
    assert [t.get_text() for t in ax.get_xticklabels()] == genes
    x = np.asarray(pred[:, genes].X, dtype=np.float64)
    for coll, line, name in zip(ax.collections, ax.lines, ("control", "observed", "predicted"), strict=True):
        values = np.asarray(coll.get_offsets())[:, 1]
        np.testing.assert_allclose(values, x[rows[name]].T.ravel(), rtol=1e-6)  # gene by gene, every cell
        np.testing.assert_allclose(line.get_ydata(), x[rows[name]].mean(axis=0), rtol=1e-6)
    assert ax.get_xlabel() == "gene" and ax.get_ylabel() == "log-expression"
    texts = legend_texts(ax)
    assert texts[2] == f"predicted by ridge (n = {len(rows['predicted'])}, reconstructed from the evaluation space)"
    assert texts[-1] == "mean of each set"
    assert_readable(ax.get_title(), "title")
    plt.close(ax.figure)


def test_gene_view_by_number_takes_the_most_moved_genes(pred):
    rows = _rows(pred, "ridge")
    x = np.asarray(pred.X, dtype=np.float64)
    delta = np.abs(x[rows["observed"]].mean(axis=0) - x[rows["control"]].mean(axis=0))
    expected = [str(pred.var_names[i]) for i in np.argsort(-delta, kind="stable")[:5]]
    ax = cj.pl.predicted_vs_observed(pred, KEY, method="ridge", genes=5, show=False)
    assert [t.get_text() for t in ax.get_xticklabels()] == expected
    assert "5" in ax.get_xlabel() and "control mean" in ax.get_xlabel()
    plt.close(ax.figure)


def test_errors_name_what_is_there(pred, demo):
    methods = sorted(set(pred.obs["method"].astype(str)) - {"observed"})
    with pytest.raises(cj.InputError, match="Did you mean 'ridge'") as err:
        cj.pl.predicted_vs_observed(pred, KEY, method="rigde", show=False)
    assert all(repr(m) in str(err.value) for m in methods)
    with pytest.raises(cj.InputError, match="Did you mean 'k562|KLF1'|Did you mean 'KLF1'") as err:
        cj.pl.predicted_vs_observed(pred, "k562|KLF2", method="ridge", show=False)
    assert "Conditions: " in str(err.value) and repr(KEY) in str(err.value)
    with pytest.raises(cj.InputError, match="not a test condition"):
        cj.pl.predicted_vs_observed(pred, "control", method="ridge", show=False)
    gene = str(pred.var_names[0])
    with pytest.raises(cj.InputError, match=f"Did you mean '{gene}'"):
        cj.pl.predicted_vs_observed(pred, KEY, method="ridge", genes=[gene + "x"], show=False)
    with pytest.raises(cj.InputError, match="basis='X_pca' is not in pred.obsm"):
        cj.pl.predicted_vs_observed(pred, KEY, method="ridge", basis="X_pca", show=False)
    with pytest.raises(cj.InputError, match="components must be two dimensions"):
        cj.pl.predicted_vs_observed(pred, KEY, method="ridge", components=(0, 1), show=False)
    with pytest.raises(cj.InputError, match="no model seed 3"):
        cj.pl.predicted_vs_observed(pred, KEY, method="ridge", model_seed=3, show=False)
    with pytest.raises(cj.InputError, match="not a predictions AnnData"):
        cj.pl.predicted_vs_observed(demo, KEY, show=False)
    plt.close("all")
