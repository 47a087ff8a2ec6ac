"""The exact sign-flip test at its largest exact size (n = 20 conditions, 2^20 sign patterns).

celljepa counts the patterns by meeting in the middle (sums of each half, a sorted search) against the
reference that enumerates every pattern in numpy; both give the same count.
"""

from __future__ import annotations

import numpy as np
import pytest

from celljepa.eval.verdict import EXACT_MAX_N, enumerated_sign_flip_hits, exact_sign_flip_hits


@pytest.fixture(scope="module")
def diffs() -> tuple[np.ndarray, float]:
    d = np.random.default_rng(0).normal(0.1, 1.0, EXACT_MAX_N)
    return d, abs(d.sum()) - 1e-9


@pytest.mark.benchmark(group="sign-flip-exact-n20")
def test_meet_in_the_middle(benchmark, diffs):
    d, t = diffs
    hits = benchmark(exact_sign_flip_hits, d, t)
    assert hits == enumerated_sign_flip_hits(d, t)


@pytest.mark.benchmark(group="sign-flip-exact-n20")
def test_every_pattern_enumerated(benchmark, diffs):
    d, t = diffs
    hits = benchmark.pedantic(enumerated_sign_flip_hits, args=(d, t), rounds=3, iterations=1)
    assert 2 <= hits <= 2**EXACT_MAX_N
