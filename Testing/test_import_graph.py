"""The library's import graph: no circles (function-level imports included) and no import up the layers.

The graph is read from the source (every ``import`` and ``from ... import`` statement, wherever it stands), so an
import hidden inside a function counts as much as one at the top of a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

LIBRARY = Path(__file__).resolve().parents[1] / "RMAMambaSegmentation" / "RMAMambaSegmentationLib"
PACKAGE = "RMAMambaSegmentationLib"

# Lower layers first; a module may import from its own layer and the layers before it (docs/architecture.md).
LAYERS = (
    ("errors", "callbacks", "registry", "liver_segment", "network"),
    ("runtime", "imaging"),
    ("weights", "files"),
    ("inference",),
    ("batch", "evaluation", "training", "benchmark", "worker"),
    ("mrml",),
    ("panel", "cli"),
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(LIBRARY.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def library_modules() -> dict[str, Path]:
    return {module_name(path): path for path in LIBRARY.rglob("*.py")}


def imported_modules(name: str, path: Path, modules: set[str]) -> set[str]:
    """Every library module that ``name`` imports, at any depth of its code."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                       for alias in node.names]
        else:
            continue
        found.update(target for target in targets if target in modules and target != PACKAGE)
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = library_modules()
    return {name: imported_modules(name, path, set(modules)) for name, path in modules.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None
    for rank, names in enumerate(LAYERS):
        if parts[1] in names:
            return rank
    return None


def test_the_circle_finder_finds_a_lazy_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_imports_inside_functions(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from RMAMambaSegmentationLib.registry import entry\n    return entry\n")
    modules = set(library_modules())
    assert imported_modules(f"{PACKAGE}.m", source, modules) == {f"{PACKAGE}.registry"}


def test_no_import_circles_in_the_library() -> None:
    graph = import_graph()
    assert len(graph) > 50
    assert circles(graph) == []


def test_every_folder_imports_only_from_its_layer_or_below() -> None:
    graph = import_graph()
    upward = []
    for module, targets in sorted(graph.items()):
        rank = layer_of(module)
        for target in sorted(targets):
            target_rank = layer_of(target)
            if rank is not None and target_rank is not None and target_rank > rank:
                upward.append(f"{module} -> {target}")
    assert upward == []


def test_every_library_folder_has_a_layer() -> None:
    folders = {path.name for path in LIBRARY.iterdir() if path.is_dir() and (path / "__init__.py").exists()}
    layered = {name for names in LAYERS for name in names}
    assert folders - layered == set()
