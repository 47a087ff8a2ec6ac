"""Datasets: the bundled demo, simulated perturbation screens, and readers for public files."""

from ._demo import DEMO_DATASET_ID, demo, demo_path
from ._simulate import simulate

__all__ = ["DEMO_DATASET_ID", "demo", "demo_path", "simulate"]
