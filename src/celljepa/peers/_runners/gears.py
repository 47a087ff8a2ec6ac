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
  ``gene2go_all.pkl`` from ``WORKDIR/gene_go.tsv`` (celljepa's GO biological-process table, in place of
  GEARS's own gene2go) and the perturbable-gene list (``PertData(gene_set_path=...)``: the expression
  genes, the perturbed training genes and the query genes: GEARS's ``default_pert_graph=False`` rule plus the
  query genes). Any GEARS download helper that would really download raises;
- replaces GEARS's ``make_GO`` (the GO graph of a custom gene set; it runs a 25-process pool and caches to
  ``./data`` under the working directory) by an exact vectorised copy: the same edge list, every ordered
  gene pair whose GO term sets have Jaccard similarity > 0.1, in the same order, handed to GEARS in memory
  (``go_edges.csv`` in the scratch folder is a copy for inspection). GEARS's ``get_similarity_network`` then
  keeps per gene the ``num_similar_genes_go_graph`` + 1 best in-edges (self included), as it always does;
- fits on the fold's ``role == "train"`` cells of all contexts pooled (GEARS has no context; ``cell_type``
  is the context), in GEARS notation (``ctrl``, ``A+ctrl``, ``A+B``); it drops conditions GEARS cannot take:
  more than two genes, a gene without GO terms (GEARS's ``filter_pert_in_go``), a condition with fewer than
  two cells in a context (scanpy's DE test needs two), the controls of a context with no perturbation left
  (GEARS's per-context DE test needs one);
- splits with GEARS's ``custom`` split: validation = a seeded ``val_fraction`` (10 %) of the training
  perturbations (held out of training, used for best-epoch selection as in GEARS), no test set;
- predicts one cell per start cell of the query's context with the query's genes (GEARS's ``predict`` draws
  300 random controls and averages them; this keeps each cell's output).

A query is covered when it is a gene perturbation of one or two genes, all in GEARS's perturbation graph.
Defaults are GEARS's published ones (``model_initialize`` defaults with ``hidden_size=64``,
``train(epochs=20, lr=1e-3, weight_decay=5e-4)``, batch size 32 as in its tutorials); ``request["params"]``
may override any of ``DEFAULTS``.
"""

from __future__ import annotations

import os
import pickle
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

try:
    from ._common import Clock, fit_rows, main, seed_everything, start_cells, write_result
except ImportError:  # run as a script: _common sits beside this file
    from _common import Clock, fit_rows, main, seed_everything, start_cells, write_result

    # this file is named gears.py: keep its folder off the path so that ``import gears`` finds GEARS
    _HERE = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

DEFAULTS = {
    # GEARS.model_initialize (tutorial: hidden_size=64; the rest are its defaults)
    "hidden_size": 64, "num_go_gnn_layers": 1, "num_gene_gnn_layers": 1, "decoder_hidden_size": 16,
    "num_similar_genes_go_graph": 20, "num_similar_genes_co_express_graph": 20, "coexpress_threshold": 0.4,
    "uncertainty": False, "uncertainty_reg": 1, "direction_lambda": 0.1,
    # GEARS.train defaults, PertData.get_dataloader as in GEARS's tutorials
    "epochs": 20, "lr": 1e-3, "weight_decay": 5e-4, "batch_size": 32, "test_batch_size": 128,
    # the adapter's custom split
    "val_fraction": 0.1,
}
MODEL_KEYS = ("hidden_size", "num_go_gnn_layers", "num_gene_gnn_layers", "decoder_hidden_size",
              "num_similar_genes_go_graph", "num_similar_genes_co_express_graph", "coexpress_threshold",
              "uncertainty", "uncertainty_reg", "direction_lambda")
NAME = "fold"  # GEARS's dataset name
GO_TSV = "gene_go.tsv"
SCRATCH = "gears_scratch"
PREDICT_BATCH = 300  # GEARS.predict's batch


def _no_downloads(gears_modules) -> None:
    """Make every GEARS download helper refuse to download (a local copy is fine)."""

    def refuse(url, save_path, *args):
        if os.path.exists(save_path):
            return
        raise RuntimeError(f"GEARS tried to download {url} to {save_path}; the celljepa runner allows no "
                           "download: a local copy is missing")

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


def _go_edges(pert_list, gene2go) -> pd.DataFrame:
    """What GEARS's ``make_GO(data_path, pert_list, ...)`` returns.

    (source, target, Jaccard of GO term sets) for every ordered gene pair with Jaccard > 0.1, sources then
    targets in ``pert_list`` order, as its ``get_GO_edge_list`` yields them; the same floats (integer counts,
    one division).
    """
    import scipy.sparse as sp

    genes = list(pert_list)
    terms = sorted({t for g in genes for t in gene2go[g]})
    col = {t: i for i, t in enumerate(terms)}
    rows = np.repeat(np.arange(len(genes)), [len(gene2go[g]) for g in genes])
    cols = np.fromiter((col[t] for g in genes for t in gene2go[g]), dtype=np.int64, count=len(rows))
    b = sp.csr_matrix((np.ones(len(rows), dtype=np.int64), (rows, cols)), shape=(len(genes), len(terms)))
    inter = (b @ b.T).tocoo()
    size = np.asarray(b.sum(axis=1)).ravel()
    src, dst, n = inter.row, inter.col, inter.data.astype(np.float64)
    score = n / (size[src] + size[dst] - n)
    keep = score > 0.1
    order = np.lexsort((dst[keep], src[keep]))
    names = np.asarray(genes, dtype=object)
    return pd.DataFrame({"source": names[src[keep][order]], "target": names[dst[keep][order]],
                         "importance": score[keep][order]})


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
    for what, mask in (("more than two genes", too_many), ("a gene without GO terms", no_go),
                       ("a single cell in its context", small),
                       ("controls of a context without fitted perturbations", lone)):
        if mask.any():
            dropped = sorted(set(condition[mask]))
            notes.append(f"not fitted ({what}): {len(dropped)} conditions, {int(mask.sum())} cells: "
                         f"{dropped[:10]}{' ...' if len(dropped) > 10 else ''}")
    x = train.X[rows[keep]]
    x = sp.csr_matrix(x, dtype=np.float32)
    gobs = pd.DataFrame({"condition": condition[keep], "cell_type": cell_type[keep]},
                        index=pd.Index([f"c{i}" for i in range(int(keep.sum()))]))
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

    with clock("fit"):
        gene2go = _read_gene2go(workdir / GO_TSV)
        with open(scratch / "gene2go_all.pkl", "wb") as f:
            pickle.dump(gene2go, f)
        adata = _gears_adata(train, gene2go, notes)
        pert_genes = set(adata.var["gene_name"])
        pert_genes.update(g for c in adata.obs["condition"].unique() for g in c.split("+") if g != "ctrl")
        pert_genes.update(g for q in request["queries"] if q.get("kind") == "gene" for g in q["names"])
        with open(scratch / "pert_genes.pkl", "wb") as f:
            pickle.dump(sorted(pert_genes), f)

        pert_data = gears_pertdata.PertData(str(scratch), gene_set_path=str(scratch / "pert_genes.pkl"))
        pert_data.new_data_process(dataset_name=NAME, adata=adata)
        pert_list = pert_data.pert_names.tolist()
        edges = _go_edges(pert_list, gene2go)
        edges.to_csv(scratch / "go_edges.csv", index=False)

        def make_go(data_path, genes, data_name, num_workers=25, save=True):
            if list(genes) != pert_list:
                raise RuntimeError("GEARS asked for the GO graph of another gene list")
            return edges.copy()

        gears_utils.make_GO = make_go

        perts = sorted(c for c in pert_data.adata.obs["condition"].unique() if c != "ctrl")
        if len(perts) < 2:
            raise ValueError(f"GEARS needs at least two training perturbations (one for validation); "
                             f"found {len(perts)}")
        rng = np.random.default_rng(seed)
        n_val = min(len(perts) - 1, max(1, int(round(params["val_fraction"] * len(perts)))))
        val = sorted(rng.choice(perts, n_val, replace=False).tolist())
        split = {"train": ["ctrl"] + [p for p in perts if p not in set(val)], "val": val, "test": []}
        with open(scratch / "split.pkl", "wb") as f:
            pickle.dump(split, f)
        pert_data.prepare_split(split="custom", seed=seed, split_dict_path=str(scratch / "split.pkl"))
        pert_data.get_dataloader(batch_size=int(params["batch_size"]),
                                 test_batch_size=int(params["test_batch_size"]))
        del pert_data.dataloader["test_loader"]  # no test set: GEARS.train then skips testing

        model = gears_model.GEARS(pert_data, device="cpu")
        model.model_initialize(**{k: params[k] for k in MODEL_KEYS})
        model.train(epochs=int(params["epochs"]), lr=float(params["lr"]),
                    weight_decay=float(params["weight_decay"]))
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

    notes.append(f"GO graph: {len(pert_list)} perturbable genes, {len(edges)} Jaccard > 0.1 edges before "
                 f"GEARS's top-{params['num_similar_genes_go_graph'] + 1} per gene, "
                 f"{int(model.config['G_go'].shape[1])} kept; co-expression graph: "
                 f"{int(model.config['G_coexpress'].shape[1])} edges")
    notes.append(f"fitted on {pert_data.adata.n_obs} cells, {len(split['train']) - 1} training and "
                 f"{len(val)} validation perturbations (validation held out for best-epoch selection)")
    result = {"peer": "gears", "version": version("cell-gears"), "seed": seed,
              "fit_s": round(clock.seconds.get("fit", 0.0), 3),
              "predict_s": round(clock.seconds.get("predict", 0.0), 3),
              "params": params, "epochs": int(params["epochs"]), "not_covered": not_covered,
              "notes": "; ".join(notes)}
    write_result(workdir, predicted, genes, result)


if __name__ == "__main__":
    main(run)
