"""Tests of celljepa.splits: group disjointness, fold coverage, leakage rules, determinism, errors."""

from __future__ import annotations

import doctest
import hashlib
import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest

import celljepa.splits as splits
from celljepa._errors import InputError, SplitError
from celljepa.data.contract import S1, S1G, S2, S3, n_tokens, split_tokens
from celljepa.splits import (
    SPLIT_NAMES,
    check_split_name,
    fold_roles,
    make_split_folds,
    read_split,
    write_split_files,
)

DEVEL_SINGLES_K562 = 18
DEVEL_DOUBLES = 15
DEVEL_ELIGIBLE = {"KLF1+MAP2K6", "KLF1+TGFBR2", "MAP2K3+MAP2K6", "MAP2K3+SLC38A2", "MAPK1+TGFBR2"}


def _group_of_cell(obs: pd.DataFrame, split_name: str) -> pd.Series:
    return obs["context_id"] if split_name == S2 else obs["perturbation_id"]


def _check_fold_structure(obs: pd.DataFrame, folds: list[dict], split_name: str) -> None:
    """Disjointness of groups and cells; cells of a group sit in the role of that group; coverage."""
    all_cells = set(obs.index)
    test_count: Counter = Counter()
    groups_universe = None
    for fold in folds:
        assert set(fold) == set(splits.FOLD_KEYS)
        tr, va, te = (set(fold[f"{r}_groups"]) for r in ("train", "val", "test"))
        assert not (tr & va) and not (tr & te) and not (va & te)
        assert te and tr
        universe = tr | va | te
        groups_universe = universe if groups_universe is None else groups_universe
        assert universe == groups_universe  # same group set in every fold
        test_count.update(te)
        ctr, cva, cte = (set(fold[f"{r}_cells"]) for r in ("train", "val", "test"))
        assert not (ctr & cva) and not (ctr & cte) and not (cva & cte)
        assert ctr | cva | cte == all_cells
        for key in ("train_groups", "val_groups", "test_groups", "train_cells", "val_cells", "test_cells"):
            assert fold[key] == sorted(fold[key])
            assert all(type(x) is str for x in fold[key])
        group = _group_of_cell(obs, split_name)
        for role, cells in (("val", cva), ("test", cte)):
            in_role = obs.index[group.isin(fold[f"{role}_groups"])]
            if split_name != S2:
                in_role = in_role[~obs.loc[in_role, "is_control"].to_numpy()]
            assert set(in_role) == cells
    assert set(test_count) == groups_universe
    assert all(c == 1 for c in test_count.values()), "every group is a test group exactly once"


# --------------------------------------------------------------------------------------------
# real data: perturbench devel


def test_devel_fixture_shape(devel_obs):
    assert set(devel_obs["context_id"]) == {"k562", "A172", "T98G", "U87MG"}
    pert = devel_obs[~devel_obs["is_control"]]
    n_tok = pert["perturbation_tokens"].map(n_tokens)
    assert pert.loc[n_tok == 2, "perturbation_id"].nunique() == DEVEL_DOUBLES
    k562_singles = pert.loc[(n_tok == 1) & (pert["context_id"] == "k562"), "perturbation_id"].unique()
    assert len(k562_singles) == DEVEL_SINGLES_K562


def test_s1_devel(devel_obs):
    folds = make_split_folds(devel_obs, S1, dataset_id="devel", n_folds=5, seed=0)
    assert len(folds) == 5
    _check_fold_structure(devel_obs, folds, S1)
    controls = set(devel_obs.index[devel_obs["is_control"]])
    n_groups = devel_obs.loc[~devel_obs["is_control"], "perturbation_id"].nunique()
    assert n_groups == DEVEL_SINGLES_K562 + DEVEL_DOUBLES
    sizes = sorted(len(f["test_groups"]) for f in folds)
    assert sizes[-1] - sizes[0] <= 1  # balanced
    for f in folds:
        assert controls <= set(f["train_cells"])
        assert not controls & set(f["test_cells"]) and not controls & set(f["val_cells"])
        n_rest = n_groups - len(f["test_groups"])
        assert len(f["val_groups"]) == max(1, round(0.15 * n_rest))
        assert f["pilot"] is False and f["n_folds"] == 5 and f["dataset_id"] == "devel"


def test_s2_devel(devel_obs):
    folds = make_split_folds(devel_obs, S2, dataset_id="devel", n_folds=4, seed=3)
    _check_fold_structure(devel_obs, folds, S2)
    for f in folds:
        assert len(f["test_groups"]) == 1 and len(f["val_groups"]) == 1 and len(f["train_groups"]) == 2
        (ctx,) = f["test_groups"]
        in_ctx = devel_obs["context_id"] == ctx
        ctx_controls = set(devel_obs.index[in_ctx & devel_obs["is_control"]])
        assert ctx_controls and ctx_controls <= set(f["test_cells"])
        assert set(f["test_cells"]) == set(devel_obs.index[in_ctx])
        train_ctx = set(devel_obs.loc[f["train_cells"], "context_id"])
        assert train_ctx == set(f["train_groups"])


def test_s2_devel_too_many_folds(devel_obs):
    with pytest.raises(SplitError) as exc:
        make_split_folds(devel_obs, S2, dataset_id="devel", n_folds=5)
    msg = str(exc.value)
    assert "4 group(s)" in msg and "--folds 4 or fewer" in msg
    for ctx in ("A172", "T98G", "U87MG", "k562"):
        assert ctx in msg


def test_s3_devel(devel_obs):
    folds = make_split_folds(devel_obs, S3, dataset_id="devel", n_folds=5, seed=0)
    _check_fold_structure(devel_obs, folds, S3)
    assert set(folds[0]["train_groups"] + folds[0]["val_groups"] + folds[0]["test_groups"]) == DEVEL_ELIGIBLE
    pert = devel_obs[~devel_obs["is_control"]]
    singles = pert[pert["perturbation_tokens"].map(n_tokens) == 1]
    combos = set(pert.loc[pert["perturbation_tokens"].map(n_tokens) >= 2, "perturbation_id"])
    non_eligible = combos - DEVEL_ELIGIBLE
    assert len(non_eligible) == DEVEL_DOUBLES - len(DEVEL_ELIGIBLE)
    for f in folds:
        assert len(f["test_groups"]) == 1
        train = set(f["train_cells"])
        assert set(devel_obs.index[devel_obs["is_control"]]) <= train
        assert set(singles.index) <= train
        assert set(pert.index[pert["perturbation_id"].isin(non_eligible)]) <= train
        # every single of a test combo is trained on, in every context of the combo
        train_obs = devel_obs.loc[sorted(train)]
        train_conditions = set(zip(train_obs["context_id"], train_obs["perturbation_tokens"], strict=True))
        for combo in f["test_groups"]:
            rows = pert[pert["perturbation_id"] == combo]
            for ctx, tokens in set(zip(rows["context_id"], rows["perturbation_tokens"], strict=True)):
                for tok in split_tokens(tokens):
                    assert (ctx, tok) in train_conditions


def test_fold_roles_counts_devel(devel_obs):
    fold = make_split_folds(devel_obs, S1, dataset_id="devel", n_folds=3, seed=1)[2]
    roles = fold_roles(fold, devel_obs.index)
    assert list(roles.categories) == ["train", "val", "test", "unused"]
    counts = pd.Series(roles).value_counts()
    assert counts["train"] == len(fold["train_cells"])
    assert counts["val"] == len(fold["val_cells"])
    assert counts["test"] == len(fold["test_cells"])
    assert counts.get("unused", 0) == 0
    # cells unknown to the fold are unused; order follows obs_names
    names = ["not_a_cell", fold["test_cells"][0], fold["train_cells"][0]]
    assert list(fold_roles(fold, names)) == ["unused", "test", "train"]


# --------------------------------------------------------------------------------------------
# synthetic cases


def test_s3_eligibility_synthetic(combo_obs):
    folds = make_split_folds(combo_obs, S3, dataset_id="toy", n_folds=2, seed=0, val_fraction=0.0)
    groups = set(folds[0]["train_groups"]) | set(folds[0]["test_groups"])
    assert groups == {"A+B", "B+C", "B+D", "C+D"}  # A+C (C not single in c2) and A+X (X unseen) excluded
    _check_fold_structure(combo_obs, folds, S3)
    for f in folds:
        assert f["pilot"] is True and f["val_groups"] == [] and f["val_cells"] == []
        ineligible = combo_obs.index[combo_obs["perturbation_id"].isin(["A+C", "A+X"])]
        assert set(ineligible) <= set(f["train_cells"])


def test_s2_control_only_context_goes_to_train(obs_factory):
    obs = obs_factory(
        [
            ("c1", "control", 3),
            ("c1", "A", 2),
            ("c2", "control", 3),
            ("c2", "A", 2),
            ("c3", "control", 3),
            ("c3", "B", 2),
            ("c4", "control", 3),
        ]
    )
    folds = make_split_folds(obs, S2, dataset_id="toy", n_folds=3, val_fraction=0.0)
    c4 = set(obs.index[obs["context_id"] == "c4"])
    for f in folds:
        assert "c4" not in f["train_groups"] + f["test_groups"]
        assert c4 <= set(f["train_cells"])


def test_fold_assignment_rule(toy_obs):
    groups = sorted(toy_obs.loc[~toy_obs["is_control"], "perturbation_id"].unique())
    seed, k = 7, 3
    perm = np.random.default_rng(seed).permutation(len(groups))
    expected = {f: sorted(groups[p] for i, p in enumerate(perm) if i % k == f) for f in range(k)}
    folds = make_split_folds(toy_obs, S1, dataset_id="toy", n_folds=k, seed=seed)
    for f in folds:
        assert f["test_groups"] == expected[f["fold"]]
        assert len(f["test_groups"]) == 2 and len(f["val_groups"]) == 1 and len(f["train_groups"]) == 3


def test_row_order_invariance(devel_obs):
    shuffled = devel_obs.sample(frac=1.0, random_state=123)
    assert not shuffled.index.equals(devel_obs.index)
    for name, k in ((S1, 5), (S1G, 5), (S2, 4), (S3, 5)):
        assert make_split_folds(devel_obs, name, dataset_id="d", n_folds=k, seed=2) == make_split_folds(
            shuffled, name, dataset_id="d", n_folds=k, seed=2
        )


def test_categorical_columns_match_strings(devel_obs):
    cols = ("perturbation_id", "context_id", "perturbation_tokens")
    cat = devel_obs.astype(dict.fromkeys(cols, "category"))
    expected = make_split_folds(devel_obs, S3, dataset_id="d", n_folds=5)
    assert make_split_folds(cat, S3, dataset_id="d", n_folds=5) == expected


def test_different_seed_changes_assignment(devel_obs):
    a = make_split_folds(devel_obs, S1, dataset_id="d", n_folds=5, seed=0)
    b = make_split_folds(devel_obs, S1, dataset_id="d", n_folds=5, seed=1)
    assert [f["test_groups"] for f in a] != [f["test_groups"] for f in b]
    assert all(f["seed"] == 1 for f in b)


def test_files_byte_identical_and_roundtrip(devel_obs, tmp_path):
    def digests(out):
        folds = make_split_folds(devel_obs, S1, dataset_id="devel", n_folds=3, seed=5)
        paths = write_split_files(folds, out)
        return folds, paths, [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]

    folds, paths_a, hashes_a = digests(tmp_path / "a")
    _, paths_b, hashes_b = digests(tmp_path / "b")
    assert hashes_a == hashes_b
    assert [p.name for p in paths_a] == [f"devel.{S1}.seed5.fold{i}.json" for i in range(3)]
    for fold, path in zip(folds, paths_a, strict=True):
        assert read_split(path) == fold
        text = path.read_text()
        assert list(json.loads(text)) == sorted(fold)  # sorted keys
    # different seed -> different bytes
    other_folds = make_split_folds(devel_obs, S1, dataset_id="devel", n_folds=3, seed=6)
    other = write_split_files(other_folds, tmp_path / "c")
    assert [hashlib.sha256(p.read_bytes()).hexdigest() for p in other] != hashes_a


def test_write_rolls_back_on_failure(toy_obs, tmp_path):
    folds = make_split_folds(toy_obs, S1, dataset_id="toy", n_folds=3)
    folds[2] = dict(folds[2], train_cells={"not", "json"})  # a set cannot be serialised
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(TypeError):
        write_split_files(folds, out)
    assert list(out.iterdir()) == []  # the two files written before the failure are removed


def test_write_rejects_incomplete_fold(tmp_path):
    with pytest.raises(InputError, match="lacks the key"):
        write_split_files([{"dataset_id": "x", "split_name": S1, "seed": 0, "fold": 0}], tmp_path)


# --------------------------------------------------------------------------------------------
# errors


def test_missing_columns(toy_obs):
    with pytest.raises(InputError) as exc:
        make_split_folds(toy_obs.drop(columns=["context_id", "perturbation_tokens"]), S1, dataset_id="t")
    assert "context_id" in str(exc.value) and "perturbation_tokens" in str(exc.value)


def test_duplicate_cell_names(toy_obs):
    obs = toy_obs.copy()
    obs.index = ["same"] * len(obs)
    with pytest.raises(InputError, match="obs_names_make_unique"):
        make_split_folds(obs, S1, dataset_id="t", n_folds=3)


def test_non_boolean_is_control(toy_obs):
    obs = toy_obs.astype({"is_control": str})
    with pytest.raises(InputError, match="is_control"):
        make_split_folds(obs, S1, dataset_id="t", n_folds=3)


@pytest.mark.parametrize("n_folds", [1, 0, -3])
def test_too_few_folds(toy_obs, n_folds):
    with pytest.raises(SplitError, match="at least 2 folds"):
        make_split_folds(toy_obs, S1, dataset_id="t", n_folds=n_folds)


@pytest.mark.parametrize("val_fraction", [-0.1, 1.0, 1.5, float("nan")])
def test_bad_val_fraction(toy_obs, val_fraction):
    with pytest.raises(SplitError, match=r"outside \[0, 1\)"):
        make_split_folds(toy_obs, S1, dataset_id="t", n_folds=3, val_fraction=val_fraction)


def test_fold_without_test_groups_s1(toy_obs):
    with pytest.raises(SplitError) as exc:
        make_split_folds(toy_obs, S1, dataset_id="t", n_folds=7)
    assert "6 group(s)" in str(exc.value) and "--folds 6 or fewer" in str(exc.value)


def test_too_many_groups_not_listed(obs_factory):
    obs = obs_factory([("c1", "control", 2)] + [("c1", f"G{i:02d}", 1) for i in range(12)])
    with pytest.raises(SplitError) as exc:
        make_split_folds(obs, S1, dataset_id="t", n_folds=13)
    assert "12 group(s)" in str(exc.value) and "G05" not in str(exc.value)


def test_fold_with_empty_train(obs_factory):
    obs = obs_factory([("c1", "control", 2), ("c1", "A", 2), ("c2", "control", 2), ("c2", "A", 2)])
    with pytest.raises(SplitError, match="no training groups") as exc:
        make_split_folds(obs, S2, dataset_id="t", n_folds=2)
    assert "val_fraction=0" in str(exc.value)
    folds = make_split_folds(obs, S2, dataset_id="t", n_folds=2, val_fraction=0.0)
    assert [len(f["train_groups"]) for f in folds] == [1, 1]


def test_single_group_dataset(obs_factory):
    obs = obs_factory([("c1", "control", 2), ("c1", "A", 2)])
    with pytest.raises(SplitError, match="at least 2 groups"):
        make_split_folds(obs, S2, dataset_id="t", n_folds=2)


def test_s3_without_combos(toy_obs):
    with pytest.raises(SplitError, match="has no combination perturbations"):
        make_split_folds(toy_obs, S3, dataset_id="toy", n_folds=2)


def test_s3_no_eligible_combo(obs_factory):
    obs = obs_factory([("c1", "control", 2), ("c1", "A", 2), ("c1", "A+X", 2), ("c1", "B+Y", 2)])
    with pytest.raises(SplitError, match="none is eligible"):
        make_split_folds(obs, S3, dataset_id="toy", n_folds=2)


def test_bad_seed_and_dataset_id(toy_obs):
    with pytest.raises(InputError, match="seed"):
        make_split_folds(toy_obs, S1, dataset_id="t", n_folds=3, seed=-1)
    with pytest.raises(InputError, match="dataset_id"):
        make_split_folds(toy_obs, S1, dataset_id="a/b", n_folds=3)


def test_check_split_name():
    for name in SPLIT_NAMES:
        assert check_split_name(name) == name
    with pytest.raises(SplitError) as exc:
        check_split_name("S2_unseen_contexts")
    msg = str(exc.value)
    assert "Did you mean 'S2_unseen_context'" in msg and all(n in msg for n in SPLIT_NAMES)
    with pytest.raises(SplitError, match="Did you mean 'S3_unseen_combo'"):
        check_split_name("s3")
    # a short code names its split even where another split's name starts with it (S1 / S1g)
    with pytest.raises(SplitError, match="Did you mean 'S1_unseen_perturbation'"):
        check_split_name("s1")
    with pytest.raises(SplitError, match="Did you mean 'S1g_unseen_genes'"):
        check_split_name("S1G")
    assert SPLIT_NAMES == (S1, S1G, S2, S3)
    with pytest.raises(SplitError) as exc:
        check_split_name("zzzz")
    assert "Did you mean" not in str(exc.value)
    with pytest.raises(SplitError, match="Unknown split name"):
        make_split_folds(pd.DataFrame(), "S4", dataset_id="t")


def test_read_split_errors(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="broken.json.*not valid JSON"):
        read_split(bad)
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"dataset_id": "x", "fold": 0}))
    with pytest.raises(InputError) as exc:
        read_split(partial)
    msg = str(exc.value)
    assert "partial.json" in msg and "test_cells" in msg and "dataset_id," not in msg
    with pytest.raises(InputError, match="not found"):
        read_split(tmp_path / "absent.json")
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(InputError, match="list"):
        read_split(listed)


def test_fold_roles_rejects_overlap():
    with pytest.raises(InputError, match="two roles"):
        fold_roles({"train_cells": ["a"], "val_cells": [], "test_cells": ["a"]}, ["a"])


def test_docstring_examples():
    import celljepa.splits._core as core

    result = doctest.testmod(core, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
