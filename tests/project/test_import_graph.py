"""Imports go one way: each module imports only modules of its own layer or a lower one, and nothing imports in a
circle. The layers are the table in docs/architecture.md ("Layers"), top to bottom; every import counts — at the top
of a module, inside a function, under ``TYPE_CHECKING`` — because each is a dependency all the same.

The test prints the layers with their modules, the edges between layers, and the cycles (there must be none).
"""

from __future__ import annotations

import ast
import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "architecture.md"


@dataclass(frozen=True)
class Layer:
    name: str
    patterns: tuple[str, ...]  # module names, ``*`` as in fnmatch (``autolabel.serve*``: the package and below)

    def holds(self, module: str) -> bool:
        return any(fnmatch.fnmatchcase(module, p) for p in self.patterns)


def layers(page: str) -> list[Layer]:
    """The Layers table of docs/architecture.md, top layer first: ``| name | `module` `pattern*` ... | why |``."""
    section = page.split("\n## Layers\n", 1)[1].split("\n## ", 1)[0]
    out = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[1].startswith("`"):
            out.append(Layer(cells[0].strip("*"), tuple(re.findall(r"`([^`]+)`", cells[1]))))
    return out


def modules(package: Path) -> dict[str, Path]:
    """Dotted module name → file, for every module of the package (a package by its own name)."""
    out = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if "__pycache__" in parts:
            continue
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imported(module: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``module`` imports anywhere in its file (``from . import x``: module ``x``)."""
    top = module.split(".")[0]
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            names.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names)
    out = set()
    for name in names:
        while name and name not in known:  # a class or function of a module: the module
            name = name.rpartition(".")[0]
        if name and name.split(".")[0] == top and name != module:
            out.add(name)
    return out


def import_graph(package: Path) -> nx.DiGraph:
    found = modules(package)
    graph = nx.DiGraph()
    graph.add_nodes_from(found)
    for module, path in found.items():
        graph.add_edges_from((module, target) for target in imported(module, path, set(found)))
    return graph


def layer_of(module: str, stack: list[Layer]) -> int:
    """The index of the first layer holding ``module`` (0 is the top); -1 when none does."""
    return next((i for i, layer in enumerate(stack) if layer.holds(module)), -1)


def report(graph: nx.DiGraph, stack: list[Layer]) -> str:
    """The layers with their modules, how many imports go from each layer to each lower one, and the cycles."""
    lines = ["layers, top first (a module imports only its own layer and those below):"]
    for i, layer in enumerate(stack):
        members = sorted(m for m in graph if layer_of(m, stack) == i)
        lines.append(f"  {i:2d} {layer.name:<12} {len(members):3d} modules: {' '.join(members)}")
    between: dict[tuple[int, int], int] = {}
    for a, b in graph.edges:
        key = (layer_of(a, stack), layer_of(b, stack))
        between[key] = between.get(key, 0) + 1
    lines.append("imports between layers (from -> to: count):")
    lines += [f"  {stack[a].name} -> {stack[b].name}: {n}" for (a, b), n in sorted(between.items()) if a != b]
    cycles = cycles_of(graph)
    lines.append(f"cycles: {len(cycles)}")
    lines += [f"  {' -> '.join(c)} -> {c[0]}" for c in cycles]
    return "\n".join(lines)


def cycles_of(graph: nx.DiGraph) -> list[list[str]]:
    """One cycle through each strongly connected group of modules (a group of one module has none)."""
    groups = sorted((g for g in nx.strongly_connected_components(graph) if len(g) > 1), key=min)
    return [[a for a, _ in nx.find_cycle(graph.subgraph(g), source=min(g))] for g in groups]


def upward(graph: nx.DiGraph, stack: list[Layer]) -> list[str]:
    """Each import of a module from a higher layer, as ``a (layer) -> b (layer)``."""
    out = []
    for a, b in sorted(graph.edges):
        la, lb = layer_of(a, stack), layer_of(b, stack)
        if 0 <= lb < la:  # a module with no layer is reported by its own test
            out.append(f"{a} ({stack[la].name}) -> {b} ({stack[lb].name})")
    return out


@pytest.fixture(scope="module")
def stack() -> list[Layer]:
    return layers(PAGE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def graph() -> nx.DiGraph:
    return import_graph(ROOT / "autolabel")


def test_every_module_has_a_layer(graph: nx.DiGraph, stack: list[Layer]) -> None:
    unplaced = sorted(m for m in graph if layer_of(m, stack) < 0)
    assert not unplaced, f"docs/architecture.md Layers places no layer for: {unplaced}"


def test_imports_go_down_and_never_in_a_circle(graph: nx.DiGraph, stack: list[Layer]) -> None:
    print("\n" + report(graph, stack))
    cycles = cycles_of(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)
    up = upward(graph, stack)
    assert not up, "imports from a higher layer (move the shared code down, or the caller up):\n" + "\n".join(up)


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path / "pkg"


def test_function_level_and_type_checking_imports_count(tmp_path: Path) -> None:
    package = _package(tmp_path, {
        "__init__.py": "",
        "low.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .high import H\n",
        "high.py": "def f():\n    from . import low\n    from pkg.sub.deep import thing\n",
        "sub/__init__.py": "from ..low import x\n",
        "sub/deep.py": "import pkg\n",
    })
    graph = import_graph(package)
    assert set(graph.edges) == {("pkg.low", "pkg.high"), ("pkg.high", "pkg.low"), ("pkg.high", "pkg.sub.deep"),
                                ("pkg.sub", "pkg.low"), ("pkg.sub.deep", "pkg")}
    assert cycles_of(graph) == [["pkg.high", "pkg.low"]]
    stack = [Layer("top", ("pkg.high", "pkg.sub*")), Layer("bottom", ("pkg", "pkg.low"))]
    assert upward(graph, stack) == ["pkg.low (bottom) -> pkg.high (top)"]


def test_the_layers_are_read_from_the_page() -> None:
    page = "\n## Layers\n\n| layer | modules | why |\n|---|---|---|\n| **cli** | `a.cli` `a.b*` | x |\n\n## Next\n"
    assert layers(page) == [Layer("cli", ("a.cli", "a.b*"))]
