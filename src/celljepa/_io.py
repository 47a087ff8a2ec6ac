"""Atomic file writes: write to a temporary file beside the target, then rename over it."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ._errors import InputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``path`` on success.

    On any exception the temporary file is removed, and so is any folder this call had to create,
    so a failed write leaves nothing behind.
    """
    target = Path(path)
    created: list[Path] = []
    parent = target.parent
    while not parent.exists():
        created.append(parent)
        parent = parent.parent
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=(suffix if suffix is not None else target.suffix) + ".tmp",
        dir=target.parent,
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        for folder in created:  # innermost first
            try:
                folder.rmdir()
            except OSError:
                break
        raise


def write_atomic(path: str | os.PathLike, writer: Callable[[Path], Any]) -> Path:
    """Call ``writer(tmp_path)`` and move the result onto ``path`` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8, Unix line ends) to ``path`` atomically."""

    def _write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())

    return write_atomic(path, _write)


def dumps_json(obj: Any) -> str:
    """Serialise ``obj`` deterministically: sorted keys, two-space indent, trailing newline."""
    return json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as deterministic JSON (see :func:`dumps_json`) to ``path`` atomically."""
    return write_text_atomic(path, dumps_json(obj))


def write_h5ad_atomic(adata, path: str | os.PathLike, *, compression: str | None = "gzip") -> Path:
    """Write an AnnData to ``path`` through a temporary file, so a crash leaves no partial h5ad."""
    return write_atomic(path, lambda tmp: adata.write_h5ad(tmp, compression=compression))


def check_readable_h5ad(path: str | os.PathLike) -> Path:
    """Check that ``path`` exists, is non-empty and is an HDF5 file; raise :class:`InputError` if not."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"File not found: '{p}'. Check the path.")
    if p.is_dir():
        raise InputError(f"'{p}' is a folder, not an .h5ad file.")
    if p.stat().st_size == 0:
        raise InputError(f"'{p}' is empty (0 bytes). Re-copy or re-download the file.")
    with open(p, "rb") as fh:
        magic = fh.read(8)
    if magic != b"\x89HDF\r\n\x1a\n":
        hint = " It looks like a text/CSV file;" if _looks_like_text(p) else ""
        raise InputError(
            f"'{p}' is not an HDF5/.h5ad file (no HDF5 signature).{hint} "
            "Convert it to AnnData first (e.g. anndata.read_csv / scanpy.read_10x_mtx, then .write_h5ad)."
        )
    return p


def _looks_like_text(p: Path) -> bool:
    with open(p, "rb") as fh:
        head = fh.read(512)
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def remove_tree_quietly(path: str | os.PathLike) -> None:
    """Remove a folder tree if it exists (used to roll back a multi-file write)."""
    shutil.rmtree(path, ignore_errors=True)
