"""`celljepa report`: merging benchmark, fold and sweep runs into one report, from real runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import celljepa as cj
from celljepa._errors import InputError
from celljepa.bench import RunConfig, benchmark, demo_datasets
from celljepa.bench import consolidate as C
from celljepa.cli import main
from celljepa.models.transition import TransitionConfig
from celljepa.train.config import load_config

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "transition"
KANG = RESULTS / "kang2018"
ABLATIONS = RESULTS / "ablations"


def _kang_complete() -> bool:
    path = KANG / "metrics_combined.json"
    if not path.is_file():
        return False
    data = json.loads(path.read_text())
    return (
        bool(data.get("results"))
        and bool(data.get("per_fold"))
        and data.get("wall_time_s") is not None
        and all("comparator" in m for m in data["results"].values())
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A JEPA benchmark (sciplex_gxe S2, 2 folds, tiny JEPA) and a baseline-only one (norman2019 S1, 1 fold)."""
    root = tmp_path_factory.mktemp("runs")
    datasets = demo_datasets()
    jepa = load_config(
        overrides={
            "train": {"max_steps": 12, "batch_size": 64},
            "model": {"n_hidden": 32, "predictor_hidden": 32, "n_latent": 16},
        }
    )
    benchmark(
        {"sciplex_gxe": datasets["sciplex_gxe"]},
        {"sciplex_gxe": {"S2_unseen_context": 3}},
        out=root / "jepa_run",
        progress=False,
        run=RunConfig(jepa=jepa, transition=TransitionConfig(max_steps=20)),
        max_folds=2,
    )
    benchmark(
        {"norman2019": datasets["norman2019"]},
        {"norman2019": {"S1_unseen_perturbation": 3}},
        out=root / "baseline_run",
        progress=False,
        max_folds=1,
    )
    paths = {
        "jepa": root / "jepa_run",
        "base": root / "baseline_run",
        "fold": root / "jepa_run" / "sciplex_gxe" / "S2_unseen_context" / "split_seed0" / "fold1",
    }
    if _kang_complete():
        paths["kang"] = KANG
    return paths


@pytest.fixture(scope="module")
def merged(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    report = C.consolidate(list(runs.values()), out, title="test report", figure_maker=_figure)
    return report, out


def _figure(verdicts, path):
    import matplotlib.pyplot as plt

    plt.close(cj.pl.where_jepa_helps(verdicts, save=path, show=False, return_fig=True))
    return path


def _combined(path: Path) -> dict:
    return json.loads((path / "metrics_combined.json").read_text())["results"]


def _same(a, b) -> bool:
    return (a is None and (b is None or (isinstance(b, float) and math.isnan(b)))) or a == b


def test_kinds_are_detected_from_the_files(runs):
    assert C.detect_kind(runs["jepa"]) == "benchmark"
    assert C.detect_kind(runs["fold"]) == "fold"
    assert C.detect_kind(ABLATIONS) == "sweep"


def test_verdict_rows_equal_the_runs_own_verdicts(runs, merged):
    report, _ = merged
    labels = {r["path"]: r["label"] for r in report["runs"]}
    expected = []
    for name in ("jepa", "kang"):
        if name in runs:
            expected += [(labels[str(runs[name])], m) for m in _combined(runs[name]).values() if "verdict" in m]
    expected.append((labels[str(runs["fold"])], json.loads((runs["fold"] / "metrics.json").read_text())))
    rows = report["verdicts"]
    assert len(rows) == len(expected)
    for label, m in expected:
        row = next(
            r for r in rows if r["run"] == label and r["dataset_id"] == m["dataset_id"] and r["split"] == m["split"]
        )
        v = m["verdict"]
        assert row["model"] == v["model"] == "jepa_set" and row["baseline"] == v["baseline"] == m["comparator"]
        assert row["n"] == v["n"] == m["n_effect_conditions"]
        # copied exactly, labels and Holm p-values included: a report never corrects again
        for key in ("diff", "ci_low", "ci_high", "p", "n", "p_holm", "outcome"):
            assert _same(row["edistance"].get(key), v["edistance"].get(key))
        if "vs_pca_twin" in v:
            assert all(
                _same(row["vs_pca_twin"].get(k), v["vs_pca_twin"].get(k))
                for k in ("diff", "ci_low", "ci_high", "p", "p_holm", "outcome")
            )
        else:
            assert row["vs_pca_twin"] is None
        if "claimable" in v:  # protocol v3: the run's own label
            assert row["outcome"] == v["outcome"] == v["edistance"]["outcome"] and not row["old_protocol"]
            assert row["secondary"].keys() == v["secondary"].keys() == {"mse", "delta_pearson"}
            assert (v["n"] >= 10) == v["claimable"] and (row["outcome"] == "not claimable") == (not v["claimable"])
        else:  # written under protocol v2 (a report-wide Holm family, "ties"): shown, never a v3 claim
            assert row["outcome"] == "protocol v2" and row["old_protocol"]
    # the family: claimable v3 rows only, each counted in its own run's family
    assert report["holm_family_size"] == sum(
        1 + bool(r["vs_pca_twin"] and not r["vs_pca_twin"].get("same_as_comparator"))
        for r in rows
        if r.get("claimable") and not r["old_protocol"]
    )
    # the same dataset × split from two runs (the benchmark and one of its folds): two rows, labelled by run
    both = [r["run"] for r in rows if (r["dataset_id"], r["split"]) == ("sciplex_gxe", "S2_unseen_context")]
    assert sorted(both) == sorted([labels[str(runs["jepa"])], labels[str(runs["fold"])]])


def test_adding_an_unrelated_run_leaves_every_verdict_unchanged(runs, tmp_path):
    """Protocol v3: Holm runs within each run's claims family, so merging runs changes no verdict."""
    import shutil

    from celljepa.eval.verdict import holm_over

    claimable = tmp_path / "claimable"  # a run whose rows are in its claims family, labelled by its own Holm
    shutil.copytree(runs["jepa"], claimable)
    data = json.loads((claimable / "metrics_combined.json").read_text())
    for m in data["results"].values():
        m["verdict"]["claimable"], m["verdict"]["n"] = True, 12
        for row in (m["verdict"]["edistance"], m["verdict"].get("vs_pca_twin") or {}):
            row.update(n=12, p=0.004, ci_low=-0.3, ci_high=-0.1, diff=-0.2)
    holm_over(data["results"].values())
    (claimable / "metrics_combined.json").write_text(json.dumps(data))
    other = tmp_path / "other"  # an unrelated run with claims of its own (another dataset, weaker evidence)
    shutil.copytree(claimable, other)
    data = json.loads((other / "metrics_combined.json").read_text())
    data["results"] = {
        k.replace("sciplex_gxe", "other"): {**m, "dataset_id": "other"} for k, m in data["results"].items()
    }
    for m in data["results"].values():
        for row in (m["verdict"]["edistance"], m["verdict"].get("vs_pca_twin") or {}):
            row.update(p=0.03)
    holm_over(data["results"].values())
    (other / "metrics_combined.json").write_text(json.dumps(data))
    alone = C.consolidate([claimable], tmp_path / "alone")
    more = C.consolidate(
        [claimable, runs["base"], other, *([runs["kang"]] if "kang" in runs else [])], tmp_path / "more"
    )
    keep = ("edistance", "vs_pca_twin", "secondary", "outcome", "n", "baseline", "claimable")
    first = [{k: r[k] for k in keep} for r in alone["verdicts"]]
    again = [{k: r[k] for k in keep} for r in more["verdicts"] if r["run"] == alone["verdicts"][0]["run"]]
    assert first == again and first[0]["outcome"] == "wins"
    assert first[0]["edistance"]["p_holm"] == pytest.approx(0.004 * first[0]["edistance"]["family_size"])
    # had the report pooled both runs into one family, the Holm p-values would have grown
    assert more["holm_family_size"] > first[0]["edistance"]["family_size"]


def test_baseline_only_run_has_tables_but_no_verdict(runs, merged):
    report, out = merged
    label = next(r["label"] for r in report["runs"] if r["path"] == str(runs["base"]))
    assert not [r for r in report["verdicts"] if r["run"] == label]
    entry = next(e for e in report["datasets"]["norman2019"] if e["run"] == label)
    assert entry["verdict"] is None and entry["split"] == "S1_unseen_perturbation"
    assert entry["folds"] == "1 fold"
    assert "jepa_set" not in {m["method"] for m in entry["methods"]}


def test_dataset_tables_hold_every_method_of_every_run(runs, merged):
    report, out = merged
    md = (out / "report.md").read_text()
    labels = {r["path"]: r["label"] for r in report["runs"]}
    for name in ("jepa", "base", "kang"):
        if name not in runs:
            continue
        for m in _combined(runs[name]).values():
            entry = next(
                e
                for e in report["datasets"][m["dataset_id"]]
                if e["run"] == labels[str(runs[name])] and e["split"] == m["split"]
            )
            assert [x["method"] for x in entry["methods"]] == list(m["methods"])
            best = [x["method"] for x in entry["methods"] if x["comparator"]]
            assert best == [m["comparator"]]
            for x in entry["methods"]:
                assert x["edistance"]["mean"] == m["methods"][x["method"]]["edistance"]["mean"]
                name_cell = f"**{x['method']}** (comparator)" if x["comparator"] else x["method"]
                cov = m.get("coverage", {}).get(x["method"])
                assert x["coverage"] == cov
                if cov is not None and cov < 0.5:  # a near-0-coverage method is marked, not posing as a baseline
                    name_cell += f" (covers {cov:.0%} of test conditions)"
                assert f"| {name_cell} | {x['role']} | " in md


def test_sections_in_order_and_no_invented_holdout(merged):
    _, out = merged
    md = (out / "report.md").read_text()
    heads = [
        "# test report",
        "## Runs merged",
        "## Verdict per dataset × split",
        "## Results per dataset",
        "## Compute",
    ]
    positions = [md.index(h) for h in heads]
    assert positions == sorted(positions)
    assert "## Cross-dataset holdout" not in md and "## Ablations" not in md
    assert "![where JEPA helps](figures/where_jepa_helps.png)" in md


def test_compute_totals_are_the_sum_of_the_runs_wall_times(runs, merged):
    report, _ = merged
    walls = []
    for name in ("jepa", "base", "kang"):
        if name in runs:
            walls.append(json.loads((runs[name] / "metrics_combined.json").read_text())["wall_time_s"])
    walls.append(json.loads((runs["fold"] / "config.json").read_text())["timings_s"]["total_s"])
    totals = report["compute"]["totals"]
    assert totals["wall_time_s"] == pytest.approx(sum(walls), rel=1e-12)
    assert totals["runs_timed"] == len(walls) and not totals["runs_without_wall_time"]
    folds = report["compute"]["folds"]
    kang = len(json.loads((runs["kang"] / "metrics_combined.json").read_text())["per_fold"]) if "kang" in runs else 0
    assert len(folds) == 2 + 1 + 1 + kang
    assert totals["fold_total_s"] == pytest.approx(sum(f["timings"]["total_s"] for f in folds))
    pre = sum(f["timings"].get("jepa_pretrain_s", 0.0) for f in folds)
    assert totals["by_step_s"]["jepa_pretrain_s"] == pytest.approx(pre)
    assert report["compute"]["runs"][0]["versions"]["celljepa"]


def test_figure_is_a_png(merged):
    report, out = merged
    png = out / "figures" / "where_jepa_helps.png"
    assert report["figures"] == ["figures/where_jepa_helps.png"]
    assert png.stat().st_size > 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_json_round_trips(merged):
    report, out = merged
    text = (out / "report.json").read_text()
    loaded = json.loads(text)
    assert loaded == report and "NaN" not in text
    assert loaded["schema"] == C.SCHEMA
    # report.json holds everything the markdown shows
    assert C.render_markdown(loaded) == (out / "report.md").read_text()


def test_no_figure_maker_no_figure(runs, tmp_path):
    report = C.consolidate([runs["jepa"]], tmp_path)
    assert report["verdicts"] and report["figures"] == []
    assert not (tmp_path / "figures").exists() and "![where JEPA helps]" not in (tmp_path / "report.md").read_text()
    # the same figure from the written report.json
    fig = cj.pl.where_jepa_helps(tmp_path, save=tmp_path / "w.png", show=False, return_fig=True)
    assert len(fig.axes) == 2 and (tmp_path / "w.png").read_bytes()[:4] == b"\x89PNG"


def test_unknown_folder_is_an_input_error(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here")
    with pytest.raises(InputError, match="metrics_combined.json") as err:
        C.consolidate([tmp_path], tmp_path / "out")
    assert str(tmp_path) in str(err.value) and "ablation.json" in str(err.value) and "config.json" in str(err.value)
    with pytest.raises(InputError, match="does not exist"):
        C.consolidate([tmp_path / "missing"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_merged_report_never_replaces_a_runs_own_report(runs, tmp_path, capsys):
    own = (runs["base"] / "report.md").read_bytes()
    with pytest.raises(InputError, match="is the run folder .* Fix: write the merged report to another folder"):
        C.consolidate([runs["base"]], runs["base"])
    with pytest.raises(InputError, match=r"holds a run \(metrics_combined.json\)"):
        C.consolidate([runs["jepa"]], runs["base"])  # another run's folder, not given with --runs
    assert main(["report", "--runs", str(runs["base"]), "--out", str(runs["base"])]) == 1
    assert "Fix:" in capsys.readouterr().err
    assert (runs["base"] / "report.md").read_bytes() == own and not (runs["base"] / "report.json").exists()


def test_sweep_folder_adds_the_ablation_rows(runs, tmp_path):
    rows = json.loads((ABLATIONS / "ablation.json").read_text())["rows"]
    report = C.consolidate([runs["base"], ABLATIONS], tmp_path, figure_maker=_figure)
    assert len(report["ablations"]) == len(rows)
    assert [r["jepa_set_diff"] for r in report["ablations"]] == [r.get("jepa_set_diff") for r in rows]
    md = (tmp_path / "report.md").read_text()
    assert "## Ablations" in md and md.index("## Ablations") < md.index("## Compute")
    # no verdict in these runs: no figure, and the compute summary says which wall time is unknown
    assert report["verdicts"] == [] and not (tmp_path / "figures" / "where_jepa_helps.png").exists()
    assert report["compute"]["totals"]["runs_without_wall_time"] == ["ablations"]


def test_cli_report(runs, tmp_path, capsys):
    out = tmp_path / "reports" / "cli"
    assert (
        main(["report", "--runs", str(runs["jepa"]), str(runs["base"]), "--out", str(out), "--title", "CLI report"])
        == 0
    )
    printed = capsys.readouterr().out
    assert printed.startswith(str(out / "report.md")) and "2 run(s), 1 verdict row(s) (1 " in printed
    assert (out / "report.md").read_text().startswith("# CLI report")
    assert main(["report", "--runs", str(tmp_path / "reports"), "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert "is not a run folder" in err and "Fix:" in err


def test_a_run_from_before_the_protocol_is_never_a_claim(runs, tmp_path):
    import shutil

    old = tmp_path / "old_fold"
    shutil.copytree(runs["fold"], old)
    m = json.loads((old / "metrics.json").read_text())
    # what runs wrote before: the comparator picked on test as "best_baseline", no p-values
    m["best_baseline"] = m.pop("comparator")
    for key in ("p", "p_holm", "outcome"):
        m["verdict"]["edistance"].pop(key, None)
    m["verdict"]["outcome"] = "wins"
    (old / "metrics.json").write_text(json.dumps(m))
    report = C.consolidate([old, runs["jepa"]], tmp_path / "out", figure_maker=_figure)
    rows = {r["run"]: r for r in report["verdicts"]}
    assert rows["old_fold"]["outcome"] == "old protocol" and rows["old_fold"]["old_protocol"]
    # the old row is not in the claims family (nor are the new run's rows: too few conditions with an effect)
    assert report["holm_family_size"] == 0
    md = (tmp_path / "out" / "report.md").read_text()
    assert "**old protocol**" in md and "old protocol, not a claim" in md
    # nowhere does the old run say "wins" or claim a validation choice: not in the per-dataset section either
    entry = next(e for e in report["datasets"][m["dataset_id"]] if e["run"] == "old_fold")
    assert entry["verdict"] == "old protocol" and entry["old_protocol"]
    section = md[md.index("run old_fold") :]
    section = section[: section.index("\n|")]
    assert "old protocol: not a claim" in section and "chosen on validation" not in section
    assert "**wins**" not in md
    assert "The figure leaves out the rows of the old protocol (no claim)." in md


def test_a_run_repeated_with_more_methods_supersedes_the_first(runs, tmp_path):
    """Peers added to a run (--reuse) repeat its test: one hypothesis, one claim, the larger pool's."""
    import shutil

    extended = tmp_path / "with_peer"
    shutil.copytree(runs["jepa"], extended)
    data = json.loads((extended / "metrics_combined.json").read_text())
    for m in data["results"].values():  # one more method in the pool, as --reuse --peers NAME gives
        m["methods"]["somepeer"] = {**m["methods"]["no_change"], "role": "peer"}
        m["roles"]["somepeer"] = "peer"
    (extended / "metrics_combined.json").write_text(json.dumps(data))
    for order in ([runs["jepa"], extended], [extended, runs["jepa"]]):
        report = C.consolidate(order, tmp_path / "out", figure_maker=_figure)
        rows = {r["run"]: r for r in report["verdicts"]}
        first, second = rows["jepa_run"], rows["with_peer"]
        assert first["superseded_by"] == "with_peer" and first["outcome"] == "superseded"
        assert second["superseded_by"] is None and second["outcome"] == second["edistance"]["outcome"]
        assert report["holm_family_size"] == 0  # the superseded row is no claim; the other is not claimable
        md = (tmp_path / "out" / "report.md").read_text()
        assert "**superseded**" in md and "(jepa_run): superseded by with_peer" in md
        # the peers table: the superseding run's peer row, with the verdict this report states
        assert [(r["run"], r["peer"]) for r in report["peers"]] == [("with_peer", "somepeer")] * len(data["results"])
        assert all(r["verdict"] == second["outcome"] for r in report["peers"])
    # the same run given under two names: equal pools, the one listed last is the claim
    twin = tmp_path / "again"
    shutil.copytree(runs["jepa"], twin)
    report = C.consolidate([runs["jepa"], twin], tmp_path / "out2", figure_maker=_figure)
    rows = {r["run"]: r for r in report["verdicts"]}
    assert rows["jepa_run"]["superseded_by"] == "again" and rows["again"]["superseded_by"] is None
