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
from .._io import dumps_json, folder_lock, h5_image, write_bytes_atomic
from ..data import contract as C
from ..train.checkpoint import SIGNALS
from ..train.distributed import is_main
from .evaluate import FoldResult

FRAMES_FILE = "fold_frames.h5"
_FRAMES = ("per_condition", "validation", "per_seed")
# config entries that describe the run, not what determines the fold's result
_NOT_INPUTS = ("versions", "methods", "timings_s", "provenance", "config_digest", "input")
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
        raise TaskInterrupted(
            f"stopped by {signal.Signals(signum).name}: finished folds are kept, the fold in "
            "progress is redone when the same command runs again"
        )

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
        raise InputError(
            f"task {bad[0]} does not exist: this {command} has tasks 0..{n_tasks - 1} "
            f"(`celljepa {command} ... --list` prints them)."
        )
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
    """A content digest of a dataset: its cells, genes, contract labels and every value of ``X``.

    It identifies the data a run read: the demo ingested again gives the same fingerprint (its ``created_at``
    differs, its contents do not), an edited file gives another. A backed file is streamed in chunks of rows, so
    its fingerprint equals the one of the same file read into memory, and replaced values of the same shape
    give another.

    Examples
    --------
    >>> import celljepa as cj
    >>> a = cj.datasets.simulate(200, 30, 3, 2, seed=0)
    >>> b = a.copy(); b.X[0, 0] += 1
    >>> data_fingerprint(a) == data_fingerprint(a.copy()), data_fingerprint(a) == data_fingerprint(b)
    (True, False)
    """
    h = hashlib.sha256()
    h.update("\n".join(map(str, adata.obs_names)).encode())
    h.update(b"\0" + "\n".join(map(str, adata.var_names)).encode())
    for key in (C.PERTURBATION_ID, C.CONTEXT_ID, C.DOSE, C.TIME_HOURS):
        if key in adata.obs:
            h.update(b"\0" + adata.obs[key].astype(str).str.cat(sep="\n").encode())
    h.update(repr(adata.shape).encode())
    x = adata.X
    for start in range(0, adata.n_obs, _CHUNK_ROWS):
        part = x[start : start + _CHUNK_ROWS]  # a backed X reads only these rows
        if sp.issparse(part):
            part = sp.csr_matrix(part)
            for arr in (part.indptr - part.indptr[0], part.indices, part.data):
                h.update(np.ascontiguousarray(arr).tobytes())
        else:
            h.update(np.ascontiguousarray(part).tobytes())
    return h.hexdigest()[:16]


def config_digest(config: dict) -> str:
    """Digest of a fold's inputs: its run config without versions, timings, results and provenance."""
    inputs = {k: v for k, v in config.items() if k not in _NOT_INPUTS}
    return hashlib.sha256(dumps_json(inputs).encode()).hexdigest()[:16]


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def input_changes(old: dict, new: dict) -> list[str]:
    """What differs between the inputs of two run configs, in words: ``["evaluation.transductive: false → true"]``.

    ``data`` (the content digest of the data, :func:`data_fingerprint`) is named as the data having changed.
    """
    changes = []
    for key in sorted((set(old) | set(new)) - set(_NOT_INPUTS)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if key == "data":
            changes.append(
                f"the data changed (content fingerprint {a} → {b}: its values, cells, genes or contract labels differ)"
            )
        elif isinstance(a, dict) and isinstance(b, dict):
            changes += [
                f"{key}.{k}: {_short(a.get(k))} → {_short(b.get(k))}"
                for k in sorted(set(a) | set(b))
                if a.get(k) != b.get(k)
            ]
        else:
            changes.append(f"{key}: {_short(a)} → {_short(b)}")
    return changes


def finished_config(run_dir: Path) -> dict | None:
    """The ``config.json`` of the finished run in ``run_dir`` (one with ``metrics.json``), else ``None``."""
    try:
        if not (run_dir / "metrics.json").is_file():
            return None
        return json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def other_run(run_dir: Path, config: dict) -> list[str] | None:
    """How the finished run in ``run_dir`` differs from a run of ``config``; None if there is none or it is the same."""
    old = finished_config(run_dir)
    if old is None or old.get("config_digest") == config_digest(config):
        return None
    return input_changes(old, config) or ["the run settings (same entries, another digest)"]


def refuse_other_runs(conflicts: dict, *, option: str = "--out") -> None:
    """Refuse to write over finished runs of other inputs: ``conflicts`` maps run folder → :func:`other_run`."""
    if not conflicts:
        return
    first, changes = next(iter(conflicts.items()))
    more = f" (and {len(conflicts) - 1} more finished fold(s))" if len(conflicts) > 1 else ""
    raise InputError(
        f"{first} holds a finished run made with other inputs{more}: {'; '.join(changes[:4])}"
        f"{' ...' if len(changes) > 4 else ''}. Nothing was written. Fix: pass a new {option}, or "
        "--overwrite to replace that run (each finished fold stays until its new one is complete)."
    )


def write_tables(path: Path, frames: dict[str, pd.DataFrame | None]) -> Path:
    """Store tables exactly (HDF5, the anndata encoding: dtypes and categories kept), atomically."""

    def fill(f) -> None:
        for name, frame in frames.items():
            if frame is not None:
                write_elem(f, name, frame.reset_index(drop=True).rename(index=str))

    return write_bytes_atomic(path, h5_image(fill))


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
    return FoldResult(
        fold=fold,
        space=None,
        per_condition=frames["per_condition"],
        metrics=metrics,
        params=config.get("methods", {}),
        timings=config.get("timings_s", {}),
        validation=frames.get("validation"),
        per_seed=frames.get("per_seed"),
    )
