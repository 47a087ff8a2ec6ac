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
