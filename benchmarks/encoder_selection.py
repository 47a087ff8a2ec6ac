"""Encoder changes judged without labels: split-half retrieval of held-out cells (docs/science.md has the rule).

    pip install ".[embedding]"
    python benchmarks/encoder_selection.py --out benchmarks/results/encoder_selection

Each candidate (``celljepa.bench.embedding.ENCODER_CANDIDATES``: the default, count-aware views, Hallmark module
masks at ratio 0.85, 6,000 steps) is trained on 90 % of the cells of Kang 2018, CiteFuse and Papalexi 2021 (the
datasets with counts), seeds 0, 1, 2; the held-out cells' reads are split into two binomial halves, both
embedded, and each half must find its own other half. One task file per fit under ``OUT/selection/``; a run
resumes; ``--collect`` rebuilds the table. Labels are never read.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from celljepa._io import write_json_atomic, write_text_atomic
    from celljepa.bench import embedding as E

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/encoder_selection"))
    p.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    p.add_argument("--datasets", nargs="+", default=list(E.SELECTION_DATASETS), choices=E.DATASETS)
    p.add_argument("--candidates", nargs="+", default=list(E.ENCODER_CANDIDATES), choices=list(E.ENCODER_CANDIDATES))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--collect", action="store_true", help="only rebuild the table from finished fits")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    candidates = {k: E.ENCODER_CANDIDATES[k] for k in args.candidates}
    if args.collect:
        results = [json.loads(f.read_text()) for f in sorted((args.out / "selection").rglob("*.json"))]
    else:
        datasets = [E.load_embedding_dataset(name, args.data_dir) for name in args.datasets]
        results = E.run_encoder_selection(
            datasets, args.out, candidates=candidates, seeds=args.seeds, progress=not args.no_progress
        )
    decision = E.selection_decision(results)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "selection.json", {"decision": decision, "results": results})
    text = E.selection_markdown(decision, results)
    write_text_atomic(args.out / "selection.md", text)
    print(text)
    print(f"{len(results)} fits in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    raise SystemExit(main())
