"""The C++ all-pairs E-distance of this build against an earlier build's, calls alternating, in one process.

"Not slower than before" is measured against the kernel as it was shipped, not only against the first kernel
kept in-tree (``cpu_kernel("tiles")``, which shares the new packing and epilogue). Build the earlier release's
wheel and point this script at its ``_core`` module::

    git worktree add /tmp/old v0.1.0 && pip wheel --no-deps --no-build-isolation -w /tmp/oldwheel /tmp/old
    (cd /tmp/oldwheel && unzip -o -q *.whl 'celljepa/_core*')
    python benchmarks/edistance_vs_build.py /tmp/oldwheel/celljepa/_core.cpython-311-x86_64-linux-gnu.so

Shapes: the all-pairs benchmark shape (100 groups × 200 cells × 50 dims), small groups (10 × 20 × 50) and wide
data (20 × 200 × 2,000), float32. Prints new / old from best times and the median of per-round ratios.
"""

import importlib.util
import statistics
import sys
import time

import torch

from celljepa.kernels._ext import load_core

spec = importlib.util.spec_from_file_location("_core", sys.argv[1])
old = importlib.util.module_from_spec(spec)
spec.loader.exec_module(old)
new = load_core()


def call(mod, x, off, blocks, out, extra):
    mod.edistance_block_sums(
        x.data_ptr(),
        x.shape[0],
        x.data_ptr(),
        x.shape[0],
        x.shape[1],
        off.data_ptr(),
        off.data_ptr(),
        blocks.data_ptr(),
        blocks.shape[0],
        True,
        False,
        False,
        out.data_ptr(),
        *extra,
    )


for name, (g, ng, d, rounds) in {
    "allpairs-100x200x50": (100, 200, 50, 21),
    "small-10x20x50": (10, 20, 50, 3000),
    "wide-20x200x2000": (20, 200, 2000, 15),
}.items():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(g * ng, d, generator=gen)
    off = torch.arange(0, g * ng + 1, ng)
    blocks = torch.triu_indices(g, g).T.contiguous()
    out = torch.empty(blocks.shape[0], dtype=torch.float64)
    t = {"old": [], "new": []}
    for r in range(rounds + 3):
        for k in ("old", "new") if r % 2 else ("new", "old"):
            t0 = time.perf_counter()
            call(old if k == "old" else new, x, off, blocks, out, () if k == "old" else (1,))
            t[k].append(time.perf_counter() - t0)
    o, n = t["old"][3:], t["new"][3:]
    macs = (g * ng) ** 2 / 2 * d
    per_round = statistics.median(a / b for a, b in zip(n, o, strict=True))
    print(
        f"{name}: new/old {min(n) / min(o):.3f} (best) {per_round:.3f} (median per round); "
        f"new {macs / min(n) / 1e9:.1f} GMAC/s, old {macs / min(o) / 1e9:.1f} GMAC/s"
    )
