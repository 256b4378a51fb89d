"""The house's shape, read from the code itself: no import cycle among the modules or the
packages of ``monolith`` and ``ray_jobs``, the library never imports Ray or the job layer, and
no module or function outgrows what one reader holds in mind."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("monolith", "ray_jobs")
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the packages."""
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str, is_package: bool, known: dict[str, Path]) -> Iterator[str]:
    """Every module an import statement names, at any depth (an import inside a function
    still ties the two modules), except under ``if TYPE_CHECKING:``. ``from pkg import mod``
    names the module, not the package (whose ``__init__`` runs for any of its modules)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _type_checking_only(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
        stack.extend(ast.iter_child_nodes(node))


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        targets = {
            t
            for t in _imports(tree, name, path.name == "__init__.py", modules)
            if t in modules and t != name
        }
        graph[name] = targets
    return graph


def _package_of(module: str) -> str:
    """The room a module lives in: its package below the top one (``monolith.data``), or the
    top-level module itself (``monolith.config``)."""
    parts = module.split(".")
    return ".".join(parts[:2])


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one member (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def _ties(graph: dict[str, set[str]], members: list[str]) -> list[str]:
    inside = set(members)
    return [f"{a} -> {b}" for a in members for b in sorted(graph[a]) if b in inside]


def test_no_import_cycle_between_modules() -> None:
    graph = _graph()
    cycles = _cycles(graph)
    assert not cycles, "\n".join("; ".join(_ties(graph, c)) for c in cycles)


def test_no_import_cycle_between_packages() -> None:
    graph: dict[str, set[str]] = {}
    for module, targets in _graph().items():
        room = _package_of(module)
        graph.setdefault(room, set()).update(
            _package_of(t) for t in targets if _package_of(t) != room
        )
    cycles = _cycles(graph)
    assert not cycles, "\n".join("; ".join(_ties(graph, c)) for c in cycles)


def test_the_library_never_imports_ray_and_reaches_the_jobs_through_one_seam() -> None:
    seams = set()
    for name, path in _modules().items():
        if not name.startswith("monolith"):
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        named = set(_imports(tree, name, path.name == "__init__.py", {}))
        ray = sorted(t for t in named if t.split(".")[0] == "ray")
        assert not ray, f"{path.relative_to(REPO)} imports {ray}"
        if any(t.split(".")[0] == "ray_jobs" for t in named):
            seams.add(str(path.relative_to(REPO)))
    assert len(seams) <= 1, f"the library reaches the job layer from {sorted(seams)}"


def _sizes() -> Iterator[tuple[str, int, list[tuple[str, int]]]]:
    for path in _modules().values():
        text = path.read_text()
        tree = ast.parse(text, filename=str(path))
        functions = [
            (f"{node.name} (line {node.lineno})", node.end_lineno - node.lineno + 1)
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        ]
        yield str(path.relative_to(REPO)), len(text.splitlines()), functions


@pytest.mark.parametrize("limit", [MAX_MODULE_LINES])
def test_no_module_over_the_line_limit(limit: int) -> None:
    over = [f"{path}: {lines}" for path, lines, _ in _sizes() if lines > limit]
    assert not over, f"modules over {limit} lines: " + ", ".join(over)


@pytest.mark.parametrize("limit", [MAX_FUNCTION_LINES])
def test_no_function_over_the_line_limit(limit: int) -> None:
    over = [
        f"{path}: {name} {lines}"
        for path, _, functions in _sizes()
        for name, lines in functions
        if lines > limit
    ]
    assert not over, f"functions over {limit} lines: " + ", ".join(over)


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The checks above could fail: a two-module cycle and a three-module one are found."""
    graph = {"a": {"b"}, "b": {"a", "c"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"a"}}
    assert _cycles(graph) == [["a", "b"], ["c", "d", "e"]]


def test_python_dash_m_monolith_is_the_monolith_command() -> None:
    import subprocess
    import sys

    module = subprocess.run(
        [sys.executable, "-m", "monolith", "data", "--help"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    script = subprocess.run(
        [str(Path(sys.executable).with_name("monolith")), "data", "--help"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert module.returncode == script.returncode == 0, module.stderr[-2000:]
    assert module.stdout == script.stdout and "prepare" in module.stdout


def test_no_module_imports_another_modules_private_names() -> None:
    private = []
    for name, path in _modules().items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PACKAGES:
                hidden = [a.name for a in node.names if a.name.startswith("_")]
                private += [f"{name} imports {node.module}.{h}" for h in hidden]
    assert not private, private
