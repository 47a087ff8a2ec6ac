"""Runner for scGen (``python scgen.py WORKDIR``, in scGen's own environment; protocol in ``_common.py``).

scGen (Lotfollahi, Wolf & Theis, "scGen predicts single-cell perturbation responses", Nature Methods 16,
715-721, 2019; PyPI ``scgen`` 2.1.0, built on scvi-tools) is a variational autoencoder trained on
log-normalised expression of every condition and cell type. It predicts a perturbation in a cell type where it
was never observed by latent-space vector arithmetic: delta = mean latent code of the perturbed cells minus
that of the control cells (cell types balanced by resampling), added to the latent codes of the cell type's
controls, which are then decoded.

scGen's own: the model (``scgen.SCGEN`` with its default architecture: 2 x 800 hidden units, 100 latent
dimensions, dropout 0.2), its training (``SCGEN.train`` with the settings of scGen's perturbation-prediction
tutorial: batch_size=32, early stopping with patience 25 on the validation ELBO, scvi-tools' seeded 90/10
train/validation split of the cells it is given) and its prediction (``SCGEN.predict``: delta, balancing,
decoding). scvi-tools 0.19's early stopping ends the run and keeps the last epoch's weights (it does not
restore the best): scGen's own behaviour, kept; the epoch of the best validation ELBO is recorded.

Scaling rule (``_rules.scgen_settings``, on the cells it fits on): the tutorial's patience (25 epochs) and
epoch budget (100) counted in updates, since its epochs are 388 updates (13,766 cells) and a fold's are ~40:
``updates = ceil(0.9 * n_cells / batch_size)``, ``early_stopping_patience = max(25, ceil(25 * 388 /
updates))``, ``max_epochs = max(100, ceil(100 * 388 / updates))``; ``batch_size = min(32, max(8, floor(0.9 *
n_cells / 20)))`` (the tutorial's 32 unless an epoch would have fewer than ~20 updates); at most
``max_minutes`` (60) of training. scGen's validation ELBO is lowest after 2 to 3 epochs (it weighs the KL term
20,000 times more than scGen's training loss does), so the patience is what sets how long scGen trains: ~10,000
updates in the tutorial, and here too. ``request["params"]`` may override any of them.

What this adapter does:
- fits one model on the ``role == "train"`` cells (training conditions, or training + validation conditions
  for the refit, and the control cells it may fit on), with ``perturbation`` as scGen's condition (batch) key
  and ``context`` as its cell-type (labels) key;
- covers a query only when its perturbation has training cells (scGen transfers a seen perturbation to a new
  context; it cannot invent an unseen one);
- computes the delta of perturbation P with scGen's own ``restrict_arithmetic_to`` option, limited to the
  training contexts that hold both control and P cells (scGen's default would balance controls over every
  context, including those where P was never applied; with two conditions, as in scGen's paper, both agree);
- hands ``predict`` the context's start cells as ``adata_to_predict``; a held-out context is not a category of
  the fitted model, so those cells carry a placeholder cell-type label (scGen's encoder reads only ``X``; the
  label is registered bookkeeping and does not change the prediction);
- runs on the CPU (``use_gpu=False``, scvi-tools 0.19's spelling of accelerator="cpu"), seeded and
  thread-limited from the request, without progress bars, checkpoints or logs on disk.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from _common import Clock, fit_conditions, fit_record, fit_rows, main, start_cells, write_result
from _rules import scgen_settings

# This file is named scgen.py: drop its folder from the import path so that `import scgen` finds the package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or os.getcwd()).resolve() != _HERE]

PEER = "scgen"
COND, CTX = "perturbation", "context"
RULE = (
    "updates = ceil(0.9 * n_cells / batch_size); early_stopping_patience = max(25, ceil(25 * 388 / updates)); "
    "max_epochs = max(100, ceil(100 * 388 / updates)) (the tutorial's, counted in updates); batch_size = "
    "min(32, max(8, floor(0.9 * n_cells / 20))); monitor elbo_validation; train_size 0.9; at most 60 minutes"
)
UNSEEN = "perturbation unseen in training: scGen transfers a seen perturbation to a new context"


def _quiet() -> None:
    for name in ("scvi", "scgen", "pytorch_lightning", "lightning_fabric", "jax", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for category in (DeprecationWarning, FutureWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category)


def run(workdir: Path, request: dict, train) -> None:
    """Fit scGen on the training cells, predict each covered query, write the results (see ``_common``)."""
    _quiet()
    import anndata as ad
    import pytorch_lightning  # noqa: F401  (first: it resets loggers and warning filters)
    import torch

    _quiet()
    import scgen
    import scvi

    seed, threads = int(request.get("seed", 0)), max(1, int(request.get("threads", 1)))
    scvi.settings.verbosity = logging.ERROR
    scvi.settings.seed = seed  # seeds python, numpy and torch (via pytorch-lightning)
    scvi.settings.num_threads = threads
    torch.set_num_threads(threads)
    rows = fit_rows(train)
    scaled = scgen_settings(int(rows.sum()))
    extra = request.get("params") or {}
    unknown = sorted(set(extra) - set(scaled))
    if unknown:
        raise ValueError(f"unknown scGen params {unknown}; known: {sorted(scaled)}")
    params = {k: type(v)(extra.get(k, v)) for k, v in scaled.items()}
    budget = params.pop("max_minutes")
    clock = Clock()

    # --- fit one scGen model on the cells the peer may fit on
    obs = pd.DataFrame(
        {COND: train.obs[COND].astype(str).to_numpy()[rows], CTX: train.obs[CTX].astype(str).to_numpy()[rows]},
        index=train.obs_names[rows],
    )
    fit = ad.AnnData(np.asarray(train.X[rows], dtype=np.float32), obs=obs, var=pd.DataFrame(index=train.var_names))
    scgen.SCGEN.setup_anndata(fit, batch_key=COND, labels_key=CTX)
    model = scgen.SCGEN(fit)
    with clock("fit"):
        model.train(
            **params,
            use_gpu=False,
            enable_progress_bar=False,
            simple_progress_bar=False,
            **({"max_time": {"seconds": int(60 * budget)}} if budget else {}),
        )
    history = model.history or {}

    def curve(key: str) -> np.ndarray:
        return history[key].iloc[:, 0].to_numpy(dtype=float) if key in history else np.zeros(0)

    elbo_train, elbo_val = curve("elbo_train"), curve("elbo_validation")
    monitored = curve(params["early_stopping_monitor"])
    epochs = int(len(elbo_train))
    n_val = int(len(model.validation_indices)) if getattr(model, "validation_indices", None) is not None else None

    # --- predict each covered query from its context's start cells
    both = fit.obs.groupby(CTX, observed=True)[COND].agg(lambda s: set(s))
    known = set(fit.obs[CTX])
    predicted, not_covered = {}, {}
    with clock("predict"):
        for q in request["queries"]:
            key, pert, ctx = q["key"], str(q["perturbation"]), str(q["context"])
            ctxs = sorted(c for c, conds in both.items() if pert in conds and "control" in conds)
            if not (fit.obs[COND] == pert).any():
                not_covered[key] = UNSEEN
                continue
            if not ctxs:
                not_covered[key] = "no training context holds both control and perturbed cells to compute scGen's delta"
                continue
            start = start_cells(train, ctx)
            if not len(start):
                not_covered[key] = f"no start cells for context {ctx!r}"
                continue
            label = ctx if ctx in known else ctxs[0]  # placeholder label for a held-out context (see above)
            src = ad.AnnData(
                np.asarray(train.X[start], dtype=np.float32),
                obs=pd.DataFrame({COND: "control", CTX: label}, index=train.obs_names[start]),
                var=pd.DataFrame(index=train.var_names),
            )
            pred, _delta = model.predict(
                ctrl_key="control", stim_key=pert, adata_to_predict=src, restrict_arithmetic_to={CTX: ctxs}
            )
            predicted[key] = np.asarray(pred.X, dtype=np.float32)

    write_result(
        workdir,
        predicted,
        train.var_names,
        {
            "peer": PEER,
            "version": f"scgen {scgen.__version__}; scvi-tools {scvi.__version__}",
            "seed": seed,
            "fit_s": round(clock.seconds.get("fit", 0.0), 2),
            "predict_s": round(clock.seconds.get("predict", 0.0), 2),
            "params": {
                **params,
                "max_minutes": budget,
                **model.init_params_.get("non_kwargs", {}),
                "device": "cpu",
                "threads": threads,
            },
            "fit": fit_record(
                unit="epoch",
                trained=epochs,
                max_=params["max_epochs"],
                best=int(np.argmin(monitored)) + 1 if len(monitored) else None,
                monitor=params["early_stopping_monitor"],
                stopped_by=(
                    "time budget"
                    if budget and clock.seconds["fit"] >= 60 * budget - 1
                    else "early stopping"
                    if epochs < params["max_epochs"]
                    else "max_epochs"
                ),
                train_loss=elbo_train,
                val_loss=elbo_val,
                n_cells_used=int(rows.sum()),
                n_conditions_used=fit_conditions(train),
                validation={
                    "how": f"scvi-tools' seeded random {1 - params['train_size']:.0%} of the cells it fits on",
                    "n_cells": n_val,
                },
                scaling={"rule": RULE, **scaled, "overridden": sorted(k for k in extra if extra[k] != scaled[k])},
                weights="last epoch (scvi-tools 0.19 early stopping does not restore the best)",
            ),
            "not_covered": not_covered,
            "notes": (
                "scGen's own model, training (tutorial settings scaled to the fold) and SCGEN.predict; the latent "
                "delta of a "
                "perturbation comes from the training contexts holding both its control and perturbed cells "
                "(restrict_arithmetic_to); held-out-context start cells carry a placeholder cell-type label, "
                "unused by scGen's encoder."
            ),
        },
    )


if __name__ == "__main__":
    main(run)
