"""Checkpoints (atomic ``torch.save``, loaded with ``weights_only=True``), run-folder metrics and signals."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from .._errors import CelljepaError, InputError
from .._io import atomic_path, torch_save_atomic

__all__ = [
    "CHECKPOINT_FORMAT",
    "MetricsLog",
    "TrainingInterrupted",
    "interrupt_signals",
    "load_checkpoint",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "celljepa.jepa"
CHECKPOINT_VERSION = 1
SIGNALS = ("SIGTERM", "SIGUSR1")


class TrainingInterrupted(CelljepaError):  # noqa: N818 - it is a stop, not a failure
    """Training stopped on a signal after writing a checkpoint; running the same command again resumes."""

    def __init__(self, step: int, checkpoint: Path | None, signame: str):
        self.step, self.checkpoint, self.signame = step, checkpoint, signame
        where = f", checkpoint {checkpoint}" if checkpoint else " (no run folder: nothing was saved)"
        super().__init__(f"stopped by {signame} after step {step}{where}; run the same command again to resume.")


def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    """Write ``payload`` with ``torch.save`` to a temporary file, then rename it onto ``path``."""
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **payload}
    return torch_save_atomic(payload, path)


def safe_torch_load(path: Path, *, what: str, fix: str, map_location="cpu"):
    """``torch.load(path, weights_only=True)``; a file that needs more than tensors and plain containers is refused.

    The message never suggests ``weights_only=False``: that unpickles arbitrary objects, which runs code from the
    file.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not a file of ours"
        raise InputError(
            f"{path} is not {what} ({type(err).__name__}; objects other than tensors and plain "
            f"containers are never unpickled). Fix: {fix}; never load model files from sources you do "
            "not trust."
        ) from None


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` (tensors and plain containers only)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {str(path)!r} does not exist.")
    payload = safe_torch_load(
        path,
        what="a readable celljepa checkpoint",
        map_location=map_location,
        fix="point to checkpoints/last.pt or best.pt of a celljepa run folder",
    )
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path} is not a celljepa JEPA checkpoint (format {payload.get('format')!r}).")
    if int(payload.get("version", 0)) > CHECKPOINT_VERSION:
        raise InputError(f"{path} was written by a newer celljepa (checkpoint version {payload['version']}).")
    return payload


class MetricsLog:
    """Append-only ``metrics.jsonl``; on resume, lines after the checkpoint's step are dropped."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = None if path is None else Path(path)
        self.records: list[dict] = []

    def load(self, up_to_step: int | None) -> list[dict]:
        """Read existing lines (keeping those with ``step <= up_to_step``) and rewrite the file atomically."""
        if self.path is None or not self.path.is_file():
            self.records = []
            return self.records
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a torn last line of a killed run
                continue
            if up_to_step is None or rec.get("step", 0) <= up_to_step:
                kept.append(rec)
        self.records = kept
        with atomic_path(self.path) as tmp:
            tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in kept), encoding="utf-8")
        return kept

    def append(self, record: dict) -> None:
        self.records.append(record)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(record, sort_keys=True) + "\n")
                fh.flush()


@contextmanager
def interrupt_signals(enabled: bool = True) -> Iterator[dict]:
    """Catch SIGTERM and SIGUSR1 while training; yields a dict whose ``"signal"`` is set when one arrives.

    The loop checks the flag after each step, writes a checkpoint and raises
    :class:`TrainingInterrupted`. Outside the main thread (or when disabled) nothing is installed.
    """
    flag: dict = {"signal": None}
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {}

    def handler(signum, _frame):
        flag["signal"] = signal.Signals(signum).name

    for name in SIGNALS:
        sig = getattr(signal, name, None)
        if sig is not None:
            previous[sig] = signal.signal(sig, handler)
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
