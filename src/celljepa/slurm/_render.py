"""Render sbatch scripts (pure), write them atomically and submit them with ``sbatch``."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .._errors import InputError

__all__ = ["REQUEUE_EXIT_CODE", "ShellVar", "render_sbatch", "submit", "write_script"]

# ``celljepa pretrain`` exits with this code (EX_TEMPFAIL) after it wrote a checkpoint on SIGUSR1/SIGTERM;
# running the same command again resumes. It is ``celljepa.cli.EXIT_INTERRUPTED``, repeated here so that
# rendering a script does not import the command line (a test checks that the two agree).
REQUEUE_EXIT_CODE = 75

# Flags render_sbatch writes itself (or that would contradict them): ``extra`` may not set these.
_RESERVED_FLAGS = frozenset(
    {
        "account",
        "array",
        "chdir",
        "cpus-per-task",
        "error",
        "gpus-per-node",
        "job-name",
        "mem",
        "no-requeue",
        "nodes",
        "ntasks",
        "ntasks-per-node",
        "open-mode",
        "output",
        "partition",
        "requeue",
        "signal",
        "time",
    }
)
_FLAG_NAME = re.compile(r"[a-z][a-z0-9-]*\Z")
_SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_TIME_FORMATS = (  # the formats sbatch --time accepts
    re.compile(r"(?P<m>\d+)\Z"),
    re.compile(r"(?P<m>\d+):(?P<s>\d{1,2})\Z"),
    re.compile(r"(?P<h>\d+):(?P<m>\d{1,2}):(?P<s>\d{1,2})\Z"),
    re.compile(r"(?P<d>\d+)-(?P<h>\d{1,2})\Z"),
    re.compile(r"(?P<d>\d+)-(?P<h>\d{1,2}):(?P<m>\d{1,2})\Z"),
    re.compile(r"(?P<d>\d+)-(?P<h>\d{1,2}):(?P<m>\d{1,2}):(?P<s>\d{1,2})\Z"),
)
_MEM = re.compile(r"\d+[KMGTkmgt]?\Z")
_ARRAY_RANGE = r"\d+(-\d+(:\d+)?)?"
_ARRAY = re.compile(rf"{_ARRAY_RANGE}(,{_ARRAY_RANGE})*(%\d+)?\Z")


@dataclass(frozen=True)
class ShellVar:
    """A shell variable in an sbatch command, expanded when the job runs.

    Every other argument of the command is quoted and reaches the program verbatim; a ``ShellVar`` is
    the only way to let the job's shell expand something. It is rendered in double quotes, e.g.
    ``"${SLURM_ARRAY_TASK_ID}"``, so its value stays one argument.

    Parameters
    ----------
    name
        The variable's name (letters, digits and ``_``, not starting with a digit).

    Examples
    --------
    >>> ShellVar("SLURM_ARRAY_TASK_ID").render()
    '"${SLURM_ARRAY_TASK_ID}"'
    """

    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _SHELL_NAME.match(self.name):
            raise InputError(
                f"ShellVar name {self.name!r} is not a shell variable name. "
                "Fix: use letters, digits and '_' only, e.g. ShellVar('SLURM_ARRAY_TASK_ID')."
            )

    def render(self) -> str:
        """The variable as a double-quoted shell expansion."""
        return f'"${{{self.name}}}"'


def _sbatch_quote(value: str) -> str:
    r"""Quote ``value`` for an ``#SBATCH`` line so that sbatch and a shell both read it back unchanged.

    :func:`shlex.quote`, except for backslashes: sbatch treats a backslash as an escape even inside single
    quotes (a shell does not), so each backslash is written as ``\\`` outside the quotes, which both read as
    one backslash.
    """
    if "\\" not in value:
        return shlex.quote(value)
    return "\\\\".join(shlex.quote(part) if part else "" for part in value.split("\\"))


def _check_text(name: str, value, *, allow_empty: bool = False) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise InputError(f"{name} must be a string, got {type(value).__name__} {value!r}.")
    if not value and not allow_empty:
        raise InputError(f"{name} is empty. Fix: give a value or leave it out.")
    if any(ch in value for ch in "\n\r\0"):
        raise InputError(
            f"{name} {value!r} contains a line break or NUL byte, which cannot appear in an sbatch "
            "script line. Fix: remove it."
        )
    return value


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{name} must be an integer, got {value!r}.")
    if value < minimum:
        raise InputError(f"{name} must be at least {minimum}, got {value}.")
    return value


def _check_time(value) -> str:
    value = _check_text("time", value, allow_empty=True)
    for pattern in _TIME_FORMATS:
        match = pattern.match(value)
        if match:
            part = {k: int(v) for k, v in match.groupdict().items()}
            if "d" in part and part["h"] > 23 or "h" in part and part.get("m", 0) > 59 or part.get("s", 0) > 59:
                break  # a field out of range after a larger one (HH:61:00), surely a typo
            return value
    raise InputError(
        f"time {value!r} is not a Slurm time limit. Fix: use D-HH:MM:SS, HH:MM:SS, MM:SS, MM "
        "(minutes) or D-HH, e.g. 48:00:00 or 2-00:00:00."
    )


def _render_command(command) -> str:
    if isinstance(command, (str, bytes, os.PathLike)):
        raise InputError(
            f"command must be a list of arguments, not the string {command!r}. "
            "Fix: pass a list of arguments, e.g. ['celljepa', 'pretrain', 'data.h5ad', '--out', 'run'] "
            "(each is quoted; use ShellVar for a variable the job should expand)."
        )
    if not isinstance(command, Sequence) or not command:
        raise InputError("command must be a non-empty list of arguments, e.g. ['celljepa', 'pretrain', ...].")
    words = []
    for i, arg in enumerate(command):
        if isinstance(arg, ShellVar):
            words.append(arg.render())
        elif isinstance(arg, int) and not isinstance(arg, bool):
            words.append(str(arg))
        elif isinstance(arg, (str, os.PathLike)):
            words.append(shlex.quote(_check_text(f"command[{i}]", arg, allow_empty=True)))
        else:
            raise InputError(f"command[{i}] must be a string, path, int or ShellVar, got {type(arg).__name__} {arg!r}.")
    return " ".join(words)


def render_sbatch(
    command: Sequence[str | os.PathLike | int | ShellVar],
    *,
    job_name: str,
    partition: str | None = None,
    account: str | None = None,
    time: str = "48:00:00",
    nodes: int = 1,
    ntasks_per_node: int = 1,
    gpus_per_node: int = 0,
    cpus_per_task: int | None = None,
    mem: str | None = None,
    array: str | None = None,
    output: str | os.PathLike | None = None,
    error: str | os.PathLike | None = None,
    setup: Sequence[str] = (),
    extra: Mapping[str, str | None] | None = None,
    signal_seconds: int | None = None,
    requeue: bool = True,
    distributed: bool = False,
    chdir: str | os.PathLike | None = None,
    open_mode_append: bool = True,
) -> str:
    """Render an sbatch script that runs ``command`` under ``srun``.

    The function is pure: no file, clock or environment is read, and the same arguments give the same
    text. The header holds one ``#SBATCH --flag=value`` line per option, sorted by flag name, every value
    quoted with :func:`shlex.quote` (a backslash goes outside the quotes, where sbatch reads it as a shell
    does), so sbatch and a shell read back the exact value and nothing in it is ever executed. The body
    exports ``OMP_NUM_THREADS``, runs ``srun COMMAND`` (srun inherits the allocation:
    ``nodes * ntasks_per_node`` tasks, each seeing ``SLURM_PROCID``,
    ``SLURM_STEP_NUM_TASKS`` and ``SLURM_LOCALID``) and, with ``requeue`` and ``signal_seconds``, requeues the job
    when the command exits with :data:`REQUEUE_EXIT_CODE` (``celljepa pretrain`` after writing a
    checkpoint on the warning signal), so the job resumes from that checkpoint.

    Parameters
    ----------
    command
        The program and its arguments, one list element each (a plain string is refused). Every element
        is shell-quoted; a :class:`ShellVar` element is the only way to have the job's shell expand a
        variable, e.g. ``ShellVar("SLURM_ARRAY_TASK_ID")``.
    job_name
        ``--job-name``; ``%x`` in log file names.
    partition
        ``--partition`` (default: the cluster's default partition).
    account
        ``--account`` to charge.
    time
        ``--time`` limit: ``D-HH:MM:SS``, ``D-HH:MM``, ``D-HH``, ``HH:MM:SS``, ``MM:SS`` or ``MM`` (minutes).
    nodes
        ``--nodes`` (at least 1).
    ntasks_per_node
        ``--ntasks-per-node`` (at least 1): processes srun starts on each node, one per GPU for DDP.
    gpus_per_node
        ``--gpus-per-node``; 0 writes no GPU request.
    cpus_per_task
        ``--cpus-per-task``; also ``OMP_NUM_THREADS`` of each task (1 when unset).
    mem
        ``--mem`` per node, e.g. ``"64G"`` (digits with an optional K, M, G or T).
    array
        ``--array`` index spec, e.g. ``"0-11%4"`` (at most 4 tasks at a time).
    output
        ``--output`` log file, e.g. ``"runs/x/slurm/%x-%j.out"``. Slurm does not create its folder.
    error
        ``--error`` file (default: stderr goes to ``output``).
    setup
        Shell lines run before the command, e.g. ``["module load cuda", "source .venv/bin/activate"]``.
        They are the caller's own shell code and are written verbatim, NOT quoted; one line each.
    extra
        More sbatch flags: name without dashes -> value, ``None`` for a flag without value, e.g.
        ``{"qos": "long", "exclusive": None}``. Names must match ``[a-z][a-z0-9-]*`` and may not be one of
        the flags set by the other arguments (``time``, ``nodes``, ``ntasks``, ``signal``, ...).
    signal_seconds
        Send ``SIGUSR1`` to the job steps this many seconds before the time limit (``--signal=USR1@N``).
    requeue
        Write ``--requeue`` (the job may be requeued after preemption or node failure) and, with
        ``signal_seconds``, requeue it when the command exits with :data:`REQUEUE_EXIT_CODE`.
    distributed
        Export ``MASTER_ADDR`` (the first node) and ``MASTER_PORT`` (derived from the job id) for
        ``torch.distributed``.
    chdir
        ``--chdir``: the job's working directory, against which relative paths resolve.
    open_mode_append
        Write ``--open-mode=append`` so that a requeued job appends to its log instead of truncating it.

    Returns
    -------
    str
        The script, starting with ``#!/bin/bash`` and ending with a newline.

    Raises
    ------
    InputError
        A string command, an invalid time, count, memory or array spec, a value with a line break, or an
        ``extra`` flag with a bad or reserved name.

    Examples
    --------
    >>> text = render_sbatch(["celljepa", "pretrain", "data.h5ad", "--out", "runs/a b"],
    ...                      job_name="my job", time="2:00:00", gpus_per_node=1, signal_seconds=300)
    >>> print(text.split("# Rendered")[0].strip())
    #!/bin/bash
    #SBATCH --gpus-per-node=1
    #SBATCH --job-name='my job'
    #SBATCH --nodes=1
    #SBATCH --ntasks-per-node=1
    #SBATCH --open-mode=append
    #SBATCH --requeue
    #SBATCH --signal=USR1@300
    #SBATCH --time=2:00:00
    >>> [line for line in text.splitlines() if line.startswith("srun")]
    ["srun celljepa pretrain data.h5ad --out 'runs/a b'"]
    >>> render_sbatch(["celljepa", "sweep", "--task", ShellVar("SLURM_ARRAY_TASK_ID")], job_name="s",
    ...               array="0-11%4").count('--task "${SLURM_ARRAY_TASK_ID}"')
    1
    """
    flags: dict[str, str | None] = {
        "job-name": _check_text("job_name", job_name),
        "time": _check_time(time),
        "nodes": str(_check_int("nodes", nodes, 1)),
        "ntasks-per-node": str(_check_int("ntasks_per_node", ntasks_per_node, 1)),
    }
    for name, value in (
        ("partition", partition),
        ("account", account),
        ("output", output),
        ("error", error),
        ("chdir", chdir),
    ):
        if value is not None:
            flags[name] = _check_text(name, value)
    if _check_int("gpus_per_node", gpus_per_node, 0):
        flags["gpus-per-node"] = str(gpus_per_node)
    if cpus_per_task is not None:
        flags["cpus-per-task"] = str(_check_int("cpus_per_task", cpus_per_task, 1))
    if mem is not None:
        if not _MEM.match(_check_text("mem", mem)):
            raise InputError(
                f"mem {mem!r} is not a Slurm memory size. Fix: digits with an optional unit K, M, G or T, e.g. 64G."
            )
        flags["mem"] = mem
    if array is not None:
        if not _ARRAY.match(_check_text("array", array)):
            raise InputError(f"array {array!r} is not a Slurm array spec. Fix: e.g. 0-11, 0-11%4, 1,3,5-7 or 0-15:4.")
        flags["array"] = array
    if signal_seconds is not None:
        flags["signal"] = f"USR1@{_check_int('signal_seconds', signal_seconds, 1)}"
    if requeue:
        flags["requeue"] = None
    if open_mode_append:
        flags["open-mode"] = "append"
    for name, value in (extra or {}).items():
        if not isinstance(name, str) or not _FLAG_NAME.match(name):
            raise InputError(
                f"extra sbatch flag name {name!r} is not valid. Fix: give the long flag name without "
                "dashes, in lower case, e.g. {'qos': 'long'} for --qos=long."
            )
        if name in _RESERVED_FLAGS:
            raise InputError(
                f"extra sbatch flag {name!r} collides with an argument of render_sbatch. Fix: use the "
                f"argument instead (e.g. {name.replace('-', '_')}=...), not extra."
            )
        flags[name] = None if value is None else _check_text(f"extra[{name!r}]", value, allow_empty=True)
    setup_lines = []
    if isinstance(setup, str):
        raise InputError(
            "setup must be a list of shell lines, not one string. Fix: setup=['source .venv/bin/activate']."
        )
    for i, line in enumerate(setup):
        setup_lines.append(_check_text(f"setup[{i}]", line))
    srun = "srun " + _render_command(command)

    lines = ["#!/bin/bash"]
    for name in sorted(flags):
        value = flags[name]
        lines.append(f"#SBATCH --{name}" if value is None else f"#SBATCH --{name}={_sbatch_quote(value)}")
    lines += [
        "# Rendered by celljepa.slurm.render_sbatch; re-render it (celljepa slurm ...) rather than edit it.",
        "",
        "set -uo pipefail",
        *setup_lines,
        'export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"',
    ]
    if distributed:
        lines += [
            'export MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"',
            'export MASTER_PORT="$((20000 + SLURM_JOB_ID % 20000))"',
        ]
    lines += [srun, "rc=$?"]
    if requeue and signal_seconds is not None:
        lines += [
            f'if [ "$rc" -eq {REQUEUE_EXIT_CODE} ]; then',
            '    echo "celljepa: checkpoint written after a signal; requeueing job $SLURM_JOB_ID" >&2',
            '    scontrol requeue "$SLURM_JOB_ID" && exit 0',
            "fi",
        ]
    lines.append('exit "$rc"')
    return "\n".join(lines) + "\n"


def write_script(path: str | os.PathLike, text: str) -> Path:
    """Write an sbatch script atomically (creating its folder) and make it executable.

    Parameters
    ----------
    path
        Where to write, e.g. ``runs/x/slurm/pretrain.sbatch``.
    text
        The script, e.g. from :func:`render_sbatch`.

    Returns
    -------
    Path
        ``path``.
    """
    from .._io import write_text_atomic

    path = write_text_atomic(path, text)
    os.chmod(path, 0o755)
    return path


def submit(script_path: str | os.PathLike, *, dependency: str | None = None) -> str:
    """Submit a script with ``sbatch --parsable`` and return the job id.

    Parameters
    ----------
    script_path
        The sbatch script.
    dependency
        ``--dependency`` of the job, e.g. ``"afterany:1234"``.

    Returns
    -------
    str
        The job id (without the ``;cluster`` suffix of federated clusters).

    Raises
    ------
    InputError
        ``sbatch`` is not on ``PATH``, or it refused the script (its message is included).
    """
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise InputError(
            f"sbatch was not found on PATH, so {script_path} was not submitted. Fix: run on a Slurm "
            "login node, or drop --submit and submit the script yourself (sbatch SCRIPT)."
        )
    argv = [sbatch, "--parsable"]
    if dependency is not None:
        argv.append(f"--dependency={_check_text('dependency', dependency)}")
    argv.append(os.fspath(script_path))
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603 - list args, no shell
    if proc.returncode != 0:
        raise InputError(
            f"sbatch refused {script_path} (exit {proc.returncode}): "
            f"{proc.stderr.strip() or proc.stdout.strip() or 'no message'}"
        )
    lines = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    job_id = lines[-1].split(";", 1)[0].strip() if lines else ""
    if not job_id:
        raise InputError(f"sbatch accepted {script_path} but printed no job id (stdout {proc.stdout!r}).")
    return job_id
