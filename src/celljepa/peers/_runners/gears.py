"""GEARS as a celljepa peer: ``python gears.py WORKDIR`` in the GEARS environment (see ``_common``).

GEARS (Roohani, Huang & Leskovec, "Predicting transcriptional outcomes of novel multigene perturbations
with GEARS", Nat Biotechnol 42, 927-935, 2024; PyPI ``cell-gears`` 0.1.2) predicts the expression of a cell
after a single or double gene perturbation: a graph neural network over a gene co-expression graph (gene
embeddings) and a Gene Ontology (GO) similarity graph over perturbable genes (perturbation embeddings),
decoded per gene and added to the control cell's expression. The GO graph lets it predict perturbations of
genes never perturbed in training.

GEARS's own code does everything that matters: data processing (``PertData.new_data_process``: DE genes,
non-zero genes), the custom split, the co-expression graph (``get_coexpression_network_from_train``, from the
training split's control and single-perturbation cells), the GO graph's top-k selection
(``get_similarity_network``) and its graph objects (``GeneSimNetwork``), the model, its loss, training with
best-epoch selection on the validation perturbations (``GEARS.train``), and the per-cell graphs of a
prediction (``create_cell_graph_for_prediction``), run through GEARS's trained best model.

The adapter:

- gives GEARS local copies of what it would download from Harvard Dataverse, in ``WORKDIR/gears_scratch``:
  ``gene2go_all.pkl`` from ``WORKDIR/gene_go.tsv`` (celljepa's GO biological-process table, in place of GEARS's
  own gene2go) and the perturbable-gene list (``PertData(gene_set_path=...)``): the genes of the graph file.
  Any GEARS download helper that would really download raises;
- hands GEARS the GO graph celljepa built and cached over every gene of that table (18,708 genes, against the
  ~10,000 "essential" genes of GEARS's downloaded graph; ``WORKDIR/go_graph.npz``, :mod:`celljepa.peers._gograph`)
  in place of ``make_GO`` (which would compare 18,708 x 18,708 gene pairs in a 25-process pool): the same rule,
  Jaccard similarity of GO term sets > 0.1, each gene's ``num_similar_genes_go_graph`` + 1 best in-edges chosen
  among all 18,708 genes (ties to the smaller source, as GEARS's ``nlargest`` keeps the first listed), cut to
  the part GEARS reads for the fold's perturbed genes (``GOGraph.receptive_field``: their in-edges over its
  ``num_go_gnn_layers`` hops, boundary genes keeping their degree through a self-loop), on which every GO-layer
  output GEARS uses equals the whole graph's (tested) while a step costs what a graph of a few hundred genes
  costs. GEARS's ``get_similarity_network`` then applies its own top-k selection to it (unchanged by it) and
  builds its graph objects as always;
- fits on the ``role == "train"`` cells (training conditions, or training + validation conditions for the
  refit, and the control cells it may fit on), all contexts pooled (GEARS has no context; ``cell_type`` is the
  context), in GEARS notation (``ctrl``, ``A+ctrl``, ``A+B``); it drops conditions GEARS cannot take: more
  than two genes, a gene without GO terms (GEARS's ``filter_pert_in_go``), a condition with fewer than two
  cells in a context (scanpy's DE test needs two), the controls of a context with no perturbation left
  (GEARS's per-context DE test needs one);
- splits with GEARS's ``custom`` split: validation = a seeded ``val_fraction`` (10 %) of the perturbations it
  fits on (held out of training; GEARS keeps the model of the epoch with the best validation top-20-DE MSE,
  its own best-model selection), no test set;
- sizes the training to the data (``_rules.gears_settings``, on the cells of its training split):
  ``batch_size = clip(floor(n_train / 100), 8, 32)`` (at least ~100 updates per epoch; GEARS halves its
  learning rate after every epoch, so updates per epoch are what sets how much it trains), 20 epochs;
- records per epoch GEARS's own training and validation metrics (overall MSE, top-20-DE MSE) and the mean
  training loss, and the epoch its best-model selection kept;
- predicts one cell per start cell of the query's context with the query's genes (GEARS's ``predict`` draws
  300 random controls and averages them; this keeps each cell's output).

A query is covered when it is a gene perturbation of one or two genes, all in GEARS's perturbation graph.
Defaults are GEARS's published ones (``model_initialize`` defaults with ``hidden_size=64``,
``train(epochs=20, lr=1e-3, weight_decay=5e-4)``, batch size 32 as in its tutorials, reduced on small data as
above); ``request["params"]`` may override any of ``DEFAULTS``.
"""

from __future__ import annotations

import os
import pickle
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

try:
    from ._common import Clock, fit_record, fit_rows, main, seed_everything, start_cells, write_result
    from ._rules import gears_settings
except ImportError:  # run as a script: _common sits beside this file
    from _common import Clock, fit_record, fit_rows, main, seed_everything, start_cells, write_result
    from _rules import gears_settings

    # this file is named gears.py: keep its folder off the path so that ``import gears`` finds GEARS
    _HERE = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

DEFAULTS = {
    # GEARS.model_initialize (tutorial: hidden_size=64; the rest are its defaults)
    "hidden_size": 64,
    "num_go_gnn_layers": 1,
    "num_gene_gnn_layers": 1,
    "decoder_hidden_size": 16,
    "num_similar_genes_go_graph": 20,
    "num_similar_genes_co_express_graph": 20,
    "coexpress_threshold": 0.4,
    "uncertainty": False,
    "uncertainty_reg": 1,
    "direction_lambda": 0.1,
    # GEARS.train defaults; batch size (GEARS's tutorials: 32) and epochs from _rules.gears_settings (None)
    "epochs": None,
    "lr": 1e-3,
    "weight_decay": 5e-4,
    "batch_size": None,
    "test_batch_size": 128,
    # the adapter's custom split
    "val_fraction": 0.1,
}
MODEL_KEYS = (
    "hidden_size",
    "num_go_gnn_layers",
    "num_gene_gnn_layers",
    "decoder_hidden_size",
    "num_similar_genes_go_graph",
    "num_similar_genes_co_express_graph",
    "coexpress_threshold",
    "uncertainty",
    "uncertainty_reg",
    "direction_lambda",
)
NAME = "fold"  # GEARS's dataset name
GO_TSV = "gene_go.tsv"
GO_GRAPH = "go_graph.npz"
RULE = "batch_size = clip(floor(n_train / 100), 8, 32); epochs = 20 (GEARS halves its learning rate every epoch)"
SCRATCH = "gears_scratch"
PREDICT_BATCH = 300  # GEARS.predict's batch


def _no_downloads(gears_modules) -> None:
    """Make every GEARS download helper refuse to download (a local copy is fine)."""

    def refuse(url, save_path, *args):
        if os.path.exists(save_path):
            return
        raise RuntimeError(
            f"GEARS tried to download {url} to {save_path}; the celljepa runner allows no "
            "download: a local copy is missing"
        )

    for module in gears_modules:
        for name in ("dataverse_download", "zip_data_download_wrapper", "tar_data_download_wrapper"):
            if hasattr(module, name):
                setattr(module, name, refuse)


def _read_gene2go(path: Path) -> dict[str, set]:
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    if list(table.columns[:2]) != ["symbol", "terms"]:
        raise ValueError(f"{path}: expected the header 'symbol<TAB>terms', found {list(table.columns)}")
    gene2go = {}
    for symbol, terms in zip(table["symbol"], table["terms"], strict=True):
        terms = {t for t in terms.split(";") if t}
        if terms:
            gene2go[symbol] = terms
    return gene2go


def _go_graph(path: Path, k: int) -> tuple[list, pd.DataFrame]:
    """The genes and edges of celljepa's GO graph file, cut to ``k + 1`` in-edges per target gene.

    The edges are what GEARS's ``make_GO`` + ``nlargest(k + 1)`` keep (see the module docstring): sorted by
    target, then decreasing Jaccard similarity, then source, so a target's first ``k + 1`` edges are its graph.
    """
    with np.load(path, allow_pickle=False) as f:
        genes = [str(g) for g in f["genes"]]
        src, dst, score = f["source"], f["target"], f["importance"]
        built_k = int(f["meta"][1])
    if k > built_k:
        raise ValueError(f"{path} keeps {built_k} neighbours per gene; num_similar_genes_go_graph={k} needs more")
    rank = np.arange(len(dst)) - np.searchsorted(dst, dst, side="left")
    keep = rank < k + 1
    names = np.asarray(genes, dtype=object)
    edges = pd.DataFrame({"source": names[src[keep]], "target": names[dst[keep]], "importance": score[keep]})
    return genes, edges


def _record_training(gears_model) -> dict:
    """Record GEARS's per-epoch metrics as ``GEARS.train`` computes them (it only prints them).

    ``GEARS.train`` calls ``compute_metrics`` on the training then the validation predictions after each epoch,
    and ``loss_fct`` at every step; both are wrapped (same results) to keep the curves.
    """
    curves = {"train_mse": [], "train_mse_de": [], "val_mse": [], "val_mse_de": [], "train_loss": [], "epoch_s": []}
    steps: list[float] = []
    clock = [time.perf_counter()]
    compute_metrics, loss_fct = gears_model.compute_metrics, gears_model.loss_fct

    def metrics(results):
        out = compute_metrics(results)
        which = "train" if len(curves["train_mse"]) == len(curves["val_mse"]) else "val"
        curves[f"{which}_mse"].append(float(out[0]["mse"]))
        curves[f"{which}_mse_de"].append(float(out[0]["mse_de"]))
        if which == "val":  # the end of an epoch: training, then evaluating on the training and validation cells
            now = time.perf_counter()
            curves["epoch_s"].append(round(now - clock[0], 2))
            clock[0] = now
        if which == "train" and steps:
            curves["train_loss"].append(float(np.mean(steps)))
            steps.clear()
        return out

    def loss(*args, **kwargs):
        if not steps and not curves["train_mse"]:
            clock[0] = time.perf_counter()  # the first step of the first epoch
        value = loss_fct(*args, **kwargs)
        steps.append(float(value.detach()))
        return value

    gears_model.compute_metrics, gears_model.loss_fct = metrics, loss
    return curves


def _condition(names: str) -> str:
    genes = [g for g in names.split("+") if g]
    return "ctrl" if not genes else genes[0] + "+ctrl" if len(genes) == 1 else "+".join(genes)


def _gears_adata(train, gene2go, notes: list):
    """The fit cells in GEARS's format, without the conditions GEARS cannot take."""
    import anndata as ad
    import scipy.sparse as sp

    rows = np.flatnonzero(fit_rows(train))
    obs = train.obs.iloc[rows]
    names = obs["names"].astype(str).to_numpy()
    names = np.where(obs["is_control"].to_numpy(dtype=bool), "", names)
    condition = np.array([_condition(n) for n in names], dtype=object)
    cell_type = obs["context"].astype(str).to_numpy()
    genes = [[g for g in n.split("+") if g] for n in names]
    too_many = np.array([len(g) > 2 for g in genes])
    no_go = np.array([any(x not in gene2go for x in g) for g in genes]) & ~too_many
    keep = ~too_many & ~no_go
    group = pd.Series(cell_type + "|" + condition)
    small = (group.map(group[keep].value_counts()).fillna(0).to_numpy() < 2) & keep
    keep &= ~small
    perturbed = set(cell_type[keep & (condition != "ctrl")])
    lone = keep & ~np.isin(cell_type, list(perturbed))  # GEARS's DE test needs a perturbation per context
    keep &= ~lone
    for what, mask in (
        ("more than two genes", too_many),
        ("a gene without GO terms", no_go),
        ("a single cell in its context", small),
        ("controls of a context without fitted perturbations", lone),
    ):
        if mask.any():
            dropped = sorted(set(condition[mask]))
            notes.append(
                f"not fitted ({what}): {len(dropped)} conditions, {int(mask.sum())} cells: "
                f"{dropped[:10]}{' ...' if len(dropped) > 10 else ''}"
            )
    x = train.X[rows[keep]]
    x = sp.csr_matrix(x, dtype=np.float32)
    gobs = pd.DataFrame(
        {"condition": condition[keep], "cell_type": cell_type[keep]},
        index=pd.Index([f"c{i}" for i in range(int(keep.sum()))]),
    )
    var = pd.DataFrame({"gene_name": list(map(str, train.var_names))}, index=list(map(str, train.var_names)))
    return ad.AnnData(x, obs=gobs, var=var)


def run(workdir: Path, request: dict, train) -> None:
    """Fit GEARS on the fold's training cells and predict every query (see the module docstring)."""
    from importlib.metadata import version

    import gears
    import gears.gears as gears_model
    import gears.pertdata as gears_pertdata
    import gears.utils as gears_utils
    import torch

    seed = int(request.get("seed", 0))
    threads = int(request.get("threads", 1))
    seed_everything(seed, threads)  # importing gears.gears sets torch.manual_seed(0)
    unknown = sorted(set(request.get("params", {})) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown GEARS params {unknown}; known: {sorted(DEFAULTS)}")
    params = {**DEFAULTS, **request.get("params", {})}
    _no_downloads((gears_utils, gears_pertdata, gears_model, gears))
    clock, notes = Clock(), []
    workdir = Path(workdir).resolve()
    scratch = workdir / SCRATCH
    if scratch.exists():
        shutil.rmtree(scratch)  # GEARS reuses cached splits and graphs found there
    scratch.mkdir()

    k = int(params["num_similar_genes_go_graph"])
    with clock("fit"):
        gene2go = _read_gene2go(workdir / GO_TSV)
        with open(scratch / "gene2go_all.pkl", "wb") as f:
            pickle.dump(gene2go, f)
        graph_genes, edges = _go_graph(workdir / GO_GRAPH, k)
        adata = _gears_adata(train, gene2go, notes)
        with open(scratch / "pert_genes.pkl", "wb") as f:
            pickle.dump(graph_genes, f)  # the genes of the graph file (the receptive field of the perturbed genes)

        pert_data = gears_pertdata.PertData(str(scratch), gene_set_path=str(scratch / "pert_genes.pkl"))
        pert_data.new_data_process(dataset_name=NAME, adata=adata)
        pert_list = pert_data.pert_names.tolist()
        if pert_list != graph_genes:
            raise ValueError(
                f"GEARS's perturbable genes ({len(pert_list)}) are not the GO graph's genes "
                f"({len(graph_genes)}): {GO_GRAPH} and {GO_TSV} do not match"
            )

        def make_go(data_path, genes, data_name, num_workers=25, save=True):
            if list(genes) != pert_list:
                raise RuntimeError("GEARS asked for the GO graph of another gene list")
            return edges.copy()

        gears_utils.make_GO = make_go

        perts = sorted(c for c in pert_data.adata.obs["condition"].unique() if c != "ctrl")
        if len(perts) < 2:
            raise ValueError(
                f"GEARS needs at least two perturbations to fit on (one for its validation); found {len(perts)}"
            )
        rng = np.random.default_rng(seed)
        n_val = min(len(perts) - 1, max(1, int(round(params["val_fraction"] * len(perts)))))
        val = sorted(rng.choice(perts, n_val, replace=False).tolist())
        split = {"train": ["ctrl"] + [p for p in perts if p not in set(val)], "val": val, "test": []}
        with open(scratch / "split.pkl", "wb") as f:
            pickle.dump(split, f)
        condition = pert_data.adata.obs["condition"].astype(str)
        n_train = int(condition.isin(split["train"]).sum())
        n_val_cells = int(condition.isin(val).sum())
        scaled = gears_settings(n_train)
        for key, value in scaled.items():
            if params[key] is None:
                params[key] = value
        pert_data.prepare_split(split="custom", seed=seed, split_dict_path=str(scratch / "split.pkl"))
        pert_data.get_dataloader(batch_size=int(params["batch_size"]), test_batch_size=int(params["test_batch_size"]))
        del pert_data.dataloader["test_loader"]  # no test set: GEARS.train then skips testing

        model = gears_model.GEARS(pert_data, device="cpu")
        model.model_initialize(**{k: params[k] for k in MODEL_KEYS})
        curves = _record_training(gears_model)
        start_s = time.perf_counter()
        model.train(epochs=int(params["epochs"]), lr=float(params["lr"]), weight_decay=float(params["weight_decay"]))
        train_s = time.perf_counter() - start_s
    # GEARS's caches of the processed data (as large as the data): only the small files stay for inspection
    shutil.rmtree(scratch / NAME / "data_pyg", ignore_errors=True)
    (scratch / NAME / "perturb_processed.h5ad").unlink(missing_ok=True)

    genes = list(map(str, train.var_names))
    x_all = train.X
    predicted, not_covered = {}, {}
    with clock("predict"):
        from torch_geometric.loader import DataLoader

        net = model.best_model.to("cpu").eval()
        pert_index = {g: i for i, g in enumerate(pert_list)}
        for q in request["queries"]:
            key, names = q["key"], list(q["names"])
            missing = [g for g in names if g not in pert_index]
            if q.get("kind") != "gene":
                not_covered[key] = f"GEARS predicts gene perturbations only, not kind '{q.get('kind')}'"
            elif not 1 <= len(names) <= 2:
                not_covered[key] = f"GEARS predicts one or two perturbed genes, not {len(names)}"
            elif missing:
                not_covered[key] = f"not in GEARS's perturbation graph (no GO terms): {missing}"
            rows = start_cells(train, q["context"])
            if key not in not_covered and not len(rows):
                not_covered[key] = f"no start cells of context '{q['context']}'"
            if key in not_covered:
                continue
            x = np.asarray(x_all[rows].toarray() if hasattr(x_all, "toarray") else x_all[rows], dtype=np.float32)
            idx = [pert_index[g] for g in names]
            graphs = [gears_utils.create_cell_graph_for_prediction(cell, idx, names) for cell in x]
            out = []
            with torch.no_grad():
                for batch in DataLoader(graphs, PREDICT_BATCH, shuffle=False):
                    p = net(batch)
                    out.append((p[0] if params["uncertainty"] else p).numpy())
            predicted[key] = np.vstack(out)

    n_go = int(model.config["G_go"].shape[1])
    notes.append(
        f"GO graph: {len(pert_list)} perturbable genes (the receptive field of the perturbed genes in the "
        f"graph over every gene with GO terms), {len(edges)} edges "
        f"(top-{k + 1} per gene of the Jaccard > 0.1 pairs), {n_go} in GEARS's graph; co-expression "
        f"graph: {int(model.config['G_coexpress'].shape[1])} edges"
    )
    notes.append(
        f"fitted on {pert_data.adata.n_obs} cells, {len(split['train']) - 1} training and "
        f"{len(val)} validation perturbations (validation held out for best-epoch selection)"
    )
    epochs = int(params["epochs"])
    val_de = curves["val_mse_de"]
    best = int(np.argmin(val_de)) + 1 if len(val_de) else None  # GEARS keeps the first epoch of the minimum
    n_conditions = int(
        pert_data.adata.obs.loc[pert_data.adata.obs["condition"] != "ctrl"]
        .groupby(["cell_type", "condition"], observed=True)
        .ngroups
    )
    fit = fit_record(
        unit="epoch",
        trained=len(val_de),
        max_=epochs,
        best=best,
        monitor="validation top-20 DE MSE (mse_de)",
        stopped_by="max_epochs (GEARS trains every epoch and keeps the best one)",
        train_loss=curves["train_loss"],
        val_loss=curves["val_mse"],
        n_cells_used=pert_data.adata.n_obs,
        n_conditions_used=n_conditions,
        validation={
            "how": f"seeded random {params['val_fraction']:.0%} of the perturbations it fits on (GEARS's custom split)",
            "n_perturbations": len(val),
            "n_cells": n_val_cells,
            "perturbations": val,
        },
        scaling={
            "rule": RULE,
            **scaled,
            "n_train_cells": n_train,
            "overridden": sorted(k for k in scaled if request.get("params", {}).get(k) is not None),
        },
        train_mse_last=curves["train_mse"][-5:],
        val_mse_de_last=[round(v, 6) for v in val_de[-5:]],
        go_graph={"genes": len(pert_list), "edges": len(edges), "edges_in_gears_graph": n_go, "k": k},
        train_s=round(train_s, 2),
        epoch_s=curves["epoch_s"],
        steps_per_epoch=len(pert_data.dataloader["train_loader"]),
    )
    result = {
        "peer": "gears",
        "version": version("cell-gears"),
        "seed": seed,
        "fit_s": round(clock.seconds.get("fit", 0.0), 3),
        "predict_s": round(clock.seconds.get("predict", 0.0), 3),
        "params": params,
        "fit": fit,
        "not_covered": not_covered,
        "notes": "; ".join(notes),
    }
    write_result(workdir, predicted, genes, result)


if __name__ == "__main__":
    main(run)
