"""Slurm helpers: sbatch rendering, submission, preemption and requeue.

:func:`render_sbatch` turns a command (a list of arguments) and the job's resources into an sbatch script;
it is pure and deterministic. :func:`write_script` writes one atomically, :func:`submit` hands it to
``sbatch --parsable``. ``celljepa slurm pretrain|transition|benchmark|sweep`` does all three for the
celljepa commands (see ``docs/slurm.md``).
"""

from ._render import REQUEUE_EXIT_CODE, ShellVar, render_sbatch, submit, write_script

__all__ = ["REQUEUE_EXIT_CODE", "ShellVar", "render_sbatch", "submit", "write_script"]
