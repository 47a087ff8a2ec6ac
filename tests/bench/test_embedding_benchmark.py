"""The embedding benchmark end to end on the real CiteFuse cells (tiny settings), its resumption and its claim."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from _realdata import SHARED_DATA

pytest.importorskip("scib_metrics", reason="scib-metrics is optional: pip install 'celljepa[embedding]'")

from celljepa.bench import embedding as E  # noqa: E402

SETTINGS = {"jepa_steps": 30, "jepa_options": {"n_latent": 16}, "scvi_max_epochs": 2}


@pytest.fixture(scope="module")
def citefuse():
    return E.load_embedding_dataset("citefuse", SHARED_DATA)


def test_citefuse_is_labelled_from_proteins_with_its_counts(citefuse):
    assert citefuse.counts is not None and citefuse.counts.shape == citefuse.log.shape
    assert citefuse.label_key == "protein_cell_type" and citefuse.batch_key is None
    assert citefuse.log.obs["protein_cell_type"].nunique() >= 3
    # the log view is normalize_total + log1p of the same counts
    row = np.expm1(citefuse.log.X[0].toarray().ravel())
    counts = citefuse.counts[0].toarray().ravel()
    assert np.allclose(row / row.sum() * counts.sum(), counts, rtol=1e-4, atol=1e-3)


def test_run_scores_every_task_and_resumes(citefuse, tmp_path):
    methods = ["pca", "jepa"] + (["scvi"] if _has_scvi() else [])
    results = E.run_embedding_benchmark(
        [citefuse], tmp_path, seeds=[0], methods=methods, depths=[0.25], settings=SETTINGS, progress=False
    )
    assert len(results) == 2 * len(methods)
    files = sorted((tmp_path / "tasks" / "citefuse" / "seed0").glob("*.json"))
    assert sorted(f.stem for f in files) == sorted(f"{m}{s}" for m in methods for s in ("", "-refit25"))
    full = {r["method"]: r for r in results if r["kind"] == "full"}
    for r in full.values():
        assert set(r["scores"]) == {"1.0", "0.25"}
        assert 0 <= r["scores"]["1.0"]["bio_conservation"] <= 1
    # PCA of the same cells is deterministic given the seed: its full-depth score is reproduced
    stamp = {f: f.stat().st_mtime_ns for f in files}
    again = E.run_embedding_benchmark(
        [citefuse], tmp_path, seeds=[0], methods=methods, depths=[0.25], settings=SETTINGS, progress=False
    )
    assert {f: f.stat().st_mtime_ns for f in files} == stamp  # read back, not recomputed
    assert [r["scores"] for r in again] == [r["scores"] for r in results]
    # other settings: the JEPA tasks are computed again, PCA's digest changes too (settings are in it)
    changed = {**SETTINGS, "jepa_steps": 31}
    E.run_embedding_benchmark(
        [citefuse], tmp_path, seeds=[0], methods=["jepa"], depths=[0.25], settings=changed, progress=False
    )
    assert (tmp_path / "tasks/citefuse/seed0/jepa.json").stat().st_mtime_ns != stamp[
        tmp_path / "tasks/citefuse/seed0/jepa.json"
    ]
    summary = E.collect(results, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {"embedding_quality.md", "robustness.md", "scores.csv"}
    frame = pd.read_csv(tmp_path / "scores.csv")
    assert set(frame["mode"]) == {"full", "transfer", "refit"}
    assert any(r["method"] == "jepa" for r in summary["quality"])
    text = (tmp_path / "robustness.md").read_text()
    assert "| dataset | method | mode | 100% | 25% | seeds |" in text
    assert "| citefuse | jepa | transfer |" in text and "| citefuse | pca | refit |" in text


def _has_scvi() -> bool:
    try:
        import scvi  # noqa: F401
    except ImportError:
        return False
    return True


def _frame(jepa_loss: list[float], other_loss: list[float]) -> pd.DataFrame:
    rows = []
    for i, (lj, lo) in enumerate(zip(jepa_loss, other_loss, strict=True)):
        ds, seed = f"d{i // 3}", i % 3
        for method, loss in (("jepa", lj), ("pca", lo), ("scvi", lo)):
            rows.append(
                {"dataset": ds, "seed": seed, "method": method, "mode": "full", "depth": 1.0, "bio_conservation": 0.8}
            )
            for mode in ("transfer", "refit"):
                rows.append(
                    {
                        "dataset": ds,
                        "seed": seed,
                        "method": method,
                        "mode": mode,
                        "depth": 0.1,
                        "bio_conservation": 0.8 - loss,
                    }
                )
    return pd.DataFrame(rows)


def test_claim_needs_every_pair_with_six_pairs():
    ok = E._robustness_claim(_frame([0.01] * 6, [0.05] * 6), 0.1)
    assert ok["met"] == {"transfer": True, "refit": True}
    assert all(c["p_one_sided"] == pytest.approx(1 / 64) for c in ok["comparisons"])
    assert ok["modes"]["transfer"]["holm_p"] == pytest.approx(2 / 64)
    one_off = E._robustness_claim(_frame([0.01] * 5 + [0.06], [0.05] * 6), 0.1)
    assert one_off["met"] == {"transfer": False, "refit": False}
    assert one_off["comparisons"][0]["jepa_loses_less_in"] == 5
    worse = E._robustness_claim(_frame([0.1] * 6, [0.05] * 6), 0.1)
    assert worse["met"] == {"transfer": False, "refit": False}
    assert worse["comparisons"][0]["loss_difference"] == pytest.approx(0.05)
    assert json.dumps(ok)  # storable as JSON


def test_task_list_leaves_out_scvi_and_thinning_without_counts(citefuse):
    log_only = E.prepare_dataset("log", log=citefuse.log, label_key="protein_cell_type")
    tasks = E.task_list(log_only, [0, 1], E.METHODS, E.DEPTHS)
    assert {t["method"] for t in tasks} == {"jepa", "pca"} and {t["kind"] for t in tasks} == {"full"}
    full = E.task_list(citefuse, [0], E.METHODS, E.DEPTHS)
    assert len(full) == 3 * (1 + len(E.DEPTHS))


def test_encoder_selection_runs_on_held_out_cells_and_resumes(citefuse, tmp_path):
    small = {"jepa_steps": 20, "jepa_options": {"n_latent": 16}}
    candidates = {"default": small, "longer": {**small, "jepa_steps": 40}}
    results = E.run_encoder_selection([citefuse], tmp_path, candidates=candidates, seeds=[0], progress=False)
    train_rows, held = E.heldout_cells(citefuse)
    assert len(results) == 2 and all(
        r["heldout_cells"] == held.size == round(0.1 * citefuse.log.n_obs) for r in results
    )
    assert np.intersect1d(train_rows, held).size == 0 and train_rows.size + held.size == citefuse.log.n_obs
    for r in results:
        assert 0 <= r["retrieval"]["top1"] <= 1 and r["retrieval"]["n_cells"] == held.size
    stamp = (tmp_path / "selection/citefuse/longer/seed0.json").stat().st_mtime_ns
    again = E.run_encoder_selection([citefuse], tmp_path, candidates=candidates, seeds=[0], progress=False)
    assert (tmp_path / "selection/citefuse/longer/seed0.json").stat().st_mtime_ns == stamp
    assert again == results
    text = E.selection_markdown(E.selection_decision(results), results)
    assert "| citefuse | longer |" in text and "**Chosen:" in text


def _selection_results(gains: dict[str, list[float]], rank: float = 0.5) -> list[dict]:
    out = []
    for i, (dataset, gain) in enumerate(gains.items()):
        for seed in range(3):
            base = 0.3 + 0.01 * seed + 0.1 * i
            for name, top1 in (("default", base), ("change", base + gain[seed])):
                out.append(
                    {
                        "dataset": dataset,
                        "candidate": name,
                        "seed": seed,
                        "fit_seconds": 1.0,
                        "retrieval": {"top1": top1},
                        "effective_rank_fraction": rank,
                    }
                )
    return out


def test_selection_rule_needs_every_dataset_and_two_clear_gains():
    clear = [0.05, 0.06, 0.055]
    assert (
        E.selection_decision(_selection_results({"a": clear, "b": clear, "c": [0.01, -0.02, 0.03]}))["chosen"]
        == "change"
    )
    # below the default on one dataset: kept out
    assert (
        E.selection_decision(_selection_results({"a": clear, "b": clear, "c": [-0.01, -0.02, 0.0]}))["chosen"]
        == "default"
    )
    # a clear gain on one dataset only
    noisy = [0.05, -0.04, 0.02]
    assert E.selection_decision(_selection_results({"a": clear, "b": noisy, "c": noisy}))["chosen"] == "default"
    # collapsed: kept out whatever its score
    decision = E.selection_decision(_selection_results({"a": clear, "b": clear, "c": clear}, rank=0.1))
    assert decision["chosen"] == "default" and decision["candidates"]["change"]["collapsed"]


def test_a_selection_candidate_is_scored_by_the_script_on_datasets_with_counts(tmp_path, monkeypatch, capsys):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "embedding_quality.py"
    spec = importlib.util.spec_from_file_location("embedding_quality", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tiny = {
        "jepa_steps": 30,
        "jepa_options": {"n_latent": 16},
        "jepa_config": {"train": {"thin_views": 0.05}, "data": {"counts_layer": "counts"}},
    }
    monkeypatch.setitem(E.ENCODER_CANDIDATES, "count_views", tiny)
    common = ["--data-dir", str(SHARED_DATA), "--seeds", "0", "--depths", "0.25", "--no-progress"]
    with pytest.raises(SystemExit):
        module.main(["--candidate", "count_views", "--jepa-steps", "5", "--out", str(tmp_path / "x"), *common])
    assert "--candidate fixes the JEPA settings" in capsys.readouterr().err
    out = tmp_path / "count_views"
    args = ["--candidate", "count_views", "--methods", "jepa", "pca", "--datasets", "citefuse", "pbmc68k_reduced"]
    assert module.main([*args, "--out", str(out), *common]) == 0
    assert "count_views needs counts: leaving out pbmc68k_reduced" in capsys.readouterr().err
    done = sorted(p.relative_to(out / "tasks").as_posix() for p in (out / "tasks").rglob("*.json"))
    assert done == sorted(f"citefuse/seed0/{m}{s}.json" for m in ("jepa", "pca") for s in ("", "-refit25"))
    jepa = json.loads((out / "tasks" / "citefuse" / "seed0" / "jepa.json").read_text())
    # the candidate's settings are in the digest: the same task under the default settings differs
    ds = E.load_embedding_dataset("citefuse", SHARED_DATA)
    task = {"dataset": "citefuse", "seed": 0, "method": "jepa", "kind": "full", "depth": 1.0}
    default = {"jepa_steps": None, "jepa_options": {}, "scvi_max_epochs": None}
    from celljepa.bench.embedding.tasks import _payload, digest_of

    assert jepa["digest"] == digest_of(_payload(ds, task, {**default, **tiny}, [0.25]))
    assert jepa["digest"] != digest_of(_payload(ds, task, default, [0.25]))
    assert "| citefuse | jepa | transfer |" in (out / "robustness.md").read_text()
