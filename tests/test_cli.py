"""The celljepa command line: splits files, determinism, refusals, info, usage."""

from __future__ import annotations

import ast
import hashlib
import json
import subprocess
import sys
from pathlib import Path

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


# ------------------------------------------------------------------------------------------ did-you-mean


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["benchmrak"], "unknown command 'benchmrak'. Did you mean 'benchmark'?"),
        (["-v", "pretrian"], "unknown command 'pretrian'. Did you mean 'pretrain'?"),
        (["slurm", "benchmrak"], "unknown command 'benchmrak'. Did you mean 'benchmark'?"),
        (["peers", "lst"], "unknown command 'lst'. Did you mean 'list'?"),
        (["benchmark", "--no-jpea", "--out", "OUT"], "unknown option --no-jpea. Did you mean '--no-jepa'"),
        (["--verbse", "info"], "unknown option --verbse. Did you mean '--verbose'"),
        (
            ["slurm", "benchmark", "--tme", "1:00:00", "--", "--out", "OUT"],
            "unknown option --tme. Did you mean '--time'",
        ),
    ],
)
def test_misspelt_commands_and_options_are_named(tmp_path, capsys, argv, expected):
    argv = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert expected in err and "--help` lists the" in err
    assert not (tmp_path / "out").exists()


def test_misspelt_option_after_the_slurm_separator_is_named(tmp_path, capsys, monkeypatch):
    # the wrapped arguments are parsed by benchmark's own parser: the same did-you-mean, a usage error
    monkeypatch.chdir(tmp_path)
    assert main(["slurm", "benchmark", "--", "--no-jpea", "--out", "b"]) == 2
    err = capsys.readouterr().err
    assert "error in the arguments after --: unknown option --no-jpea. Did you mean '--no-jepa'" in err
    assert not (tmp_path / "b").exists()


def test_hidden_options_are_accepted_but_never_suggested(capsys):
    from celljepa.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["benchmark", "--jepa", "--out", "x"]).jepa is True  # kept for old scripts
    assert parser.parse_args(["benchmark", "--no-jep", "--out", "x"]).no_jepa is True  # a unique prefix
    with pytest.raises(SystemExit):
        parser.parse_args(["benchmark", "--jepaa", "--out", "x"])
    assert "'--jepa'" not in capsys.readouterr().err


# ------------------------------------------------------------------------------------- --model, --primary

USER_MODEL = """
from celljepa.models.baselines import MeanShift


class Shrunk(MeanShift):
    name = "shrunk"

    def __init__(self, shrinkage=1.0):
        super().__init__()
        self.shrinkage = shrinkage
"""


@pytest.fixture
def user_model(tmp_path, monkeypatch):
    (tmp_path / "my_cli_model.py").write_text(USER_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_cli_model:Shrunk"


def test_model_options_reach_the_run_config(user_model):
    from celljepa.cli import build_parser
    from celljepa.cli._options import run_config

    argv = ["benchmark", "--model", user_model, "--model-option", "shrinkage=0.5", "--primary", "shrunk"]
    run = run_config(build_parser().parse_args([*argv, "--out", "x"]))
    assert run.models == (user_model,) and run.model_options == {user_model: {"shrinkage": 0.5}}
    assert run.evaluation.primary == "shrunk" and [m.shrinkage for m in run.user_models(0)] == [0.5]
    plain = run_config(build_parser().parse_args(["benchmark", "--out", "x"]))
    assert plain.models == () and plain.evaluation.primary == "jepa_set" and plain.jepa_steps == 400


def test_unknown_primary_and_bad_models_are_named(user_model, tmp_path, capsys):
    out = str(tmp_path / "b")
    assert main(["benchmark", "--model", user_model, "--primary", "shrnk", "--out", out]) == 1
    assert "Did you mean 'shrunk'" in capsys.readouterr().err
    assert main(["benchmark", "--primary", "jepa_sett", "--no-jepa", "--out", out]) == 1
    assert "Did you mean 'jepa_set'" in capsys.readouterr().err
    assert main(["benchmark", "--model-option", "shrinkage=0.5", "--out", out]) == 1
    assert "no --model" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["benchmark", "--model", "my_cli_model.Shrunk", "--out", out])
    assert exit_.value.code == 2 and "package.module:Class" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_run_config_from_options_matches_the_fields():
    from celljepa.bench.config import RunConfig

    run = RunConfig.from_options(
        seed=3,
        jepa_overrides=[("train", "max_steps", 7)],
        transition_overrides=[("set_size", 16)],
        peer_seeds=None,
    )
    assert run.split_seeds == (3,) and run.model_seeds == (3,)
    assert run.jepa_steps is None and run.jepa.train.max_steps == 7 and run.transition.set_size == 16
    assert RunConfig.from_options(jepa=False, jepa_steps=9).jepa_steps is None


# ------------------------------------------------------------------------------------------- the CLI's imports

CLI = Path(__file__).resolve().parents[1] / "src" / "celljepa" / "cli"
# private modules of other packages that hold a public name the CLI needs and no package exports
PRIVATE_MODULES_WITHOUT_PUBLIC_PATH = {"celljepa.data._keys", "celljepa.data._validate"}


def _private_uses(path: Path) -> list[str]:
    """``file:line: what`` for each private name of another package that a CLI module imports or uses."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    bad, outside = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = ["celljepa", "cli"][: 2 - node.level + 1]
                module = ".".join(anchor + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            inside = module == "celljepa.cli" or module.startswith("celljepa.cli.")
            if inside:
                continue
            parts = module.split(".")
            # celljepa._errors, ._io, ...: the package's shared base layer, not another package's privates
            if any(p.startswith("_") for p in parts[2:]) and module not in PRIVATE_MODULES_WITHOUT_PUBLIC_PATH:
                bad.append(f"{path.name}:{node.lineno}: from {module} import ... (a private module)")
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    bad.append(f"{path.name}:{node.lineno}: from {module} import {alias.name}")
                outside.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                outside.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in outside
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            bad.append(f"{path.name}:{node.lineno}: {node.value.id}.{node.attr}")
    return bad


def test_the_cli_uses_no_private_name_of_another_package():
    files = sorted(CLI.glob("*.py"))
    assert len(files) >= 8
    bad = [b for f in files for b in _private_uses(f)]
    assert not bad, "the CLI reaches into other packages' privates:\n" + "\n".join(bad)


def test_the_private_name_check_catches_each_kind(tmp_path):
    f = tmp_path / "_mod.py"
    f.write_text(
        "import argparse\nfrom ..bench.run import _FoldTasks\nfrom ..slurm._render import render_sbatch\n"
        "from ._options import _local\nx = argparse._SubParsersAction\n"
    )
    found = _private_uses(f)
    assert [b.split(": ", 1)[1] for b in found] == [
        "from celljepa.bench.run import _FoldTasks",
        "from celljepa.slurm._render import ... (a private module)",
        "argparse._SubParsersAction",
    ]
