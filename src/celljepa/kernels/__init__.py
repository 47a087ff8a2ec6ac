"""Compiled kernels (C++/OpenMP in ``celljepa._core``, CUDA in ``celljepa._cuda``) and their dispatch."""

from ._ext import available_backends, build_info, load_core, load_cuda, resolve_backend
from .edistance import cross_distance_means, edistance, edistance_loss

__all__ = [
    "available_backends",
    "build_info",
    "cross_distance_means",
    "edistance",
    "edistance_loss",
    "load_core",
    "load_cuda",
    "resolve_backend",
]
