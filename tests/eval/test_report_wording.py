"""The reports' words: counts agree with their nouns, and what "held out" means is said in plain words.

The fold and benchmark reports are read from real runs on the demo (Norman 2019 has one context; sci-Plex-GxE S2
holds whole contexts out).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import celljepa.eval.report as report_pkg
from celljepa.bench import benchmark, demo_datasets
from celljepa.bench.evaluate import EvalConfig, score_fold
from celljepa.bench.run import write_fold_run
from celljepa.eval.report import dataset_summary, held_out_controls, plural
from celljepa.models.baselines import MeanShift, NoChange
from celljepa.splits import make_split_folds

FAST = EvalConfig(n_bootstrap=200, n_permutations=100)
#: a count followed by a plural noun, the number being 1 ("1 folds", "1 contexts", "1 test conditions")
ONE_PLURAL = re.compile(
    r"(?<![\d.,])1 (?:test |control |split )?(?:fold|context|condition|perturbation|cell|gene|"
    r"seed|run|row|comparison|parameter|core|HVG|PC)s\b"
)


def test_plural():
    assert plural(1, "fold") == "1 fold" and plural(3, "fold") == "3 folds" and plural(0, "context") == "0 contexts"
    assert plural(1, "test condition") == "1 test condition" and plural(2, "split seed") == "2 split seeds"
    assert plural(3375, "cell", sep=",") == "3,375 cells" and plural(1, "class", "classes") == "1 class"
    assert plural(2, "class", "classes") == "2 classes"
    assert plural("–", "condition") == "– conditions"  # not a count: the plural
    import numpy as np

    assert plural(np.int64(1), "fold") == "1 fold" and plural(True, "fold") == "True folds"
    # the pattern the reports are checked with finds what the newcomer found
    assert ONE_PLURAL.search("(1 folds × 1 split seed)") and ONE_PLURAL.search("1 contexts, 100 control cells")
    assert not ONE_PLURAL.search("11 folds, 0.1 cells, 21 contexts, 1 fold")


def test_no_writer_hedges_a_plural():
    """No report writer prints ``fold(s)``: every count goes through :func:`plural`."""
    folder = Path(report_pkg.__file__).parent
    for path in folder.glob("*.py"):
        assert "(s)" not in path.read_text(encoding="utf-8"), path.name


@pytest.fixture(scope="module")
def demo():
    return demo_datasets()


def _fold_report(adata, fold, out: Path) -> str:
    result = score_fold(adata, fold, [NoChange(), MeanShift()], FAST)
    write_fold_run(result, adata, out, config={"methods": result.params})
    return (out / "report.md").read_text()


def test_fold_report_of_a_one_context_dataset(demo, tmp_path):
    adata = demo["norman2019"]
    assert adata.obs["context_id"].nunique() == 1
    fold = make_split_folds(adata.obs, "S3_unseen_combo", dataset_id="norman2019")[0]
    text = _fold_report(adata, fold, tmp_path)
    assert ", 1 context, " in text and "1 contexts" not in text
    assert not ONE_PLURAL.search(text), ONE_PLURAL.search(text).group(0)
    assert held_out_controls("S3_unseen_combo", transductive=False) in text
    assert "- Control cells: none held out. Every test condition's context is seen in training" in text
    assert "Inputs only" not in text and "none held out\n" not in text


def test_fold_report_says_what_held_out_controls_are(demo, tmp_path):
    adata = demo["sciplex_gxe"]
    fold = make_split_folds(adata.obs, "S2_unseen_context", dataset_id="sciplex_gxe", n_folds=3)[0]
    text = _fold_report(adata, fold, tmp_path)
    assert (
        "- Held-out contexts' control cells: used only as the inputs predictions start from (inductive): no method, "
        "JEPA pretraining included, fits anything on them." in text
    )
    assert "held out whole contexts (their control cells are used only as the inputs predictions start from)" in text
    transductive = held_out_controls("S2_unseen_context", transductive=True)
    assert "fitted on (unlabeled) by every method alike" in transductive and "`--transductive`" in transductive


def test_benchmark_report_of_one_fold(demo, tmp_path):
    benchmark(
        {"norman2019": demo["norman2019"]},
        {"norman2019": {"S3_unseen_combo": 5}},
        out=tmp_path,
        progress=False,
        max_folds=1,
    )
    text = (tmp_path / "report.md").read_text()
    assert "### S3_unseen_combo (1 fold × 1 split seed, " in text
    assert "\n1 fold in " in text and dataset_summary(demo["norman2019"].obs, demo["norman2019"].n_vars) in text
    assert ", 1 context, " in text
    assert not ONE_PLURAL.search(text), ONE_PLURAL.search(text).group(0)
    assert "a held-out context's control cells are used only as the inputs its predictions start from" in text
