"""Slurm helpers: sbatch rendering, submission, preemption and requeue."""
