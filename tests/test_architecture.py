"""The package's plan holds: no import cycle, no import up the layer list of docs/ARCHITECTURE.md, and no
file over 600 lines unless its docstring says why it must stay one file.

The import graph is built from the source with ``ast`` (nothing is imported), counting imports inside
functions too (the old kiosk <-> app circle was made of such lazy imports) but not those under
``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "edge_mfr"
MAX_LINES = 600
ONE_FILE_MARK = "Why one file:"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skip


def imports_of(source: str, modules: set[str]) -> set[str]:
    """The package modules ``source`` imports (``from pkg import mod`` counts as the module when it is one)."""
    tree = ast.parse(source)
    skip = _type_checking_nodes(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "edge_mfr")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] == "edge_mfr":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
    return {m for m in found if m in modules}


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    files = {module_name(p): p for p in package.rglob("*.py")}
    names = set(files)
    return {m: imports_of(p.read_text(encoding="utf-8"), names) - {m} for m, p in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def layer_list(doc: Path = REPO / "docs" / "ARCHITECTURE.md") -> list[list[str]]:
    """The numbered list under '## Layers': the back-quoted room names of each item, lowest layer first."""
    text = doc.read_text(encoding="utf-8")
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    layers = []
    for line in section.splitlines():
        if re.match(r"^\d+\.\s", line):
            head = line.split(":", 1)[0]  # the rooms are named before the colon
            layers.append(re.findall(r"`([\w.]+)`", head))
    return layers


def room(module: str) -> str:
    """``edge_mfr.vision.align`` -> ``vision``; ``edge_mfr.app`` -> ``app``; the package itself -> ``edge_mfr``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def upward_imports(graph: dict[str, set[str]], layers: list[list[str]]) -> list[str]:
    rank = {name: i for i, names in enumerate(layers) for name in names}
    bad = []
    for src, targets in graph.items():
        for dst in targets:
            if rank[room(dst)] > rank[room(src)]:
                bad.append(f"{src} imports {dst} ({room(src)} is below {room(dst)})")
    return sorted(bad)


def test_the_package_has_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_every_room_is_in_the_layer_list_and_no_import_goes_up() -> None:
    graph = import_graph()
    layers = layer_list()
    listed = {name for names in layers for name in names}
    rooms = {room(m) for m in graph}
    assert rooms <= listed, f"rooms missing from docs/ARCHITECTURE.md's layer list: {sorted(rooms - listed)}"
    assert upward_imports(graph, layers) == []


def test_the_checks_catch_a_cycle_and_an_upward_import() -> None:
    graph = {"edge_mfr.app": {"edge_mfr.cli"}, "edge_mfr.cli": {"edge_mfr.app"}, "edge_mfr.vision.a": set()}
    assert find_cycle(graph) in (["edge_mfr.app", "edge_mfr.cli", "edge_mfr.app"],)
    assert upward_imports({"edge_mfr.vision.a": {"edge_mfr.app"}, "edge_mfr.app": set()},
                          [["vision"], ["app"]]) == ["edge_mfr.vision.a imports edge_mfr.app (vision is below app)"]
    lazy = "def f():\n    from edge_mfr.cli import main\nif TYPE_CHECKING:\n    from edge_mfr.app import A\n"
    assert imports_of(lazy, {"edge_mfr.cli", "edge_mfr.app"}) == {"edge_mfr.cli"}


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(REPO)))
def test_no_file_is_over_600_lines_unless_its_docstring_says_why(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    lines = text.count("\n")
    if lines <= MAX_LINES:
        return
    doc = ast.get_docstring(ast.parse(text)) or ""
    assert ONE_FILE_MARK in doc, (f"{path.relative_to(REPO)}: {lines} lines; split it by job, or say in its "
                                  f"module docstring '{ONE_FILE_MARK} ...' why it must stay one file")
