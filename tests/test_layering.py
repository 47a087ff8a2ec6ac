"""The package's import graph: imports go one way down the layers, and no module imports itself back.

Every ``import`` of ``celljepa`` in ``src/celljepa`` counts, at module level and inside functions alike
(an import inside a function is how an upward import hides). The allowed direction is :data:`LAYERS`,
written here once: a module may import its own layer and the layers below it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# top to bottom; a layer may import itself and every layer below it, never one above
LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    ("face", frozenset({"celljepa", "celljepa.pp", "celljepa.tl", "celljepa.pl", "celljepa.cli"})),
    ("workflows", frozenset({"celljepa.bench", "celljepa.slurm"})),
    ("models", frozenset({"celljepa.models", "celljepa.peers"})),
    ("train", frozenset({"celljepa.train"})),
    ("nn", frozenset({"celljepa.nn"})),
    ("data/eval", frozenset({"celljepa.data", "celljepa.eval", "celljepa.splits", "celljepa.datasets"})),
    ("kernels", frozenset({"celljepa.kernels"})),
    (
        "base",
        frozenset(
            {
                "celljepa._io",
                "celljepa._errors",
                "celljepa._logging",
                "celljepa._settings",
                "celljepa._threads",
                "celljepa._version",
                "celljepa._defaults",
            }
        ),
    ),
)


def module_files(root: Path) -> dict[str, Path]:
    """``{dotted module name: file}`` of every module under ``root/<package>``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, modules: dict[str, Path], package: str) -> Iterator[tuple[str, int]]:
    """``(imported module, line)`` for every import of ``package`` in one file, resolved to a module."""
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - node.level + 1]
                mod = ".".join(anchor + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from pkg import sub` imports the submodule pkg.sub; `from mod import obj` imports mod
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names]
        else:
            continue
        for target in targets:
            if target == package or target.startswith(package + "."):
                while target not in modules and "." in target:  # an attribute of a module: the module
                    target = target.rsplit(".", 1)[0]
                yield target, node.lineno


def layer_of(module: str) -> int:
    """Index in :data:`LAYERS` of the longest prefix group that holds ``module``."""
    best, best_len = None, -1
    for i, (_, groups) in enumerate(LAYERS):
        for g in groups:
            if (module == g or module.startswith(g + ".")) and len(g) > best_len:
                best, best_len = i, len(g)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add its package to LAYERS in tests/test_layering.py")
    return best


def import_graph(root: Path, package: str = "celljepa") -> dict[str, dict[str, int]]:
    """``{module: {imported module: first line}}`` of ``root/package``."""
    modules = module_files(root)
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        if not name.startswith(package):
            continue
        edges = graph.setdefault(name, {})
        for target, line in imports_of(name, path, modules, package):
            if target != name:
                edges.setdefault(target, line)
    return graph


def upward_imports(graph: dict[str, dict[str, int]], files: dict[str, Path]) -> list[str]:
    """Every import of a higher layer, as ``file:line: a (layer) imports b (layer)``."""
    bad = []
    for a, edges in sorted(graph.items()):
        for b, line in sorted(edges.items()):
            if layer_of(b) < layer_of(a):
                bad.append(f"{files[a]}:{line}: {a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})")
    return bad


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # the graph has ~100 nodes: recursion depth is no concern
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


@pytest.fixture(scope="module")
def graph():
    return import_graph(SRC)


def test_every_module_has_a_layer(graph):
    for module in graph:
        layer_of(module)


def test_no_upward_import(graph):
    bad = upward_imports(graph, module_files(SRC))
    assert not bad, (
        "imports against the layers (face → workflows → models → train → nn → data/eval → kernels → "
        "base):\n" + "\n".join(bad)
    )


def test_no_import_cycle(graph):
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(" ↔ ".join(c) for c in found)


def test_the_graph_is_read_from_functions_too(graph):
    # the CLI imports the workflows inside its command functions only: they must be seen
    assert "celljepa.bench.consolidate" in graph["celljepa.cli._bench"]
    assert graph["celljepa.bench.fit"]["celljepa.bench.evaluate"] > 0


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def test_the_checks_catch_a_hidden_upward_import_and_a_cycle(tmp_path):
    _write(
        tmp_path,
        {
            "celljepa/__init__.py": "",
            "celljepa/_errors.py": "",
            "celljepa/kernels/__init__.py": "from .._errors import *\n",
            "celljepa/models/__init__.py": "from . import a\n",
            "celljepa/models/a.py": "def f():\n    from ..bench.evaluate import score_fold\n",
            "celljepa/models/b.py": "from .c import x\n",
            "celljepa/models/c.py": "import celljepa.models.b\nx = 1\n",
            "celljepa/bench/__init__.py": "",
            "celljepa/bench/evaluate.py": "from ..models import a\nfrom celljepa.kernels import thing\n",
        },
    )
    g = import_graph(tmp_path)
    bad = upward_imports(g, module_files(tmp_path))
    assert len(bad) == 1 and bad[0].endswith(
        ":2: celljepa.models.a (models) imports celljepa.bench.evaluate (workflows)"
    )
    assert g["celljepa.bench.evaluate"] == {"celljepa.models.a": 1, "celljepa.kernels": 2}
    assert cycles(g) == [["celljepa.bench.evaluate", "celljepa.models.a"], ["celljepa.models.b", "celljepa.models.c"]]
