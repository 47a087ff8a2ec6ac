"""Embedding quality and dropout robustness: JEPA vs PCA vs scVI, scored with scib-metrics.

One command runs (or resumes) every task and writes the tables and the figure::

    pip install ".[embedding]"
    python benchmarks/embedding_quality.py --out benchmarks/results/embeddings

Datasets (``--datasets``, default all): Kang 2018 (counts recovered from its log data), CiteFuse (raw counts,
labels called from its proteins), scanpy's bundled ``pbmc68k_reduced`` and the PerturBench demo cells (log
data only), Papalexi 2021 (raw counts, batch metrics only). Each task is a JSON file under ``OUT/tasks/``,
written atomically with the digest of its inputs, so an interrupted run resumes where it stopped; ``--collect``
only rebuilds the tables and the figure from the finished tasks. See ``docs/embeddings.md``.

An encoder change of the label-free selection (``benchmarks/encoder_selection.py``) is scored the same way,
after the choice, beside PCA of the same cells::

    python benchmarks/embedding_quality.py --candidate count_views --methods jepa pca \\
        --out benchmarks/results/embeddings/candidates/count_views
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from celljepa.bench import embedding as E

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/embeddings"))
    p.add_argument("--data-dir", type=Path, default=Path("../shared/data"), help="the shared data folder")
    p.add_argument("--datasets", nargs="+", default=list(E.DATASETS), choices=E.DATASETS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=list(E.METHODS), choices=E.METHODS)
    p.add_argument("--depths", nargs="+", type=float, default=list(E.DEPTHS), help="fractions of reads kept")
    p.add_argument("--jepa-steps", type=int, default=None, help="JEPA training steps (default: the config's)")
    p.add_argument(
        "--jepa-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a CellJEPA keyword argument (value read as JSON, else a string), e.g. mask=module",
    )
    p.add_argument(
        "--candidate",
        choices=list(E.ENCODER_CANDIDATES),
        default=None,
        help="score an encoder change of the selection (celljepa.bench.embedding.ENCODER_CANDIDATES) instead of "
        "the default JEPA, e.g. --candidate count_views --methods jepa pca --out OUT/candidates/count_views",
    )
    p.add_argument("--scvi-max-epochs", type=int, default=None, help="default: scvi-tools' own rule")
    p.add_argument("--collect", action="store_true", help="only rebuild the tables and figure from finished tasks")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    options = {}
    for item in args.jepa_option:
        key, _, value = item.partition("=")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    settings = {"jepa_steps": args.jepa_steps, "jepa_options": options, "scvi_max_epochs": args.scvi_max_epochs}
    if args.candidate:
        if options or args.jepa_steps is not None:
            p.error("--candidate fixes the JEPA settings: drop --jepa-option / --jepa-steps")
        settings.update(E.ENCODER_CANDIDATES[args.candidate])
    t0 = time.perf_counter()
    datasets = [E.load_embedding_dataset(name, args.data_dir) for name in args.datasets]
    if (settings.get("jepa_config") or {}).get("data", {}).get("counts_layer") and "jepa" in args.methods:
        skipped = [ds.name for ds in datasets if ds.counts is None]
        if skipped:  # count-aware views train on reads: nothing to thin where a dataset has no counts
            print(f"{args.candidate} needs counts: leaving out {', '.join(skipped)} (log data only)", file=sys.stderr)
            datasets = [ds for ds in datasets if ds.counts is not None]
    if args.collect:
        wanted = {ds.name for ds in datasets}
        results = [json.loads(f.read_text()) for f in sorted((args.out / "tasks").rglob("*.json"))]
        results = [
            r for r in results if r["dataset"] in wanted and r["seed"] in args.seeds and r["method"] in args.methods
        ]
    else:
        results = E.run_embedding_benchmark(
            datasets,
            args.out,
            seeds=args.seeds,
            methods=args.methods,
            depths=args.depths,
            settings=settings,
            progress=not args.no_progress,
        )
    expected = sum(len(E.task_list(ds, args.seeds, args.methods, args.depths)) for ds in datasets)
    E.collect(results, args.out, expected=expected)
    import celljepa as cj

    frame = E.scores_frame(results)
    if "bio_conservation" in frame and (frame["mode"] != "full").any():
        cj.pl.dropout_robustness(frame, save=args.out / "robustness.png", show=False)
    print((args.out / "embedding_quality.md").read_text())
    print((args.out / "robustness.md").read_text())
    print(f"{len(results)} tasks in {time.perf_counter() - t0:.0f} s; tables in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")  # numba's thread pool beside torch's OpenMP threads spins
    raise SystemExit(main())
