"""The scib-metrics wiring of the embedding benchmark, on tiny cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("scib_metrics", reason="scib-metrics is optional: pip install 'celljepa[embedding]'")

from celljepa._errors import InputError  # noqa: E402
from celljepa.eval.scib import BATCH_METRICS, BIO_METRICS, embedding_scores  # noqa: E402

GROUPS = np.array(["a", "b", "c"])


def _clusters(n_per: int = 80, sep: float = 8.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(GROUPS, n_per)
    z = rng.normal(size=(labels.size, 6))
    z[:, :3] += sep * (labels[:, None] == GROUPS)
    return z, labels


def test_separated_labels_score_near_one_and_noise_scores_low():
    z, labels = _clusters()
    good = embedding_scores(z, labels)
    assert set(good) == {*BIO_METRICS, "bio_conservation"}
    assert good["nmi"] == pytest.approx(1.0) and good["ari"] == pytest.approx(1.0)
    assert good["clisi"] == pytest.approx(1.0, abs=1e-3)
    assert good["bio_conservation"] > 0.85
    noise = np.random.default_rng(1).normal(size=z.shape)
    bad = embedding_scores(noise, labels)
    assert bad["bio_conservation"] < good["bio_conservation"] - 0.4
    assert bad["ari"] < 0.1
    assert good["bio_conservation"] == pytest.approx(np.mean([good[m] for m in BIO_METRICS]))


def test_scores_follow_the_labels_not_the_embedding_alone():
    z, labels = _clusters()
    shuffled = np.random.default_rng(2).permutation(labels)
    assert embedding_scores(z, shuffled)["bio_conservation"] < embedding_scores(z, labels)["bio_conservation"] - 0.4


@pytest.mark.extended
def test_batch_metrics_reward_mixed_batches():
    z, labels = _clusters(n_per=60)
    batch = np.tile(["b1", "b2"], z.shape[0] // 2)
    mixed = embedding_scores(z, labels, batch, x_pre=z)
    split = z.copy()
    split[batch == "b2", 3] += 10.0  # the batches pulled apart within every label
    apart = embedding_scores(split, labels, batch, x_pre=z)
    assert set(mixed) >= {*BATCH_METRICS, "batch_correction"}
    assert mixed["ilisi"] > apart["ilisi"] + 0.3
    assert mixed["silhouette_batch"] > apart["silhouette_batch"]
    assert mixed["batch_correction"] > apart["batch_correction"]
    # batch only (no labels): the bio metrics are left out
    only = embedding_scores(z, None, batch, x_pre=z)
    assert "bio_conservation" not in only and "ilisi" in only


def test_bad_inputs_are_named():
    z, labels = _clusters(n_per=10)
    with pytest.raises(InputError, match="one label per cell"):
        embedding_scores(z, labels[:-1])
    with pytest.raises(InputError, match="at least 2 distinct labels"):
        embedding_scores(z, np.zeros(len(labels)))
    with pytest.raises(InputError, match="x_pre"):
        embedding_scores(z, labels, np.tile(["x", "y"], 15))
    with pytest.raises(InputError, match="nothing to score"):
        embedding_scores(z, None)
    z[0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        embedding_scores(z, labels)
