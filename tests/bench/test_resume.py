"""A benchmark stopped mid-way resumes: finished folds are read back (same numbers), the rest recomputed."""

from __future__ import annotations

import json
import math

import pytest
import scipy.sparse as sp

from celljepa._errors import InputError
from celljepa._io import folder_lock
from celljepa.bench import EvalConfig, RunConfig, benchmark, demo_datasets
from celljepa.bench.tasks import FRAMES_FILE, data_fingerprint

PLAN = {"sciplex_gxe": {"S2_unseen_context": 3}}
# what differs between two runs of the same work: clocks, hosts, how many folds were read back
RUN_ONLY = ("wall_time_s", "provenance", "timings")


def _same(a, b) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = (set(a) | set(b)) - set(RUN_ONLY)
        return all(_same(a.get(k), b.get(k)) for k in keys)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


@pytest.fixture(scope="module")
def sciplex():
    return {"sciplex_gxe": demo_datasets()["sciplex_gxe"]}


def _combined(out):
    return json.loads((out / "metrics_combined.json").read_text())


def test_restart_reads_finished_folds_back_and_redoes_the_rest(sciplex, tmp_path, caplog):
    whole = tmp_path / "whole"
    benchmark(sciplex, PLAN, out=whole, progress=False)
    reference = _combined(whole)
    assert reference["provenance"]["folds_resumed"] == 0
    fold_dirs = [tmp_path / "whole" / "sciplex_gxe" / "S2_unseen_context" / "split_seed0" / f"fold{k}"
                 for k in range(3)]
    config = json.loads((fold_dirs[0] / "config.json").read_text())
    assert config["data"] == data_fingerprint(sciplex["sciplex_gxe"])
    assert {"date", "host", "git_commit", "command", "torch", "threads"} <= set(config["provenance"])
    assert json.loads((fold_dirs[0] / "metrics.json").read_text())["config_digest"] == config["config_digest"]

    # the state a kill leaves: fold 1 stopped before its metrics.json, fold 2 wrote a torn result table
    (fold_dirs[1] / "metrics.json").unlink()
    (fold_dirs[2] / FRAMES_FILE).write_bytes(b"torn")
    (whole / "metrics_combined.json").unlink()
    with caplog.at_level("INFO", logger="celljepa"):
        benchmark(sciplex, PLAN, out=whole, progress=False)
    resumed = _combined(whole)
    assert resumed["provenance"]["folds_resumed"] == 1
    assert "1 of 3 folds were finished" in caplog.text
    assert _same(resumed, reference)
    assert not _same({**resumed, "results": {}}, reference)  # the comparison can fail
    assert (fold_dirs[1] / "metrics.json").is_file()

    # every fold finished: nothing is recomputed and the numbers are the same again
    benchmark(sciplex, PLAN, out=whole, progress=False)
    assert _combined(whole)["provenance"]["folds_resumed"] == 3 and _same(_combined(whole), reference)


def test_other_settings_or_other_data_recompute(sciplex, tmp_path):
    out = tmp_path / "run"
    benchmark(sciplex, PLAN, out=out, progress=False, max_folds=1)
    benchmark(sciplex, PLAN, out=out, progress=False, max_folds=1,
              run=RunConfig(evaluation=EvalConfig(n_pcs=20)))
    assert _combined(out)["provenance"]["folds_resumed"] == 0
    edited = sciplex["sciplex_gxe"].copy()
    x = edited.X
    (x.data if sp.issparse(x) else x.reshape(-1))[0] += 1.0  # one value of one cell
    benchmark({"sciplex_gxe": edited}, PLAN, out=out, progress=False, max_folds=1,
              run=RunConfig(evaluation=EvalConfig(n_pcs=20)))
    assert _combined(out)["provenance"]["folds_resumed"] == 0


def test_a_second_benchmark_on_the_same_folder_is_refused(sciplex, tmp_path):
    out = tmp_path / "busy"
    with folder_lock(out):  # another run holds the folder
        with pytest.raises(InputError, match="is in use by process .* two runs must not write one folder"):
            benchmark(sciplex, PLAN, out=out, progress=False, max_folds=1)
    assert not any(out.iterdir())  # nothing written, and the other run's lock left alone until it ends
