"""Ingestion of the four real datasets end to end, through the CLI, and what a failure leaves behind."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from _realdata import REAL_DATASETS, read_quiet, real_path

import celljepa as cj
from celljepa.cli import main


@pytest.mark.parametrize("dataset_id", sorted(REAL_DATASETS))
def test_real_dataset_ingests_and_validates(ingested, dataset_id, capsys):
    path = ingested[dataset_id]
    assert path.exists()
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")], "temporary file left behind"
    assert main(["validate", str(path)]) == 0
    assert "valid" in capsys.readouterr().out
    adata = read_quiet(path)
    for key in ("dataset_id", "preprocess_name", "preprocess_version", "created_at", "source", "feature_set"):
        assert key in adata.uns, key
    assert adata.uns["dataset_id"] == dataset_id
    assert adata.uns["feature_set"]["n_genes"] == adata.n_vars
    assert adata.obs["is_control"].dtype == bool
    assert adata.obs["is_control"].any() and (~adata.obs["is_control"]).any()
    assert cj.pp.validate(adata) is None


def test_expected_contents_of_real_datasets(ingested):
    devel = read_quiet(ingested["perturbench_devel"])
    assert devel.shape == (5961, 500)
    assert set(devel.obs["context_id"].unique()) == {"k562", "A172", "T98G", "U87MG"}
    combos = devel.obs.loc[devel.obs["perturbation_tokens"].str.contains("|", regex=False), "perturbation_id"]
    assert combos.nunique() == 15
    # Combination ids are sorted names: PerturBench labels 'SET+KLF1' and 'ZBTB10+PTPN12' become sorted ids.
    assert "KLF1+SET" in set(combos) and "PTPN12+ZBTB10" in set(combos)
    assert (devel.obs.loc[~devel.obs["is_control"], "perturbation_tokens"].str.startswith("gene:")).all()
    assert devel.uns["preprocess"]["normalized_here"] is False or devel.uns["preprocess"]["normalized_here"] == 0

    gears = read_quiet(ingested["norman_gears"])
    labels = gears.obs["condition"].astype(str)
    # GEARS 'A+ctrl' and 'ctrl+A' are the single perturbation A.
    assert gears.obs.loc[labels == "ctrl+ETS2", "perturbation_id"].iloc[0] == "ETS2"
    assert gears.obs.loc[labels == "COL1A1+ctrl", "perturbation_tokens"].iloc[0] == "gene:COL1A1"
    assert gears.obs.loc[labels == "ctrl", "is_control"].all()
    assert "counts" in gears.layers
    np.testing.assert_array_equal(gears.X.toarray(), read_quiet(real_path("scx/norman_subset.h5ad")).X.toarray())

    kang = read_quiet(ingested["kang2018"])
    assert kang.obs["context_id"].nunique() == 7
    assert set(kang.obs["perturbation_tokens"].unique()) == {"control:CTRL", "cytokine:stimulated"}

    pap = read_quiet(ingested["papalexi2021"])
    raw = read_quiet(real_path("sceptre/papalexi2021_sceptre_lowmoi_example_data.h5ad"))
    assert pap.uns["preprocess"]["normalized_here"]
    np.testing.assert_array_equal(pap.layers["counts"].toarray(), raw.X.toarray())
    totals = np.expm1(pap.X[:50].toarray()).sum(axis=1)
    np.testing.assert_allclose(totals, 1e4, rtol=1e-3)
    assert (pap.obs["context_id"] == "THP-1").all()
    assert set(pap.obs["batch"].unique()) == {"rep_1", "rep_2", "rep_3"}


def test_broken_copy_fails_validation_naming_the_column(ingested, tmp_path, capsys):
    adata = read_quiet(ingested["perturbench_devel"])
    del adata.obs["context_id"]
    broken = tmp_path / "broken.h5ad"
    adata.write_h5ad(broken)
    assert main(["validate", str(broken)]) == 1
    err = capsys.readouterr().err
    assert "obs['context_id']" in err and "required_column" in err


def test_validate_lists_all_violations_at_once(ingested, tmp_path, capsys):
    adata = read_quiet(ingested["kang2018"])
    del adata.obs["perturbation_tokens"]
    del adata.uns["dataset_id"]
    adata.obs.loc[adata.obs["context_id"] == "B", "is_control"] = False
    broken = tmp_path / "broken.h5ad"
    adata.write_h5ad(broken)
    assert main(["validate", str(broken)]) == 1
    err = capsys.readouterr().err
    assert "obs['perturbation_tokens']" in err
    assert "dataset_id" in err
    assert "context(s) without control cells: 'B'" in err


def test_ingest_failure_leaves_nothing_on_disk(tmp_path, capsys):
    out = tmp_path / "processed"
    # Without --min-cells 1 the tiny GEARS subset breaks the default minimum of 10 cells per condition.
    code = main(["ingest", str(real_path("scx/norman_subset.h5ad")), "--dataset-id", "norman", "--out", str(out)])
    assert code == 1
    err = capsys.readouterr().err
    assert "min_cells_per_condition" in err and "--min-cells" in err
    assert not out.exists()


def test_ingest_cli_as_subprocess(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "celljepa.cli", "ingest", "demo", "--dataset-id", "demo", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(tmp_path / "demo" / "lognorm-v1.h5ad")
    assert "already log-normalised" in proc.stderr
