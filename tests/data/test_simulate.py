"""Tests of celljepa.data.simulate: shapes, contract columns, determinism, known effects, scale, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from celljepa._errors import InputError
from celljepa.data import contract
from celljepa.data.simulate import SimulationSpec, simulate_chunks
from celljepa.data.simulate import simulate as _simulate


def simulate(*args, **kwargs):
    return _simulate(SimulationSpec(*args, **kwargs))


@pytest.fixture(scope="module")
def small():
    return simulate(3_000, 60, 8, 3, combos=4, n_programs=6, control_fraction=0.15, chunk_size=1_000, seed=3)


@pytest.fixture(scope="module")
def recovery():
    return simulate(20_000, 200, 10, 2, combos=3, seed=11)


def _log_softmax(z):
    z = z - z.max()
    return z - np.log(np.exp(z).sum())


def test_shapes_dtypes_and_counts(small):
    assert small.shape == (3_000, 60)
    assert sp.isspmatrix_csr(small.X) or isinstance(small.X, sp.csr_array)
    assert small.X.dtype == np.float32
    data = small.X.data
    assert data.size > 0
    assert np.all(data >= 0)
    assert np.array_equal(data, np.round(data))
    assert list(small.var_names[:3]) == ["GENE00000", "GENE00001", "GENE00002"]
    assert small.var_names.is_unique
    assert small.obs_names[0] == "sim_cell_0000000"
    assert small.obs_names[-1] == "sim_cell_0002999"
    assert small.obs_names.is_unique
    # Every cell has some counts.
    assert np.all(np.asarray(small.X.sum(axis=1)).ravel() > 0)


def test_contract_columns(small):
    obs = small.obs
    for col in contract.REQUIRED_OBS + ("perturbation", "context"):
        assert col in obs.columns, col
    string_cols = (
        "perturbation",
        "context",
        contract.PERTURBATION_ID,
        contract.CONTEXT_ID,
        contract.PERTURBATION_TOKENS,
    )
    for col in string_cols:
        assert isinstance(obs[col].dtype, pd.CategoricalDtype), col
        assert all(isinstance(c, str) for c in obs[col].cat.categories), col
    assert obs[contract.IS_CONTROL].dtype == bool
    for col in (contract.DOSE, contract.TIME_HOURS):
        assert obs[col].dtype == np.float64
        assert obs[col].isna().all()

    ctrl = obs[contract.IS_CONTROL].to_numpy()
    assert set(obs.loc[ctrl, contract.PERTURBATION_ID]) == {contract.CONTROL_ID}
    assert set(obs.loc[ctrl, contract.PERTURBATION_TOKENS]) == {contract.CONTROL_TOKEN}
    assert set(obs.loc[ctrl, "perturbation"]) == {"control"}
    assert contract.CONTROL_ID not in set(obs.loc[~ctrl, contract.PERTURBATION_ID])
    assert (obs["context"].astype(str) == obs[contract.CONTEXT_ID].astype(str)).all()
    # Tokens and ids agree with the contract helpers for every condition.
    cols = ["perturbation", contract.PERTURBATION_ID, contract.PERTURBATION_TOKENS]
    pairs = obs[cols].astype(str).drop_duplicates()
    for label, pid, tokens in pairs.itertuples(index=False):
        parts = contract.split_tokens(tokens)
        assert all(contract.is_valid_token(t) for t in parts)
        assert contract.perturbation_id_from_tokens(parts) == pid
        assert label == pid
        if pid != contract.CONTROL_ID:
            assert parts == [contract.make_token("gene", g) for g in sorted(pid.split("+"))]


def test_every_context_has_controls_and_every_perturbation(small):
    sim = small.uns["simulation"]
    names = sim["perturbation_names"]
    assert len(names) == 8 + 4
    assert sim["context_names"] == ["ctx0", "ctx1", "ctx2"]
    obs = small.obs
    for ctx in sim["context_names"]:
        sub = obs[obs[contract.CONTEXT_ID] == ctx]
        n_ctrl = int(sub[contract.IS_CONTROL].sum())
        assert n_ctrl >= 1
        assert abs(n_ctrl / len(sub) - 0.15) < 0.01
        assert set(sub[contract.PERTURBATION_ID].astype(str)) == set(names) | {"control"}
    # Observed condition sizes match the stored layout.
    table = pd.crosstab(obs[contract.CONTEXT_ID], obs["perturbation"])
    table = table.loc[sim["context_names"], ["control"] + names]
    np.testing.assert_array_equal(table.to_numpy(), sim["condition_counts"])


def test_uns_truth(small):
    sim = small.uns["simulation"]
    assert sim["params"] == dict(
        n_cells=3_000,
        n_genes=60,
        n_perturbations=8,
        n_contexts=3,
        combos=4,
        n_programs=6,
        control_fraction=0.15,
        chunk_size=1_000,
        seed=3,
    )
    assert sim["perturbation_program_effects"].shape == (12, 6)
    assert sim["context_program_effects"].shape == (3, 6)
    assert sim["gene_loadings"].shape == (6, 60)
    assert np.all(sim["gene_loadings"] >= 0)
    assert 0 < np.mean(sim["gene_loadings"] > 0) < 1  # sparse-ish
    assert sim["gene_baseline"].shape == (60,)
    assert sim["target_log_fold_change"] == -2.0
    singles = sim["perturbation_program_effects"][:8]
    assert np.all((singles != 0).sum(axis=1) == 3)  # a few programs per single
    assert sim["perturbation_names"][:8] == [f"GENE{j:05d}" for j in range(8)]
    # Combos = sum of their singles + a small interaction.
    for k, (a, b) in enumerate(sim["combo_pairs"]):
        assert sim["perturbation_names"][8 + k] == f"GENE{a:05d}+GENE{b:05d}"
        expected = singles[a] + singles[b] + sim["combo_interactions"][k]
        np.testing.assert_allclose(sim["perturbation_program_effects"][8 + k], expected)
    assert np.abs(sim["combo_interactions"]).max() < 1.0


def test_combos_are_distinct_sorted_pairs(small):
    names = small.uns["simulation"]["perturbation_names"]
    combos = [n for n in names if "+" in n]
    assert len(combos) == 4 and len(set(combos)) == 4
    for name in combos:
        a, b = name.split("+")
        assert a < b
        cells = small.obs["perturbation"] == name
        tokens = small.obs.loc[cells, contract.PERTURBATION_TOKENS].astype(str).unique()
        assert list(tokens) == [f"gene:{a}|gene:{b}"]
        assert contract.n_tokens(tokens[0]) == 2
    assert (small.obs["perturbation"] == combos[0]).any()


def test_determinism_and_seed(small):
    again = simulate(3_000, 60, 8, 3, combos=4, n_programs=6, control_fraction=0.15, chunk_size=1_000, seed=3)
    assert (again.X != small.X).nnz == 0
    pd.testing.assert_frame_equal(again.obs, small.obs)
    other = simulate(3_000, 60, 8, 3, combos=4, n_programs=6, control_fraction=0.15, chunk_size=1_000, seed=4)
    assert (other.X != small.X).nnz > 0
    assert not np.array_equal(
        other.obs[contract.PERTURBATION_ID].astype(str).to_numpy(),
        small.obs[contract.PERTURBATION_ID].astype(str).to_numpy(),
    )
    assert not np.allclose(other.uns["simulation"]["gene_loadings"], small.uns["simulation"]["gene_loadings"])


def test_simulate_equals_concatenated_chunks(small):
    chunks = list(
        simulate_chunks(
            SimulationSpec(3_000, 60, 8, 3, combos=4, n_programs=6, control_fraction=0.15, chunk_size=1_000, seed=3)
        )
    )
    assert [c.n_obs for c in chunks] == [1_000, 1_000, 1_000]
    assert (sp.vstack([c.X for c in chunks], format="csr") != small.X).nnz == 0
    pd.testing.assert_frame_equal(pd.concat([c.obs for c in chunks]), small.obs)
    for c in chunks[1:]:
        first = chunks[0].uns["simulation"]
        np.testing.assert_array_equal(c.uns["simulation"]["gene_loadings"], first["gene_loadings"])
        assert c.uns["simulation"]["perturbation_names"] == first["perturbation_names"]
        categories = c.obs[contract.PERTURBATION_ID].cat.categories
        assert list(categories) == list(chunks[0].obs[contract.PERTURBATION_ID].cat.categories)
    # The truth does not depend on chunk_size; the draws do.
    one = simulate(3_000, 60, 8, 3, combos=4, n_programs=6, control_fraction=0.15, chunk_size=3_000, seed=3)
    np.testing.assert_array_equal(
        one.uns["simulation"]["perturbation_program_effects"],
        small.uns["simulation"]["perturbation_program_effects"],
    )
    assert (one.X != small.X).nnz > 0


def test_target_knockdown_recoverable(recovery):
    adata = recovery
    X = adata.X.toarray()
    norm = X / X.sum(axis=1, keepdims=True) * 1e4
    var = {g: i for i, g in enumerate(adata.var_names)}
    obs = adata.obs
    for ctx in adata.uns["simulation"]["context_names"]:
        in_ctx = (obs[contract.CONTEXT_ID] == ctx).to_numpy()
        ctrl = norm[in_ctx & obs[contract.IS_CONTROL].to_numpy()].mean(axis=0)
        for name in adata.uns["simulation"]["perturbation_names"]:
            cells = in_ctx & (obs[contract.PERTURBATION_ID] == name).to_numpy()
            pert = norm[cells].mean(axis=0)
            for gene in name.split("+"):
                g = var[gene]
                assert pert[g] < 0.4 * ctrl[g], (ctx, name, gene, pert[g], ctrl[g])


def test_program_effects_recoverable(recovery):
    adata = recovery
    sim = adata.uns["simulation"]
    W, b = sim["gene_loadings"], sim["gene_baseline"]
    X = adata.X.toarray()
    norm = X / X.sum(axis=1, keepdims=True) * 1e4
    var = {g: i for i, g in enumerate(adata.var_names)}
    obs = adata.obs
    correlations, mismatched = [], []
    for ci, ctx in enumerate(sim["context_names"]):
        in_ctx = (obs[contract.CONTEXT_ID] == ctx).to_numpy()
        ctrl = norm[in_ctx & obs[contract.IS_CONTROL].to_numpy()].mean(axis=0)
        base = b + sim["context_program_effects"][ci] @ W
        truths, observed, keeps = [], [], []
        for pi, name in enumerate(sim["perturbation_names"]):
            pert = norm[in_ctx & (obs[contract.PERTURBATION_ID] == name).to_numpy()].mean(axis=0)
            targets = [var[g] for g in name.split("+")]
            lr = base + sim["perturbation_program_effects"][pi] @ W
            lr[targets] = base[targets] + sim["target_log_fold_change"]
            true = _log_softmax(lr) - _log_softmax(base)
            obs_lfc = np.log(pert + 1e-3) - np.log(ctrl + 1e-3)
            keep = np.ones(len(var), dtype=bool)
            keep[targets] = False  # program effects only: the knock-down alone would inflate the correlation
            correlations.append(np.corrcoef(true[keep], obs_lfc[keep])[0, 1])
            truths.append(true)
            observed.append(obs_lfc)
            keeps.append(keep)
        # Matching matters: the observed profile correlates less with another perturbation's truth.
        for i in range(len(truths)):
            j = (i + 1) % len(truths)
            keep = keeps[i] & keeps[j]
            mismatched.append(np.corrcoef(truths[j][keep], observed[i][keep])[0, 1])
    assert min(correlations) > 0.9, correlations
    assert np.median(mismatched) < 0.5, mismatched


def test_million_cells_chunked():
    n, chunk_size = 1_000_000, 100_000
    total, seen = 0, set()
    n_chunks = 0
    for chunk in simulate_chunks(SimulationSpec(n, 50, 20, 4, combos=5, chunk_size=chunk_size, seed=0)):
        n_chunks += 1
        assert chunk.n_obs <= chunk_size
        assert chunk.n_vars == 50
        assert sp.issparse(chunk.X) and chunk.X.format == "csr" and chunk.X.dtype == np.float32
        total += chunk.n_obs
        seen.update(chunk.obs_names)
        # Each chunk holds a representative mix of the conditions.
        assert chunk.obs[contract.PERTURBATION_ID].nunique() == 26
    assert n_chunks == 10
    assert total == n
    assert len(seen) == n
    assert "sim_cell_0999999" in seen


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(n_cells=0), "n_cells"),
        (dict(n_genes=-1), "n_genes"),
        (dict(n_perturbations=0), "n_perturbations"),
        (dict(n_contexts=0), "n_contexts"),
        (dict(n_programs=0), "n_programs"),
        (dict(combos=-1), "combos"),
        (dict(chunk_size=0), "chunk_size"),
        (dict(control_fraction=0.0), "control_fraction"),
        (dict(control_fraction=1.0), "control_fraction"),
        (dict(control_fraction="0.1"), "control_fraction"),
        (dict(n_cells=10.5), "n_cells"),
        (dict(seed=-1), "seed"),
        (dict(n_perturbations=30, n_genes=20), "n_perturbations"),
        (dict(n_perturbations=4, combos=7), "combos"),
        (dict(n_cells=9), "n_cells"),
    ],
)
def test_input_errors(kwargs, match):
    args = dict(n_cells=1_000, n_genes=20, n_perturbations=4, n_contexts=2)
    args.update(kwargs)
    with pytest.raises(InputError, match=match):
        SimulationSpec(**args)
    with pytest.raises(InputError, match="Fix:"):
        simulate(**args)
    with pytest.raises(InputError, match="takes a SimulationSpec"):
        next(simulate_chunks(1_000))


def test_max_combos_allowed():
    adata = simulate(200, 10, 4, 1, combos=6, seed=0)
    names = adata.uns["simulation"]["perturbation_names"]
    assert len([n for n in names if "+" in n]) == 6
    assert len(set(names)) == 10
