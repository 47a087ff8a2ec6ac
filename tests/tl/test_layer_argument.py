"""``layer=`` of the transition tools reads the named layer, exactly as if it were X (real demo data)."""

from __future__ import annotations

import numpy as np
import pytest

import celljepa as cj
from celljepa._errors import InputError
from celljepa.tl._layer import with_layer_as_x


def test_a_layer_reads_as_x_and_a_missing_layer_names_the_ones_there():
    adata = cj.datasets.demo()
    adata.layers["lognorm"] = adata.X.copy()
    adata.X = adata.X * 0  # X no longer holds the expression: only the layer does
    view = with_layer_as_x(adata, "lognorm")
    assert view.shape == adata.shape and (view.X != adata.layers["lognorm"]).nnz == 0
    assert view.obs is adata.obs or view.obs.equals(adata.obs)
    with pytest.raises(InputError, match=r"layers: \['lognorm'\].*Did you mean 'lognorm'"):
        with_layer_as_x(adata, "lognrom")


@pytest.mark.extended
def test_predict_perturbation_with_layer_equals_the_same_data_in_x():
    from celljepa.bench import demo_datasets

    adata = demo_datasets()["norman2019"]
    jepa = cj.models.CellJEPA(adata).train(max_steps=20, seed=0, progress=False)
    model = cj.tl.fit_transition(adata, jepa, kind="prototype", seed=0)
    moved = adata.copy()
    moved.layers["lognorm"] = moved.X.copy()
    moved.X = moved.X * 0
    a = cj.tl.predict_perturbation(adata, model, perturbation="gene:KLF1", context="k562")
    b = cj.tl.predict_perturbation(moved, model, perturbation="gene:KLF1", context="k562", layer="lognorm")
    np.testing.assert_allclose(np.asarray(b.X), np.asarray(a.X), rtol=1e-6, atol=1e-6)
