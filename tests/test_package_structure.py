"""Every public function of cj.pp / cj.tl / cj.pl has the scanpy shape and a complete docstring."""

from __future__ import annotations

import inspect

import pytest
from anndata import AnnData

import celljepa as cj

PUBLIC = [(mod, name) for mod in (cj.pp, cj.tl, cj.pl) for name in mod.__all__]
# Plots of results (metrics files) rather than of an AnnData.
RESULT_PLOTS = {
    "benchmark",
    "dropout_robustness",
    "jepa_training",
    "predicted_vs_observed",
    "verdict",
    "where_jepa_helps",
}
# (RESULT_PLOTS take a run's result, or the predictions file of a fold, not the AnnData of the cells.)
# Functions that return a new AnnData (predicted cells, other genes) rather than annotating the input.
NEW_ANNDATA = {"predict_perturbation", "harmonize_genes"}  # harmonize_genes: the genes change
# Functions that return a fitted model and leave the AnnData as it is.
RETURNS_MODEL = {"fit_transition"}


@pytest.mark.parametrize(("module", "name"), PUBLIC, ids=[f"{m.__name__}.{n}" for m, n in PUBLIC])
def test_public_function_shape(module, name):
    func = getattr(module, name)
    sig = inspect.signature(func)
    params = list(sig.parameters.values())
    if name not in RESULT_PLOTS:
        assert params[0].name == "adata", "AnnData comes first"
        assert params[0].annotation in (AnnData, "AnnData", "AnnData | None")
    positional = [p for p in params[1:] if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert len(positional) <= 2, "everything after adata and its main arguments is keyword-only"
    doc = inspect.getdoc(func)
    assert doc, f"{name} has no docstring"
    for section in ("Parameters", "Returns", "Examples"):
        assert section in doc, f"{name} docstring lacks {section}"
    for p in params:
        assert p.name in doc, f"{name} docstring does not describe `{p.name}`"
    if module in (cj.pp, cj.tl) and name != "validate" and name not in NEW_ANNDATA | RETURNS_MODEL:
        assert "copy" in sig.parameters and sig.parameters["copy"].default is False


def test_private_module_per_function():
    for module, name in PUBLIC:
        func = getattr(module, name)
        assert func.__module__.rsplit(".", 1)[-1].startswith("_"), f"{name} should live in a private module"


def test_top_level_api():
    for name in ("pp", "tl", "pl", "models", "datasets", "settings", "ContractError", "__version__"):
        assert hasattr(cj, name)
    assert issubclass(cj.ContractError, cj.CelljepaError)


# --- scanpy manners: which matrix a function reads, in-place returns, loaders only in cj.datasets ---------------

# Every public cj.pp / cj.tl function, classified by the matrix it reads. A new function must be added to one of
# these, so the rule below cannot be skipped by omission.
READS_LAYER = {"normalize", "jepa_embed", "fit_transition", "predict_perturbation"}  # X or a layer: `layer=`
READS_REP = {"edistance", "etest"}  # read an embedding: `use_rep=`
READS_NO_MATRIX = {"standardize", "make_splits", "validate", "harmonize_genes"}  # obs only / the whole contract
DEPRECATED_ALIASES = {"obsm_key": "use_rep", "counts_layer": "layer"}


def _pp_tl():
    return [(m, n) for m in (cj.pp, cj.tl) for n in m.__all__]


def test_every_pp_tl_function_is_classified():
    names = {n for _, n in _pp_tl()}
    classified = READS_LAYER | READS_REP | READS_NO_MATRIX
    assert names == classified, f"unclassified: {sorted(names - classified)}, stale: {sorted(classified - names)}"


@pytest.mark.parametrize(
    "name",
    sorted(READS_LAYER | READS_REP),
)
def test_matrix_readers_take_layer_or_use_rep(name):
    func = getattr(cj.tl, name, None) or getattr(cj.pp, name)
    params = inspect.signature(func).parameters
    want = "use_rep" if name in READS_REP else "layer"
    assert want in params, f"{name} reads a matrix but has no `{want}=`"
    for old, new in DEPRECATED_ALIASES.items():
        if old in params:  # only as a deprecated, keyword-only alias defaulting to None
            p = params[old]
            assert p.kind is p.KEYWORD_ONLY and p.default is None, f"{name}({old}=) must be a keyword-only alias"
            assert new in params and "Deprecated alias" in inspect.getdoc(func), f"{name}: document {old} as deprecated"


def test_deprecated_aliases_warn_and_name_the_new_keyword(k562):
    with pytest.warns(FutureWarning, match="use_rep="):
        cj.tl.edistance(k562, "perturbation_id", obsm_key="X_pca", groups=["control", "KLF1"], copy=True)
    with pytest.warns(FutureWarning, match="use_rep="):
        cj.tl.etest(k562, "perturbation_id", "control", obsm_key="X_pca", groups=["KLF1"], n_permutations=9,
                    progress=False, copy=True)  # fmt: skip
    counts = cj.datasets.simulate(60, 20, 2, 1, seed=0, preprocessed=False)
    with pytest.warns(FutureWarning, match="layer="):
        cj.pp.normalize(counts, counts_layer="counts", copy=True)


def _in_place_calls(k562):
    """One small real call per in-place cj.pp / cj.tl function with a `copy` parameter (the demo's K562 cells)."""
    raw = cj.datasets.simulate(60, 20, 2, 1, seed=0, preprocessed=False)
    labels = k562.obs["perturbation_id"].astype(str)
    keep = ["control", *sorted(set(labels) - {"control"})[:5]]  # six whole groups: enough for 2-fold splits
    small = k562[labels.isin(keep).to_numpy()].copy()
    return {
        "normalize": (raw, {}),
        "standardize": (
            small.copy(),
            {"perturbation_key": "perturbation_id", "control_values": "control", "context_key": "context_id"},
        ),
        "make_splits": (small.copy(), {"n_folds": 2}),
        "edistance": (small.copy(), {"groupby": "perturbation_id", "control": "control", "n_resamples": 1}),
        "etest": (
            small.copy(),
            {"groupby": "perturbation_id", "control": "control", "n_permutations": 9, "progress": False},
        ),
        "jepa_embed": (
            small.copy(),
            {"n_latent": 4, "max_steps": 2, "batch_size": 64, "mask": "random", "progress": False},
        ),  # fmt: skip
    }


def test_in_place_functions_return_none_and_copy_returns_anndata(k562):
    with_copy = {n for m, n in _pp_tl() if "copy" in inspect.signature(getattr(m, n)).parameters}
    calls = _in_place_calls(k562)
    assert with_copy == set(calls), f"add a small call for {sorted(with_copy - set(calls))}"
    for name, (adata, kwargs) in calls.items():
        func = getattr(cj.tl, name, None) or getattr(cj.pp, name)
        ret = inspect.signature(func).return_annotation
        assert ret in ("AnnData | None", AnnData | None), f"{name} should be annotated -> AnnData | None"
        out = func(adata.copy(), copy=True, **kwargs)
        assert isinstance(out, AnnData), f"{name}(copy=True) must return the modified copy"
        assert func(adata, **kwargs) is None, f"{name} in place must return None"


def test_datasets_holds_loaders_only():
    returns_data = {"AnnData", "Path", "FeatureSet", "dict[str, list[str]]", "list[str]", "anndata.AnnData"}
    for name in cj.datasets.__all__:
        obj = getattr(cj.datasets, name)
        assert inspect.isfunction(obj), f"cj.datasets.{name} is not a loader function"
        ret = inspect.signature(obj).return_annotation
        assert ret in returns_data or getattr(ret, "__name__", None) in returns_data, f"{name} returns {ret!r}"
    for moved in ("FeatureSet", "build_feature_set", "combine_datasets", "gene_keys", "gene_presence"):
        assert moved not in cj.datasets.__all__ and hasattr(cj.pp, moved)
        with pytest.warns(FutureWarning, match=f"cj.pp.{moved}"):
            assert getattr(cj.datasets, moved) is getattr(cj.pp, moved)


@pytest.mark.parametrize("name", cj.pl.__all__)
def test_plots_have_a_return_annotation(name):
    sig = inspect.signature(getattr(cj.pl, name))
    assert sig.return_annotation is not inspect.Signature.empty, f"cj.pl.{name} has no return annotation"
