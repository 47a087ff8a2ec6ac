"""Fold tasks that survive a crash: a finished fold is recognised by its digest and read back, not recomputed.

A fold's run folder is finished when its ``metrics.json`` exists and carries the ``config_digest`` of the
fold's inputs (data fingerprint, split, fold, evaluation, encoder and transition settings, model seeds).
``metrics.json`` is written last, after ``fold_frames.h5`` (the result tables, stored exactly, dtypes
included), so a fold stopped mid-write, or written under other settings, is recomputed; a finished one is
read back and gives the same combined metrics as the run that wrote it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from anndata.io import read_elem, write_elem

from .._errors import CelljepaError, InputError
from .._io import atomic_path, dumps_json, folder_lock
from ..data import contract as C
from ..train.checkpoint import SIGNALS
from ..train.distributed import is_main
from .evaluate import FoldResult

FRAMES_FILE = "fold_frames.h5"
_FRAMES = ("per_condition", "validation", "per_seed")
# config entries that describe the run, not what determines the fold's result
_NOT_INPUTS = ("versions", "methods", "timings_s", "provenance", "config_digest")
_CHUNK_ROWS = 65_536


class TaskInterrupted(CelljepaError):  # noqa: N818 - a stop, not a failure
    """A fold task stopped by SIGUSR1/SIGTERM (e.g. Slurm before the time limit); run it again to finish it.

    The CLI exits with code 75 (``EXIT_INTERRUPTED``), on which celljepa's sbatch scripts requeue the job.
    """


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGUSR1 and SIGTERM into :class:`TaskInterrupted` while fold tasks run (main thread only).

    The exception is raised wherever the task is; files are written atomically and a fold's ``metrics.json``
    last, so what stops mid-fold leaves no finished-looking folder: the fold is redone on the next run.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, _frame):
        raise TaskInterrupted(f"stopped by {signal.Signals(signum).name}: finished folds are kept, the fold in "
                              "progress is redone when the same command runs again")

    previous = {}
    for name in SIGNALS:
        sig = getattr(signal, name, None)
        if sig is not None:
            previous[sig] = signal.signal(sig, stop)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def task_indices(tasks, n_tasks: int, command: str) -> list[int]:
    """``tasks`` as sorted unique indices, each checked against the ``n_tasks`` a command has."""
    out = sorted({int(i) for i in tasks})
    bad = [i for i in out if not 0 <= i < n_tasks]
    if bad:
        raise InputError(f"task {bad[0]} does not exist: this {command} has tasks 0..{n_tasks - 1} "
                         f"(`celljepa {command} ... --list` prints them).")
    return out


def locks_out(func):
    """Run ``func(..., out=FOLDER)`` holding ``FOLDER``: a second run on it is refused, not interleaved.

    The lock is :func:`celljepa._io.folder_lock`; in a distributed run rank 0 alone holds it. A folder this
    call created is removed again when the run fails before writing anything into it.
    """

    @functools.wraps(func)
    def locked(*args, out, **kwargs):
        folder = Path(out)
        new = not folder.exists()
        try:
            with folder_lock(folder) if is_main() else nullcontext():
                return func(*args, out=out, **kwargs)
        except BaseException:
            if new and folder.is_dir() and not any(folder.iterdir()):  # a failed run leaves no empty folder
                folder.rmdir()
            raise

    return locked


def data_fingerprint(adata: AnnData) -> str:
    """A digest of a dataset's cells, genes, contract labels and values (``X`` in memory; shape when backed).

    It identifies the data a fold was scored on: the demo ingested again gives the same fingerprint (its
    ``created_at`` differs, its contents do not), an edited file gives another.
    """
    h = hashlib.sha256()
    h.update("\n".join(map(str, adata.obs_names)).encode())
    h.update(b"\0" + "\n".join(map(str, adata.var_names)).encode())
    for key in (C.PERTURBATION_ID, C.CONTEXT_ID, C.DOSE, C.TIME_HOURS):
        if key in adata.obs:
            h.update(b"\0" + adata.obs[key].astype(str).str.cat(sep="\n").encode())
    h.update(repr(adata.shape).encode())
    if not adata.isbacked:
        x = adata.X
        for start in range(0, adata.n_obs, _CHUNK_ROWS):
            part = x[start:start + _CHUNK_ROWS]
            if sp.issparse(part):
                part = part.tocsr()
                for arr in (part.indptr - part.indptr[0], part.indices, part.data):
                    h.update(np.ascontiguousarray(arr).tobytes())
            else:
                h.update(np.ascontiguousarray(part).tobytes())
    return h.hexdigest()[:16]


def config_digest(config: dict) -> str:
    """Digest of a fold's inputs: its run config without versions, timings, results and provenance."""
    inputs = {k: v for k, v in config.items() if k not in _NOT_INPUTS}
    return hashlib.sha256(dumps_json(inputs).encode()).hexdigest()[:16]


def write_tables(path: Path, frames: dict[str, pd.DataFrame | None]) -> Path:
    """Store tables exactly (HDF5, the anndata encoding: dtypes and categories kept), atomically."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for name, frame in frames.items():
            if frame is not None:
                write_elem(f, name, frame.reset_index(drop=True).rename(index=str))
    return path


def read_tables(path: Path) -> dict[str, pd.DataFrame]:
    """The tables of :func:`write_tables`, with a fresh ``RangeIndex``."""
    with h5py.File(path, "r") as f:
        out = {}
        for name in f:
            frame = read_elem(f[name])
            frame.index = pd.RangeIndex(len(frame))
            out[name] = frame
        return out


def write_frames(result: FoldResult, path: Path) -> Path:
    """Store the fold's result tables (:func:`write_tables`)."""
    return write_tables(path, {name: getattr(result, name) for name in _FRAMES})


def load_finished_fold(run_dir: Path, fold: dict, digest: str) -> FoldResult | None:
    """The result of a finished fold in ``run_dir`` with this digest, or ``None`` if it must be (re)computed."""
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
        if metrics.get("config_digest") != digest:
            return None
        config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
        frames = read_tables(run_dir / FRAMES_FILE)
    except (OSError, ValueError, KeyError):
        return None
    if "per_condition" not in frames:
        return None
    metrics.pop("config_digest")
    return FoldResult(fold=fold, space=None, per_condition=frames["per_condition"], metrics=metrics,
                      params=config.get("methods", {}), timings=config.get("timings_s", {}),
                      validation=frames.get("validation"), per_seed=frames.get("per_seed"))
