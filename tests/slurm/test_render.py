"""`celljepa.slurm.render_sbatch`: golden scripts, quoting of hostile values, validation, examples, submit."""

from __future__ import annotations

import doctest
import os
import re
import shlex
import stat
import subprocess
from pathlib import Path

import pytest

import celljepa.slurm._render as render_module
from celljepa import InputError
from celljepa.slurm import REQUEUE_EXIT_CODE, ShellVar, render_sbatch, submit, write_script
from celljepa.slurm._examples import EXAMPLES, render_examples

GOLDEN = Path(__file__).parent / "golden"
REPO = Path(__file__).resolve().parents[2]
HOSTILE_NAME = "x $(touch PWNED) ; touch PWNED2"

RENDERINGS = {
    "minimal.sbatch": {"command": ["celljepa", "info"], "job_name": "minimal"},
    "full.sbatch": {
        "command": [
            "celljepa",
            "sweep",
            "--grid",
            "configs/sweeps/my grid.yaml",
            "--out",
            "runs/ablations",
            "--task",
            ShellVar("SLURM_ARRAY_TASK_ID"),
            "--no-progress",
        ],
        "job_name": "celljepa-full",
        "partition": "gpu",
        "account": "lab-42",
        "time": "2-00:00:00",
        "nodes": 2,
        "ntasks_per_node": 4,
        "gpus_per_node": 4,
        "cpus_per_task": 8,
        "mem": "256G",
        "array": "0-3%2",
        "output": "logs/%x-%A_%a.out",
        "error": "logs/%x-%A_%a.err",
        "setup": ["module load cuda/12.1", "source .venv/bin/activate"],
        "extra": {"qos": "long", "exclusive": None, "constraint": "a100|h100"},
        "signal_seconds": 600,
        "requeue": True,
        "distributed": True,
        "chdir": "/scratch/my project",
        "open_mode_append": True,
    },
    "hostile.sbatch": {
        "command": ["echo", "$(touch PWNED3)", "`touch PWNED4`", "a;b", "it's", "$HOME", "", "back\\slash #"],
        "job_name": HOSTILE_NAME,
        "partition": "p'q",
        "output": "logs/$(touch PWNED5).out",
        "extra": {"comment": "$(touch PWNED6) 'single' \"double\" \\ # \\\\"},
        "setup": [],
    },
}


def _check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    fix = f"regenerate with CELLJEPA_UPDATE_GOLDEN=1 pytest {Path(__file__).relative_to(REPO)} and review the diff"
    if os.environ.get("CELLJEPA_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8", newline="\n")
    assert path.is_file(), f"golden file {path} is missing; {fix}"
    assert path.read_text(encoding="utf-8") == text, f"{name} differs from the golden file {path}; {fix}"


def _sbatch_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("#SBATCH ")]


def _sbatch_words(line: str) -> list[str]:
    """The words of an #SBATCH line as sbatch reads them: a port of `_get_argument` in Slurm's sbatch/opt.c.

    Quotes (single or double) group, a backslash escapes the next character even inside quotes, an unquoted
    `#` ends the line.
    """
    words, i = [], 0
    while True:
        while i < len(line) and line[i].isspace():
            i += 1
        if i >= len(line):
            return words
        arg, quote, escape = [], "", False
        while i < len(line) and (quote or not line[i].isspace()):
            c = line[i]
            i += 1
            if escape:
                escape = False
            elif c == "\\":
                escape = True
                continue
            elif quote:
                if c == quote:
                    quote = ""
                    continue
            elif c in "\"'":
                quote = c
                continue
            elif c == "#":
                i = len(line)
                break
            arg.append(c)
        assert not quote, f"sbatch: unmatched quote in {line!r}"
        if arg:
            words.append("".join(arg))


def _flags(text: str) -> dict[str, str | None]:
    """The #SBATCH flags as sbatch reads them; a shell (shlex) reads the same."""
    out = {}
    for line in _sbatch_lines(text):
        words = _sbatch_words(line[len("#SBATCH ") :])
        assert words == shlex.split(line[len("#SBATCH ") :]), line
        assert len(words) == 1, line
        name, sep, value = words[0].partition("=")
        out[name[2:]] = value if sep else None
    return out


@pytest.mark.parametrize("name", sorted(RENDERINGS))
def test_golden(name):
    text = render_sbatch(**RENDERINGS[name])
    assert text == render_sbatch(**RENDERINGS[name])  # deterministic
    _check_golden(name, text)


def test_render_does_not_read_the_environment(monkeypatch):
    before = render_sbatch(**RENDERINGS["full.sbatch"])
    monkeypatch.setenv("SLURM_JOB_ID", "99")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.setenv("HOME", "/elsewhere")
    monkeypatch.chdir("/")
    assert render_sbatch(**RENDERINGS["full.sbatch"]) == before


def test_header_is_sorted_and_complete():
    text = render_sbatch(**RENDERINGS["full.sbatch"])
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    header = lines[1 : 1 + len(_sbatch_lines(text))]
    assert header == _sbatch_lines(text), "#SBATCH lines come right after the shebang, in one block"
    names = [line.split()[1].split("=")[0] for line in header]
    assert names == sorted(names)
    assert _flags(text) == {
        "account": "lab-42",
        "array": "0-3%2",
        "chdir": "/scratch/my project",
        "constraint": "a100|h100",
        "cpus-per-task": "8",
        "error": "logs/%x-%A_%a.err",
        "exclusive": None,
        "gpus-per-node": "4",
        "job-name": "celljepa-full",
        "mem": "256G",
        "nodes": "2",
        "ntasks-per-node": "4",
        "open-mode": "append",
        "output": "logs/%x-%A_%a.out",
        "partition": "gpu",
        "qos": "long",
        "requeue": None,
        "signal": "USR1@600",
        "time": "2-00:00:00",
    }
    assert "#SBATCH --constraint='a100|h100'" in lines and "#SBATCH --chdir='/scratch/my project'" in lines
    assert "re-render" in lines[len(header) + 1]


def test_body_order_and_requeue_block():
    text = render_sbatch(**RENDERINGS["full.sbatch"])
    body = text.split("\n\n", 1)[1].splitlines()
    assert body[:4] == [
        "set -uo pipefail",
        "module load cuda/12.1",
        "source .venv/bin/activate",
        'export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"',
    ]
    assert body[4].startswith("export MASTER_ADDR=") and body[5].startswith("export MASTER_PORT=")
    assert body[6] == (
        "srun celljepa sweep --grid 'configs/sweeps/my grid.yaml' --out runs/ablations "
        '--task "${SLURM_ARRAY_TASK_ID}" --no-progress'
    )
    assert body[7] == "rc=$?"
    assert body[8] == f'if [ "$rc" -eq {REQUEUE_EXIT_CODE} ]; then'
    assert '    scontrol requeue "$SLURM_JOB_ID" && exit 0' in body
    assert body[-1] == 'exit "$rc"' and text.endswith('exit "$rc"\n')


@pytest.mark.parametrize(
    ("requeue", "signal", "has_flag", "has_block"),
    [(True, 300, True, True), (True, None, True, False), (False, 300, False, False), (False, None, False, False)],
)
def test_requeue_needs_signal_for_the_checkpoint_block(requeue, signal, has_flag, has_block):
    text = render_sbatch(["celljepa", "info"], job_name="j", requeue=requeue, signal_seconds=signal)
    assert ("#SBATCH --requeue" in text) is has_flag
    assert ("scontrol requeue" in text) is has_block
    assert ("--signal=USR1@300" in text) is (signal is not None)
    assert "MASTER_ADDR" not in text


def test_optional_flags_left_out():
    text = render_sbatch(["celljepa", "info"], job_name="j", open_mode_append=False, requeue=False)
    assert set(_flags(text)) == {"job-name", "nodes", "ntasks-per-node", "time"}
    assert _flags(text)["time"] == "48:00:00"


def test_requeue_exit_code_is_the_cli_interrupt_code():
    from celljepa.cli import EXIT_INTERRUPTED

    assert REQUEUE_EXIT_CODE == EXIT_INTERRUPTED == 75


def test_docstring_examples_run():
    result = doctest.testmod(render_module, raise_on_error=False)
    assert result.attempted >= 4 and result.failed == 0


# --- hostile values stay inert -------------------------------------------------------------------------------


def test_hostile_values_round_trip_and_stay_inert(tmp_path):
    kwargs = RENDERINGS["hostile.sbatch"]
    text = render_sbatch(**kwargs)
    assert f"#SBATCH --job-name={shlex.quote(HOSTILE_NAME)}" in text
    assert "--job-name='x $(touch PWNED) ; touch PWNED2'" in text
    flags = _flags(text)
    assert flags["job-name"] == HOSTILE_NAME
    assert flags["partition"] == "p'q"
    assert flags["output"] == kwargs["output"]
    assert flags["comment"] == kwargs["extra"]["comment"]
    srun = next(line for line in text.splitlines() if line.startswith("srun "))
    assert shlex.split(srun) == ["srun", *kwargs["command"]]

    script = tmp_path / "job.sbatch"
    script.write_text(text)
    check = subprocess.run(["bash", "-n", str(script)], cwd=tmp_path, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    # The command words through a real shell (printf in place of srun) reach the program verbatim.
    words = srun[len("srun ") :]
    shown = subprocess.run(["bash", "-c", f"printf '%s\\0' {words}"], cwd=tmp_path, capture_output=True)
    assert shown.returncode == 0
    assert shown.stdout.decode().split("\0")[:-1] == kwargs["command"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.sbatch"], "a hostile value was executed"


def test_shell_var_is_the_only_expansion(tmp_path):
    assert ShellVar("SLURM_ARRAY_TASK_ID").render() == '"${SLURM_ARRAY_TASK_ID}"'
    text = render_sbatch(["echo", ShellVar("TASK"), "${TASK}"], job_name="j")
    srun = next(line for line in text.splitlines() if line.startswith("srun "))
    assert srun == "srun echo \"${TASK}\" '${TASK}'"
    shown = subprocess.run(
        ["bash", "-c", srun.replace("srun echo ", "printf '%s\\n' ", 1)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"TASK": "7 8", "PATH": os.environ["PATH"]},
    )
    assert shown.stdout.splitlines() == ["7 8", "${TASK}"]
    for bad in ("1X", "A-B", "$X", "", "X}; rm -rf ~; {"):
        with pytest.raises(InputError, match="shell variable name"):
            ShellVar(bad)


# --- validation ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["celljepa pretrain data.h5ad", b"celljepa", Path("celljepa")])
def test_string_command_is_refused(command):
    with pytest.raises(InputError, match="list of arguments"):
        render_sbatch(command, job_name="j")


@pytest.mark.parametrize("command", [[], ["celljepa", 1.5], ["celljepa", None]])
def test_bad_command_elements(command):
    with pytest.raises(InputError, match="command"):
        render_sbatch(command, job_name="j")


@pytest.mark.parametrize("good", ["30", "30:00", "48:00:00", "100:00:00", "2-00:00:00", "2-12", "2-12:30", "0"])
def test_good_times(good):
    assert f"--time={good}\n" in render_sbatch(["true"], job_name="j", time=good)


@pytest.mark.parametrize(
    "bad", ["48h", "1:2:3:4", "10:61:00", "1-24", "1-2:3:4:5", "", "abc", "-1", "2 days", "12:00:99"]
)
def test_bad_times(bad):
    with pytest.raises(InputError, match=r"time .*Fix: use D-HH:MM:SS, HH:MM:SS, MM:SS, MM"):
        render_sbatch(["true"], job_name="j", time=bad)


@pytest.mark.parametrize(
    ("arg", "value"),
    [
        ("nodes", 0),
        ("ntasks_per_node", 0),
        ("gpus_per_node", -1),
        ("cpus_per_task", 0),
        ("signal_seconds", 0),
        ("nodes", True),
        ("nodes", "2"),
        ("signal_seconds", -5),
    ],
)
def test_bad_counts_name_the_argument(arg, value):
    with pytest.raises(InputError, match=rf"^{arg} must be"):
        render_sbatch(["true"], job_name="j", **{arg: value})


@pytest.mark.parametrize("name", ["Qos", "--qos", "q os", "1abc", "", "qos=long", "a_b"])
def test_bad_extra_flag_names(name):
    with pytest.raises(InputError, match="not valid.*without dashes"):
        render_sbatch(["true"], job_name="j", extra={name: "x"})


@pytest.mark.parametrize(
    "name",
    [
        "time",
        "nodes",
        "job-name",
        "signal",
        "requeue",
        "ntasks",
        "ntasks-per-node",
        "array",
        "output",
        "open-mode",
        "chdir",
        "gpus-per-node",
    ],
)
def test_extra_flags_may_not_collide(name):
    with pytest.raises(InputError, match=f"'{name}' collides with an argument of render_sbatch"):
        render_sbatch(["true"], job_name="j", extra={name: "1"})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"job_name": "a\nrm -rf ~"}, "job_name .* line break"),
        ({"job_name": ""}, "job_name is empty"),
        ({"partition": "gpu\r"}, "partition .* line break"),
        ({"extra": {"comment": "a\nb"}}, r"extra\['comment'\] .* line break"),
        ({"setup": ["module load x\nrm -rf ~"]}, r"setup\[0\] .* line break"),
        ({"setup": "source .venv/bin/activate"}, "list of shell lines"),
        ({"mem": "64 GB"}, "not a Slurm memory size"),
        ({"array": "0-11%"}, "not a Slurm array spec"),
        ({"array": "$(x)"}, "not a Slurm array spec"),
    ],
)
def test_bad_values(kwargs, match):
    kwargs = {"job_name": "j", **kwargs}
    with pytest.raises(InputError, match=match):
        render_sbatch(["true"], **kwargs)


# --- writing and submitting ---------------------------------------------------------------------------------


def test_write_script_is_atomic_and_executable(tmp_path):
    path = write_script(tmp_path / "new" / "dir" / "job.sbatch", "#!/bin/bash\n")
    assert path.read_text() == "#!/bin/bash\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    assert [p.name for p in path.parent.iterdir()] == ["job.sbatch"]


def test_submit_without_sbatch(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(InputError, match="sbatch was not found on PATH.*Fix: run on a Slurm login node"):
        submit("a.sbatch")


# --- the example scripts in slurm/ ----------------------------------------------------------------------------


def test_examples_match_the_renderer(tmp_path):
    fix = "regenerate them with `python -m celljepa.slurm._examples` from the repository root"
    folder = REPO / "slurm"
    assert sorted(p.name for p in folder.glob("*.sbatch")) == sorted(EXAMPLES), f"slurm/*.sbatch are stale; {fix}"
    for name, text in render_examples().items():
        assert (folder / name).read_text(encoding="utf-8") == text, f"slurm/{name} is stale; {fix}"
        check = subprocess.run(["bash", "-n", str(folder / name)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr


def test_examples_content():
    texts = render_examples()
    one = _flags(texts["pretrain-1gpu.sbatch"])
    assert one["gpus-per-node"] == "1" and one["signal"] == "USR1@300" and "chdir" not in one
    assert one["output"] == "runs/pretrain-my_screen/slurm/%x-%j.out"
    ddp = texts["pretrain-ddp-2x4gpu.sbatch"]
    assert _flags(ddp)["nodes"] == "2" and _flags(ddp)["ntasks-per-node"] == "4" and "MASTER_PORT" in ddp
    sweep = texts["sweep-array.sbatch"]
    assert _flags(sweep)["array"] == "0-11%4"
    assert re.search(r'^srun celljepa sweep .* --task "\$\{SLURM_ARRAY_TASK_ID\}" --no-progress$', sweep, re.M)


def test_examples_main_writes_the_files(tmp_path, capsys):
    from celljepa.slurm._examples import main

    assert main([str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(EXAMPLES)
    assert len(capsys.readouterr().out.splitlines()) == len(EXAMPLES)
