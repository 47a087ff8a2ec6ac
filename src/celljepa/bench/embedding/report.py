"""The embedding benchmark's tables and the statistics of its two claims."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..._io import write_json_atomic, write_text_atomic
from ...eval.scib import BATCH_METRICS, BIO_METRICS
from ...eval.verdict import holm
from .tasks import CLAIM_DEPTH


def _ci(values) -> tuple[float, float, float, int]:
    """Mean and a t-interval (95 %) over seeds."""
    from scipy import stats

    v = np.asarray([x for x in values if np.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return (np.nan, np.nan, np.nan, 0)
    m = float(v.mean())
    if v.size < 2:
        return (m, np.nan, np.nan, 1)
    half = float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
    return (m, m - half, m + half, int(v.size))


def scores_frame(results: Sequence[dict]) -> pd.DataFrame:
    """One row per (dataset, seed, method, mode, depth) with every metric.

    ``mode``: ``full``, ``transfer`` (fitted at full depth, thinned cells embedded) or ``refit``.
    """
    rows = []
    for r in results:
        for depth, scores in r["scores"].items():
            d = float(depth)
            mode = "full" if d == 1.0 else ("transfer" if r["kind"] == "full" else "refit")
            rows.append(
                {"dataset": r["dataset"], "seed": r["seed"], "method": r["method"], "mode": mode, "depth": d, **scores}
            )
    return pd.DataFrame(rows)


def collect(
    results: Sequence[dict], out: str | Path, *, claim_depth: float = CLAIM_DEPTH, expected: int | None = None
) -> dict:
    """Tables and claim statistics from task results.

    Writes ``embedding_quality.{md,json}``, ``robustness.{md,json}`` and ``scores.csv`` into ``out``
    (atomically) and returns the summary. ``expected``: the number of tasks of the whole run; when fewer have
    finished, every table says so in its first lines.
    """
    out = Path(out)
    frame = scores_frame(results)
    full = frame[frame["mode"] == "full"]
    quality = []
    for (dataset, method), g in full.groupby(["dataset", "method"], sort=True):
        row = {"dataset": dataset, "method": method, "seeds": int(g["seed"].nunique())}
        for m in (*BIO_METRICS, "bio_conservation", *BATCH_METRICS, "batch_correction"):
            if m in g and g[m].notna().any():
                row[m] = _ci(g[m])
        quality.append(row)
    comparisons = _quality_comparisons(full)
    robustness = _robustness_rows(frame)
    claim = _robustness_claim(frame, claim_depth)
    summary = {
        "tasks": {"finished": len(results), "expected": expected},
        "quality": quality,
        "quality_comparisons": comparisons,
        "robustness": robustness,
        "robustness_claim": claim,
        "notes": {r["dataset"]: r.get("note", "") for r in results},
    }
    write_text_atomic(out / "scores.csv", frame.to_csv(index=False))
    write_json_atomic(out / "embedding_quality.json", {"quality": quality, "comparisons": comparisons})
    write_json_atomic(out / "robustness.json", {"robustness": robustness, "claim": claim})
    write_text_atomic(out / "embedding_quality.md", quality_markdown(summary))
    write_text_atomic(out / "robustness.md", robustness_markdown(summary))
    return summary


def _jepa_minus_others(wide: pd.DataFrame):
    """``(other, paired differences JEPA − other, their mean and t-interval)`` for PCA and scVI, where present."""
    for other in ("pca", "scvi"):
        if wide.empty or "jepa" not in wide or other not in wide:
            continue
        d = (wide["jepa"] - wide[other]).dropna()
        if not d.empty:
            yield other, d, _ci(d)


def _quality_comparisons(full: pd.DataFrame) -> list[dict]:
    """JEPA − PCA and JEPA − scVI in mean bio conservation per dataset, paired over seeds (t-interval)."""
    rows = []
    if "bio_conservation" not in full:
        return rows
    for dataset, g in full.groupby("dataset", sort=True):
        wide = g.pivot_table(index="seed", columns="method", values="bio_conservation")
        for other, _, (mean, lo, hi, n) in _jepa_minus_others(wide):
            rows.append(
                {"dataset": dataset, "comparison": f"jepa - {other}", "difference": mean, "ci": [lo, hi], "seeds": n}
            )
    return rows


def _robustness_rows(frame: pd.DataFrame) -> list[dict]:
    rows = []
    if "bio_conservation" not in frame:
        return rows
    sub = frame[frame["bio_conservation"].notna()]
    for (dataset, method, mode, depth), g in sub.groupby(["dataset", "method", "mode", "depth"], sort=True):
        mean, lo, hi, n = _ci(g["bio_conservation"])
        rows.append(
            {
                "dataset": dataset,
                "method": method,
                "mode": mode,
                "depth": depth,
                "bio_conservation": mean,
                "ci": [lo, hi],
                "seeds": n,
            }
        )
    return rows


def one_sided_sign_flip(d) -> float:
    """Exact one-sided sign-flip p-value of ``mean(d) < 0`` (paired differences; :func:`scipy.stats.permutation_test`).

    Every sign pattern is enumerated, so with ``n`` pairs the smallest possible p-value is ``2^-n``.

    Examples
    --------
    >>> one_sided_sign_flip([-1.0, -2.0, -3.0])   # only the observed pattern is as low: 1/8
    0.125
    """
    from scipy import stats

    d = np.asarray(d, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size == 0 or not np.any(d != 0):
        return 1.0
    if d.size == 1:  # two sign patterns: the observed one and its flip
        return 0.5 if d[0] < 0 else 1.0
    res = stats.permutation_test((d,), np.mean, permutation_type="samples", alternative="less", n_resamples=np.inf)
    return float(res.pvalue)


def _robustness_claim(frame: pd.DataFrame, depth: float, *, alpha: float = 0.05) -> dict:
    """Test "JEPA loses less of its full-depth score than PCA and scVI", per mode, paired over (dataset, seed).

    The rule, fixed before the runs: loss = bio_conservation(full) − bio_conservation(``depth``) per dataset,
    seed and method; ``d = loss(JEPA) − loss(other)`` over the (dataset, seed) pairs; the directional claim
    (``mean(d) < 0``) is tested with the exact one-sided sign-flip test (:func:`one_sided_sign_flip`). Within a
    mode (``transfer``, ``refit``) the claim needs both comparators (an intersection-union test: the mode's p
    is the larger of the two), and Holm runs over the two modes. Met in a mode when its Holm p < ``alpha``.
    With ``n`` pairs no p-value is below ``2^-n``: 6 pairs (2 datasets × 3 seeds) can reach 0.016, so the claim
    can be met only if JEPA loses less in every pair.
    """
    if "bio_conservation" not in frame:
        return {"comparisons": [], "modes": {}, "met": {}}
    sub = frame[frame["bio_conservation"].notna()]
    full = sub[sub["mode"] == "full"].set_index(["dataset", "seed", "method"])["bio_conservation"]
    comps = []
    for mode in ("transfer", "refit"):
        at = sub[(sub["mode"] == mode) & np.isclose(sub["depth"], depth)]
        at = at.set_index(["dataset", "seed", "method"])["bio_conservation"]
        loss = (full - at).dropna().unstack("method") if not at.empty else pd.DataFrame()
        for other, d, (mean, lo, hi, n) in _jepa_minus_others(loss):
            comps.append(
                {
                    "mode": mode,
                    "comparison": f"jepa - {other}",
                    "depth": depth,
                    "loss_difference": mean,
                    "ci": [lo, hi],
                    "pairs": n,
                    "jepa_loses_less_in": int((d < 0).sum()),
                    "datasets": sorted({k[0] for k in d.index}),
                    "p_one_sided": one_sided_sign_flip(d.to_numpy()),
                    "loss_jepa": float(loss["jepa"].loc[d.index].mean()),
                    "loss_other": float(loss[other].loc[d.index].mean()),
                }
            )
    modes = {}
    for mode in ("transfer", "refit"):
        cs = [c for c in comps if c["mode"] == mode]
        if len(cs) == 2:
            modes[mode] = {"p": max(c["p_one_sided"] for c in cs)}
    if modes:
        for mode, p in zip(modes, holm([m["p"] for m in modes.values()]), strict=True):
            modes[mode]["holm_p"] = float(p)
            modes[mode]["met"] = bool(p < alpha)
    return {
        "comparisons": comps,
        "modes": modes,
        "met": {m: v["met"] for m, v in modes.items()},
        "rule": (
            f"loss = full-depth score − score at {depth:.0%} of the reads; JEPA's loss below both PCA's and "
            "scVI's (exact one-sided sign-flip over (dataset, seed) pairs, the larger p of the two), "
            f"Holm over the two modes, alpha {alpha}"
        ),
    }


def _fmt(ci) -> str:
    mean, lo, hi, n = ci
    if not np.isfinite(mean):
        return "–"
    if not np.isfinite(lo):
        return f"{mean:.3f}"
    return f"{mean:.3f} [{lo:.3f}, {hi:.3f}]"


def _signed_ci(ci) -> str:
    """``[+lo, +hi]`` of a difference's interval, or nothing where it is undefined (one seed)."""
    lo, hi = ci
    return f"[{lo:+.3f}, {hi:+.3f}]" if np.isfinite(lo) else ""


def _partial(summary: dict) -> list[str]:
    tasks = summary.get("tasks") or {}
    done, expected = tasks.get("finished"), tasks.get("expected")
    if expected is None or done is None or done >= expected:
        return []
    return [
        f"**Partial: {done} of {expected} tasks have finished**; the tables and the claim below use only those "
        "(rerun the same command to finish the rest).",
        "",
    ]


def quality_markdown(summary: dict) -> str:
    """The embedding-quality tables as markdown."""
    lines = [
        "# Embedding quality: JEPA, PCA and scVI by scib-metrics",
        "",
        *_partial(summary),
        "Every score in [0, 1], higher is better; mean over seeds with a 95 % t-interval. Bio conservation is the mean",
        "of NMI and ARI (Leiden, resolution optimised by NMI), label silhouette, isolated-label silhouette and cLISI.",
        "No representation saw the labels.",
        "",
        "| dataset | method | seeds | bio conservation | NMI | ARI | silhouette (label) | isolated labels | cLISI |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["quality"]:
        if "bio_conservation" not in r:
            continue
        lines.append(
            f"| {r['dataset']} | {r['method']} | {r['seeds']} | **{_fmt(r['bio_conservation'])}** | "
            + " | ".join(_fmt(r[m]) if m in r else "–" for m in BIO_METRICS)
            + " |"
        )
    batch = [r for r in summary["quality"] if "batch_correction" in r]
    if batch:
        lines += [
            "",
            "Batch correction (datasets with a real batch):",
            "",
            "| dataset | method | seeds | batch correction | silhouette (batch) | iLISI | kBET | graph connectivity "
            "| PCR comparison |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in batch:
            lines.append(
                f"| {r['dataset']} | {r['method']} | {r['seeds']} | **{_fmt(r['batch_correction'])}** | "
                + " | ".join(_fmt(r[m]) if m in r else "–" for m in BATCH_METRICS)
                + " |"
            )
    if summary["quality_comparisons"]:
        lines += [
            "",
            "JEPA against the others, bio conservation, paired over seeds:",
            "",
            "| dataset | comparison | difference [95% CI] | seeds |",
            "|---|---|---|---|",
        ]
        for c in summary["quality_comparisons"]:
            lo, hi = c["ci"]
            ci = f"[{lo:+.3f}, {hi:+.3f}]" if np.isfinite(lo) else ""
            lines.append(f"| {c['dataset']} | {c['comparison']} | {c['difference']:+.3f} {ci} | {c['seeds']} |")
    lines += ["", "Datasets:", ""] + [f"- {k}: {v}" for k, v in sorted(summary["notes"].items())]
    return "\n".join(lines) + "\n"


def robustness_markdown(summary: dict) -> str:
    """The depth curves and the dropout claim as markdown."""
    lines = [
        "# Dropout robustness: bio conservation against sequencing depth",
        "",
        *_partial(summary),
        "Counts thinned binomially (seeded); *transfer*: the model fitted at full depth embeds the thinned cells;",
        "*refit*: fitted again on the thinned cells. Mean over seeds [95 % t-interval].",
        "",
    ]
    rows = summary["robustness"]
    depths = sorted({r["depth"] for r in rows}, reverse=True)
    cell = {(r["dataset"], r["method"], r["mode"], r["depth"]): r for r in rows}
    lines += [
        "| dataset | method | mode | " + " | ".join(f"{d:.0%}" for d in depths) + " | seeds |",
        "|---|---|---|" + "---|" * (len(depths) + 1),
    ]
    for dataset, method in sorted({(r["dataset"], r["method"]) for r in rows if r["mode"] != "full"}):
        for mode in ("transfer", "refit"):
            if not any((dataset, method, mode, d) in cell for d in depths):
                continue
            parts, seeds = [], set()
            for d in depths:
                r = cell.get((dataset, method, "full" if d == 1.0 else mode, d))
                if r is None:
                    parts.append("–")
                    continue
                lo, hi = r["ci"]
                parts.append(f"{r['bio_conservation']:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) else ""))
                seeds.add(r["seeds"])
            lines.append(
                f"| {dataset} | {method} | {mode} | " + " | ".join(parts) + f" | {'/'.join(map(str, sorted(seeds)))} |"
            )
    claim = summary["robustness_claim"]
    lines += [
        "",
        f"## The claim: JEPA loses less of its full-depth score at {int(CLAIM_DEPTH * 100)} % of the reads",
        "",
        f"Rule, fixed before the runs: {claim.get('rule', '')}.",
        "",
        "| mode | comparison | loss JEPA | loss other | difference [95% CI] | pairs | JEPA loses less in "
        "| p (one-sided) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in claim["comparisons"]:
        ci = _signed_ci(c["ci"])
        lines.append(
            f"| {c['mode']} | {c['comparison']} | {c['loss_jepa']:.3f} | {c['loss_other']:.3f} | "
            f"{c['loss_difference']:+.3f} {ci} | {c['pairs']} | {c['jepa_loses_less_in']} | {c['p_one_sided']:.3g} |"
        )
    for mode, m in claim.get("modes", {}).items():
        lines.append(f"\n**{mode}: {'met' if m['met'] else 'not met'}** (p {m['p']:.3g}, Holm p {m['holm_p']:.3g}).")
    return "\n".join(lines) + "\n"
