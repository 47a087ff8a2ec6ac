"""cj.datasets: the bundled demo (its licence file ships with it) and the simulate wrapper."""

from __future__ import annotations

import numpy as np

import celljepa as cj


def test_demo_ships_with_its_licence_note_and_matches_the_shared_file(shared_data):
    path = cj.datasets.demo_path()
    assert path.exists() and (path.parent / "README.md").read_text().count("BSD-3-Clause") == 1
    assert path.read_bytes() == (shared_data / "perturbation/perturbench/devel.h5ad").read_bytes()


def test_demo_is_contract_ready(demo):
    assert demo.uns["dataset_id"] == cj.datasets.DEMO_DATASET_ID
    assert demo.obs["context_id"].nunique() == 4
    assert cj.pp.validate(demo) is None


def test_simulate_wrapper_is_valid_and_normalised():
    adata = cj.datasets.simulate(3000, 80, 6, 2, combos=2, seed=1)
    cj.pp.validate(adata)
    totals = np.expm1(adata.X[:20].toarray()).sum(axis=1)
    np.testing.assert_allclose(totals, 1e4, rtol=1e-3)
    assert adata.layers["counts"].dtype == np.float32
    raw = cj.datasets.simulate(3000, 80, 6, 2, combos=2, seed=1, preprocessed=False)
    np.testing.assert_array_equal(raw.X.toarray(), adata.layers["counts"].toarray())
