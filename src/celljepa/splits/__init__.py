"""Group splits of perturbation datasets: unseen condition, unseen genes, unseen context, unseen combination."""

from __future__ import annotations

from ._core import (
    FOLD_KEYS,
    OPTIONAL_FOLD_KEYS,
    ROLES,
    SPLIT_NAMES,
    check_split_name,
    fold_roles,
    make_split_folds,
    read_split,
    split_file_name,
    write_split_files,
)

__all__ = [
    "FOLD_KEYS",
    "OPTIONAL_FOLD_KEYS",
    "ROLES",
    "SPLIT_NAMES",
    "check_split_name",
    "fold_roles",
    "make_split_folds",
    "read_split",
    "split_file_name",
    "write_split_files",
]
