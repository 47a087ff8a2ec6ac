"""Every ```python block of README.md and docs/*.md runs as written.

Each block runs in a fresh namespace with the working directory at a temporary folder that mirrors the
repository root: ``docs``, ``configs`` and ``benchmarks`` link to the repository's and ``../shared`` to the
shared data beside it, so a block's paths relative to the repository root resolve while what it writes lands in
the temporary folder. A block placed right after ``<!-- continues -->`` continues the block above it on the same
page (same namespace, same folder); its prose says so. Run with ``pytest -s`` to see each block's time.

docs/tutorials/ (executed notebooks) and docs/examples/*.py are not collected here.
"""

from __future__ import annotations

import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")


def _one_numba_thread() -> None:
    """One numba thread, as OMP_NUM_THREADS=1 gives torch one: numba shares torch's OpenMP runtime, and once
    scanpy's neighbors/UMAP launch numba's pool (a thread per core) torch runs two spinning threads; every later
    training in the process then runs ~10x slower beside other jobs on 2 cores (50 JEPA steps: 1.8 s before
    `sc.pp.neighbors`, 28.6 s after; 1.9 s with NUMBA_NUM_THREADS=1). A pytest plugin may import numba first."""
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    if "numba" in sys.modules:
        import numba

        numba.config.reload_config()
        parallel = sys.modules.get("numba.np.ufunc.parallel")
        if parallel is not None and not parallel._is_initialized:  # its pool size, read when imported
            parallel.NUM_THREADS = numba.config.NUMBA_NUM_THREADS


_one_numba_thread()

import matplotlib.pyplot as plt  # noqa: E402 - after selecting the backend

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINKED = ("docs", "configs", "benchmarks")  # read-only inputs a block may name relative to the repository root
CONTINUES = "<!-- continues -->"
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # line of the opening fence, 1-based
    code: str
    continues: bool  # runs after the previous block of the same page, in its namespace

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def _blocks() -> list[Block]:
    blocks = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        previous_end = 0
        for match in FENCE.finditer(text):
            between = text[previous_end : match.start()]
            continues = between.rstrip().endswith(CONTINUES)
            line = text.count("\n", 0, match.start()) + 1
            blocks.append(Block(page, line, match.group(1), continues))
            previous_end = match.end()
    return blocks


BLOCKS = _blocks()


def _chain(block: Block) -> list[Block]:
    """The blocks that run, in order, to run `block`: its page's blocks from the last one that does not continue."""
    same_page = [b for b in BLOCKS if b.page == block.page]
    index = same_page.index(block)
    start = index
    while same_page[start].continues:
        assert start > 0, f"{block.id} says it continues the block above, but it is the page's first block"
        start -= 1
    return same_page[start : index + 1]


def _workdir(root: Path) -> Path:
    """A folder where `docs/...`, `configs/...`, `benchmarks/...` and `../shared/...` resolve as at the repo root."""
    work = root / "repo"
    work.mkdir()
    for name in LINKED:
        (work / name).symlink_to(REPO / name, target_is_directory=True)
    (root / "shared").symlink_to(REPO.parent / "shared", target_is_directory=True)
    return work


# The state after the last block run: (block, namespace, working directory), so that a block that continues the
# one above reuses it when the tests run in page order; otherwise its chain runs again from its head.
_STATE: dict = {}


def _exec(block: Block, namespace: dict) -> float:
    start = time.perf_counter()
    exec(compile(block.code, block.id, "exec"), namespace)  # noqa: S102 - the docs are part of the repository
    plt.close("all")
    return time.perf_counter() - start


@pytest.fixture
def run_block(tmp_path, monkeypatch):
    """Run a block (and the blocks it continues) as written; return its namespace and its time in seconds."""
    monkeypatch.syspath_prepend(str(REPO / "docs" / "examples"))
    saved_path, saved_modules = list(sys.path), set(sys.modules)
    from celljepa.bench import consolidate

    saved_kinds, saved_loaders = dict(consolidate.KIND_FILES), dict(consolidate.LOADERS)
    cwd = os.getcwd()

    def run(block: Block) -> dict:
        chain = _chain(block)
        last = _STATE.get("block")
        if len(chain) > 1 and last == chain[-2] and _STATE["namespace"] is not None:
            namespace, work = _STATE["namespace"], _STATE["work"]
        else:
            namespace, work = {"__name__": "__docs_example__"}, _workdir(tmp_path)
            os.chdir(work)
            for before in chain[:-1]:
                seconds = _exec(before, namespace)
                sys.stderr.write(f"\n{block.id}: first runs {before.id} ({seconds:.1f} s)\n")
        _STATE.update(block=None, namespace=None, work=None)
        os.chdir(work)
        seconds = _exec(block, namespace)
        _STATE.update(block=block, namespace=namespace, work=work)
        return namespace, seconds

    yield run
    os.chdir(cwd)
    sys.path[:] = saved_path
    for name in set(sys.modules) - saved_modules:
        if name.split(".")[0] in {"my_model"}:
            del sys.modules[name]
    consolidate.KIND_FILES.clear()
    consolidate.KIND_FILES.update(saved_kinds)
    consolidate.LOADERS.clear()
    consolidate.LOADERS.update(saved_loaders)


# Specific checks of the blocks whose result matters: fragment of the block -> check(namespace, stdout).


def _check_front_page(namespace: dict, out: str) -> None:
    adata = namespace["adata"]
    assert adata.obsm["X_jepa"].shape == (adata.n_obs, 128) and "X_umap" in adata.obsm
    distances = adata.uns["edistance"]["distances"]
    groups = adata.obs["perturbation_id"].nunique()
    matrix = distances.to_numpy()
    assert distances.shape == (groups, groups) and set(distances.index) == set(adata.obs["perturbation_id"])
    assert (matrix.diagonal() == 0).all() and np.allclose(matrix, matrix.T) and matrix.max() > 0


def _check_jepa_embed(namespace: dict, out: str) -> None:
    adata = namespace["adata"]
    assert adata.obsm["X_jepa"].shape == (adata.n_obs, 128)
    assert "X_umap" in adata.obsm
    rank = float(out.strip().splitlines()[-1])
    assert rank == adata.uns["jepa"]["diagnostics"]["effective_rank"] > 0.25 * 128


def _check_transition(namespace: dict, out: str) -> None:
    pred, model = namespace["pred"], namespace["model"]
    n_ctrl = int(namespace["adata"].obs["is_control"].sum())
    assert pred.n_obs == n_ctrl and pred.obsm["X_jepa"].shape == (n_ctrl, 128)
    assert list(pred.var_names) == list(model.space_.genes)
    assert pred.uns["predict_perturbation"]["tokens"] == ["gene:KLF1", "gene:FOXL2"]
    assert "AnnData object with n_obs" in out


CHECKS = {
    'cj.tl.edistance(adata, "perturbation_id", use_rep="X_jepa")   # E-distance': _check_front_page,
    "cj.tl.jepa_embed(adata, max_steps=200, seed=0, progress=False)": _check_jepa_embed,
    'perturbation="gene:KLF1|gene:FOXL2"': _check_transition,
}


def _checks(block: Block) -> list:
    return [check for fragment, check in CHECKS.items() if fragment in block.code]


#: An optional extra a block's first line names -> the module it needs; without it the block is skipped, saying so
#: (.ci/run installs the extras, so there every block runs).
EXTRAS = {"celljepa[embedding]": "scib_metrics"}


#: Blocks whose first line states a run time of this many seconds or more (``# about 30 s on 2 cores``) are marked
#: ``extended`` (with every block that continues them): deselected from the default suite, run by .ci/run.
EXTENDED_SECONDS = 15
_STATED = re.compile(r"^#\s*about\s+(\d+)\s*(s|min)", re.I)


def _stated_seconds(block: Block) -> float:
    m = _STATED.match(block.code.splitlines()[0]) if block.code.strip() else None
    return 0.0 if m is None else float(m.group(1)) * (60 if m.group(2).lower() == "min" else 1)


def _params() -> list:
    return [
        pytest.param(
            b,
            id=b.id,
            marks=[pytest.mark.extended] if any(_stated_seconds(c) >= EXTENDED_SECONDS for c in _chain(b)) else [],
        )
        for b in BLOCKS
    ]


@pytest.mark.parametrize("block", _params())
def test_docs_block_runs(block, run_block, capsys):
    first = block.code.splitlines()[0]
    for extra, module in EXTRAS.items():
        if extra in first:
            pytest.importorskip(module, reason=f'{block.id} needs pip install "{extra}"')
    namespace, seconds = run_block(block)
    out = capsys.readouterr().out
    with capsys.disabled():
        print(f"\n{block.id}: {seconds:.1f} s")
    for check in _checks(block):
        check(namespace, out)


def test_blocks_collected():
    assert len(BLOCKS) >= 25
    assert {b.page.name for b in BLOCKS} >= {"README.md", "getting-started.md", "transition.md"}
    for block in BLOCKS:
        assert block.code.strip(), f"{block.id} is empty"
        _chain(block)
    for fragment in CHECKS:
        found = [b.id for b in BLOCKS if fragment in b.code]
        assert len(found) == 1, f"expected one docs block containing {fragment!r}, found {found}"
    front = [b for b in BLOCKS if b.page.name == "README.md"][0]
    code = [line for line in front.code.splitlines() if line.strip() and not line.startswith("import")]
    assert len(code) == 5, "the README's front-page example is five lines of code plus imports"
