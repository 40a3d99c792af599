"""The layout DESIGN.md fixes, checked on the source: which package may import an Azure SDK,
which way the layers depend, and that no two modules import each other.

Function-local imports count: they are how a cycle hides (the estate file and the live tenant
once imported each other that way), and an SDK imported inside a function is still imported.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "migrator"
SDK_ROOTS = ("azure", "msgraph", "kiota_abstractions", "kiota_http", "kiota_authentication_azure")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path) -> Iterator[str]:
    """Every module `path` imports, at the top or inside a function, absolute names only."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            # `from migrator.report import plan_html` imports the module plan_html
            yield from (f"{node.module}.{alias.name}" for alias in node.names
                        if f"{node.module}.{alias.name}" in MODULES)


def _internal(path: Path) -> set[str]:
    return {name for name in _imports(path) if name in MODULES}


def test_only_cloud_imports_an_azure_sdk() -> None:
    outside = {name: sorted({imported for imported in _imports(path)
                             if imported.split(".")[0] in SDK_ROOTS})
               for name, path in MODULES.items() if not name.startswith("migrator.cloud")}
    assert {name: found for name, found in outside.items() if found} == {}


def _reach(graph: dict[str, set[str]], start: Iterable[str]) -> set[str]:
    reach: set[str] = set()
    todo = list(start)
    while todo:
        current = todo.pop()
        if current not in reach:
            reach.add(current)
            todo.extend(graph.get(current, ()))
    return reach


GRAPH = {name: _internal(path) - {name} for name, path in MODULES.items()}


@pytest.mark.parametrize("pure", ["migrator.detect", "migrator.plan"])
def test_pure_layers_reach_no_io_and_no_sdk(pure: str) -> None:
    """The planner and the detector run without the scanner, the executor or any SDK being
    imported, even indirectly: they read the inventory's plain data."""
    io_layers = ("migrator.execute", "migrator.scan", "migrator.sim", "migrator.cli",
                 "migrator.runbook", "migrator.report", "migrator.demo")
    reached = _reach(GRAPH, [name for name in MODULES if name.startswith(pure)])
    assert sorted(name for name in reached if name.startswith(io_layers)) == []
    assert sorted(name for name in reached
                  if any(imported.split(".")[0] in SDK_ROOTS
                         for imported in _imports(MODULES[name]))) == []


def test_only_tests_the_demo_and_the_sim_command_import_the_simulator() -> None:
    allowed = ("migrator.sim", "migrator.demo", "migrator.cli")
    found = {name: sorted(imported for imported in _internal(path)
                          if imported.startswith("migrator.sim"))
             for name, path in MODULES.items() if not name.startswith(allowed)}
    assert {name: imported for name, imported in found.items() if imported} == {}


def test_no_modules_import_each_other() -> None:
    # A package's __init__ naming its own modules is not a cycle worth the name.
    graph = {name: {imported for imported in found
                    if not (MODULES[name].name == "__init__.py"
                            and imported.startswith(name + "."))}
             for name, found in GRAPH.items()}
    assert sorted(name for name, found in graph.items() if name in _reach(graph, found)) == []
