"""Layout detection and readers: scPerturb (sci-Plex drug x dose x cell line), GEARS, PerturBench, bad files."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from _realdata import SHARED_DATA, read_quiet, real_path

import celljepa as cj
from celljepa.cli import main
from celljepa.data import detect_format


@pytest.mark.parametrize(
    ("relative", "expected"),
    [("perturbench/devel.h5ad", "perturbench"), ("scx/norman_subset.h5ad", "gears")],
)
def test_detects_real_layouts(relative, expected):
    assert detect_format(read_quiet(real_path(relative))) == expected


def test_undetectable_layout_names_the_generic_route():
    kang = read_quiet(real_path("scgen/valid.h5ad"))
    with pytest.raises(cj.InputError, match="--format generic"):
        detect_format(kang)


@pytest.fixture(scope="module")
def sciplex_scperturb(tmp_path_factory):
    """A small file in exactly the scPerturb layout of the sci-Plex screens.

    Conditions (drug, dose, cell line, time) come from the real sci-Plex3 hash table
    (Srivatsan 2020, Supplementary Table 3); expression counts are simulated.
    """
    table = pd.read_csv(SHARED_DATA / "drug_metadata/sciplex/Supplementary_Table_3.txt", sep="\t")
    treated = table[~table["vehicle"]]
    drugs = sorted(treated["name"].dropna().unique())[:3]
    conds = (
        treated[treated["name"].isin(drugs)][["cell_type", "name", "dose", "time_point"]]
        .drop_duplicates()
        .sort_values(["cell_type", "name", "dose"])
    )
    conds = conds[conds["cell_type"].isin(["A549", "MCF7"])]
    vehicle = table[table["vehicle"]][["cell_type", "time_point"]].drop_duplicates()
    vehicle = vehicle[vehicle["cell_type"].isin(["A549", "MCF7"])]
    rows = []
    for _, r in conds.iterrows():
        rows += [
            dict(
                perturbation=r["name"],
                cell_line=r["cell_type"],
                dose_value=float(r["dose"]),
                dose_unit="nM",
                time=float(r["time_point"]),
                perturbation_type="drug",
                nperts=1,
            )
        ] * 12
    for _, r in vehicle.iterrows():
        rows += [
            dict(
                perturbation="control",
                cell_line=r["cell_type"],
                dose_value=0.0,
                dose_unit="nM",
                time=float(r["time_point"]),
                perturbation_type="drug",
                nperts=0,
            )
        ] * 12
    obs = pd.DataFrame(rows)
    obs["disease"] = obs["cell_line"].map({"A549": "lung adenocarcinoma", "MCF7": "breast adenocarcinoma"})
    obs["organism"] = "human"
    obs.index = [f"sciplex_{i:05d}" for i in range(len(obs))]
    sim = cj.datasets.simulate(len(obs), 60, 5, 2, seed=3, preprocessed=False)
    adata = ad.AnnData(sim.X, obs=obs, var=pd.DataFrame(index=[f"GENE{i}" for i in range(sim.n_vars)]))
    path = tmp_path_factory.mktemp("scperturb") / "SrivatsanTrapnell2020_sciplex_subset.h5ad"
    adata.write_h5ad(path)
    return path, drugs


def test_scperturb_sciplex_layout_ingests(sciplex_scperturb, tmp_path):
    path, drugs = sciplex_scperturb
    assert detect_format(read_quiet(path)) == "scperturb"
    assert main(["ingest", str(path), "--dataset-id", "sciplex_subset", "--out", str(tmp_path)]) == 0
    out = read_quiet(tmp_path / "sciplex_subset" / "lognorm-v1.h5ad")
    assert set(out.obs["context_id"].unique()) == {"A549", "MCF7"}
    treated = out.obs[~out.obs["is_control"]]
    assert set(treated["perturbation_tokens"].unique()) == {f"drug:{d}" for d in drugs}
    assert set(treated["dose"].unique()) == {10.0, 100.0, 1000.0, 10000.0}
    np.testing.assert_array_equal(out.obs["time_hours"].to_numpy(), read_quiet(path).obs["time"].to_numpy())
    assert set(out.obs["time_hours"].unique()) <= {24.0, 72.0}
    assert out.uns["celljepa"]["format"] == "scperturb" and out.uns["celljepa"]["dose_unit"] == "nM"
    assert out.uns["preprocess"]["normalized_here"]
    # Conditions are (context, perturbation, dose, time): every one of them has its 12 cells.
    sizes = out.obs.groupby(["context_id", "perturbation_id", "dose", "time_hours"], observed=True).size()
    assert (sizes % 12 == 0).all()


def test_scperturb_micromolar_doses_become_nanomolar(sciplex_scperturb, tmp_path):
    path, _ = sciplex_scperturb
    a = read_quiet(path)
    a.obs["dose_value"] = a.obs["dose_value"] / 1000.0
    a.obs["dose_unit"] = "uM"
    cj.data.ingest_anndata(a, dataset_id="um", source="test", format="scperturb")
    assert set(a.obs.loc[~a.obs["is_control"], "dose"].unique()) == {10.0, 100.0, 1000.0, 10000.0}


def test_generic_layout_needs_keys():
    a = read_quiet(real_path("scgen/valid.h5ad"))
    with pytest.raises(cj.InputError, match="--perturbation-key"):
        cj.data.ingest_anndata(a, dataset_id="kang", source="test", format="generic")


def test_misspelled_contract_key_suggests_the_keyword():
    a = read_quiet(real_path("scgen/valid.h5ad"))
    with pytest.raises(cj.InputError, match="unknown contract key 'context_kye'.*Did you mean 'context_key'"):
        cj.data.ingest_anndata(
            a,
            dataset_id="kang",
            source="test",
            format="generic",
            perturbation_key="condition",
            control_values="control",
            context_kye="cell_type",
        )


def test_unknown_format_suggests():
    a = read_quiet(real_path("scx/norman_subset.h5ad"))
    with pytest.raises(cj.InputError, match="Did you mean 'gears'"):
        cj.data.ingest_anndata(a, dataset_id="x", source="test", format="gear")


@pytest.mark.parametrize(
    ("content", "match"),
    [(b"", "empty"), (b"gene,cell1\nA,1\n", "not an HDF5"), (b"\x00\x01\x02garbage", "not an HDF5")],
)
def test_bad_files_are_clear_errors(tmp_path, content, match, capsys):
    bad = tmp_path / "bad.h5ad"
    bad.write_bytes(content)
    assert main(["validate", str(bad)]) == 1
    assert match in capsys.readouterr().err
    assert main(["ingest", str(bad), "--dataset-id", "x", "--out", str(tmp_path / "o")]) == 1
    assert not (tmp_path / "o").exists()


def test_missing_file_and_hdf5_that_is_not_anndata(tmp_path, capsys):
    import h5py

    assert main(["validate", str(tmp_path / "nope.h5ad")]) == 1
    assert "File not found" in capsys.readouterr().err
    h5 = tmp_path / "plain.h5"
    with h5py.File(h5, "w") as f:
        f["x"] = np.arange(3)
    assert main(["validate", str(h5)]) == 1
    assert "not a readable AnnData" in capsys.readouterr().err


def test_duplicate_genes_and_nan_fail_ingest_with_nothing_written(tmp_path, capsys):
    a = read_quiet(real_path("perturbench/devel.h5ad"))
    a.var_names = ["PERM1"] + list(a.var_names[1:-1]) + ["PERM1"]
    bad = tmp_path / "dups.h5ad"
    a.write_h5ad(bad)
    assert main(["ingest", str(bad), "--dataset-id", "dups", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "unique_var_names" in err and "PERM1" in err
    b = read_quiet(real_path("perturbench/devel.h5ad"))
    b.X.data[5] = np.inf
    nan = tmp_path / "nan.h5ad"
    b.write_h5ad(nan)
    assert main(["ingest", str(nan), "--dataset-id", "nan", "--out", str(tmp_path / "o")]) == 1
    assert "NaN/inf" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_misspelled_cli_key_suggests(tmp_path, capsys):
    code = main(
        [
            "ingest",
            str(real_path("scgen/valid.h5ad")),
            "--dataset-id",
            "kang",
            "--out",
            str(tmp_path),
            "--format",
            "generic",
            "--perturbation-key",
            "conditon",
            "--control-values",
            "control",
        ]
    )
    assert code == 1
    assert "Did you mean 'condition'" in capsys.readouterr().err


def test_control_label_that_is_also_a_perturbation(tmp_path, capsys):
    # Papalexi's control label is 'non-targeting'; declaring another label leaves it among perturbations.
    code = main(
        [
            "ingest",
            str(real_path("sceptre/papalexi2021_sceptre_lowmoi_example_data.h5ad")),
            "--dataset-id",
            "pap",
            "--out",
            str(tmp_path),
            "--format",
            "generic",
            "--perturbation-key",
            "grna_target",
            "--control-values",
            "SPI1",
            "--context-value",
            "THP-1",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "control_label_as_perturbation" in err and "non-targeting" in err
