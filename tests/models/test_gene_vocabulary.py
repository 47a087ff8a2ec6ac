"""Genes as tokens over one genome-wide vocabulary (``genome-v1``) and GO-initialised gene vectors:
real gene panels map onto it, an encoder trained on one panel embeds another without a gene intersection."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import scanpy as sc
from _realdata import read_quiet, real_path

import celljepa as cj
from celljepa import InputError
from celljepa.bench import RunConfig, demo_datasets
from celljepa.bench.holdout import _Holdout
from celljepa.data._harmonize import feature_set_aliases, map_genes
from celljepa.train.config import load_config

TINY = {
    "train": {"max_steps": 15, "batch_size": 64, "eval_every": 5},
    "model": {"n_hidden": 32, "predictor_hidden": 32, "n_latent": 8, "go_components": 16},
}


@pytest.fixture(scope="module")
def kang():
    a = read_quiet(real_path("scgen/valid.h5ad"))
    a = a[:600].copy()
    if a.X.max() > 30:  # counts: log-normalise as the contract expects
        sc.pp.normalize_total(a, target_sum=1e4)
        sc.pp.log1p(a)
    return a


def test_genome_vocabulary_is_ncbi_genes_with_unambiguous_aliases():
    fs = cj.datasets.load_feature_set("genome-v1")
    assert len(fs.genes) == 42815 and fs.strategy == "foundation"
    assert {"TP53", "IFIT1", "MALAT1", "CD14"} <= set(fs.genes)
    path = feature_set_aliases(fs)
    with gzip.open(path, "rt") as f:
        rows = [line.rstrip("\n").split("\t") for line in f][1:]
    symbols = {g.upper() for g in fs.genes}
    assert len(rows) > 40000
    # an alias never renames a current symbol, and always points into the vocabulary
    assert not any(a.upper() in symbols for a, _ in rows)
    assert all(s.upper() in symbols for _, s in rows)
    assert feature_set_aliases(cj.datasets.load_feature_set("foundation-v1")) is None


def test_real_kang_panel_maps_onto_the_vocabulary_with_aliases(kang):
    h = map_genes(kang, cj.datasets.load_feature_set("genome-v1"), name="kang2018")
    info = h.uns["feature_set"]
    # 5,958 of Kang's 6,998 genes are current NCBI symbols; old symbols resolve through the aliases
    assert info["n_present"] > 6300 and info["aliases_applied"] > 300
    assert h.n_vars == 42815 and int((~h.var["absent"]).sum()) == info["n_present"]
    # nothing is invented: a gene's values are its source column's
    j = list(h.var_names).index("ISG15")
    src = h.var["source_id"].iloc[j]
    np.testing.assert_allclose(h.X[:, j].toarray().ravel(), kang[:, src].X.toarray().ravel())


def test_measured_only_keeps_the_measured_genes_in_the_vocabularys_order(kang):
    fs = cj.datasets.load_feature_set("genome-v1")
    full = map_genes(kang, fs, name="kang2018")
    only = cj.pp.harmonize_genes(kang, fs, measured_only=True)
    assert only.n_vars == full.uns["feature_set"]["n_present"] == int((~full.var["absent"]).sum())
    assert not only.var["absent"].any()
    keep = ~full.var["absent"].to_numpy()
    assert list(only.var_names) == list(full.var_names[keep])
    assert (only.X != full.X[:, np.flatnonzero(keep)]).nnz == 0
    assert cj.pp.gene_presence(only) is None  # nothing is absent


def test_presence_records_of_other_datasets_fall_back_to_the_flags_only_when_asked():
    d = demo_datasets()
    both = cj.pp.combine_datasets({"norman2019": d["norman2019"], "sciplex_gxe": d["sciplex_gxe"]}, "foundation-v1")
    one = both[both.obs["dataset_id"] == "norman2019"].copy()
    one.obs["dataset_id"] = "renamed"
    one.var["absent"] = np.isin(one.var_names, both.uns["absent_genes"]["norman2019"])
    with pytest.raises(InputError, match=r"no entry for dataset\(s\) \['renamed'\]"):
        cj.pp.gene_presence(one)
    group, present = cj.pp.gene_presence(one, fallback_to_flags=True)
    assert (group == 0).all() and np.array_equal(present[0], ~one.var["absent"].to_numpy())


def test_go_encoder_trained_on_one_panel_embeds_another(kang, tmp_path):
    d = demo_datasets()
    norman = map_genes(d["norman2019"], cj.datasets.load_feature_set("genome-v1"), name="norman2019")
    model = cj.models.CellJEPA(
        norman, config=load_config(overrides={**TINY, "model": {**TINY["model"], "gene_embedding": "go"}})
    )
    # the encoder holds the genes Norman measures, not the 42,815 of the vocabulary
    assert len(model.var_names) == int((~norman.var["absent"]).sum()) < 600
    assert model.go_info_["n_with_go"] > 300
    model.train(progress=False)
    shared = len(set(model.var_names) & set(kang.var_names))
    assert shared < 0.5 * len(model.var_names)  # a free-vector encoder would refuse this panel
    z = model.get_latent_representation(kang)
    assert z.shape == (kang.n_obs, 8) and np.isfinite(z).all() and z.std(axis=0).min() > 0
    # the Kang-only genes carry signal through their GO vectors: dropping them changes the embedding
    only_shared = kang[:, [g for g in kang.var_names if g in set(model.var_names)]].copy()
    assert np.abs(model.get_latent_representation(only_shared) - z).max() > 1e-3
    model.save(tmp_path / "go")
    again = cj.models.CellJEPA.load(tmp_path / "go")
    np.testing.assert_allclose(again.get_latent_representation(kang), z, rtol=1e-5, atol=1e-5)

    free = cj.models.CellJEPA(norman, config=load_config(overrides=TINY)).train(progress=False)
    with pytest.raises(InputError, match=r"genes \(.*\) are in this AnnData; at least 50%.*gene_embedding=.go"):
        free.get_latent_representation(kang)


def test_an_unknown_gene_embedding_is_refused():
    with pytest.raises(InputError, match="model.gene_embedding must be one of free, go"):
        load_config(overrides={"model": {"gene_embedding": "esm"}})


def test_holdout_with_go_vectors_keeps_only_the_held_out_datasets_measured_genes(tmp_path):
    d = demo_datasets()
    jepa = load_config(overrides={**TINY, "model": {**TINY["model"], "gene_embedding": "go"}})
    h = _Holdout(
        {"norman2019": d["norman2019"], "sciplex_gxe": d["sciplex_gxe"]},
        "sciplex_gxe",
        tmp_path,
        RunConfig(jepa=jepa),
        "genome-v1",
        None,
        1,
        False,
    )
    assert h.held.n_vars == h.held.uns["feature_set"]["n_present"] and not h.held.var["absent"].any()
    enc = h.encoder(0)
    assert len(enc.var_names) < 600
    z = enc.get_latent_representation(h.held)
    assert z.shape == (h.held.n_obs, 8) and np.isfinite(z).all()


def test_go_encoder_gives_unmeasured_perturbed_genes_an_action_feature(tmp_path):
    from celljepa.bench.evaluate import EvalConfig, fold_encoder, prepare_fold
    from celljepa.models.transition import ActionFeaturizer, JEPATransition, TransitionConfig
    from celljepa.splits import make_split_folds

    norman = demo_datasets()["norman2019"]
    fold = make_split_folds(norman.obs, "S1_unseen_perturbation", dataset_id="norman2019", n_folds=3, seed=0)[0]
    _, train, _ = prepare_fold(norman, fold, EvalConfig())
    jepa = load_config(overrides={**TINY, "model": {**TINY["model"], "gene_embedding": "go"}})
    encoder, emb = fold_encoder(norman, train, fold, jepa)
    unmeasured = next(g for g in ("TP53", "MYC", "GATA1", "SPI1") if g not in set(encoder.var_names))
    feat = ActionFeaturizer.build(encoder=encoder)
    vec = feat.token(f"gene:{unmeasured}")
    assert vec[feat.gene_dim] == 1.0 and np.abs(vec[: feat.gene_dim]).sum() > 0  # known through GO
    assert feat.token("gene:NOT_A_GENE")[feat.gene_dim] == 0.0
    calls = []
    feat._go_vector = lambda name: calls.append(name)  # a gene without GO features is looked up once
    assert feat.token("gene:NOT_A_GENE")[feat.gene_dim] == 0.0 and not calls
    free = fold_encoder(norman, train, fold, load_config(overrides=TINY))[0]
    free_feat = ActionFeaturizer.build(encoder=free)
    assert free_feat.token(f"gene:{unmeasured}")[free_feat.gene_dim] == 0.0  # unknown to free gene vectors

    train.embedding, train.encoder = emb, encoder
    model = JEPATransition("set", TransitionConfig(max_steps=5, eval_every=5)).fit(train)
    model.save(tmp_path / "t")
    back = JEPATransition.load(tmp_path / "t", encoder=encoder)
    other = next(g for g in ("GATA2", "TAL1", "RUNX1", "FLI1") if g not in set(encoder.var_names) and g != unmeasured)
    np.testing.assert_allclose(back.featurizer_.token(f"gene:{other}"), model.featurizer_.token(f"gene:{other}"))


def test_one_go_encoder_pretrains_on_several_real_panels_at_once(kang):
    d = demo_datasets()
    both = cj.pp.combine_datasets({"kang2018": kang, "norman2019": d["norman2019"]}, "genome-v1")
    assert both.n_vars == 42815
    cfg = load_config(
        overrides={**TINY, "model": {**TINY["model"], "gene_embedding": "go"}, "data": {"balance_key": "dataset_id"}}
    )
    model = cj.models.CellJEPA(both, config=cfg)
    measured = [set(both.var_names) - set(both.uns["absent_genes"][k]) for k in ("kang2018", "norman2019")]
    # the encoder's genes: the union of what the two datasets measure, named in the vocabulary
    assert set(model.var_names) == measured[0] | measured[1]
    assert len(model.var_names) < 7000 < both.n_vars
    model.train(progress=False)
    z = model.get_latent_representation()
    assert z.shape == (both.n_obs, 8) and np.isfinite(z).all()
    # each dataset embeds on its own too, on its native genes
    zk = model.get_latent_representation(kang)
    assert zk.shape == (kang.n_obs, 8) and np.isfinite(zk).all()
