"""Fixtures for the split tests: contract columns from the real devel file and small synthetic tables."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from celljepa.data.contract import CONTROL_ID, CONTROL_TOKEN, join_tokens, make_token

DEVEL_H5AD = Path(__file__).resolve().parents[2].parent / "shared/data/perturbation/perturbench/devel.h5ad"


def _contract_labels(label: str) -> tuple[str, str, bool]:
    """perturbench ``perturbation`` label -> (perturbation_id, perturbation_tokens, is_control)."""
    if label == "control":
        return CONTROL_ID, CONTROL_TOKEN, True
    names = sorted(label.split("+"))
    return "+".join(names), join_tokens(make_token("gene", n) for n in names), False


@pytest.fixture(scope="session")
def devel_obs() -> pd.DataFrame:
    """Contract columns built from the obs of the real perturbench devel.h5ad (5,961 cells)."""
    if not DEVEL_H5AD.exists():
        pytest.skip(f"real devel data not found at {DEVEL_H5AD} (expected ../shared beside the clone)")
    import anndata as ad

    adata = ad.read_h5ad(DEVEL_H5AD, backed="r")
    try:
        raw = adata.obs[["perturbation", "cell_type"]].copy()
    finally:
        adata.file.close()
    labels = raw["perturbation"].astype(str)
    mapped = {u: _contract_labels(u) for u in labels.unique()}
    obs = pd.DataFrame(index=raw.index.astype(str))
    obs["perturbation_id"] = labels.map(lambda u: mapped[u][0]).to_numpy()
    obs["perturbation_tokens"] = labels.map(lambda u: mapped[u][1]).to_numpy()
    obs["is_control"] = labels.map(lambda u: mapped[u][2]).to_numpy(dtype=bool)
    obs["context_id"] = raw["cell_type"].astype(str).to_numpy()
    return obs


def make_obs(conditions: list[tuple[str, str, int]]) -> pd.DataFrame:
    """Synthetic obs from ``(context, label, n_cells)``; label ``control``, ``A`` or ``A+B``."""
    rows = []
    for ctx, label, n in conditions:
        pid, tokens, is_control = _contract_labels(label)
        for i in range(n):
            rows.append((f"{ctx}_{pid}_{i}", pid, is_control, ctx, tokens))
    columns = ["cell", "perturbation_id", "is_control", "context_id", "perturbation_tokens"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.set_index("cell")


@pytest.fixture
def toy_obs() -> pd.DataFrame:
    """Three contexts, six single perturbations, controls everywhere, no combinations."""
    conds = []
    for ctx in ("c1", "c2", "c3"):
        conds.append((ctx, "control", 4))
        conds += [(ctx, g, 3) for g in ("A", "B", "C", "D", "E", "F")]
    return make_obs(conds)


@pytest.fixture
def combo_obs() -> pd.DataFrame:
    """Combinations with eligible and non-eligible members across two contexts."""
    return make_obs(
        [
            ("c1", "control", 5),
            ("c2", "control", 5),
            ("c1", "A", 3),
            ("c1", "B", 3),
            ("c1", "C", 3),
            ("c1", "D", 3),
            ("c2", "A", 3),
            ("c2", "B", 3),
            ("c1", "A+B", 2),  # eligible (A, B in c1 and c2)
            ("c2", "A+B", 2),
            ("c1", "C+D", 2),  # eligible (c1 only)
            ("c1", "A+C", 2),  # eligible in c1 ...
            ("c2", "A+C", 2),  # ... but C is not a single in c2 -> not eligible
            ("c1", "B+D", 2),  # eligible
            ("c1", "A+X", 2),  # X never measured alone -> not eligible
            ("c1", "B+C", 2),  # eligible
        ]
    )


@pytest.fixture
def obs_factory():
    """The :func:`make_obs` builder, for tests that need their own synthetic table."""
    return make_obs
