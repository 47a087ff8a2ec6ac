"""Every public function of cj.pp / cj.tl / cj.pl has the scanpy shape and a complete docstring."""

from __future__ import annotations

import inspect

import pytest
from anndata import AnnData

import celljepa as cj

PUBLIC = [(mod, name) for mod in (cj.pp, cj.tl, cj.pl) for name in mod.__all__]
# Plots of results (metrics files) rather than of an AnnData.
RESULT_PLOTS = {"benchmark", "jepa_training", "verdict", "where_jepa_helps"}
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
