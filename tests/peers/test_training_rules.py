"""The peers' scaling rules, State's validation split and GEARS's GO graph, without the peers installed.

The rules (``_runners/_rules.py``) and the runners' pure helpers are plain Python, loaded here from their files
as the peers' interpreters load them; the GO graph is built from the GO table shipped with celljepa.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from celljepa.data.go import read_go_table
from celljepa.peers import PEERS
from celljepa.peers._env import RUNNERS
from celljepa.peers._gograph import JACCARD_MIN, GOGraph, _build, go_graph


def _load(name: str):
    """A runner module, loaded from its file with the runners' folder on the path (as ``python RUNNER.py``)."""
    saved = list(sys.path)
    sys.path.insert(0, str(RUNNERS))
    try:
        spec = importlib.util.spec_from_file_location(f"celljepa_test_runner_{name}", RUNNERS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved
    return module


rules = _load("_rules")


@pytest.mark.parametrize(
    ("n_train", "batch"), [(100, 32), (640, 32), (2_600, 130), (20_000, 1000), (41_000, 2048), (500_000, 2048)]
)
def test_cpa_batch_gives_an_epoch_at_least_twenty_updates(n_train, batch):
    got = rules.cpa_settings(n_train)
    assert got["batch_size"] == batch
    assert got["max_epochs"] == 2000 and got["early_stopping_patience"] == 5 and got["check_val_every_n_epoch"] == 5
    if 32 * 20 <= n_train <= 2048 * 20:
        assert n_train // got["batch_size"] >= 20


@pytest.mark.parametrize(
    ("n_cells", "batch", "patience", "epochs"),
    [(300, 13, 462, 1848), (1_341, 32, 256, 1022), (13_766, 32, 25, 100), (40_000, 32, 25, 100)],
)
def test_scgen_counts_the_tutorials_patience_and_epochs_in_updates(n_cells, batch, patience, epochs):
    got = rules.scgen_settings(n_cells)
    assert (got["batch_size"], got["early_stopping_patience"], got["max_epochs"]) == (batch, patience, epochs)
    assert got["early_stopping"] and got["train_size"] == 0.9 and got["early_stopping_monitor"] == "elbo_validation"
    updates = -(-int(0.9 * n_cells) // batch)
    # the patience spans at least the tutorial's 25 epochs of 388 updates (13,766 cells, batch 32)
    assert got["early_stopping_patience"] * updates >= 25 * rules.SCGEN_TUTORIAL_UPDATES_PER_EPOCH - updates


@pytest.mark.parametrize(("n_train", "batch"), [(300, 8), (2_075, 20), (3_200, 32), (60_000, 32)])
def test_gears_batch_keeps_a_hundred_updates_per_epoch(n_train, batch):
    assert rules.gears_settings(n_train) == {"epochs": 20, "batch_size": batch}


@pytest.mark.parametrize(("n_train", "steps"), [(1_500, 1000), (4_000, 1000), (5_000, 1250), (20_000, 4000)])
def test_state_steps_scale_with_passes_over_the_data(n_train, steps):
    got = rules.state_settings(n_train)
    assert got["max_steps"] == steps and got["val_freq"] == 100 and got["max_minutes"] == 60.0
    assert got["max_steps"] * 10 <= 40_000  # far below State's README run: said so in docs/peers.md


def test_registry_documents_each_rule():
    for spec in PEERS.values():
        assert spec.scaling, spec.name
    assert PEERS["gears"].inputs == ("go_graph",)
    gears = _load("gears")
    assert gears.DEFAULTS["num_similar_genes_go_graph"] == PEERS["gears"].defaults["num_similar_genes_go_graph"]


def _kang_like_obs():
    rows = []
    for ctx in ("B", "CD4T", "CD8T", "NK", "Mono", "DC"):
        rows += [(ctx, "control", True)] * 3 + [(ctx, "stimulated", False)] * 4
    rows += [("B", "other", False)] * 2  # a perturbation with one condition
    obs = pd.DataFrame(rows, columns=["context", "perturbation", "is_control"])
    return obs


def test_state_validation_holds_out_seen_perturbations_in_other_contexts():
    state = _load("state")
    obs = _kang_like_obs()
    fit = np.ones(len(obs), bool)
    val = state.validation_conditions(obs, fit, 0.1, seed=0)
    assert len(val) == 1 and val[0][1] == "stimulated"  # never the lone 'other' (it would become unpredictable)
    assert val == state.validation_conditions(obs, fit, 0.1, seed=0)  # seeded
    many = state.validation_conditions(obs, fit, 0.9, seed=1)
    assert {p for _, p in many} == {"stimulated"} and len(many) == 5  # one 'stimulated' condition stays
    fit[obs["perturbation"].to_numpy() == "stimulated"] = False  # only what the peer is given is drawn from
    assert state.validation_conditions(obs, fit, 0.1, seed=0) == []
    toml = state._toml(Path("/data"), [("CD14+Mono", "IFN"), ("B", "x")])
    assert '[fewshot."fold.CD14+Mono"]' in toml and 'val = ["IFN"]' in toml


# ---------------------------------------------------------------------------------------- GO graph
def _gears_reference(gene2go: dict, genes: list, k: int) -> pd.DataFrame:
    """GEARS's own rule, as ``gears.utils.make_GO`` and ``get_similarity_network`` write it (loops, pandas)."""
    go = {g: set(gene2go[g]) for g in genes}
    edges = []
    for g1 in genes:
        for g2 in genes:
            score = len(go[g1] & go[g2]) / len(go[g1] | go[g2])
            if score > 0.1:
                edges.append((g1, g2, score))
    df = pd.DataFrame(edges, columns=["source", "target", "importance"])
    return df.groupby("target").apply(lambda x: x.nlargest(k + 1, ["importance"])).reset_index(drop=True)


@pytest.mark.filterwarnings("ignore:DataFrameGroupBy.apply:FutureWarning")  # GEARS's pandas call, as it is
def test_go_graph_matches_gears_rule_on_real_genes():
    table = read_go_table()
    rng = np.random.default_rng(0)
    genes = sorted(rng.choice(sorted(table), 300, replace=False).tolist() + ["TP53", "MDM2", "CDKN1A", "ATM"])
    sub = {g: table[g] for g in genes}
    graph = _build(sub, 5, "test")
    ours = pd.DataFrame(
        {"source": graph.genes[graph.source], "target": graph.genes[graph.target], "importance": graph.importance}
    )
    ref = _gears_reference(sub, genes, 5)
    key = ["target", "source"]
    pd.testing.assert_frame_equal(
        ours.sort_values(key).reset_index(drop=True),
        ref.sort_values(key).reset_index(drop=True)[ours.columns],
        check_dtype=False,
    )


def test_go_graph_spans_every_go_gene_and_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLJEPA_CACHE", str(tmp_path))
    table = read_go_table()
    first = go_graph(20)
    genes = list(first.genes)
    assert not first.cached and genes == sorted(table) and len(genes) == len(table) > 18_000
    tgt, src, imp = first.target, first.source, first.importance
    counts = np.bincount(tgt, minlength=len(genes))
    assert counts.max() == 21 and counts.min() >= 1  # k + 1 in-edges per gene at most, never none (itself or a twin)
    assert (imp > JACCARD_MIN).all() and (imp <= 1).all()
    assert (np.diff(tgt) >= 0).all()  # sorted by target, then decreasing similarity, then source
    same = np.diff(tgt) == 0
    assert (np.diff(imp)[same] <= 0).all()
    assert ((src == tgt).sum()) > 0.85 * len(genes)  # a gene is its own nearest neighbour unless twins crowd it out
    # the similarity is symmetric: an edge kept both ways has the same weight, and equals the Jaccard of the table
    pairs = dict(zip(zip(src.tolist(), tgt.tolist(), strict=True), imp.tolist(), strict=True))
    both = [(a, b) for (a, b) in pairs if a < b and (b, a) in pairs]
    assert len(both) > 10_000
    for a, b in both[:: len(both) // 50]:
        ta, tb = set(table[genes[a]]), set(table[genes[b]])
        assert pairs[(a, b)] == pairs[(b, a)] == len(ta & tb) / len(ta | tb)
    # a gene's kept neighbours are its most similar ones
    g = genes.index("TP53")
    mine = imp[tgt == g]
    terms = set(table["TP53"])
    every = np.array([len(terms & set(table[h])) / len(terms | set(table[h])) for h in genes])
    np.testing.assert_allclose(np.sort(mine)[::-1], np.sort(every[every > JACCARD_MIN])[::-1][:21])
    # cached: read back, the same graph; a smaller k is a cut of it
    again = go_graph(20)
    assert again.cached and again.digest == first.digest
    for a, b in ((again.source, src), (again.target, tgt), (again.importance, imp)):
        np.testing.assert_array_equal(a, b)
    five = first.top(5)
    assert np.bincount(five.target).max() == 6
    fresh = _build(table, 5, first.digest)
    np.testing.assert_array_equal(five.source, fresh.source)
    np.testing.assert_array_equal(five.importance, fresh.importance)
    # an unreadable cache file is rebuilt, not trusted
    cached = next((tmp_path / "go_graph").glob("*k20.npz"))
    cached.write_bytes(b"not a graph")
    rebuilt = go_graph(20)
    assert not rebuilt.cached and rebuilt.n_edges == first.n_edges
    assert GOGraph.load(cached).n_edges == first.n_edges


@pytest.mark.filterwarnings("ignore:DataFrameGroupBy.apply:FutureWarning")
def test_gears_runner_reads_the_graph_file(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLJEPA_CACHE", str(tmp_path))
    graph = go_graph(20)
    graph.save(tmp_path / "go_graph.npz")
    gears = _load("gears")
    genes, edges = gears._go_graph(tmp_path / "go_graph.npz", 10)
    assert genes == list(graph.genes)
    assert edges.groupby("target").size().max() == 11
    # what GEARS's get_similarity_network keeps of it is all of it: its own top-k changes nothing
    kept = edges.groupby("target").apply(lambda x: x.nlargest(11, ["importance"])).reset_index(drop=True)
    assert len(kept) == len(edges)
    with pytest.raises(ValueError, match="keeps 20 neighbours"):
        gears._go_graph(tmp_path / "go_graph.npz", 25)


def _gcn(graph: GOGraph, x: dict, layers: int) -> dict:
    """GEARS's GO layers (``SGConv``, K = 1, GCN normalisation, remaining self-loops of weight 1), with ReLU between
    layers, on embeddings given by gene name: the outputs of every gene, by name."""
    n, genes = len(graph.genes), [str(g) for g in graph.genes]
    src, dst, w = list(graph.source), list(graph.target), list(graph.importance)
    loops = set(int(s) for s, t in zip(graph.source, graph.target, strict=True) if s == t)
    for i in range(n):
        if i not in loops:
            src.append(i), dst.append(i), w.append(1.0)
    src, dst, w = np.array(src), np.array(dst), np.array(w, dtype=float)
    deg = np.bincount(dst, weights=w, minlength=n)
    norm = w / np.sqrt(deg[src] * deg[dst])
    h = np.array([x[g] for g in genes])
    for layer in range(layers):
        out = np.zeros_like(h)
        np.add.at(out, dst, norm[:, None] * h[src])
        h = np.maximum(out, 0) if layer < layers - 1 else out
    return {g: h[i] for i, g in enumerate(genes)}


@pytest.mark.parametrize("layers", [1, 2])
def test_the_receptive_field_gives_gears_the_same_embeddings(layers, tmp_path, monkeypatch):
    """On the real GO graph: the perturbed genes' GO-layer outputs on the subgraph equal those on the whole graph."""
    monkeypatch.setenv("CELLJEPA_CACHE", str(tmp_path))
    whole = go_graph(20)
    perturbed = ["STAT1", "JAK2", "IFNGR1", "CEBPE", "KLF1", "NOT_A_GENE"]
    sub = whole.receptive_field(perturbed, layers=layers)
    assert len(sub.genes) < len(whole.genes) / 20 and set(perturbed[:-1]) <= set(map(str, sub.genes))
    assert list(sub.genes) == sorted(sub.genes)  # GEARS's pert_names order
    assert (np.diff(sub.target) >= 0).all()  # the file's edge order
    rng = np.random.default_rng(layers)
    x = {str(g): rng.normal(size=4) for g in whole.genes}
    full, part = _gcn(whole, x, layers), _gcn(sub, x, layers)
    for g in perturbed[:-1]:
        np.testing.assert_allclose(part[g], full[g], rtol=1e-10, atol=1e-12)
    # without the compensating self-loops a boundary gene's degree (and every message it sends) would change
    plain = GOGraph(
        sub.genes,
        sub.source[sub.source != sub.target],
        sub.target[sub.source != sub.target],
        sub.importance[sub.source != sub.target],
        sub.k,
        sub.digest,
        sub.n_pairs,
        sub.build_s,
    )
    assert not np.allclose(_gcn(plain, x, layers)["STAT1"], full["STAT1"])
    # the file GEARS's runner reads keeps every edge the runner's top-k cut would keep
    sub.save(tmp_path / "sub.npz")
    genes, edges = _load("gears")._go_graph(tmp_path / "sub.npz", 20)
    assert genes == list(map(str, sub.genes)) and len(edges) == sub.n_edges
