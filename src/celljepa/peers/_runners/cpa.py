"""Runner for CPA, the Compositional Perturbation Autoencoder (``python cpa.py WORKDIR``; see ``_common``).

CPA (Lotfollahi et al., "Predicting cellular responses to complex perturbations in high-throughput
screens", Mol. Syst. Biol. 19:e11517, 2023; PyPI ``cpa-tools`` 0.8.8, github.com/theislab/cpa) encodes a
cell into a basal latent state from which an adversary removes perturbation and covariate information,
adds a learnt (dose-scaled) embedding per perturbation - summed over the members of a combination - and
one learnt embedding per covariate category, and decodes the sum back to expression. A counterfactual is
a control cell encoded, given another perturbation's embedding, and decoded.

CPA's own, used unchanged: ``cpa.CPA.setup_anndata``, the ``cpa.CPA`` model, its training loop
(``CPA.train``: adversarial training, its early stopping on ``cpa_metric``, restoring the best state) and
``CPA.predict`` (counterfactual expression in ``obsm["CPA_pred"]``). The hyper-parameters are those of
CPA's Norman 2019 tutorial (``docs/tutorials/Norman.ipynb``: ``model_params``, ``trainer_params``,
``train(max_epochs=2000, batch_size=2048, early_stopping_patience=5, check_val_every_n_epoch=5)``, a
random 85/15 train/valid split), except ``recon_loss="gauss"`` (CPA's likelihood for normalised data:
our ``X`` is log-normalised, the tutorial's counts), the seed (the request's, not 8206) and the batch size.

Data it fits on and its own validation: the ``role == "train"`` cells (training conditions, or training +
validation conditions for the refit, and the control cells it may fit on), split at random (seeded) into
CPA's ``train`` (85 %) and ``valid`` (15 %) sets; CPA checks ``cpa_metric`` on ``valid`` every 5 epochs,
stops after 5 checks without improvement and restores the best state (its ``SaveBestState``).

Scaling rule (``_rules.cpa_settings``, on the cells of CPA's ``train`` split): ``batch_size = clip(n_train /
20, 32, 2048)``, so an epoch has at least ~20 updates (the tutorial's 2,048 gives ~45 on its ~92,000 training
cells, and would give one or two on a fold of a few thousand); up to 2,000 epochs; ``max_minutes`` (60) stops a
run that early stopping has not ended (the best state is restored all the same).

What this adapter does: condition ``ctrl`` for controls and CPA's ``A+B`` notation (names sorted) for
perturbations, doses ``1.0`` (``1.0+1.0`` for pairs) as in the tutorial, the context as CPA's one
categorical covariate, no DEG mask. As in the tutorial, the cells to predict sit in the registered
AnnData under the split ``ood`` (never trained or validated on): for each covered query, a copy of the
start cells of its context (their expression, X) with the query's condition and doses; ``CPA.predict``
on them gives one predicted cell per start cell, in log space. A query is covered when its context has
training cells and every name in it was seen in training, alone or in a combination; CPA has nothing to
say about the rest. ``request["params"]`` may override any tutorial setting by name (e.g. ``max_epochs``).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import _common
import numpy as np
import pandas as pd
from _rules import cpa_settings

# CPA's Norman 2019 tutorial (docs/tutorials/Norman.ipynb), recon_loss "nb" -> "gauss" for log data.
MODEL = {
    "n_latent": 32,
    "recon_loss": "gauss",
    "doser_type": "linear",
    "n_hidden_encoder": 256,
    "n_layers_encoder": 4,
    "n_hidden_decoder": 256,
    "n_layers_decoder": 2,
    "use_batch_norm_encoder": True,
    "use_layer_norm_encoder": False,
    "use_batch_norm_decoder": False,
    "use_layer_norm_decoder": False,
    "dropout_rate_encoder": 0.2,
    "dropout_rate_decoder": 0.0,
    "variational": False,
}
PLAN = {
    "n_epochs_kl_warmup": None,
    "n_epochs_adv_warmup": 50,
    "n_epochs_mixup_warmup": 10,
    "n_epochs_pretrain_ae": 10,
    "mixup_alpha": 0.1,
    "lr": 0.0001,
    "wd": 3.2170178270865573e-06,
    "adv_steps": 3,
    "reg_adv": 10.0,
    "pen_adv": 20.0,
    "adv_lr": 0.0001,
    "adv_wd": 7.051355554517135e-06,
    "n_layers_adv": 2,
    "n_hidden_adv": 128,
    "use_batch_norm_adv": True,
    "use_layer_norm_adv": False,
    "dropout_rate_adv": 0.3,
    "step_size_lr": 25,
    "do_clip_grad": False,
    "adv_loss": "cce",
    "gradient_clip_value": 5.0,
}
# None: from _rules.cpa_settings (the tutorial: max_epochs 2000, batch 2048, patience 5, validation every 5 epochs)
TRAIN = {"max_epochs": None, "batch_size": None, "early_stopping_patience": None, "check_val_every_n_epoch": None}
SPLIT = {"valid_fraction": 0.15, "predict_batch_size": 2048, "max_minutes": 60.0}
RULE = "batch_size = clip(floor(n_train / 20), 32, 2048); max_epochs 2000; validation every 5 epochs, patience 5"
CTRL = "ctrl"
UNSEEN_CONTEXT = "context unseen in training: CPA learns one embedding per covariate category"


def _settings(overrides: dict) -> tuple[dict, dict, dict, dict]:
    groups = [dict(MODEL), dict(PLAN), dict(TRAIN), dict(SPLIT)]
    for key, value in overrides.items():
        group = next((g for g in groups if key in g), None)
        if group is None:
            raise ValueError(f"unknown CPA setting {key!r}")
        group[key] = value
    return tuple(groups)


def _import_cpa():
    """The ``cpa`` package, not this file: the runner's folder (first on ``sys.path``) holds ``cpa.py``."""
    here = Path(__file__).resolve().parent
    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    try:
        import cpa
    finally:
        sys.path[:] = saved
    return cpa


class _Curves:
    """``cpa_metric`` at each validation check (CPA logs it but keeps no history of it), and the run's clock."""

    def __init__(self):
        self.epochs: list[int] = []
        self.metric: list[float] = []
        self.seconds = 0.0

    def callback(self):
        import time

        from pytorch_lightning.callbacks import Callback

        curves = self

        class Record(Callback):
            def on_train_start(self, trainer, pl_module):
                self.t0 = time.perf_counter()

            def on_validation_epoch_end(self, trainer, pl_module):
                value = trainer.callback_metrics.get("cpa_metric")
                if value is not None and not trainer.sanity_checking:
                    curves.epochs.append(int(trainer.current_epoch))
                    curves.metric.append(float(value))

            def on_train_end(self, trainer, pl_module):
                curves.seconds = time.perf_counter() - self.t0

        return Record()

    def best_epoch(self) -> int | None:
        """The epoch (1-based) whose state CPA's ``SaveBestState`` restores: the first maximum after epoch 0."""
        pairs = [(e, m) for e, m in zip(self.epochs, self.metric, strict=True) if e > 0]
        if not pairs:
            return None
        best = max(m for _, m in pairs)
        return next(e for e, m in pairs if m == best) + 1

    def timed_out(self, split_p: dict) -> bool:
        return bool(split_p.get("max_minutes")) and self.seconds >= 60 * float(split_p["max_minutes"]) - 1


def _condition(names) -> str:
    return "+".join(sorted(names)) if len(names) else CTRL


def run(workdir, request, train) -> None:
    """Fit CPA on the training cells and write its counterfactual predictions for the covered queries."""
    import anndata as ad
    import scvi
    import torch

    cpa = _import_cpa()

    workdir = Path(workdir).resolve()
    seed = int(request.get("seed", 0))
    threads = int(request.get("threads", 1))
    model_p, plan_p, train_p, split_p = _settings(request.get("params") or {})
    model_p["seed"] = seed
    scvi.settings.seed = seed
    torch.set_num_threads(max(1, threads))

    obs = train.obs
    fit = _common.fit_rows(train)
    x = np.asarray(train.X, dtype=np.float32)
    names = [
        [n for n in str(s).split("+") if n] if not c else []
        for s, c in zip(obs["names"].astype(str), obs["is_control"].astype(bool), strict=True)
    ]
    seen = {n for keep, ns in zip(fit, names, strict=True) if keep for n in ns}
    fit_contexts = set(obs["context"].astype(str)[fit])

    # the training cells (CPA's random train/valid split) and, per covered query, its start cells as "ood"
    rng = np.random.default_rng(seed)
    fit_idx = np.flatnonzero(fit)
    split = np.where(rng.random(len(fit_idx)) < split_p["valid_fraction"], "valid", "train")
    scaled = cpa_settings(int((split == "train").sum()))
    overridden = sorted(k for k, v in train_p.items() if v is not None and v != scaled[k])
    train_p = {k: scaled[k] if v is None else v for k, v in train_p.items()}
    while len(fit_idx) and not (split == "valid").any() or (split == "train").sum() % int(train_p["batch_size"]) == 1:
        split[rng.choice(np.flatnonzero(split == "train"))] = "valid"  # no empty valid, no batch of 1 (BatchNorm)
    blocks = [
        pd.DataFrame(
            {
                "context": obs["context"].astype(str).to_numpy()[fit_idx],
                "condition": [_condition(names[i]) for i in fit_idx],
                "split": split,
                "query": "",
                "row": fit_idx,
            }
        )
    ]
    not_covered = {}
    for q in request["queries"]:
        key, ctx, qnames = q["key"], str(q["context"]), [str(n) for n in q["names"]]
        missing = [n for n in qnames if n not in seen]
        start = _common.start_cells(train, ctx)
        if ctx not in fit_contexts:
            not_covered[key] = UNSEEN_CONTEXT
        elif missing:
            not_covered[key] = f"not seen in training (CPA learns one embedding per perturbation): {missing}"
        elif not len(start):
            not_covered[key] = "no start cells in this context"
        else:
            blocks.append(
                pd.DataFrame(
                    {"context": ctx, "condition": _condition(qnames), "split": "ood", "query": key, "row": start}
                )
            )
    cells = pd.concat(blocks, ignore_index=True)
    cells["dose"] = ["+".join(["1.0"] * len(c.split("+"))) for c in cells["condition"]]
    cells.index = [f"c{i}" for i in range(len(cells))]
    comb_len = max(2, max(len(c.split("+")) for c in cells["condition"]))  # the tutorial's 2 for pairs
    adata = ad.AnnData(
        x[cells["row"].to_numpy()],
        obs=cells[["context", "condition", "dose", "split"]].copy(),
        var=pd.DataFrame(index=train.var_names.astype(str)),
    )

    clock = _common.Clock()
    predicted, epochs, history, curves = {}, 0, None, _Curves()
    ood = np.flatnonzero(adata.obs["split"].to_numpy() == "ood")
    old_cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as scratch:  # anything lightning/scvi may write stays out of the way
        os.chdir(scratch)
        try:
            if len(ood):  # nothing to fit for when no query is covered
                with clock("fit"):
                    cpa.CPA.setup_anndata(
                        adata,
                        perturbation_key="condition",
                        control_group=CTRL,
                        dosage_key="dose",
                        categorical_covariate_keys=["context"],
                        is_count_data=False,
                        deg_uns_key=None,
                        max_comb_len=comb_len,
                    )
                    model = cpa.CPA(
                        adata, split_key="split", train_split="train", valid_split="valid", test_split="ood", **model_p
                    )
                    budget = (
                        {"max_time": {"seconds": int(60 * float(split_p["max_minutes"]))}}
                        if split_p.get("max_minutes")
                        else {}
                    )
                    model.train(
                        use_gpu=False,
                        plan_kwargs=plan_p,
                        save_path=False,
                        enable_progress_bar=False,
                        callbacks=[curves.callback()],
                        **budget,
                        **train_p,
                    )
                epochs = int(model.runner.trainer.current_epoch)  # epochs completed
                history = pd.DataFrame(model.epoch_history)
                with clock("predict"):
                    target = adata[ood].copy()
                    model.predict(target, batch_size=split_p["predict_batch_size"])
                    pred = np.asarray(target.obsm["CPA_pred"], dtype=np.float32)
                    keys = cells["query"].to_numpy()[ood]
                    predicted = {k: pred[keys == k] for k in dict.fromkeys(keys)}
        finally:
            os.chdir(old_cwd)

    fit_cells = cells["split"].isin(["train", "valid"]).to_numpy()
    n_conditions = int(
        cells.loc[fit_cells & (cells["condition"] != CTRL).to_numpy()].groupby(["context", "condition"]).ngroups
    )
    max_epochs = int(train_p["max_epochs"])
    best = curves.best_epoch()
    stopped = (
        "not fitted: no query covered"
        if not len(ood)
        else "time budget"
        if curves.timed_out(split_p)
        else "early stopping"
        if epochs < max_epochs
        else "max_epochs"
    )
    train_rows = history[history["mode"] == "train"] if history is not None else None
    valid_rows = history[history["mode"] == "valid"] if history is not None else None
    fit_rec = _common.fit_record(
        unit="epoch",
        trained=epochs,
        max_=max_epochs,
        best=best,
        monitor="cpa_metric (validation; higher is better)",
        stopped_by=stopped,
        train_loss=[] if train_rows is None else train_rows["recon_loss"],
        val_loss=[] if valid_rows is None else valid_rows["recon_loss"],
        n_cells_used=int(fit_cells.sum()),
        n_conditions_used=n_conditions,
        validation={
            "how": f"seeded random {split_p['valid_fraction']:.0%} of the cells it fits on",
            "n_cells": int((split == "valid").sum()),
            "n_train_cells": int((split == "train").sum()),
        },
        scaling={"rule": RULE, **scaled, "overridden": overridden},
        val_cpa_metric_last=_common.tail(curves.metric),
        weights="best validation cpa_metric (CPA's SaveBestState)",
    )
    result = {
        "peer": "cpa",
        "version": cpa.__version__,
        "seed": seed,
        "fit_s": clock.seconds.get("fit", 0.0),
        "predict_s": clock.seconds.get("predict", 0.0),
        "params": {"model": model_p, "plan": plan_p, "train": train_p, **split_p},
        "fit": fit_rec,
        "not_covered": not_covered,
        "notes": (
            "CPA Norman-tutorial hyper-parameters with recon_loss='gauss' on log-normalised X, batch scaled to the "
            f"fold; {int((split == 'train').sum())} train / {int((split == 'valid').sum())} valid cells; "
            "best validation cpa_metric state restored by CPA"
            if len(ood)
            else "not fitted: no query covered"
        ),
    }
    _common.write_result(workdir, predicted, train.var_names, result)


if __name__ == "__main__":
    _common.main(run)
