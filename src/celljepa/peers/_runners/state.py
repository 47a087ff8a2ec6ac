"""Runner for Arc Institute's State Transition model (ST; PyPI ``arc-state``; Adduri et al. 2025).

``python state.py WORKDIR`` with the interpreter of an environment holding ``arc-state`` (see ``_common``).

Training is State's own: the fit cells (``role == "train"``) are written as one h5ad dataset with a TOML split
file, and ``state tx train`` (``state._cli._tx._train.run_tx_train``, its Hydra configs composed with
overrides) fits the ST model, by default the ``state_sm`` architecture (a bidirectional Llama set transformer
over sets of ``cell_set_len`` cells, energy-distance loss, residual prediction), on gene expression: the
fold's log-normalised genes are given as ``obsm["X_hvg"]`` with ``output_space=gene``, State's documented
HVG mode, so no State Embedding (SE) model or any download is needed. Perturbations are State's default
one-hot encoding; the cell context is not an input of the model (the set of control cells carries it), and
the batch column is a single constant batch (the exchange has none).

Prediction follows ``state tx infer``: the trained checkpoint is loaded, and each query's start cells, split
at random into balanced sets of at most ``cell_set_len`` cells, go through ``predict_step`` (``padded=False``)
with the perturbation's one-hot vector on every cell; outputs are clipped to [0, 14] as ``infer`` does. One
predicted cell per start cell, the start cell's own prediction (``infer`` instead draws random controls of the
group). A perturbation absent from training has no one-hot vector: its query is not covered (``infer`` would
silently use the control vector).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE))
import _common  # noqa: E402

# this file is named like State's package: drop its folder from the path so `import state` finds arc-state
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

DEFAULTS = {
    "model": "state_sm",  # State's Hydra model config (state_sm: 4 Llama layers, 672 wide, sets of 128 cells)
    "max_steps": 400,
    "batch_size": 8,  # sets per step (training.batch_size)
    "lr": 1e-4,
    "cell_set_len": None,  # None: the model config's (128 for state_sm, 512 for state)
    "hidden_dim": None,  # None: the model config's
    "n_layers": None,  # transformer layers; None: the model config's
    "overrides": [],  # further Hydra overrides, as for `state tx train`
    "keep_run": False,  # keep WORKDIR/state_run (State's run folder: two ~0.5 GB checkpoints for state_sm)
}


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


def _train(rundir: Path, data_dir: Path, params: dict, seed: int, threads: int) -> list[str]:
    from hydra import compose, initialize_config_module
    from state._cli._tx._train import run_tx_train

    toml = rundir / "split.toml"
    toml.write_text(f'[datasets]\nfold = "{data_dir}"\n\n[training]\nfold = "train"\n', encoding="utf-8")
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
        f"training.max_steps={int(params['max_steps'])}",
        f"training.batch_size={int(params['batch_size'])}",
        f"training.lr={float(params['lr'])}",
        f"training.train_seed={seed}",
        # no validation split and no mid-run checkpoints: State writes final.ckpt at the end
        f"training.val_freq={int(params['max_steps']) + 1}",
        f"training.ckpt_every_n_steps={int(params['max_steps']) + 1}",
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
    ov += list(params.get("overrides") or [])
    with initialize_config_module(config_module="state.configs", version_base=None):
        cfg = compose(config_name="config", overrides=ov)
    import torch

    torch.set_num_threads(max(1, threads))
    run_tx_train(cfg)
    return ov


def run(workdir: Path, request: dict, train) -> None:
    """Fit State's ST model on the fit cells and predict every query from its context's start cells."""
    from importlib.metadata import version

    import torch

    params = {**DEFAULTS, **(request.get("params") or {})}
    seed = int(request.get("seed", 0))
    threads = int(request.get("threads", 1))
    clock = _common.Clock()
    rundir = (workdir / "state_run").resolve()
    data_dir = rundir / "data"

    fit = np.flatnonzero(_common.fit_rows(train))
    with clock("fit"):
        _write_dataset(train, fit, data_dir / "fold.h5ad")
        overrides = _train(rundir, data_dir, params, seed, threads)

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
        rng = np.random.default_rng(seed)
        x_all = np.asarray(train.X, dtype=np.float32)
        for q in request["queries"]:
            key, ctx, pert = q["key"], q["context"], str(q["perturbation"])
            if pert not in pert_map:
                not_covered[key] = (
                    "perturbation unseen in training: State's one-hot perturbation encoding has no vector for it"
                )
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

    steps = int(params["max_steps"])
    result = {
        "peer": "state",
        "version": version("arc-state"),
        "seed": seed,
        "fit_s": round(clock.seconds.get("fit", 0.0), 2),
        "predict_s": round(clock.seconds.get("predict", 0.0), 2),
        "params": {**params, "cell_set_len": set_len, "hydra_overrides": overrides},
        "epochs": None,
        "not_covered": not_covered,
        "notes": (
            f"State Transition ({params['model']}) trained {steps} steps on the fold's genes as X_hvg "
            "(output_space=gene, one-hot perturbations, no SE embedding); predictions via predict_step on "
            f"random sets of <= {set_len} start cells, clipped to [0, 14] as in `state tx infer`"
        ),
    }
    if not params.get("keep_run"):
        shutil.rmtree(rundir, ignore_errors=True)
    _common.write_result(workdir, predicted, list(map(str, train.var_names)), result)


if __name__ == "__main__":
    os.environ.setdefault("WANDB_MODE", "disabled")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _common.main(run)
