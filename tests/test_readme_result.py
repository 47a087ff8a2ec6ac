"""The README's result sentence matches the stored final runs (`benchmarks/results/final-v3`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FINAL = ROOT / "benchmarks" / "results" / "final-v3"
INTERVAL = re.compile(r"([+−-]?\d+\.\d{3}) \[([+−-]?\d+\.\d{3}), ([+−-]?\d+\.\d{3})\]")


def _result_paragraph() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"^\*\*Result.*$", text, re.M)
    assert found, "the README has no **Result paragraph"
    return found.group(0)


def _num(text: str) -> float:
    return float(text.replace("−", "-"))


def _all_verdicts() -> list[tuple[str, str, set, dict]]:
    """``(run, dataset/split, methods in the pool, verdict)`` for every verdict row of every stored final run."""
    out = []
    for path in sorted(FINAL.glob("*/metrics_combined.json")):
        for key, m in json.loads(path.read_text(encoding="utf-8"))["results"].items():
            if "verdict" in m:
                out.append((path.parent.name, key, set(m["methods"]), m["verdict"]))
    return out


def _verdicts() -> dict[str, dict]:
    """The headline verdict of each dataset × split: the stored run with the widest pool.

    A run that adds peers to a frozen run with ``--reuse`` holds every method of the run it reads and more;
    two runs of one row where neither pool holds the other leave the headline undefined.
    """
    best: dict[str, tuple[str, set, dict]] = {}
    for run, key, methods, verdict in _all_verdicts():
        if key not in best or methods > best[key][1]:
            if key in best:
                assert methods >= best[key][1], f"{key}: runs {best[key][0]} and {run} have different pools"
            best[key] = (run, methods, verdict)
        else:
            assert methods <= best[key][1], f"{key}: runs {best[key][0]} and {run} have different pools"
    return {key: v for key, (_, _, v) in best.items()}


def _intervals(v: dict) -> list[tuple[float, float, float]]:
    out = []
    for d in (v["edistance"], v.get("vs_pca_twin") or {}):
        if d.get("diff") is not None:
            out.append((d["diff"], d["ci_low"], d["ci_high"]))
    return out


def test_the_result_sentence_names_its_metric_and_quotes_every_claimable_row():
    para = _result_paragraph()
    verdicts = _verdicts()
    assert {
        "norman2019/S1_unseen_perturbation",
        "kang2018/S2_unseen_context",
        "papalexi2021/S1_unseen_perturbation",
    } <= set(verdicts)
    assert "E-distance" in para and "tie" not in para.lower()
    claimable = {k: v for k, v in verdicts.items() if v["edistance"].get("p_holm") is not None}
    assert claimable, "no claimable row in the stored final runs"
    quoted = [tuple(_num(x) for x in m) for m in INTERVAL.findall(para)]
    for key, v in claimable.items():
        d = v["edistance"]
        want = (round(d["diff"], 3), round(d["ci_low"], 3), round(d["ci_high"], 3))
        assert want in quoted, f"{key}: {want} is not quoted in the README's result sentence"
        assert f"n = {v['n']}" in para and f"Holm p = {d['p_holm']:.2g}" in para
        assert d["outcome"] in para
    # and nothing is quoted that no stored verdict row holds
    stored = {tuple(round(x, 3) for x in iv) for *_, v in _all_verdicts() for iv in _intervals(v)}
    for iv in quoted:
        assert iv in stored, f"the README quotes {iv}, which no stored final run holds"


@pytest.mark.parametrize("name", sorted(p.parent.name for p in FINAL.glob("*/metrics_combined.json")))
def test_the_stored_final_runs_are_frozen_and_carry_their_claims_family(name):
    folder = FINAL / name
    final = json.loads((folder / "final.json").read_text(encoding="utf-8"))
    claims = json.loads((folder / "claims.json").read_text(encoding="utf-8"))
    combined = json.loads((folder / "metrics_combined.json").read_text(encoding="utf-8"))
    assert re.fullmatch(r"[0-9a-f]{40}", final["commit"])
    assert "before" in claims["computed"] and "fitted" in claims["computed"]  # fixed before any model was fitted
    for key, m in combined["results"].items():
        row = claims["rows"][key]
        assert row["n_effect"] == m["n_effect_conditions"]
        assert row["claimable"] == (row["n_effect"] >= claims["min_conditions"])
        assert (m["verdict"]["edistance"].get("p_holm") is not None) == row["claimable"]
        assert m["ci_method"]["n_boot"] == 10_000
