"""Atomic file writes: write to a temporary file beside the target, then rename over it."""

from __future__ import annotations

import datetime as _dt
import glob
import json
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock

from ._errors import InputError
from ._logging import logger


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_HOST = socket.gethostname()
LOCK_NAME = ".celljepa.lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def _fsync_path(path: Path, *, folder: bool = False) -> None:
    """Flush a file's (or a folder's entries') data to disk; a file system that cannot is skipped."""
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if folder else 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # e.g. a folder on a file system without directory fsync
        pass
    finally:
        os.close(fd)


def _tmp_prefix(target: Path) -> str:
    # "~" cannot occur in a host name, so the writer of a temporary file can be read back from its name
    return f".{target.name}~{_HOST}~{os.getpid()}~"


def remove_stale_tmp(target: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of ``target`` left by a process of this host that no longer runs.

    A write killed mid-way (SIGKILL, node failure) cannot clean up after itself; the next write of the same
    target removes what it left, and says so in the log. Files of live processes, or of other hosts, are kept.
    """
    target = Path(target)
    removed = []
    if not target.parent.is_dir():
        return removed
    for tmp in target.parent.glob(f".{glob.escape(target.name)}~*~*~*.tmp"):
        host, pid = tmp.name[len(target.name) + 2 :].split("~")[:2]
        if host == _HOST and pid.isdigit() and not _pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
            logger.warning("removed '%s', a temporary file left by process %s (stopped while writing)", tmp, pid)
    return removed


def _denied(target: Path) -> str:
    return f"cannot write '{target}': permission denied. Fix: choose a folder you can write to."


@contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success flush it to disk and rename it onto ``path``.

    The file and then its folder are fsync'ed, so after a power loss the target is either the old file or the
    complete new one. On any exception the temporary file is removed, and so is any folder this call had to
    create, so a failed write leaves nothing behind; the temporary file of a killed process is removed by the
    next write of the same target (:func:`remove_stale_tmp`).
    """
    target = Path(path)
    created: list[Path] = []
    parent = target.parent
    while not parent.exists():
        created.append(parent)
        parent = parent.parent
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError(
            f"cannot write '{target}': a part of its folder is a file. Fix: choose another path."
        ) from None
    except PermissionError:
        raise InputError(_denied(target)) from None
    remove_stale_tmp(target)
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=_tmp_prefix(target),
            suffix=(suffix if suffix is not None else target.suffix) + ".tmp",
            dir=target.parent,
        )
    except PermissionError:
        raise InputError(_denied(target)) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        _fsync_path(tmp)
        if target.is_dir():
            raise InputError(f"cannot write '{target}': it is a folder. Fix: choose another path.")
        os.replace(tmp, target)
        _fsync_path(target.parent, folder=True)
    except BaseException:
        tmp.unlink(missing_ok=True)
        for folder in created:  # innermost first
            try:
                folder.rmdir()
            except OSError:
                break
        raise


def _aside(target: Path, kind: str) -> Path:
    """The name of a folder beside ``target`` that this process owns: its staging folder or the replaced run."""
    return target.parent / f".{target.name}~{_HOST}~{os.getpid()}~{kind}"


def _fsync_tree(folder: Path) -> None:
    """Flush every file and folder under ``folder`` to disk (the content a swap is about to publish)."""
    for root, _dirs, files in os.walk(folder):
        for name in files:
            _fsync_path(Path(root) / name)
        _fsync_path(Path(root), folder=True)


def _only_lock(folder: Path) -> bool:
    """Whether ``folder`` holds nothing but a lock file whose holder no longer runs (or none at all)."""
    entries = list(folder.iterdir())
    if any(p.name != LOCK_NAME for p in entries):
        return False
    holder = _read_lock(folder / LOCK_NAME) if entries else {}
    pid = holder.get("pid")
    return not entries or (
        holder.get("host") == _HOST and isinstance(pid, int) and (pid == os.getpid() or not _pid_alive(pid))
    )


def recover_folder(target: str | os.PathLike) -> None:
    """Finish or undo a folder swap that a killed process of this host left half-done (:func:`staged_folder`).

    A staging folder of a stopped process is removed (its run never completed). A replaced run set aside
    (``~old``) is put back when the target is missing or holds only a stale lock (the process stopped between
    the two renames), else removed (the new run was already in place).
    """
    target = Path(target)
    if not target.parent.is_dir():
        return
    for aside in sorted(target.parent.glob(f".{glob.escape(target.name)}~*~*~*")):
        parts = aside.name[len(target.name) + 2 :].split("~")
        if len(parts) != 3 or parts[2] not in ("staging", "old") or not aside.is_dir():
            continue
        host, pid, kind = parts
        if host != _HOST or not pid.isdigit() or _pid_alive(int(pid)):
            continue
        if kind == "old" and (not target.exists() or (target.is_dir() and _only_lock(target))):
            if target.exists():
                shutil.rmtree(target)
            os.rename(aside, target)
            _fsync_path(target.parent, folder=True)
            logger.warning(
                "restored '%s': process %s stopped while replacing it, before the new run was in place", target, pid
            )
        else:
            shutil.rmtree(aside, ignore_errors=True)
            logger.warning("removed '%s', left by process %s (stopped before its run was complete)", aside, pid)


def swap_in(stage: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Publish the complete folder ``stage`` as ``target``: flushed to disk, then renamed over it.

    An existing ``target`` is renamed aside first and removed once the new folder is in place; a process killed
    between the two renames is undone by :func:`recover_folder`. A lock this process holds on ``target``
    (:func:`folder_lock`) moves with it.
    """
    stage, target = Path(stage), Path(target)
    lock = target / LOCK_NAME
    if target.is_dir() and _read_lock(lock).get("pid") == os.getpid() and not (stage / LOCK_NAME).exists():
        shutil.copy2(lock, stage / LOCK_NAME)
    _fsync_tree(stage)
    if target.exists() and not target.is_dir():
        raise InputError(f"cannot write the folder '{target}': a file has that name. Fix: choose another path.")
    if target.exists():
        old = _aside(target, "old")
        os.rename(target, old)
        try:
            os.rename(stage, target)
        except BaseException:
            os.rename(old, target)
            raise
        _fsync_path(target.parent, folder=True)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(stage, target)
        _fsync_path(target.parent, folder=True)
    return target


@contextmanager
def staged_folder(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging folder beside ``target``; on success it replaces ``target`` whole (all-or-nothing).

    Every file of a run is written into the staging folder (``.NAME~HOST~PID~staging``); when the block ends
    without error the folder is flushed to disk and swapped in (:func:`swap_in`), so ``target`` is always either
    the old run or the complete new one, never a mix. On any exception (a full disk, a signal, an error) the
    staging folder is removed and ``target`` is untouched; what a killed process left is cleaned up by the next
    run (:func:`recover_folder`).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> run = pathlib.Path(tempfile.mkdtemp()) / "run"
    >>> with staged_folder(run) as stage:
    ...     _ = (stage / "metrics.json").write_text("{}")
    >>> sorted(p.name for p in run.iterdir())
    ['metrics.json']
    """
    target = Path(target)
    recover_folder(target)
    stage = _aside(target, "staging")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if stage.exists():
            shutil.rmtree(stage)
        stage.mkdir()
    except (FileExistsError, NotADirectoryError):
        raise InputError(
            f"cannot write '{target}': a part of its folder is a file. Fix: choose another path."
        ) from None
    except PermissionError:
        raise InputError(_denied(target)) from None
    try:
        yield stage
        swap_in(stage, target)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def _read_lock(lock: Path) -> dict:
    try:
        return json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


@contextmanager
def waiting_lock(path: str | os.PathLike) -> Iterator[None]:
    """Wait for the exclusive lock ``path`` (:mod:`filelock`; released by the system if its holder dies).

    Unlike :func:`folder_lock`, which refuses a second writer, this lets concurrent processes (the tasks of a
    Slurm array) take turns on a short step. The lock file is removed on release, so no run folder keeps it; a
    process that was already waiting may then share the step with one that arrives after, so the step must
    read what an earlier holder wrote before doing the work (check, then compute).
    """
    path = Path(path)
    with FileLock(path):
        try:
            yield
        finally:
            path.unlink(missing_ok=True)


def lock_holder(folder: str | os.PathLike) -> dict | None:
    """The holder (pid, host, start, command) of ``folder``'s :func:`folder_lock` while it runs, else ``None``."""
    holder = _read_lock(Path(folder) / LOCK_NAME)
    pid = holder.get("pid")
    if not isinstance(pid, int) or (holder.get("host") == _HOST and not _pid_alive(pid)):
        return None
    return holder


#: The files that mark a finished run of each kind in its folder (written last by that kind).
RUN_MARKERS = {
    "benchmark": ("metrics_combined.json",),
    "holdout": ("holdout.json",),
    "sweep": ("ablation.json",),
    "fold": ("metrics.json", "config.json"),
    "pretrain": ("eval.json", "config.yaml"),
    "report": ("report.json", "report.md"),
}


def refuse_other_kind(out: Path, kind: str) -> None:
    """Refuse to write a ``kind`` run into a folder that holds a finished run of another kind (its files)."""
    out = Path(out)
    for other, files in RUN_MARKERS.items():
        if other != kind and all((out / f).is_file() for f in files):
            raise InputError(
                f"--out {out} holds a finished {other} run ({', '.join(files)}): a {kind} run must not "
                "write into it. Nothing was written. Fix: pass another --out."
            )


def refuse_beside_holder(folder: str | os.PathLike, what: str) -> None:
    """Refuse ``what`` (a fold task) while another process holds ``folder`` (a full run or ``--collect``)."""
    holder = lock_holder(folder)
    if holder is not None:
        raise InputError(
            f"--out '{folder}' is in use by a full run or --collect (process {holder.get('pid')} on "
            f"{holder.get('host', '?')}, {holder.get('command', '?')}): {what} must not write beside "
            "it. Fix: wait for it to finish, or pass another --out."
        )


@contextmanager
def folder_lock(folder: str | os.PathLike, *, option: str = "--out") -> Iterator[Path]:
    """Hold ``folder`` for this process: a second writer is refused with a clear error, not interleaved.

    The lock is a file ``folder/.celljepa.lock`` (created exclusively) holding the holder's PID, host, start
    time and command line; it is removed on exit. A lock of a process of this host that no longer runs (killed)
    is taken over, with a warning. The folder is created if needed.

    Raises
    ------
    InputError
        When ``folder`` is a file or cannot be written, or another live process holds it.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{option} '{folder}' is a file, not a folder. Fix: pass a folder path (it is created).")
    recover_folder(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError(f"{option} '{folder}': a part of the path is a file. Fix: pass another folder.") from None
    except PermissionError:
        raise InputError(
            f"{option} '{folder}' cannot be created: permission denied. Fix: pass a folder you can write to."
        ) from None
    lock = folder / LOCK_NAME
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    me = {"pid": os.getpid(), "host": _HOST, "started": started, "command": " ".join(sys.argv)}
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_lock(lock)
            pid = holder.get("pid")
            if holder.get("host") == _HOST and isinstance(pid, int) and not _pid_alive(pid):
                logger.warning(
                    "%s '%s' was locked by process %d, which stopped without releasing it; taking over",
                    option,
                    folder,
                    pid,
                )
                lock.unlink(missing_ok=True)
                continue
            raise InputError(
                f"{option} '{folder}' is in use by process {pid} on {holder.get('host', '?')} since "
                f"{holder.get('started', '?')} ({holder.get('command', '?')}); two runs must not write one folder. "
                f"Fix: wait for it to finish, pass another {option}, or, if that process is gone, delete '{lock}'."
            ) from None
        except PermissionError:
            raise InputError(
                f"{option} '{folder}' is not writable: permission denied. Fix: pass a folder you can write to."
            ) from None
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(me))
        break
    try:
        yield folder
    finally:
        if _read_lock(lock).get("pid") == me["pid"]:
            lock.unlink(missing_ok=True)


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


class _AliasRefused(Exception):
    pass


def _plain_loader():
    """A safe YAML loader that refuses aliases (``*name``).

    A config never needs them, and a few hundred bytes of nested aliases ("billion laughs") expand to billions of
    values.
    """
    import yaml

    class PlainLoader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise _AliasRefused(f"line {event.start_mark.line + 1}: alias *{event.anchor}")
            return super().compose_node(parent, index)

    return PlainLoader


def load_yaml(text: str, *, source: str) -> Any:
    """Parse plain YAML (numbers, strings, lists, mappings); anything else is an :class:`InputError` naming ``source``.

    Tags that build Python objects (``!!python/object``) are refused, never executed; aliases (``*name``) are
    refused before anything is expanded, so a small file cannot grow into billions of values.

    Examples
    --------
    >>> load_yaml("train: {max_steps: 10}", source="config")
    {'train': {'max_steps': 10}}
    """
    import yaml

    try:
        return yaml.load(text, Loader=_plain_loader())  # noqa: S506 - a SafeLoader subclass
    except _AliasRefused as err:
        raise InputError(
            f"{source} uses a YAML alias ({err}); aliases and anchors (&name, *name) are not read, "
            "since a few nested ones expand into billions of values. Fix: write the values out."
        ) from None
    except yaml.YAMLError as err:
        problem = str(err).splitlines()[0] if str(err) else type(err).__name__
        tag = " It uses a tag that builds a Python object, which is never loaded." if "python/" in str(err) else ""
        raise InputError(
            f"{source} is not plain YAML ({problem}).{tag} Fix: write numbers, strings, lists and mappings only."
        ) from None


def folder_name(name: Any, what: str) -> str:
    """``name`` checked for use as one folder or file name inside a run folder (never a path that leaves it).

    Letters, digits and ``._+-``, not starting with a dot: ``../..``, ``a/b``, an empty or hidden name is refused
    with an :class:`~celljepa._errors.InputError` naming ``what``.

    Examples
    --------
    >>> folder_name("no_mask_ratio-0.5", "ablation")
    'no_mask_ratio-0.5'
    """
    text = str(name)
    if not text or text.startswith(".") or any(not (c.isalnum() or c in "._+-") for c in text):
        raise InputError(
            f"{what}={text!r} is not a folder name: it must be letters, digits and . _ + - only, "
            "and one that does not start with a dot (it names a folder inside --out; no spaces or "
            "slashes). Fix: rename it, e.g. 'norman2019'."
        )
    return text


def dumps_json(obj: Any) -> str:
    """Serialise ``obj`` deterministically: sorted keys, two-space indent, trailing newline."""
    return json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as deterministic JSON (see :func:`dumps_json`) to ``path`` atomically."""
    return write_text_atomic(path, dumps_json(obj))


def write_bytes_atomic(path: str | os.PathLike, data) -> Path:
    """Write ``data`` (bytes or a buffer) to ``path`` atomically; a full disk is a plain ``OSError`` (ENOSPC)."""

    def _write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    return write_atomic(path, _write)


def h5_image(fill: Callable[[Any], None]) -> memoryview:
    """An HDF5 file built in memory by ``fill(h5py.File)``, as bytes for :func:`write_bytes_atomic`.

    HDF5 that meets a full disk half-way through a file leaves its library in a broken state (the process can
    crash when it exits); built in memory, the file reaches the disk through one plain write, whose failure is
    an ordinary ``OSError``. Memory: the size of the (compressed) file.
    """
    import io

    import h5py

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        fill(f)
    return buf.getbuffer()


def write_h5ad_atomic(adata, path: str | os.PathLike, *, compression: str | None = "gzip") -> Path:
    """Write an AnnData to ``path`` (the anndata on-disk format) atomically, built in memory first (:func:`h5_image`).

    A crash or a full disk leaves no partial ``.h5ad`` and never the old one half-replaced.
    """
    from anndata.io import write_elem

    if getattr(adata, "isbacked", False):
        adata = adata.to_memory()
    adata.strings_to_categoricals()  # as AnnData.write_h5ad does
    kwargs = {"compression": compression} if compression else {}
    return write_bytes_atomic(path, h5_image(lambda f: write_elem(f, "/", adata, dataset_kwargs=kwargs)))


def torch_save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically; serialised in memory first, so a full disk is an ``OSError``."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return write_bytes_atomic(path, buf.getbuffer())


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
