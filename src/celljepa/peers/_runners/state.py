"""Runner for Arc Institute's State Transition model (ST; PyPI ``arc-state``; Adduri et al. 2025).

``python state.py WORKDIR`` with the interpreter of an environment holding ``arc-state`` (see ``_common``).

Training is State's own: the fit cells (``role == "train"``: training conditions, or training + validation
conditions for the refit, and the control cells it may fit on) are written as one h5ad dataset with a TOML
split file, and ``state tx train`` (``state._cli._tx._train.run_tx_train``, its Hydra configs composed with
overrides) fits the ST model, by default the ``state_sm`` architecture (a bidirectional Llama set transformer
over sets of ``cell_set_len`` cells, energy-distance loss, residual prediction), on gene expression: the
fold's log-normalised genes are given as ``obsm["X_hvg"]`` with ``output_space=gene``, State's documented
HVG mode, so no State Embedding (SE) model or any download is needed. Perturbations are State's default
one-hot encoding; the cell context is not an input of the model (the set of control cells carries it), and
the batch column is a single constant batch (the exchange has none).

Its own validation: a seeded ``val_fraction`` (10 %, at least one) of the ``(context, perturbation)``
conditions it fits on goes to State's validation split through the TOML's ``[fewshot]`` section (those
perturbed cells are held out of training; their context's controls stay in training and are the validation
sets' basal cells, as State's few-shot splits do). Conditions whose perturbation has other conditions in the
fitting data are drawn first, so validation asks what the benchmark asks (a seen perturbation in another
context). State validates every ``val_freq`` steps; the weights at the validation with the lowest ``val_loss``
are the ones kept and predicted with. (State's own checkpoint callback saves on a step count, before that
step's validation has run, so its ``best.ckpt`` holds the weights one validation interval after the best
one; the runner's callback keeps the weights that were validated, in memory, and ``final.ckpt`` is written
from them.)

Scaling rule (``_rules.state_settings``, on the cells of its training split): ``max_steps = clip(250 *
ceil(n_train / (batch_size * cell_set_len)), 1000, 4000)`` (about 250 passes over the training cells),
``val_freq = min(100, max_steps // 10)``, at most ``max_minutes`` (60) of training on the CPU, batch 8 sets
of 128 cells (``state_sm``). State's README trains 40,000 steps and its default config 400,000 (validation
every 2,000), on a GPU: 10 to 400 times more steps than here.

Prediction follows ``state tx infer``: the trained weights are loaded, and each query's start cells, split at
random into balanced sets of at most ``cell_set_len`` cells, go through ``predict_step`` (``padded=False``)
with the perturbation's one-hot vector on every cell; outputs are clipped to [0, 14] as ``infer`` does. One
predicted cell per start cell, the start cell's own prediction (``infer`` instead draws random controls of the
group). A perturbation absent from the fitting data has no trained one-hot vector: its query is not covered
(``infer`` would silently use the control vector).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE))
import _common  # noqa: E402
from _rules import state_settings  # noqa: E402

# this file is named like State's package: drop its folder from the path so `import state` finds arc-state
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

DEFAULTS = {
    "model": "state_sm",  # State's Hydra model config (state_sm: 4 Llama layers, 672 wide, sets of 128 cells)
    "max_steps": None,  # None: _rules.state_settings
    "val_freq": None,  # None: _rules.state_settings
    "max_minutes": None,  # None: _rules.state_settings
    "batch_size": 8,  # sets per step (training.batch_size)
    "lr": 1e-4,
    "val_fraction": 0.1,  # of the (context, perturbation) conditions it fits on
    "cell_set_len": None,  # None: the model config's (128 for state_sm, 512 for state)
    "hidden_dim": None,  # None: the model config's
    "n_layers": None,  # transformer layers; None: the model config's
    "overrides": [],  # further Hydra overrides, as for `state tx train`
    "keep_run": False,  # keep WORKDIR/state_run (State's run folder, with final.ckpt)
}
RULE = (
    "max_steps = clip(250 * ceil(n_train / (batch_size * cell_set_len)), 1000, 4000); val_freq = min(100, "
    "max_steps // 10); best validation weights kept; at most 60 minutes"
)
UNSEEN = "perturbation unseen in training: State's one-hot perturbation encoding has no vector for it"


def _write_dataset(train, rows, path: Path) -> None:
    import anndata as ad
    import pandas as pd

    obs = train.obs.iloc[rows]
    x = np.ascontiguousarray(np.asarray(train.X[rows], dtype=np.float32))
    pert = obs["perturbation"].astype(str).to_numpy()
    ctx = obs["context"].astype(str).to_numpy()
    frame = pd.DataFrame(
        {
            "perturbation": pd.Categorical(pert),  # only present categories: they define the one-hot map
            "context": pd.Categorical(ctx),
            "batch": pd.Categorical(np.full(len(rows), "b0")),
        },
        index=pd.Index([f"c{i}" for i in range(len(rows))]),
    )
    out = ad.AnnData(x, obs=frame, var=pd.DataFrame(index=pd.Index(list(map(str, train.var_names)))))
    out.obsm["X_hvg"] = x
    out.uns["log1p"] = {"base": None}
    path.parent.mkdir(parents=True, exist_ok=True)
    out.write_h5ad(path)


def validation_conditions(obs, fit, fraction: float, seed: int) -> list[tuple[str, str]]:
    """The ``(context, perturbation)`` conditions held out for State's validation (seeded).

    ``round(fraction * n)`` of the ``n`` perturbed conditions among the fit cells, at least one and at most
    ``n - 1`` (none when ``n < 2``). When some perturbation has several conditions, only those are drawn, never
    all of one perturbation (so every fitted perturbation keeps a training condition and stays predictable);
    otherwise (one condition per perturbation) any.
    """
    rows = fit & ~obs["is_control"].to_numpy(dtype=bool)
    pairs = sorted(
        set(
            zip(
                obs["context"].astype(str).to_numpy()[rows],
                obs["perturbation"].astype(str).to_numpy()[rows],
                strict=True,
            )
        )
    )
    if len(pairs) < 2:
        return []
    n_val = min(len(pairs) - 1, max(1, round(fraction * len(pairs))))
    per_pert: dict[str, int] = {}
    for _, p in pairs:
        per_pert[p] = per_pert.get(p, 0) + 1
    rng = np.random.default_rng(seed)
    shared = [i for i, (_, p) in enumerate(pairs) if per_pert[p] > 1]
    alone = [i for i, (_, p) in enumerate(pairs) if per_pert[p] == 1]
    order = list(rng.permutation(shared)) if shared else list(rng.permutation(alone))
    chosen, left = [], dict(per_pert)
    for i in order:  # never hold out every condition of a perturbation that has several
        ctx, p = pairs[i]
        if per_pert[p] > 1 and left[p] <= 1:
            continue
        chosen.append(pairs[i])
        left[p] -= 1
        if len(chosen) == n_val:
            break
    return sorted(chosen)


def _toml(data_dir: Path, val: list[tuple[str, str]]) -> str:
    lines = ["[datasets]", f"fold = {json.dumps(str(data_dir))}", "", "[training]", 'fold = "train"', ""]
    by_ctx: dict[str, list[str]] = {}
    for ctx, pert in val:
        by_ctx.setdefault(ctx, []).append(pert)
    for ctx, perts in sorted(by_ctx.items()):
        lines += [f"[fewshot.{json.dumps('fold.' + ctx)}]", f"val = {json.dumps(sorted(perts))}", "test = []", ""]
    return "\n".join(lines)


class _Best:
    """What the runner's checkpoint callback saw: validation losses, training losses, the best weights."""

    def __init__(self, dirpath: Path, max_minutes: float | None):
        self.dirpath = str(dirpath)
        self.max_minutes = max_minutes
        self.val_steps: list[int] = []
        self.val_loss: list[float] = []
        self.train_loss: list[float] = []
        self.best_step: int | None = None
        self.steps = 0
        self.timed_out = False

    def callback(self):
        import copy

        from lightning.pytorch.callbacks import Callback

        rec = self

        class KeepBest(Callback):
            """Keep the weights of the validation with the lowest ``val_loss``; restore them when training ends."""

            dirpath = rec.dirpath

            def __init__(self):
                self.state = None
                self.best = float("inf")
                self.window: list[float] = []

            def on_train_start(self, trainer, pl_module):
                self.t0 = time.perf_counter()

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                loss = trainer.callback_metrics.get("train_loss")
                if loss is not None:
                    self.window.append(float(loss))
                rec.steps = int(trainer.global_step)
                if rec.max_minutes and time.perf_counter() - self.t0 > 60 * rec.max_minutes:
                    rec.timed_out = True
                    trainer.should_stop = True

            def on_validation_end(self, trainer, pl_module):
                if trainer.sanity_checking:
                    return
                value = trainer.callback_metrics.get("val_loss")
                if value is None:
                    return
                value = float(value)
                rec.val_steps.append(int(trainer.global_step))
                rec.val_loss.append(value)
                if self.window:
                    rec.train_loss.append(float(np.mean(self.window)))
                    self.window = []
                if value < self.best:
                    self.best = value
                    rec.best_step = int(trainer.global_step)
                    self.state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}

            def on_train_end(self, trainer, pl_module):
                if self.window:
                    rec.train_loss.append(float(np.mean(self.window)))
                if self.state is not None:  # else no validation ran: the last weights stay
                    pl_module.load_state_dict(copy.deepcopy(self.state))

        return KeepBest()


def _compose(toml: Path, rundir: Path, params: dict, seed: int, extra: list[str]):
    from hydra import compose, initialize_config_module

    ov = [
        f"model={params['model']}",
        f"data.kwargs.toml_config_path={toml}",
        "data.kwargs.embed_key=X_hvg",
        "data.kwargs.output_space=gene",
        "data.kwargs.pert_col=perturbation",
        "data.kwargs.cell_type_key=context",
        "data.kwargs.batch_col=batch",
        "data.kwargs.control_pert=control",
        "data.kwargs.num_workers=0",
        "data.kwargs.pin_memory=false",
        f"++data.kwargs.random_seed={seed}",
        f"training.batch_size={int(params['batch_size'])}",
        f"training.lr={float(params['lr'])}",
        f"training.train_seed={seed}",
        "~training.cumulative_flops_use_backward",  # a FLOP-count callback that reruns the first batch
        "++model.kwargs.gene_decoder_bool=false",  # X_hvg in gene space: the ST output is the gene vector
        "use_wandb=false",
        f"output_dir={rundir}",
        "name=run",
        "overwrite=true",
    ]
    if params.get("cell_set_len"):
        ov.append(f"model.kwargs.cell_set_len={int(params['cell_set_len'])}")
    if params.get("hidden_dim"):
        ov.append(f"model.kwargs.hidden_dim={int(params['hidden_dim'])}")
    if params.get("n_layers"):
        ov.append(f"model.kwargs.transformer_backbone_kwargs.num_hidden_layers={int(params['n_layers'])}")
    ov += list(extra) + list(params.get("overrides") or [])
    with initialize_config_module(config_module="state.configs", version_base=None):
        return compose(config_name="config", overrides=ov), ov


def run(workdir: Path, request: dict, train) -> None:
    """Fit State's ST model on the fit cells and predict every query from its context's start cells."""
    from importlib.metadata import version

    import state.tx.utils as state_utils
    import torch
    from state._cli._tx._train import run_tx_train

    unknown = sorted(set(request.get("params") or {}) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown State params {unknown}; known: {sorted(DEFAULTS)}")
    params = {**DEFAULTS, **(request.get("params") or {})}
    seed = int(request.get("seed", 0))
    threads = int(request.get("threads", 1))
    clock = _common.Clock()
    rundir = (workdir / "state_run").resolve()
    data_dir = rundir / "data"
    rundir.mkdir(parents=True, exist_ok=True)

    fit_mask = _common.fit_rows(train)
    fit = np.flatnonzero(fit_mask)
    obs = train.obs
    val = validation_conditions(obs, fit_mask, float(params["val_fraction"]), seed)
    held = np.zeros(len(obs), dtype=bool)
    pairs = list(zip(obs["context"].astype(str), obs["perturbation"].astype(str), strict=True))
    val_set = set(val)
    held[[i for i in fit if pairs[i] in val_set]] = True
    n_train = int(fit_mask.sum() - held.sum())

    with clock("fit"):
        _write_dataset(train, fit, data_dir / "fold.h5ad")
        toml = rundir / "split.toml"
        toml.write_text(_toml(data_dir, val), encoding="utf-8")
        cfg, _ = _compose(toml, rundir, params, seed, [])
        set_len = int(cfg.model.kwargs.cell_set_len)
        scaled = state_settings(n_train, int(params["batch_size"]), set_len)
        overridden = sorted(k for k in ("max_steps", "val_freq", "max_minutes") if params[k] is not None)
        for key in ("max_steps", "val_freq", "max_minutes"):
            if params[key] is None:
                params[key] = scaled[key]
        steps, val_freq = int(params["max_steps"]), int(params["val_freq"])
        extra = [
            f"training.max_steps={steps}",
            f"training.val_freq={val_freq}",
            f"training.ckpt_every_n_steps={val_freq}",
        ]
        cfg, overrides = _compose(toml, rundir, params, seed, extra)
        best = _Best(rundir / "run" / "checkpoints", float(params["max_minutes"]))
        (rundir / "run" / "checkpoints").mkdir(parents=True, exist_ok=True)
        state_utils.get_checkpoint_callbacks = lambda *args, **kwargs: [best.callback()]
        torch.set_num_threads(max(1, threads))
        run_tx_train(cfg)

    from state.tx.models.state_transition import StateTransitionPerturbationModel

    run_dir = rundir / "run"
    predicted, not_covered = {}, {}
    with clock("predict"):
        model = StateTransitionPerturbationModel.load_from_checkpoint(
            str(run_dir / "checkpoints" / "final.ckpt"), map_location="cpu", weights_only=False
        )
        model.eval()
        set_len = int(model.cell_sentence_len)
        pert_map = torch.load(run_dir / "pert_onehot_map.pt", map_location="cpu", weights_only=False)
        pert_map = {str(k): v for k, v in pert_map.items()}
        fitted = set(obs["perturbation"].astype(str).to_numpy()[fit_mask & ~held])
        rng = np.random.default_rng(seed)
        x_all = np.asarray(train.X, dtype=np.float32)
        for q in request["queries"]:
            key, ctx, pert = q["key"], q["context"], str(q["perturbation"])
            if pert not in pert_map or pert not in fitted:
                not_covered[key] = UNSEEN
                continue
            rows = _common.start_cells(train, ctx)
            if not len(rows):
                not_covered[key] = f"no start cells for context {ctx!r}"
                continue
            order = rng.permutation(len(rows))
            n_sets = int(np.ceil(len(rows) / set_len))
            out = np.empty((len(rows), x_all.shape[1]), dtype=np.float32)
            vec = pert_map[pert].float()
            with torch.no_grad():
                for part in np.array_split(order, n_sets):
                    basal = torch.from_numpy(x_all[rows[part]])
                    batch = {
                        "ctrl_cell_emb": basal,
                        "pert_emb": vec.unsqueeze(0).repeat(len(part), 1),
                        "pert_name": [pert] * len(part),
                    }
                    pred = model.predict_step(batch, batch_idx=0, padded=False)["preds"]
                    out[part] = pred.detach().cpu().numpy().reshape(len(part), -1)
            np.clip(out, 0.0, 14.0, out=out)
            predicted[key] = out

    stopped = "time budget" if best.timed_out else "max_steps" if best.steps >= steps else "stopped early"
    fit_rec = _common.fit_record(
        unit="step",
        trained=best.steps,
        max_=steps,
        best=best.best_step,
        monitor="val_loss (energy distance)",
        stopped_by=stopped,
        train_loss=best.train_loss,
        val_loss=best.val_loss,
        n_cells_used=int(fit_mask.sum()),
        n_conditions_used=_common.fit_conditions(train),
        validation={
            "how": f"seeded {params['val_fraction']:.0%} of the (context, perturbation) conditions it fits "
            "on, State's few-shot split (their context's controls stay in training)",
            "conditions": [f"{c}|{p}" for c, p in val],
            "n_cells": int(held.sum()),
            "every_n_steps": val_freq,
        },
        scaling={"rule": RULE, **scaled, "n_train_cells": n_train, "cell_set_len": set_len, "overridden": overridden},
        val_steps=best.val_steps[-5:],
        weights="best validation step" if best.best_step is not None else "last step (no validation)",
        readme_steps=40000,
        default_config_steps=400000,
    )
    result = {
        "peer": "state",
        "version": version("arc-state"),
        "seed": seed,
        "fit_s": round(clock.seconds.get("fit", 0.0), 2),
        "predict_s": round(clock.seconds.get("predict", 0.0), 2),
        "params": {**params, "cell_set_len": set_len, "hydra_overrides": overrides},
        "fit": fit_rec,
        "not_covered": not_covered,
        "notes": (
            f"State Transition ({params['model']}) trained {best.steps} of at most {steps} steps on the fold's genes "
            "as X_hvg (output_space=gene, one-hot perturbations, no SE embedding), validated every "
            f"{val_freq} steps, best validation weights kept; predictions via predict_step on random sets of "
            f"<= {set_len} start cells, clipped to [0, 14] as in `state tx infer`"
        ),
    }
    if not params.get("keep_run"):
        shutil.rmtree(rundir, ignore_errors=True)
    _common.write_result(workdir, predicted, list(map(str, train.var_names)), result)


if __name__ == "__main__":
    os.environ.setdefault("WANDB_MODE", "disabled")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _common.main(run)
