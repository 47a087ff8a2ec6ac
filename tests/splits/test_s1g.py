"""S1g_unseen_genes: no token of a test condition in any training or validation condition (real and synthetic data)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from _realdata import read_quiet

from celljepa._errors import SplitError
from celljepa.data.contract import S1, S1G, split_tokens
from celljepa.splits import FOLD_KEYS, OPTIONAL_FOLD_KEYS, fold_roles, make_split_folds, read_split, write_split_files


@pytest.fixture(scope="module")
def norman_obs() -> pd.DataFrame:
    """The contract columns of the demo's norman2019 study (K562 CRISPRa: singles and pairs)."""
    from celljepa.bench.run import demo_datasets

    return demo_datasets()["norman2019"].obs.copy()


@pytest.fixture(scope="module")
def papalexi_obs(ingested) -> pd.DataFrame:
    """The contract columns of Papalexi 2021 (THP-1 CRISPR knockouts, single genes only)."""
    return read_quiet(ingested["papalexi2021"]).obs.copy()


def _perturbations(obs: pd.DataFrame) -> pd.DataFrame:
    """One row per perturbation id: its tokens (a frozenset)."""
    pert = obs.loc[~obs["is_control"].to_numpy(dtype=bool), ["perturbation_id", "perturbation_tokens"]].astype(str)
    pert = pert.drop_duplicates().set_index("perturbation_id")
    assert pert.index.is_unique
    return pert["perturbation_tokens"].map(lambda s: frozenset(split_tokens(s)))


def _ids(obs: pd.DataFrame, cells) -> set[str]:
    sub = obs.loc[list(cells)]
    return set(sub.loc[~sub["is_control"].to_numpy(dtype=bool), "perturbation_id"].astype(str))


def check_s1g(obs: pd.DataFrame, folds: list[dict]) -> dict:
    """Every rule of S1g on ``folds``; returns the per-fold perturbation counts (test, val, train, unused)."""
    tokens_of = _perturbations(obs)
    all_tokens = set().union(*tokens_of)
    controls = set(obs.index[obs["is_control"].to_numpy(dtype=bool)])
    test_fold_of_token: dict[str, int] = {}
    tested: Counter = Counter()
    counts = []
    for fold in folds:
        assert set(FOLD_KEYS) | set(OPTIONAL_FOLD_KEYS) == set(fold)
        tr, va, te = (set(fold[f"{r}_groups"]) for r in ("train", "val", "test"))
        assert tr | va | te == all_tokens and not (tr & va) and not (tr & te) and not (va & te)
        for tok in te:
            test_fold_of_token[tok] = fold["fold"]
        cells = {r: set(fold[f"{r}_cells"]) for r in ("train", "val", "test")}
        assert not (cells["train"] & cells["val"]) and not (cells["train"] & cells["test"])
        assert not (cells["val"] & cells["test"])
        assert controls <= cells["train"]
        ids = {r: _ids(obs, c) for r, c in cells.items()}
        # the rule: no token of a test condition in any training or validation condition
        seen_tokens = set().union(*(tokens_of[p] for p in ids["train"] | ids["val"]))
        test_tokens = set().union(*(tokens_of[p] for p in ids["test"]))
        assert ids["test"] and ids["train"]
        assert not test_tokens & seen_tokens
        # each role's perturbations have all their tokens in that role's token set
        for role, toks in (("train", tr), ("val", va), ("test", te)):
            assert all(tokens_of[p] <= toks for p in ids[role]), role
        # the unused perturbations are exactly those whose tokens mix roles; their cells are in no list
        mixed = {p for p, t in tokens_of.items() if not (t <= tr or t <= va or t <= te)}
        assert set(fold["unused_perturbations"]) == mixed
        assert fold["unused_perturbations"] == sorted(mixed)
        assert ids["train"] | ids["val"] | ids["test"] | mixed == set(tokens_of.index)
        unused_cells = set(obs.index[obs["perturbation_id"].astype(str).isin(mixed).to_numpy()])
        assert cells["train"] | cells["val"] | cells["test"] | unused_cells == set(obs.index)
        roles = pd.Series(fold_roles(fold, obs.index), index=obs.index)
        assert set(roles.index[roles == "unused"]) == unused_cells
        tested.update(ids["test"])
        counts.append((len(ids["test"]), len(ids["val"]), len(ids["train"]), len(mixed)))
    # the folds partition the usable perturbations: those whose tokens are test tokens of one fold
    usable = {p for p, t in tokens_of.items() if len({test_fold_of_token[x] for x in t}) == 1}
    assert set(tested) == usable and all(n == 1 for n in tested.values())
    return {"counts": counts, "usable": usable}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n_folds", [3, 5])
def test_s1g_norman2019_holds_out_genes(norman_obs, seed, n_folds):
    folds = make_split_folds(norman_obs, S1G, dataset_id="norman2019", n_folds=n_folds, seed=seed)
    assert [f["fold"] for f in folds] == list(range(n_folds)) and all(f["split_name"] == S1G for f in folds)
    result = check_s1g(norman_obs, folds)
    tokens_of = _perturbations(norman_obs)
    pairs = {p for p, t in tokens_of.items() if len(t) == 2}
    singles = set(tokens_of.index) - pairs
    assert singles <= result["usable"]  # a single gene is always a test perturbation once
    assert result["usable"] & pairs and pairs - result["usable"]  # some pairs are held out, some never are
    assert all(unused > 0 for *_, unused in result["counts"])
    # the same metadata and seed give the same folds, whatever the row order
    shuffled = norman_obs.sample(frac=1.0, random_state=seed)
    assert make_split_folds(shuffled, S1G, dataset_id="norman2019", n_folds=n_folds, seed=seed) == folds


def test_s1g_is_stricter_than_s1_on_norman2019(norman_obs):
    """S1 may test a pair whose genes are trained on; S1g never does."""
    tokens_of = _perturbations(norman_obs)
    leaky = 0
    for fold in make_split_folds(norman_obs, S1, dataset_id="norman2019", n_folds=3, seed=0):
        seen = set().union(*(tokens_of[p] for p in fold["train_groups"] + fold["val_groups"]))
        leaky += sum(bool(tokens_of[p] & seen) for p in fold["test_groups"])
    assert leaky > 0
    a = make_split_folds(norman_obs, S1G, dataset_id="norman2019", n_folds=3, seed=0)
    b = make_split_folds(norman_obs, S1G, dataset_id="norman2019", n_folds=3, seed=1)
    assert [f["test_groups"] for f in a] != [f["test_groups"] for f in b]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_s1g_papalexi_single_genes_equals_s1(papalexi_obs, seed):
    folds = make_split_folds(papalexi_obs, S1G, dataset_id="papalexi2021", n_folds=5, seed=seed)
    result = check_s1g(papalexi_obs, folds)
    assert all(unused == 0 for *_, unused in result["counts"])  # no combinations: nothing mixes roles
    assert len(result["usable"]) == 25
    # without combinations S1g is S1 with groups named by token (gene:X sorts as X: the same assignment)
    s1 = make_split_folds(papalexi_obs, S1, dataset_id="papalexi2021", n_folds=5, seed=seed)
    for g, p in zip(folds, s1, strict=True):
        for role in ("train", "val", "test"):
            assert [t.split(":", 1)[1] for t in g[f"{role}_groups"]] == p[f"{role}_groups"]
            assert g[f"{role}_cells"] == p[f"{role}_cells"]


def test_s1g_devel_multi_context(devel_obs):
    """Four contexts, singles and pairs: the rule holds in every context at once."""
    check_s1g(devel_obs, make_split_folds(devel_obs, S1G, dataset_id="devel", n_folds=4, seed=0))


def test_s1g_drug_tokens_and_files(obs_factory, tmp_path):
    """Tokens are tokens: drug combinations split like gene pairs; unused_perturbations survives a file round trip."""
    obs = obs_factory(
        [("c1", "control", 4)] + [("c1", x, 3) for x in ("A", "B", "C", "D", "E", "F", "A+B", "C+D", "A+E", "B+F")]
    )
    obs["perturbation_tokens"] = obs["perturbation_tokens"].str.replace("gene:", "drug:")
    folds = make_split_folds(obs, S1G, dataset_id="toy", n_folds=3, seed=4)
    check_s1g(obs, folds)
    assert all(t.startswith("drug:") for f in folds for t in f["test_groups"])
    paths = write_split_files(folds, tmp_path / "a")
    again = write_split_files(make_split_folds(obs, S1G, dataset_id="toy", n_folds=3, seed=4), tmp_path / "b")
    assert [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths] == [
        hashlib.sha256(p.read_bytes()).hexdigest() for p in again
    ]
    assert paths[0].name == f"toy.{S1G}.seed4.fold0.json"
    for fold, path in zip(folds, paths, strict=True):
        assert read_split(path) == fold and "unused_perturbations" in json.loads(path.read_text())
    # the other splits' files keep their exact keys (stored files stay byte-identical)
    s1 = write_split_files(make_split_folds(obs, S1, dataset_id="toy", n_folds=3), tmp_path / "c")
    assert sorted(json.loads(s1[0].read_text())) == sorted(FOLD_KEYS)


def test_s1g_too_few_tokens(obs_factory):
    obs = obs_factory([("c1", "control", 3), ("c1", "A", 2), ("c1", "B", 2), ("c1", "A+B", 2)])
    with pytest.raises(SplitError) as exc:
        make_split_folds(obs, S1G, dataset_id="t", n_folds=3)
    msg = str(exc.value)
    assert "2 group(s) (perturbation tokens)" in msg and "gene:A, gene:B" in msg
    assert "--folds 2 or fewer" in msg


def test_s1g_fold_without_a_test_perturbation(obs_factory):
    """Genes measured only in pairs with genes of other folds leave a fold nothing to test: refused, with the fix."""
    obs = obs_factory([("c1", "control", 3), ("c1", "A+B", 2), ("c1", "C+D", 2), ("c1", "E+F", 2), ("c1", "G", 2)])
    with pytest.raises(SplitError) as exc:
        make_split_folds(obs, S1G, dataset_id="t", n_folds=7, val_fraction=0.0)
    msg = str(exc.value)
    assert "has no test perturbation" in msg and "Use fewer folds" in msg and S1 in msg


def test_s1g_cli(ingested, tmp_path):
    from celljepa.cli import main

    assert (
        main(
            [
                "splits",
                str(ingested["perturbench_devel"]),
                "--split",
                S1G,
                "--seed",
                "1",
                "--folds",
                "4",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    files = sorted(tmp_path.glob(f"perturbench_devel.{S1G}.seed1.fold*.json"))
    assert len(files) == 4
    obs = read_quiet(ingested["perturbench_devel"]).obs
    check_s1g(obs, [read_split(f) for f in files])


def test_s1g_fold_roles_on_anndata_columns(norman_obs):
    fold = make_split_folds(norman_obs, S1G, dataset_id="norman2019", n_folds=3, seed=0)[1]
    counts = pd.Series(fold_roles(fold, norman_obs.index)).value_counts()
    n_unused = int(norman_obs["perturbation_id"].astype(str).isin(fold["unused_perturbations"]).sum())
    assert counts["unused"] == n_unused > 0
    assert counts["train"] + counts["val"] + counts["test"] + counts["unused"] == len(norman_obs)
    assert np.isin(fold["test_cells"], norman_obs.index).all()
