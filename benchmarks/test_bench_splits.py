"""Split generation on a million cells: celljepa's group k-fold against scikit-learn's GroupKFold."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import GroupKFold

from celljepa.splits import make_split_folds

N_CELLS, N_PERT, N_CTX = 1_000_000, 2_000, 5


@pytest.fixture(scope="module")
def obs() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    pert = rng.integers(0, N_PERT + 1, N_CELLS)  # 0 = control
    names = np.array(["control"] + [f"G{i}" for i in range(1, N_PERT + 1)], dtype=object)
    tokens = np.array(["control:CTRL"] + [f"gene:G{i}" for i in range(1, N_PERT + 1)], dtype=object)
    return pd.DataFrame(
        {
            "perturbation_id": pd.Categorical(names[pert]),
            "is_control": pert == 0,
            "context_id": pd.Categorical(
                np.array([f"ctx{i}" for i in range(N_CTX)], dtype=object)[rng.integers(0, N_CTX, N_CELLS)]
            ),
            "perturbation_tokens": pd.Categorical(tokens[pert]),
        },
        index=[f"cell{i:07d}" for i in range(N_CELLS)],
    )


@pytest.mark.benchmark(group="splits-S1-1M-cells")
def test_celljepa_make_split_folds(benchmark, obs):
    make_split_folds(obs, "S1_unseen_perturbation", dataset_id="bench", n_folds=5, seed=0)  # warm-up
    folds = benchmark(make_split_folds, obs, "S1_unseen_perturbation", dataset_id="bench", n_folds=5, seed=0)
    assert sum(len(f["test_groups"]) for f in folds) == N_PERT


@pytest.mark.benchmark(group="splits-S1-1M-cells")
def test_peer_sklearn_group_kfold(benchmark, obs):
    """The peer: GroupKFold over perturbed cells, then cell names per fold (no validation carving)."""
    perturbed = obs[~obs["is_control"]]
    names = perturbed.index.to_numpy()
    groups = perturbed["perturbation_id"].to_numpy()

    def run():
        out = []
        for train, test in GroupKFold(n_splits=5).split(names, groups=groups):
            out.append((sorted(names[train]), sorted(names[test])))
        return out

    run()
    folds = benchmark(run)
    assert len(folds) == 5
