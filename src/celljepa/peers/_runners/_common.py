"""What a peer runner reads and writes: the exchange between celljepa and a peer in its own environment.

A runner is a standalone script, ``python RUNNER.py WORKDIR``, run by the interpreter of the peer's
environment (an isolated virtual environment made by ``celljepa peers install NAME``, or the current one when
the peer imports there). It imports numpy, pandas, anndata, the peer's own package and this module, never
celljepa, so it works beside any pins the peer needs.

``WORKDIR/request.json``::

    {"peer": "gears", "seed": 0, "threads": 1, "params": {...peer settings...},
     "queries": [{"key": "k562|KLF1+MAP2K6", "context": "k562", "perturbation": "KLF1+MAP2K6",
                  "tokens": ["gene:KLF1", "gene:MAP2K6"], "names": ["KLF1", "MAP2K6"], "kind": "gene"}, ...]}

``WORKDIR/train.h5ad``: ``X`` dense float32 log-normalised expression (``log1p`` of counts per 10,000) of the
fold's evaluation-space genes (``var_names``: gene symbols); ``obs`` columns

- ``context`` (str), ``perturbation`` (str, ``"control"`` for controls), ``names`` (the perturbed names
  joined by ``+``, ``""`` for controls), ``is_control`` (bool),
- ``role``: ``"train"`` (a cell the peer may fit on: the fit's conditions, training or training + validation,
  and the control cells a method may fit on) or ``"input"`` (a control cell of a held-out context: never fitted
  on, only a starting point; ``--transductive`` makes those ``"train"`` too),
- ``start`` (bool): the control cells a prediction of their context starts from (one predicted cell each).

``request.json`` also says what the cells are: ``fitted_on`` (``"training conditions"`` or ``"training +
validation conditions"``), ``n_cells_fit``, ``n_conditions_fit``. The runner draws its own seeded validation
split (for its early stopping or best-checkpoint choice) from the ``role == "train"`` cells only, and sizes its
training to them with its rule in ``_rules.py``.

The runner writes ``WORKDIR/predictions.h5ad`` (``X``: predicted log-expression, same ``var_names``; ``obs``
column ``query``: the key of the query the cell predicts, one cell per ``start`` cell of its context) and
then, last, ``WORKDIR/result.json``: ``{"peer", "version", "seed", "fit_s", "predict_s", "params", "fit",
"not_covered": {key: reason}, "notes"}``. A query in ``not_covered`` has no predicted cells. ``fit`` is the
record of the training (:func:`fit_record`): ``unit`` (``"epoch"`` or ``"step"``), ``trained``, ``max``,
``best`` (chosen by the peer's own validation), ``stopped_by``, ``monitor``, ``train_loss_last`` and
``val_loss_last`` (the last values of its curves), ``validation`` (how its validation split was drawn, and its
size), ``scaling`` (the rule and the settings it chose), ``n_cells_used`` and ``n_conditions_used``.
Both files are written to a temporary name and renamed, so a crash leaves no half-written result.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

REQUEST = "request.json"
TRAIN = "train.h5ad"
PREDICTIONS = "predictions.h5ad"
RESULT = "result.json"


def read_request(workdir: str | os.PathLike) -> tuple[dict, object]:
    """``(request, train AnnData)`` of a work folder."""
    import anndata as ad

    workdir = Path(workdir)
    request = json.loads((workdir / REQUEST).read_text(encoding="utf-8"))
    train = ad.read_h5ad(workdir / TRAIN)
    return request, train


def seed_everything(seed: int, threads: int = 1) -> None:
    """Seed Python, numpy and torch, and set torch's thread count."""
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch
    except ImportError:
        return
    torch.manual_seed(seed)
    torch.set_num_threads(max(1, int(threads)))


def start_cells(train, context: str) -> np.ndarray:
    """Row positions of the control cells a prediction of ``context`` starts from."""
    obs = train.obs
    return np.flatnonzero(obs["start"].to_numpy(dtype=bool) & (obs["context"].astype(str).to_numpy() == context))


def fit_rows(train) -> np.ndarray:
    """Boolean mask of the cells the peer may fit on."""
    return train.obs["role"].astype(str).to_numpy() == "train"


def fit_conditions(train) -> int:
    """Number of perturbed ``(context, perturbation)`` conditions among the cells the peer may fit on."""
    obs = train.obs
    rows = fit_rows(train) & ~obs["is_control"].to_numpy(dtype=bool)
    pairs = set(
        zip(obs["context"].astype(str).to_numpy()[rows], obs["perturbation"].astype(str).to_numpy()[rows], strict=True)
    )
    return len(pairs)


def tail(values, n: int = 5) -> list:
    """The last ``n`` finite values of a curve, as rounded floats (for ``result.json``)."""
    out = []
    for v in list(values)[-n:]:
        try:
            v = float(v)
        except (TypeError, ValueError):
            continue
        if np.isfinite(v):
            out.append(round(v, 6))
    return out


def fit_record(
    *,
    unit: str,
    trained: int,
    max_: int,
    best,
    monitor: str,
    stopped_by: str,
    train_loss,
    val_loss,
    validation: dict,
    scaling: dict,
    n_cells_used: int,
    n_conditions_used: int,
    **extra,
) -> dict:
    """The ``fit`` entry of ``result.json`` (see the module docstring)."""
    return {
        "unit": unit,
        "trained": None if trained is None else int(trained),
        "max": int(max_),
        "best": None if best is None else int(best),
        "stopped_by": stopped_by,
        "monitor": monitor,
        "train_loss_last": tail(train_loss),
        "val_loss_last": tail(val_loss),
        "validation": validation,
        "scaling": scaling,
        "n_cells_used": int(n_cells_used),
        "n_conditions_used": int(n_conditions_used),
        **extra,
    }


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_result(workdir: str | os.PathLike, predicted: dict, genes, result: dict) -> None:
    """Write ``predictions.h5ad`` from ``{query key: (n, genes) array}``, then ``result.json``."""
    import anndata as ad
    import pandas as pd

    workdir = Path(workdir)
    keys = [k for k, v in predicted.items() if len(v)]
    blocks = [np.asarray(predicted[k], dtype=np.float32) for k in keys]
    x = np.vstack(blocks) if blocks else np.zeros((0, len(genes)), dtype=np.float32)
    obs = pd.DataFrame({"query": np.repeat(keys, [len(b) for b in blocks]).astype(str)})
    obs.index = obs.index.astype(str)
    out = ad.AnnData(x, obs=obs, var=pd.DataFrame(index=pd.Index(list(map(str, genes)))))
    _atomic(workdir / PREDICTIONS, lambda tmp: out.write_h5ad(tmp))
    body = json.dumps(result, indent=1, default=str)
    _atomic(workdir / RESULT, lambda tmp: tmp.write_text(body, encoding="utf-8"))


class Clock:
    """Wall-clock seconds of the stages of a run (``with clock("fit"): ...``)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def __call__(self, stage: str):
        clock = self

        class _Stage:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                clock.seconds[stage] = clock.seconds.get(stage, 0.0) + time.perf_counter() - self.t0

        return _Stage()


def main(run) -> None:
    """Entry point of a runner: ``run(workdir, request, train) -> None`` with the folder from argv."""
    if len(sys.argv) != 2:
        sys.exit(f"usage: python {Path(sys.argv[0]).name} WORKDIR")
    workdir = Path(sys.argv[1])
    request, train = read_request(workdir)
    seed_everything(int(request.get("seed", 0)), int(request.get("threads", 1)))
    run(workdir, request, train)
