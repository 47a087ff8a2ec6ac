"""The README's marked Python examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

README = Path(__file__).resolve().parents[1] / "README.md"


def _marked_blocks() -> list[str]:
    return re.findall(r"<!-- readme-test -->\s*```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_readme_jepa_example_runs(tmp_path, monkeypatch, capsys):
    blocks = _marked_blocks()
    assert blocks and "cj.tl.jepa_embed(adata" in blocks[0]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)  # noqa: S102 - the README is part of the repository
    adata = namespace["adata"]
    assert adata.obsm["X_jepa"].shape == (adata.n_obs, 128)
    assert "X_umap" in adata.obsm
    rank = float(capsys.readouterr().out.strip().splitlines()[-1])
    assert rank == adata.uns["jepa"]["diagnostics"]["effective_rank"] > 0.25 * 128


def test_readme_transition_example_runs(tmp_path, monkeypatch, capsys):
    blocks = _marked_blocks()
    assert len(blocks) == 2 and "cj.tl.predict_perturbation(adata, model" in blocks[1]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[1], str(README), "exec"), namespace)  # noqa: S102 - the README is part of the repository
    pred, model = namespace["pred"], namespace["model"]
    n_ctrl = int(namespace["adata"].obs["is_control"].sum())
    assert pred.n_obs == n_ctrl and pred.obsm["X_jepa"].shape == (n_ctrl, 128)
    assert list(pred.var_names) == list(model.space_.genes)
    assert pred.uns["predict_perturbation"]["tokens"] == ["gene:KLF1", "gene:FOXL2"]
    assert "AnnData object with n_obs" in capsys.readouterr().out
