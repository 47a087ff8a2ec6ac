"""Compiled kernels (C++/OpenMP in ``celljepa._core``, CUDA in ``celljepa._cuda``) and their dispatch.

Each op has a pure-torch twin (``_reference*.py``) used as fallback and test oracle. Dispatch:
CUDA (tensor on a GPU and ``_cuda`` built) → C++ (``_core``) → reference; ``backend=`` or
``cj.settings.kernel_backend`` forces one. Squared distances have an exact O(N·d) closed form
(:func:`squared_distance_means`), which the ``auto`` backend uses for them.
"""

from ._edistance import cross_distance_means, edistance, edistance_loss, squared_distance_means
from ._ext import available_backends, build_info, load_core, load_cuda, resolve_backend
from ._masked_encode import mask_for, masked_encode, module_mask_for

__all__ = [
    "available_backends",
    "build_info",
    "cross_distance_means",
    "edistance",
    "edistance_loss",
    "load_core",
    "load_cuda",
    "mask_for",
    "masked_encode",
    "module_mask_for",
    "resolve_backend",
    "squared_distance_means",
]
