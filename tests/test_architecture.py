"""The package's import structure, read statically from its source (``ast``, no imports run).

Two graphs of runtime imports between the package's modules:

* **load-time** (graph a): imports executed when a module is first imported: module top level,
  including inside top-level ``try``/``if``/``with`` blocks and class bodies;
* **all** (graph b): the load-time imports plus the deferred ones inside functions.

Imports under ``if TYPE_CHECKING:`` never run, so neither graph has them. Importing a submodule
runs its parent packages' ``__init__`` first, so an edge to ``ensemble_distill.data.idx`` comes
with edges to ``ensemble_distill.data`` and ``ensemble_distill`` — except to the packages that
enclose the importer itself: those started initialising before the importer was loaded, so the
implied edge orders nothing (an explicit import of an enclosing package is kept). Dynamic imports
(``importlib.import_module``) are not seen.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

PACKAGE = "ensemble_distill"
SOURCE = Path(__file__).resolve().parents[1] / "src" / PACKAGE

Graph = dict[str, set[str]]

# Each face with the modules that belong to it, which no other face and nothing below the faces
# may import: the API's checks of what it is handed (``api_checks``); the command line's output
# folder guard (``out_folder``) and settings fingerprints (``settings``).
FACES = {
    "api": ("api", "api_checks"),
    "pipeline": ("pipeline", "out_folder", "settings"),
    "export": ("export",),
}
# Above the faces: it calls pipeline and export.
COMMAND_LINE = ("cli", "config_listing", "sweep", "__main__")
ENGINE = ("methods", "models", "data", "metrics", "teachers")
ABOVE_ENGINE = (*COMMAND_LINE, *(area for areas in FACES.values() for area in areas))


# --- reading the source ----------------------------------------------------------------------


def module_files(source: Path = SOURCE, package: str = PACKAGE) -> dict[str, Path]:
    """Every module of the package by dotted name; a package's name maps to its ``__init__``."""
    modules = {}
    for path in sorted(source.rglob("*.py")):
        parts = [package, *path.relative_to(source).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    """Whether an ``if`` test is ``TYPE_CHECKING`` or ``typing.TYPE_CHECKING``."""
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def import_statements(tree: ast.AST) -> Iterator[tuple[ast.stmt, bool]]:
    """Each runtime import statement in ``tree``, with whether it is deferred (in a function).

    The body of ``if TYPE_CHECKING:`` is skipped (its ``else`` is not).
    """
    return _imports_in(ast.iter_child_nodes(tree), deferred=False)


def _imports_in(nodes: Iterable[ast.AST], deferred: bool) -> Iterator[tuple[ast.stmt, bool]]:
    """The import statements among ``nodes`` and inside them (see ``import_statements``)."""
    for node in nodes:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, deferred
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _imports_in(node.orelse, deferred)
        else:
            in_function = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            yield from _imports_in(ast.iter_child_nodes(node), deferred or in_function)


def _package_of(module: str, is_package: bool) -> str:
    """The package a module's relative imports start from."""
    return module if is_package else module.rpartition(".")[0]


def _with_parents(module: str) -> set[str]:
    """``module`` and every package enclosing it (whose ``__init__`` importing it runs)."""
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def _existing(module: str, modules: set[str]) -> str:
    """The longest prefix of ``module`` that is a module of the package."""
    while module not in modules and "." in module:
        module = module.rpartition(".")[0]
    return module


def resolve(
    statement: ast.Import | ast.ImportFrom,
    importer: str,
    modules: set[str],
    is_package: bool = False,
    package: str = PACKAGE,
) -> set[str]:
    """The package's modules that ``statement`` in module ``importer`` loads, parents included.

    ``from pkg.sub import name`` loads ``pkg.sub.name`` when that is a module, else ``pkg.sub``.
    """
    if isinstance(statement, ast.Import):
        targets = [alias.name for alias in statement.names]
    else:
        base = statement.module or ""
        if statement.level:
            anchor = _package_of(importer, is_package).split(".")
            anchor = anchor[: len(anchor) - (statement.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        targets = [f"{base}.{alias.name}" for alias in statement.names]
        targets = [name if name in modules else base for name in targets]
    found = set()
    for target in targets:
        if target == package or target.startswith(package + "."):
            module = _existing(target, modules)
            enclosing = {p for p in _with_parents(module) if importer.startswith(p + ".")}
            found |= {module} | (_with_parents(module) - enclosing)
    return found & modules


def module_imports(
    source: str,
    importer: str,
    modules: set[str],
    is_package: bool = False,
    deferred: bool = True,
    package: str = PACKAGE,
) -> set[str]:
    """The modules that ``source`` (the text of ``importer``) imports; ``deferred=False`` keeps
    the load-time ones only. An import of the module itself is dropped."""
    found = set()
    for statement, is_deferred in import_statements(ast.parse(source)):
        if deferred or not is_deferred:
            found |= resolve(statement, importer, modules, is_package, package)
    return found - {importer}


def import_graph(deferred: bool, source: Path = SOURCE) -> Graph:
    """Graph (a) (``deferred=False``) or (b) of the package under ``source``."""
    files = module_files(source)
    names = set(files)
    return {
        name: module_imports(
            path.read_text(encoding="utf-8"), name, names, path.name == "__init__.py", deferred
        )
        for name, path in files.items()
    }


# --- graph helpers ---------------------------------------------------------------------------


def find_cycle(graph: Graph) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, c, a]``, or None when it is acyclic (self-loops
    are ignored). Iterative depth-first search, in sorted order for a stable answer."""
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        path, on_path = [start], {start}
        stack = [iter(sorted(graph[start] - {start}))]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                stack.pop()
                finished = path.pop()
                on_path.discard(finished)
                done.add(finished)
            elif nxt in on_path:
                return [*path[path.index(nxt) :], nxt]
            elif nxt not in done:
                path.append(nxt)
                on_path.add(nxt)
                stack.append(iter(sorted(graph.get(nxt, set()) - {nxt})))
    return None


def cycles(graph: Graph, limit: int = 20) -> list[list[str]]:
    """Up to ``limit`` cycles of ``graph``: find one, cut its last edge, repeat. Every cycle
    of ``graph`` runs through at least one reported edge, so fixing those fixes them all."""
    graph = {node: set(targets) for node, targets in graph.items()}
    found = []
    while len(found) < limit and (cycle := find_cycle(graph)):
        found.append(cycle)
        graph[cycle[-2]].discard(cycle[-1])
    return found


def in_area(module: str, area: str, package: str = PACKAGE) -> bool:
    """Whether ``module`` is ``package.area`` or lies under it."""
    full = f"{package}.{area}"
    return module == full or module.startswith(full + ".")


def offending_edges(graph: Graph, sources: tuple[str, ...], targets: tuple[str, ...]) -> list[str]:
    """The edges ``a -> b`` of ``graph`` from an area in ``sources`` to one in ``targets``."""
    return sorted(
        f"{a} -> {b}"
        for a, imported in graph.items()
        for b in imported
        if any(in_area(a, s) for s in sources) and any(in_area(b, t) for t in targets)
    )


# --- the rules -------------------------------------------------------------------------------


def test_module_level_imports_have_no_cycle():
    found = cycles(import_graph(deferred=False))
    assert not found, "import cycles at load time:\n" + "\n".join(map(" -> ".join, found))


@pytest.mark.parametrize("face", FACES)
def test_faces_do_not_import_each_other(face):
    others = tuple(area for other in FACES if other != face for area in FACES[other])
    edges = offending_edges(import_graph(deferred=True), FACES[face], others)
    assert not edges, "a face imports another face:\n" + "\n".join(edges)


@pytest.mark.parametrize("area", ENGINE)
def test_engine_never_imports_the_faces(area):
    edges = offending_edges(import_graph(deferred=True), (area,), ABOVE_ENGINE)
    assert not edges, "the engine imports a face:\n" + "\n".join(edges)


def test_nothing_below_the_faces_imports_one():
    # The engine's own modules too (engine.py, evaluation.py, training.py, ...), not only its
    # packages; the package root re-exports the API and is left out.
    graph = import_graph(deferred=True)
    below = tuple(
        module.removeprefix(PACKAGE + ".")
        for module in graph
        if module != PACKAGE and not any(in_area(module, area) for area in ABOVE_ENGINE)
    )
    edges = offending_edges(graph, below, ABOVE_ENGINE)
    assert not edges, "a module below the faces imports one:\n" + "\n".join(edges)


def test_no_distill_module_shadows_the_distill_function():
    clashes = [p for p in (SOURCE / "distill", SOURCE / "distill.py") if p.exists()]
    assert not clashes, f"rename these, `{PACKAGE}.distill` is the function: {clashes}"


# --- the helpers themselves ------------------------------------------------------------------


def test_find_cycle_reports_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1]
    assert set(cycle) == {"a", "b", "c"}


def test_find_cycle_passes_an_acyclic_graph():
    diamond = {"a": {"b", "c"}, "b": {"d"}, "c": {"d"}, "d": {"d"}}  # the self-loop is ignored
    assert find_cycle(diamond) is None
    assert find_cycle({}) is None
    assert cycles(diamond) == []


def test_cycles_lists_each_independent_cycle():
    graph = {"a": {"b"}, "b": {"a", "c"}, "c": {"d"}, "d": {"c"}}
    assert sorted(map(frozenset, cycles(graph))) == sorted(
        [frozenset({"a", "b"}), frozenset({"c", "d"})]
    )


SYNTHETIC = {"pkg", "pkg.api", "pkg.data", "pkg.data.idx", "pkg.data.base", "pkg.core", "pkg.util"}


def _imports(source: str, importer: str = "pkg.api", deferred: bool = True) -> set[str]:
    """``module_imports`` for the synthetic package ``pkg``."""
    return module_imports(source, importer, SYNTHETIC, importer == "pkg", deferred, "pkg")


def test_resolver_maps_submodules_and_their_parents():
    # From outside the package every enclosing __init__ runs first.
    outside = {"importer": "other"}
    assert _imports("import pkg.data.idx", **outside) == {"pkg", "pkg.data", "pkg.data.idx"}
    assert _imports("from pkg.data import idx", **outside) == {"pkg", "pkg.data", "pkg.data.idx"}
    assert _imports("from pkg.data import Loader", **outside) == {"pkg", "pkg.data"}
    # From inside, the importer's own package pkg is already initialising.
    assert _imports("import pkg.data.idx") == {"pkg.data", "pkg.data.idx"}
    assert _imports("from pkg import core, names") == {"pkg", "pkg.core"}
    assert _imports("import os\nfrom torch import nn") == set()


def test_resolver_skips_the_implied_edges_to_the_importers_own_packages():
    # pkg.data.idx importing its sibling: pkg and pkg.data are already initialising.
    assert _imports("from pkg.data import base", importer="pkg.data.idx") == {"pkg.data.base"}
    # An explicit import of the enclosing package is a real edge.
    assert _imports("from pkg.data import Loader", importer="pkg.data.idx") == {"pkg.data"}


def test_resolver_follows_relative_imports():
    assert _imports("from . import util", importer="pkg.api") == {"pkg.util"}
    assert _imports("from .. import core", importer="pkg.data.idx") == {"pkg.core"}
    assert _imports("from .data import idx", importer="pkg") == {"pkg.data", "pkg.data.idx"}


def test_resolver_ignores_type_checking_imports():
    source = (
        "from typing import TYPE_CHECKING\n"
        "import typing\n"
        "if TYPE_CHECKING:\n    import pkg.core\n"
        "if typing.TYPE_CHECKING:\n    import pkg.util\nelse:\n    import pkg.data\n"
    )
    assert _imports(source) == {"pkg.data"}


def test_resolver_keeps_function_level_imports_for_graph_b_only():
    source = (
        "try:\n    import pkg.core\nexcept ImportError:\n    pass\n"
        "def run():\n    from pkg.data import idx\n"
        "class Lazy:\n    def load(self):\n        import pkg.util\n"
    )
    assert _imports(source, deferred=False) == {"pkg.core"}
    everything = {"pkg.core", "pkg.data", "pkg.data.idx", "pkg.util"}
    assert _imports(source, deferred=True) == everything
