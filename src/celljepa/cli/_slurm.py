"""``celljepa slurm``: render (and submit) sbatch scripts for the long celljepa commands.

``celljepa.cli`` registers :func:`add_parser` and :func:`run` as the ``slurm`` command.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from .._errors import InputError
from ..slurm import ShellVar, render_sbatch, submit, write_script
from ._commands import COMMANDS, check_settings
from ._parser import EXIT_OK, EXIT_USAGE, CommandParser, Subcommands, build_parser

# slurm subcommand -> (celljepa command it wraps, usage of the wrapped arguments, help)
WRAPPED = {
    "pretrain": (
        "pretrain",
        "H5AD --out RUN [pretrain options]",
        "sbatch script for `celljepa pretrain` (resumable: requeued after a checkpoint on SIGUSR1)",
    ),
    "transition": (
        "train-transition",
        "H5AD --jepa RUN --split-file SPLIT.json --out RUN [train-transition options]",
        "sbatch script for `celljepa train-transition`",
    ),
    "benchmark": (
        "benchmark",
        "--out RUN [benchmark options]",
        "sbatch job array for `celljepa benchmark` (one fold task per array index, requeued on SIGUSR1) "
        "plus a collect job",
    ),
    "holdout": (
        "holdout",
        "--data NAME=H5AD ... --holdout NAME --out RUN [holdout options]",
        "sbatch job arrays for `celljepa holdout`: the encoders, then the folds (after the encoders), then a "
        "collect job",
    ),
    "sweep": (
        "sweep",
        "--grid GRID --out OUT [--data NAME=H5AD ...]",
        "sbatch job array for `celljepa sweep` (one task per array index) plus a collect job",
    ),
}
DISTRIBUTED = frozenset({"pretrain", "transition"})  # commands that train with DDP under srun with several tasks
# pretrain checkpoints and resumes mid-run; a benchmark fold task stops, keeps its finished folds and is requeued
DEFAULT_SIGNAL_SECONDS = {"pretrain": 300, "benchmark": 300, "holdout": 300}
ARRAYS = frozenset({"sweep", "benchmark", "holdout"})  # commands that run as a job array of tasks plus a collect job
COLLECT_TIME = "01:00:00"


class _WrappedUsageError(Exception):
    """The arguments after ``--`` do not parse with the wrapped command's parser."""


def _sbatch_flag(text: str) -> tuple[str, str | None]:
    name, sep, value = text.partition("=")
    name = name.strip().lstrip("-")
    if not name:
        raise argparse.ArgumentTypeError(f"expected FLAG=VALUE or FLAG (e.g. qos=long, exclusive), got {text!r}")
    return name, value if sep else None


def _add_sbatch_options(p: argparse.ArgumentParser, name: str) -> None:
    g = p.add_argument_group("sbatch options (before --)")
    g.add_argument("--job-name", metavar="NAME", help=f"job name, %%x in log names (default celljepa-{name})")
    g.add_argument("--partition", metavar="NAME", help="partition (default: the cluster's default)")
    g.add_argument("--account", metavar="NAME", help="account to charge")
    g.add_argument(
        "--time",
        default="48:00:00",
        help="time limit per job (array: per task): D-HH:MM:SS, HH:MM:SS, MM:SS, MM or D-HH (default 48:00:00)",
    )
    g.add_argument("--nodes", type=int, default=1, metavar="N", help="nodes (default 1)")
    g.add_argument(
        "--ntasks-per-node",
        type=int,
        default=1,
        metavar="N",
        help="processes per node, one per GPU for distributed training (default 1)",
    )
    g.add_argument(
        "--gpus-per-node", type=int, default=0, metavar="N", help="GPUs per node (default 0: none requested)"
    )
    g.add_argument("--cpus-per-task", type=int, metavar="N", help="CPUs per process, also OMP_NUM_THREADS")
    g.add_argument("--mem", metavar="SIZE", help="memory per node, e.g. 64G")
    default_signal = DEFAULT_SIGNAL_SECONDS.get(name)
    g.add_argument(
        "--signal-seconds",
        type=int,
        metavar="S",
        help="send SIGUSR1 this many seconds before the time limit; 0: no signal (default "
        + (
            f"{default_signal}: the command stops cleanly, exits 75 and the job is requeued)"
            if default_signal
            else "none: this command does not resume mid-run)"
        ),
    )
    g.add_argument(
        "--setup",
        action="append",
        default=[],
        metavar="LINE",
        help="shell line run before the command, verbatim (e.g. 'source .venv/bin/activate'; repeatable)",
    )
    g.add_argument(
        "--sbatch",
        action="append",
        default=[],
        type=_sbatch_flag,
        metavar="FLAG[=VALUE]",
        help="any other sbatch flag without its dashes, e.g. --sbatch qos=long --sbatch exclusive (repeatable)",
    )
    g.add_argument(
        "--no-requeue",
        action="store_true",
        help="do not requeue the job after preemption, node failure or a checkpoint exit",
    )
    if name in ARRAYS:
        g.add_argument("--max-parallel", type=int, metavar="K", help="run at most K array tasks at a time")
    p.add_argument(
        "--submit",
        action="store_true",
        help="submit with sbatch --parsable and print the job id(s) instead of the script",
    )


def add_parser(sub: Subcommands) -> None:
    """Add the ``slurm`` command (with pretrain, transition, benchmark and sweep) to ``sub``."""
    p = sub.add_parser(
        "slurm",
        help="write (and submit) an sbatch script for pretrain, train-transition, benchmark or sweep",
        description="Render an sbatch script that runs a celljepa command under srun and write it to "
        "RUN/slurm/<command>.sbatch (logs: RUN/slurm/%x-%j.out, working directory: the current one); "
        "print it, or submit it with --submit. Everything after -- is the wrapped command's arguments, "
        "checked by its own parser now rather than after hours in the queue. See docs/slurm.md.",
    )
    p.set_defaults(slurm_parser=p)
    ssub = p.add_subparsers(dest="slurm_command", metavar="COMMAND")
    for name, (wrapped, usage, help_text) in WRAPPED.items():
        sp = ssub.add_parser(
            name,
            help=help_text,
            usage=f"celljepa slurm {name} [SBATCH OPTIONS] [--submit] -- {usage}",
            description=f"Write RUN/slurm/{name}.sbatch that runs `celljepa {wrapped} ARGS` under srun"
            + (
                " and OUT/slurm/collect.sbatch (celljepa sweep --collect, run after the array)"
                if name == "sweep"
                else ""
            )
            + ". Print the script, or with --submit submit it and print the job id.",
        )
        _add_sbatch_options(sp, name)
        sp.add_argument("wrapped", nargs="*", metavar="-- ARGS", help=f"arguments of `celljepa {wrapped}`")


def _wrapped_parser(command: str) -> CommandParser:
    """The real parser of ``celljepa COMMAND``, raising instead of exiting on bad arguments."""
    sp = build_parser(COMMANDS).commands[command]

    def error(message: str):
        raise _WrappedUsageError(f"{message}\n{sp.format_usage().rstrip()}")

    sp.error = error  # a fresh parser each call: patching this instance is harmless
    return sp


def _parse_wrapped(command: str, argv: list[str]) -> argparse.Namespace:
    """Parse ``argv`` with ``celljepa COMMAND``'s parser; report unknown arguments before missing ones.

    A misspelt option is named, with the closest real one, by the parser itself (:class:`CommandParser`).
    """
    sp = _wrapped_parser(command)
    try:
        return sp.parse_args(argv)
    except _WrappedUsageError as err:
        for action in sp.recorded_actions:  # an extra argument reads better than "--out is required"
            action.required = False
        try:
            extras = sp.parse_known_args(argv)[1]
        except _WrappedUsageError:
            extras = []
        if extras:
            raise _WrappedUsageError(f"unrecognized arguments: {' '.join(extras)}; {err}") from None
        raise


@dataclass
class _Job:
    path: Path
    text: str
    dependency_on: int | None = None  # index of the job whose id goes into <dependency>:<id>
    dependency: str = "afterany"


def _plan(args: argparse.Namespace) -> list[_Job]:
    """Check everything and render the script(s); writes nothing."""
    name = args.slurm_command
    wrapped_command = WRAPPED[name][0]
    if not args.wrapped:
        raise _WrappedUsageError(
            f"no arguments for `celljepa {wrapped_command}`. Fix: put them after --, e.g. "
            f"celljepa slurm {name} --time 24:00:00 -- {WRAPPED[name][1]}"
        )
    ns = _parse_wrapped(wrapped_command, args.wrapped)
    check_settings(wrapped_command, ns)
    tasks = args.nodes * args.ntasks_per_node
    if tasks > 1 and name not in DISTRIBUTED:
        raise InputError(
            f"celljepa {wrapped_command} does not train distributed, but --nodes {args.nodes} x "
            f"--ntasks-per-node {args.ntasks_per_node} asks for {tasks} processes. Fix: --nodes 1 "
            "--ntasks-per-node 1"
            + (" (the array runs tasks in parallel; see --max-parallel)." if name in ARRAYS else ".")
        )
    requeue = not args.no_requeue
    if name == "pretrain" and ns.restart and requeue:
        raise InputError(
            "--restart in a requeueable job would discard the checkpoint every time the job is "
            "requeued. Fix: drop --restart (delete RUN/checkpoints yourself to start over), or add "
            "--no-requeue before --."
        )
    extra: dict[str, str | None] = {}
    for flag, value in args.sbatch:
        if flag in extra:
            raise InputError(f"--sbatch {flag} is given twice. Fix: keep one.")
        extra[flag] = value
    signal = args.signal_seconds if args.signal_seconds is not None else DEFAULT_SIGNAL_SECONDS.get(name)
    cwd = Path.cwd()
    slurm_dir = Path(ns.out) / "slurm"
    logs = cwd / slurm_dir
    common = {
        "partition": args.partition,
        "account": args.account,
        "setup": args.setup,
        "extra": extra,
        "chdir": str(cwd),
    }
    job_name = args.job_name or f"celljepa-{name}"
    wrapped = list(args.wrapped)

    if name not in ARRAYS:
        command = ["celljepa", wrapped_command, *wrapped]
        if getattr(ns, "no_progress", True) is False:
            command.append("--no-progress")  # progress bars make unreadable log files
        text = render_sbatch(
            command,
            job_name=job_name,
            time=args.time,
            nodes=args.nodes,
            ntasks_per_node=args.ntasks_per_node,
            gpus_per_node=args.gpus_per_node,
            cpus_per_task=args.cpus_per_task,
            mem=args.mem,
            output=str(logs / "%x-%j.out"),
            signal_seconds=signal or None,
            requeue=requeue,
            distributed=tasks > 1,
            **common,
        )
        return [_Job(slurm_dir / f"{name}.sbatch", text)]

    if ns.task is not None or ns.collect or ns.list:
        raise InputError(
            "the arguments after -- contain --task, --collect or --list. Fix: drop them; each array "
            "task gets --task $SLURM_ARRAY_TASK_ID and a collect job runs after the array."
        )
    if args.max_parallel is not None and args.max_parallel < 1:
        raise InputError(f"--max-parallel must be at least 1, got {args.max_parallel}.")
    command = ["celljepa", wrapped_command, *wrapped, "--task", ShellVar("SLURM_ARRAY_TASK_ID")]
    if not ns.no_progress:
        command.append("--no-progress")

    def array_job(first: int, last: int, job: str) -> str:
        array = f"{first}-{last}" + (f"%{args.max_parallel}" if args.max_parallel else "")
        return render_sbatch(
            command,
            job_name=job,
            time=args.time,
            gpus_per_node=args.gpus_per_node,
            cpus_per_task=args.cpus_per_task,
            mem=args.mem,
            array=array,
            output=str(logs / "%x-%A_%a.out"),
            signal_seconds=signal or None,
            requeue=requeue,
            **common,
        )

    collect = render_sbatch(
        ["celljepa", wrapped_command, *wrapped, "--collect"],
        job_name=f"{job_name}-collect",
        time=COLLECT_TIME,
        cpus_per_task=1,
        output=str(logs / "%x-%j.out"),
        requeue=False,
        **common,
    )
    if name == "holdout":  # the folds need the encoders: two arrays, the second after the first succeeded
        n_enc, n = _count_tasks(name, ns)
        return [
            _Job(slurm_dir / "holdout-encoders.sbatch", array_job(0, n_enc - 1, f"{job_name}-encoders")),
            _Job(
                slurm_dir / "holdout-folds.sbatch",
                array_job(n_enc, n - 1, f"{job_name}-folds"),
                dependency_on=0,
                dependency="afterok",
            ),
            _Job(slurm_dir / "collect.sbatch", collect, dependency_on=1),
        ]
    n = _count_tasks(name, ns)
    return [
        _Job(slurm_dir / f"{name}.sbatch", array_job(0, n - 1, job_name)),
        _Job(slurm_dir / "collect.sbatch", collect, dependency_on=0),
    ]


def _count_tasks(name: str, ns: argparse.Namespace):
    """The number of array tasks: the grid's tasks of a sweep, the fold tasks of a benchmark (data are read).

    For a holdout: ``(encoder tasks, all tasks)``.
    """
    if name == "holdout":
        from ..bench.holdout import holdout_tasks
        from ._bench import holdout_inputs

        datasets, run = holdout_inputs(ns)
        tasks = holdout_tasks(
            datasets,
            ns.holdout,
            out=ns.out,
            run=run,
            feature_set=ns.feature_set,
            splits=ns.splits,
            max_folds=ns.max_folds,
        )
        return sum(kind == "encoder" for kind, _, _ in tasks), len(tasks)
    if name == "sweep":
        from ..bench.sweep import load_grid, parse_data_args

        return len(load_grid(ns.grid, parse_data_args(ns.data)).tasks)
    from ..bench.run import benchmark_tasks
    from ._bench import benchmark_inputs

    datasets, plan, run = benchmark_inputs(ns)
    return len(benchmark_tasks(datasets, plan, run=run, max_folds=ns.max_folds))


def run(args: argparse.Namespace) -> int:
    """Run ``celljepa slurm ...``; returns the exit code (0 ok, 2 a usage error in the wrapped arguments).

    Bad input (an impossible option, a missing grid, no ``sbatch`` with ``--submit``) raises
    :class:`~celljepa.InputError`, which the command line prints.
    """
    if args.slurm_command is None:
        args.slurm_parser.print_help()
        return EXIT_USAGE
    try:
        jobs = _plan(args)
    except _WrappedUsageError as err:
        print(f"celljepa slurm {args.slurm_command}: error in the arguments after --: {err}", file=sys.stderr)
        return EXIT_USAGE
    for job in jobs:
        write_script(job.path, job.text)
    if not args.submit:
        for job in jobs:
            sys.stdout.write(job.text)
        sys.stdout.flush()
        for job in jobs:
            print(f"# written to {job.path}", file=sys.stderr)
        if len(jobs) > 1:
            steps = [f"j0=$(sbatch --parsable {shlex.quote(str(jobs[0].path))})"]
            for i, job in enumerate(jobs[1:], start=1):  # quoted: a path with spaces or $ pastes as one word
                steps.append(
                    f"j{i}=$(sbatch --parsable --dependency={job.dependency}:$j{job.dependency_on} "
                    f"{shlex.quote(str(job.path))})"
                )
            print(f"# submit all: {' && '.join(steps)}   (or rerun with --submit)", file=sys.stderr)
        return EXIT_OK
    ids: list[str] = []
    for job in jobs:
        print(f"# written to {job.path}", file=sys.stderr)
        dependency = None if job.dependency_on is None else f"{job.dependency}:{ids[job.dependency_on]}"
        ids.append(submit(job.path, dependency=dependency))
        print(ids[-1])
    return EXIT_OK
