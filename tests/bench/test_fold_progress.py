"""Progress inside a fold: score_fold names its steps, and the benchmark's second bar shows them on a terminal only."""

from __future__ import annotations

import io
import os
import threading

import pytest

from celljepa.bench import demo_datasets
from celljepa.bench.evaluate import EvalConfig, FoldStepsBar, reporting_steps, score_fold
from celljepa.models.baselines import MeanShift, NoChange
from celljepa.models.transition import JEPATransition, TransitionConfig
from celljepa.splits import make_split_folds

FAST = EvalConfig(n_bootstrap=200, n_permutations=100)
TWIN = TransitionConfig(max_steps=10, n_hidden=32, action_dim=16, set_size=32, eval_every=5, patience=2)
STEPS = [
    "evaluation space",
    "no_change",
    "mean_shift",
    "pca_set",  # a method handed in is fitted once (no model seed)
    "scoring test",
    "effects",
    "scoring validation + CIs",
    "done",
]


@pytest.fixture(scope="module")
def fold():
    adata = demo_datasets()["sciplex_gxe"]
    return adata, make_split_folds(adata.obs, "S2_unseen_context", dataset_id="sciplex_gxe", n_folds=3)[0]


def _methods():
    return [NoChange(), MeanShift(), JEPATransition("set", TWIN, space="pca")]


def test_score_fold_names_every_step_in_order(fold):
    adata, f = fold
    heard = []
    score_fold(adata, f, _methods(), FAST, on_step=lambda step, done, total: heard.append((step, done, total)))
    assert [s for s, _, _ in heard] == STEPS
    assert [d for _, d, _ in heard] == list(range(len(STEPS)))  # each step begins after the ones before it
    assert all(d < t for _, d, t in heard[:-1]) and heard[-1][1:] == (len(STEPS) - 1, len(STEPS) - 1)
    assert heard[1][2] == len(STEPS) - 1  # the total is known once the fold's methods are


def test_the_steps_reach_a_caller_through_the_context(fold):
    adata, f = fold
    heard, mine = [], []
    with reporting_steps(lambda step, done, total: heard.append(step)):
        score_fold(adata, f, [NoChange()], FAST)
        score_fold(adata, f, [NoChange()], FAST, on_step=lambda step, done, total: mine.append(step))
    score_fold(adata, f, [NoChange()], FAST)  # outside the block: told nobody
    one = ["evaluation space", "no_change", "scoring test", "effects", "scoring validation + CIs", "done"]
    assert heard == one and mine == one


def _drain(fd: int, into: bytearray, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            return
        if not chunk:
            return
        into.extend(chunk)


def test_the_fold_bar_shows_the_steps_on_a_terminal_only(fold):
    adata, f = fold
    master, slave = os.openpty()  # a real terminal
    tty = os.fdopen(slave, "w", encoding="utf-8")
    seen, stop = bytearray(), threading.Event()
    reader = threading.Thread(target=_drain, args=(master, seen, stop), daemon=True)
    reader.start()
    try:
        bar = FoldStepsBar(True, position=0, file=tty)
        with reporting_steps(bar):
            score_fold(adata, f, _methods(), FAST)
        bar.close()
        tty.flush()
        hidden = FoldStepsBar(False, position=0, file=tty)  # --no-progress: nothing, on a terminal too
        hidden("ridge", 0, 3)
        hidden.close()
        tty.flush()
    finally:
        tty.close()
        stop.set()
        reader.join(timeout=5)
        os.close(master)
    text = seen.decode("utf-8", "replace")
    for step in ("evaluation space", "pca_set", "scoring test", "scoring validation + CIs"):
        assert step in text, step
    assert "ridge" not in text
    log = io.StringIO()  # a batch log (no terminal): the steps are not printed
    quiet = FoldStepsBar(True, position=0, file=log)
    with reporting_steps(quiet):
        score_fold(adata, f, [NoChange()], FAST)
    quiet.close()
    assert log.getvalue() == ""
