"""The celljepa command line: splits files, determinism, refusals, info, usage."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from celljepa.cli import main


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.json"))}


def test_splits_twice_gives_identical_files(ingested, tmp_path, capsys):
    h5ad = str(ingested["perturbench_devel"])
    for out in ("a", "b"):
        assert (
            main(
                [
                    "splits",
                    h5ad,
                    "--split",
                    "S1_unseen_perturbation",
                    "--seed",
                    "7",
                    "--folds",
                    "5",
                    "--out",
                    str(tmp_path / out),
                ]
            )
            == 0
        )
    a, b = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    assert len(a) == 5 and a == b
    fold = json.loads((tmp_path / "a" / "perturbench_devel.S1_unseen_perturbation.seed7.fold0.json").read_text())
    for key in (
        "dataset_id",
        "split_name",
        "seed",
        "fold",
        "train_groups",
        "val_groups",
        "test_groups",
        "train_cells",
        "val_cells",
        "test_cells",
    ):
        assert key in fold
    assert fold["dataset_id"] == "perturbench_devel" and fold["seed"] == 7 and fold["pilot"] is False
    printed = capsys.readouterr().out.split()
    assert len(printed) == 10 and printed[0].endswith("fold0.json")


def test_splits_other_seed_differs(ingested, tmp_path):
    h5ad = str(ingested["perturbench_devel"])
    main(["splits", h5ad, "--split", "S3_unseen_combo", "--seed", "0", "--folds", "5", "--out", str(tmp_path / "a")])
    main(["splits", h5ad, "--split", "S3_unseen_combo", "--seed", "1", "--folds", "5", "--out", str(tmp_path / "b")])
    a = [json.loads(p.read_text())["test_groups"] for p in sorted((tmp_path / "a").glob("*.json"))]
    b = [json.loads(p.read_text())["test_groups"] for p in sorted((tmp_path / "b").glob("*.json"))]
    assert sorted(sum(a, [])) == sorted(sum(b, [])) and a != b


def test_splits_refuses_folds_without_test_groups(ingested, tmp_path, capsys):
    code = main(
        [
            "splits",
            str(ingested["perturbench_devel"]),
            "--split",
            "S2_unseen_context",
            "--folds",
            "5",
            "--out",
            str(tmp_path / "s2"),
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "no test groups" in err and "--folds 4" in err
    assert not (tmp_path / "s2").exists() or not any((tmp_path / "s2").iterdir())


@pytest.mark.parametrize(
    "argv",
    [
        ["splits", "DATA", "--split", "S2_unseen_contxt", "--out", "OUT"],
        ["eval-baselines", "DATA", "--split", "S2_unseen_contxt", "--fold", "0", "--out", "OUT"],
        ["benchmark", "--data", "DATA", "--splits", "S2_unseen_contxt:3", "--out", "OUT"],
    ],
)
def test_unknown_split_name_suggests(ingested, tmp_path, capsys, argv):
    # one check, in the parser: a usage error with the suggestion, before any file is read or written
    argv = [str(ingested["kang2018"]) if a == "DATA" else str(tmp_path / "out") if a == "OUT" else a for a in argv]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert "Did you mean 'S2_unseen_context'?" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_verbosity_flags_before_or_after_the_command():
    from celljepa.cli import build_parser, verbosity

    parser = build_parser()
    levels = {
        tuple(a): verbosity(parser.parse_args(a))
        for a in (["info"], ["-v", "info"], ["info", "-v"], ["info", "-q"], ["-q", "info", "-q"])
    }
    assert levels == {("info",): 2, ("-v", "info"): 3, ("info", "-v"): 3, ("info", "-q"): 1, ("-q", "info", "-q"): 1}


def test_help_imports_neither_torch_nor_scanpy():
    code = (
        "import sys\nfrom celljepa.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'scanpy', 'anndata', 'pandas') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_s3_on_a_dataset_without_combos(ingested, tmp_path, capsys):
    code = main(["splits", str(ingested["kang2018"]), "--split", "S3_unseen_combo", "--out", str(tmp_path)])
    assert code == 1
    assert "combination" in capsys.readouterr().err


def test_pilot_label_for_two_folds(ingested, tmp_path):
    assert (
        main(
            [
                "splits",
                str(ingested["kang2018"]),
                "--split",
                "S2_unseen_context",
                "--folds",
                "2",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    assert all(json.loads(p.read_text())["pilot"] for p in tmp_path.glob("*.json"))


def test_info_reports_the_build(capsys):
    assert main(["info"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["build"]["_core"]["openmp"] is True
    assert "cpu" in info["backends"] and "reference" in info["backends"]


def test_usage_errors_exit_2():
    proc = subprocess.run([sys.executable, "-m", "celljepa.cli", "splits"], capture_output=True, text=True)
    assert proc.returncode == 2 and "required" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "celljepa.cli"], capture_output=True, text=True)
    assert proc.returncode == 2 and "ingest" in proc.stdout


def test_console_script_is_installed():
    import shutil

    exe = shutil.which("celljepa", path=str(__import__("pathlib").Path(sys.executable).parent))
    if exe is None:
        pytest.fail("the `celljepa` console script is not installed next to the Python executable")
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("celljepa ")
