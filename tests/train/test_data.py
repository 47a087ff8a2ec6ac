"""Batches: a pure function of (seed, step); backed streaming reads the same rows as memory."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from celljepa import InputError
from celljepa.train.data import BatchPlan, CellSource


def test_plan_is_deterministic_and_covers_each_epoch_once():
    rows = np.arange(0, 1000, 3)  # 334 training rows out of 1000
    plan = BatchPlan(rows, batch_size=32, chunk_size=100, seed=4)
    assert plan.batches_per_epoch == 334 // 32
    epoch0 = np.concatenate([plan.rows_for_step(s) for s in range(plan.batches_per_epoch)])
    assert len(np.unique(epoch0)) == epoch0.size == plan.batches_per_epoch * 32
    assert np.isin(epoch0, rows).all()
    again = BatchPlan(rows, batch_size=32, chunk_size=100, seed=4)
    for step in (0, 5, plan.batches_per_epoch, 3 * plan.batches_per_epoch + 2):  # any order, any step
        assert np.array_equal(again.rows_for_step(step), plan.rows_for_step(step))
    assert not np.array_equal(plan.epoch_order(0), plan.epoch_order(1))
    assert not np.array_equal(
        BatchPlan(rows, batch_size=32, chunk_size=100, seed=5).epoch_order(0), plan.epoch_order(0)
    )


def test_plan_shuffles_chunks_then_cells_inside_them():
    plan = BatchPlan(np.arange(1000), batch_size=50, chunk_size=100, seed=0)
    order = plan.epoch_order(0)
    chunk_runs = order.reshape(10, 100) // 100  # each block of 100 consecutive rows comes from one chunk
    assert (chunk_runs == chunk_runs[:, :1]).all()
    assert sorted(chunk_runs[:, 0]) == list(range(10)) and list(chunk_runs[:, 0]) != list(range(10))


def test_plan_smaller_than_a_batch_and_too_small():
    plan = BatchPlan(np.arange(5), batch_size=64, chunk_size=10, seed=0)
    assert plan.batches_per_epoch == 1 and len(plan.rows_for_step(3)) == 5
    with pytest.raises(InputError, match="at least 2 cells"):
        BatchPlan(np.arange(1), batch_size=4, chunk_size=10, seed=0)


@pytest.fixture(scope="module")
def small_h5ad(tmp_path_factory, demo_processed):
    adata = demo_processed[:700].copy()
    path = tmp_path_factory.mktemp("backed") / "small.h5ad"
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    adata.write_h5ad(path)
    return adata, path


def test_backed_source_reads_the_same_rows_as_memory(small_h5ad):
    adata, path = small_h5ad
    mem = CellSource.from_adata(adata)
    disk = CellSource.from_h5ad(path, chunk_size=64, cache_chunks=2)
    assert (disk.n_obs, disk.n_vars) == adata.shape
    rows = np.random.default_rng(0).permutation(700)[:150]  # spans many chunks, unsorted
    assert (mem.read(rows) != disk.read(rows)).nnz == 0
    assert len(disk._cache) <= 2
    disk.close()


def test_backed_source_serves_selected_columns_like_memory(small_h5ad):
    adata, path = small_h5ad
    cols = np.array([7, 3, 0, 42, 41])  # out of order, as an encoder's measured genes need not be
    mem = CellSource.from_adata(adata).select_columns(cols)
    disk = CellSource.from_h5ad(path, chunk_size=64).select_columns(cols)
    assert disk.n_vars == mem.n_vars == 5
    rows = np.random.default_rng(1).permutation(700)[:200]
    got = disk.read(rows)
    assert got.shape == (200, 5) and got.has_sorted_indices
    assert (got != mem.read(rows)).nnz == 0
    np.testing.assert_array_equal(got.toarray(), sp.csr_matrix(adata.X)[rows][:, cols].toarray())
    disk.select_columns([4, 0])  # a selection of the selection
    np.testing.assert_array_equal(
        disk.read(rows[:20]).toarray(), sp.csr_matrix(adata.X)[rows[:20]][:, cols[[4, 0]]].toarray()
    )
    with pytest.raises(InputError, match=r"gene positions in \[0, 2\)"):
        disk.select_columns([2])
    disk.close()


def test_dense_layer_and_errors(demo_processed):
    adata = demo_processed[:50].copy()
    adata.layers["dense"] = np.asarray(adata.X.toarray() if sp.issparse(adata.X) else adata.X)
    src = CellSource.from_adata(adata, "dense")
    assert sp.isspmatrix_csr(src.read([0, 1])) and src.read([0, 1]).dtype == np.float32
    with pytest.raises(InputError, match="layer 'nope' is not in adata.layers"):
        CellSource.from_adata(adata, "nope")
    adata.layers["neg"] = -adata.layers["dense"]
    with pytest.raises(InputError, match="negative values"):
        CellSource.from_adata(adata, "neg")
    adata.layers["nan"] = adata.layers["dense"].copy()
    adata.layers["nan"][0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        CellSource.from_adata(adata, "nan")
