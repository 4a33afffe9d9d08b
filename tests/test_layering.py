"""No import cycle inside peftplug/.

The graph has one node per module of the package (a package is its ``__init__``) and one edge
per import statement that can run, read with ``ast`` from the source:

- imports at any depth count: module level, class bodies and function bodies alike (an import
  moved into a function only hides a cycle until the function runs); imports under
  ``if TYPE_CHECKING:`` never run and do not count;
- ``from peftplug.a import x`` is an edge to ``peftplug.a.x`` when that is a module, else to
  ``peftplug.a``; so ``from peftplug import MethodSpec`` reaches ``peftplug/__init__`` (which
  imports most of the package) wherever it is written;
- importing ``peftplug.a.b`` first runs the ``__init__`` of ``peftplug.a``: that is an edge too,
  unless the importer lives in ``peftplug.a`` (its own package is then already being imported).
  For the same reason no module gets an implicit edge to the root ``peftplug`` package.

Each failure names the modules of one cycle and the file:line of every import between them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import peftplug

PACKAGE_DIR = Path(peftplug.__file__).resolve().parent
ImportEdges = dict[str, dict[str, list[str]]]


def _module_names(package_dir: Path) -> dict[str, Path]:
    names = {}
    for path in package_dir.rglob("*.py"):
        parts = (package_dir.name, *path.relative_to(package_dir).with_suffix("").parts)
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runnable_imports(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import under ``node`` except those guarded by ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            yield from _runnable_imports(ast.Module(body=child.orelse, type_ignores=[]))
        else:
            yield from _runnable_imports(child)


def _targets(
    node: ast.Import | ast.ImportFrom, importer: str, is_package: bool, modules: set[str]
) -> set[str]:
    """The package's modules one import statement runs, parent packages included."""
    if isinstance(node, ast.Import):
        named = {alias.name for alias in node.names}
    else:
        base = node.module or ""
        if node.level:  # relative: from the importer's own package, one level up per extra dot
            package = (importer if is_package else importer.rpartition(".")[0]).split(".")
            anchor = package[: len(package) - node.level + 1]
            base = ".".join([*anchor, *([base] if base else [])])
        named = {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
    targets = set()
    for name in named:
        parts = name.split(".")
        for depth in range(2, len(parts)):  # packages the import runs first
            package = ".".join(parts[:depth])
            if not (importer == package or importer.startswith(package + ".")):
                targets.add(package)
        targets.add(name)
    return targets & modules


def _import_edges(package_dir: Path = PACKAGE_DIR) -> ImportEdges:
    modules = _module_names(package_dir)
    edges: ImportEdges = {name: {} for name in modules}
    for importer, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        for node in _runnable_imports(tree):
            where = f"{path.relative_to(package_dir.parent)}:{node.lineno}"
            for target in _targets(node, importer, path.name == "__init__.py", set(modules)):
                edges[importer].setdefault(target, []).append(where)
    return edges


def _cycles(edges: ImportEdges) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(name: str) -> None:
        index[name] = low[name] = len(index)
        stack.append(name)
        for target in edges[name]:
            if target not in index:
                visit(target)
                low[name] = min(low[name], low[target])
            elif target in stack:
                low[name] = min(low[name], index[target])
        if low[name] == index[name]:
            component = []
            while not component or component[-1] != name:
                component.append(stack.pop())
            if len(component) > 1 or name in edges[name]:
                components.append(sorted(component))

    for name in sorted(edges):
        if name not in index:
            visit(name)
    return components


def _describe(component: list[str], edges: ImportEdges) -> str:
    lines = [f"cycle among {', '.join(component)}:"]
    for importer in component:
        for target, where in sorted(edges[importer].items()):
            if target in component:
                lines.append(f"  {importer} -> {target} ({', '.join(where)})")
    return "\n".join(lines)


def test_the_rules_on_a_small_package(tmp_path: Path) -> None:
    files = {
        "__init__.py": "from pkg.a import A\n",
        "a.py": "A = 1\ndef late():\n    from pkg import A\n",
        "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import A\n"
        "from pkg.sub.leaf import x\n",
        "sub/__init__.py": "from .leaf import x\n",
        "sub/leaf.py": "from pkg.sub import other\nx = 1\n",
    }
    for name, source in files.items():
        (tmp_path / "pkg" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "pkg" / name).write_text(source)
    edges = _import_edges(tmp_path / "pkg")
    assert set(edges["pkg.a"]) == {"pkg"}  # inside a function, a name from __init__
    assert set(edges["pkg.b"]) == {"pkg.sub", "pkg.sub.leaf"}  # parent package; no TYPE_CHECKING
    assert set(edges["pkg.sub"]) == {"pkg.sub.leaf"}  # a relative import
    assert set(edges["pkg.sub.leaf"]) == {"pkg.sub"}  # its own package, by an __init__ name
    assert _cycles(edges) == [["pkg", "pkg.a"], ["pkg.sub", "pkg.sub.leaf"]]


def test_no_import_cycle_inside_peftplug() -> None:
    edges = _import_edges()
    problems = [_describe(component, edges) for component in _cycles(edges)]
    assert not problems, "\n".join(problems)
