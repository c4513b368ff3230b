"""The rooms' import rules and size limits, read from the source with ``ast`` (nothing is
imported): a violation names the file and the import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "petra"
ROOMS = ("compression", "exporters", "runtimes", "profilers", "optimizer", "executors", "models", "report")


def _runtime_nodes(path: Path) -> list[ast.AST]:
    """Every node of ``path`` except what sits under ``if TYPE_CHECKING:`` (no import at run time)."""
    out, todo = [], [ast.parse(path.read_text())]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            todo.extend(node.orelse)
            continue
        out.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return out


def _imports(path: Path) -> list[str]:
    """Every petra module ``path`` imports at run time, at module level or inside a function."""
    out = []
    for node in _runtime_nodes(path):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
        elif isinstance(node, ast.Import):
            out.extend(a.name for a in node.names)
    return [m for m in out if m == "petra" or m.startswith("petra.")]


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _files(room: str) -> list[Path]:
    return sorted((SRC / room).rglob("*.py"))


@pytest.mark.parametrize(("room", "forbidden"), [
    ("models", {"optimizer", "executors", "cli", "progress", "report", "pipeline"}),
    ("runtimes", set(ROOMS) - {"runtimes"} | {"pipeline", "candidate", "cli", "progress"}),
    ("compression", {"optimizer", "executors", "models", "cli", "progress", "report", "pipeline"}),
    ("exporters", {"optimizer", "executors", "models", "cli", "progress", "report", "pipeline"}),
    ("profilers", {"optimizer", "executors", "models", "cli", "progress", "report", "pipeline"}),
    ("optimizer", {"cli", "progress", "report", "tracking"}),
])
def test_rooms_import_only_what_the_design_allows(room, forbidden):
    bad = [f"{f.relative_to(SRC)} imports {m}" for f in _files(room) for m in _imports(f)
           if _room(m) in forbidden]
    assert bad == []


def _module_graph() -> dict[str, set[str]]:
    graph = {}
    for f in SRC.rglob("*.py"):
        rel = f.relative_to(SRC.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        graph[name] = set(_imports(f))
    return graph


def test_no_import_circles_between_rooms():
    """Room A importing room B while B imports A is a circle, whatever the modules."""
    edges = {(_room(a), _room(b)) for a, deps in _module_graph().items() for b in deps
             if _room(a) in ROOMS and _room(b) in ROOMS and _room(a) != _room(b)}
    assert sorted((a, b) for a, b in edges if (b, a) in edges) == []


def test_modules_and_functions_stay_small():
    big = [f"{f.relative_to(SRC)}: {n} lines" for f in SRC.rglob("*.py")
           if (n := len(f.read_text().splitlines())) > 420]
    long = []
    for f in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > 65:
                    long.append(f"{f.relative_to(SRC)}:{node.name} {n} lines")
    assert big == [] and long == []


RUNTIME_WORDS = {"onnxruntime", "openvino", ".xml", ".onnx", "OPENVINO", "ORT"}


def _names_a_runtime(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return node.value in RUNTIME_WORDS
    return isinstance(node, ast.Name) and node.id in RUNTIME_WORDS


def test_only_runtimes_name_a_runtime():
    """No code outside runtimes/ compares anything with a runtime's name or a file suffix."""
    bad = []
    for f in SRC.rglob("*.py"):
        if f.parent.name == "runtimes":
            continue
        for node in _runtime_nodes(f):
            if isinstance(node, ast.Compare) and any(map(_names_a_runtime, [node.left, *node.comparators])):
                bad.append(f"{f.relative_to(SRC)}:{node.lineno}: {ast.unparse(node)}")
    assert bad == []


def test_one_module_imports_pygad():
    users = [f.relative_to(SRC) for f in SRC.rglob("*.py") if "pygad" in _imports_any(f)]
    assert [str(u) for u in users] == ["optimizer/nsga.py"]


def _imports_any(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
    return out
