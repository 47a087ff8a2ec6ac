"""The evaluation space is fitted on training cells only, projects consistently and round-trips to disk."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import celljepa as cj
from celljepa.eval import EvaluationSpace


def test_fitted_on_training_cells_only(demo, tmp_path):
    train = demo[demo.obs["context_id"] != "k562"]
    space = EvaluationSpace.fit(train, n_hvg=200, n_pcs=10)
    assert len(space.genes) == 200 and space.n_pcs == 10
    # Changing cells outside the training set does not change the space.
    other = demo.copy()
    dense = other.X.toarray()
    dense[np.flatnonzero(other.obs["context_id"] == "k562")[:50], :] = 3.0
    other.X = sp.csr_matrix(dense)
    again = EvaluationSpace.fit(other[other.obs["context_id"] != "k562"], n_hvg=200, n_pcs=10)
    np.testing.assert_allclose(np.abs(again.components), np.abs(space.components), atol=1e-8)
    z = space.transform(train)
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-8)  # centred on the training mean
    path = space.save(tmp_path / "space.npz")
    loaded = EvaluationSpace.load(path)
    np.testing.assert_array_equal(loaded.components, space.components)
    np.testing.assert_array_equal(loaded.transform(demo), space.transform(demo))


def test_all_genes_when_fewer_than_n_hvg(demo):
    space = EvaluationSpace.fit(demo, n_hvg=2000, n_pcs=50)
    assert len(space.genes) == demo.n_vars == 500
    z = space.transform(demo)
    recon = space.inverse_transform(z)
    x = space.genes_of(demo)
    # 50 PCs of 500 genes keep most of the variance.
    assert 1 - ((recon - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum() > 0.3


def test_errors(demo):
    space = EvaluationSpace.fit(demo, n_hvg=100, n_pcs=5)
    with pytest.raises(cj.InputError, match="evaluation-space dimensions"):
        space.inverse_transform(np.zeros((2, 4)))
    with pytest.raises(cj.InputError, match="missing from the data"):
        space.transform(demo[:, :50])


def _same_space(a: EvaluationSpace, b: EvaluationSpace, *, atol: float) -> None:
    """Same genes, centre and components up to the sign of each component (PCA's sign is a convention)."""
    assert list(a.genes) == list(b.genes)
    np.testing.assert_allclose(a.mean, b.mean, atol=atol)
    signs = np.sign((a.components * b.components).sum(axis=1))
    np.testing.assert_allclose(a.components * signs[:, None], b.components, atol=atol)


def test_backed_data_give_the_same_space_without_densifying(demo, tmp_path):
    """A backed file is read in chunks: the same HVGs (every training cell samples them), the same exact PCA."""
    import anndata as ad

    path = tmp_path / "demo.h5ad"
    demo.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    rows = np.flatnonzero(demo.obs["context_id"].to_numpy() != "k562")
    ref = EvaluationSpace.fit(demo[rows], n_hvg=200, n_pcs=10)
    got = EvaluationSpace.fit(backed, rows=rows, n_hvg=200, n_pcs=10)
    _same_space(got, ref, atol=1e-9)
    signs = np.sign((got.components * ref.components).sum(axis=1))
    np.testing.assert_allclose(
        got.transform(backed, rows=rows[::-1]) * signs, ref.transform(demo[rows[::-1]]), atol=1e-8
    )  # rows in any order; projected chunk by chunk
    backed.file.close()


def test_large_folds_stream_in_chunks_with_an_exact_pca(demo, monkeypatch):
    """Above STREAM_CELLS the PCA comes from the chunked scatter matrix: equal to an SVD of all training cells."""
    from celljepa.eval import space as space_module

    monkeypatch.setattr(space_module, "STREAM_CELLS", 1000)
    monkeypatch.setattr(space_module, "HVG_SAMPLE", 1000)
    monkeypatch.setattr(space_module, "CHUNK_ROWS", 257)
    streamed = EvaluationSpace.fit(demo, n_hvg=150, n_pcs=12, seed=3)
    assert len(streamed.genes) == 150  # chosen by scanpy on a seeded sample of 1,000 cells
    x = demo[:, list(streamed.genes)].X
    x = np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)
    centred = x - x.mean(axis=0)
    vt = np.linalg.svd(centred, full_matrices=False)[2][:12]
    np.testing.assert_allclose(streamed.mean, x.mean(axis=0), atol=1e-9)
    signs = np.sign((streamed.components * vt).sum(axis=1))
    np.testing.assert_allclose(streamed.components * signs[:, None], vt, atol=1e-7)
    assert np.allclose(np.abs(streamed.components).max(axis=1), streamed.components.max(axis=1))  # sign rule
    z = streamed.transform(demo)  # 5,961 cells > 1,000: projected in chunks
    np.testing.assert_allclose(z, (x - streamed.mean) @ streamed.components.T, atol=1e-9)
    with pytest.raises(cj.InputError, match="NaN/inf"):
        bad = demo.copy()
        bad.X = bad.X.toarray() if sp.issparse(bad.X) else bad.X.copy()
        bad.X[4000, 0] = np.nan
        EvaluationSpace.fit(bad, n_hvg=150, n_pcs=12)
