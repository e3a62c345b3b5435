"""The layers hold: flows/ reaches storage only through its ports, the stores know nothing of the engine, and no
two modules of flows/ import each other, however indirectly."""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FLOWS = ROOT / "flows"
STORE = FLOWS / "store"
STORAGE_LIBRARIES = ("sqlalchemy", "sqlmodel", "alembic", "aiosqlite", "asyncpg")
DECIDING = ("flows.engine", "flows.desk", "flows.methods", "flows.runner", "flows.staff", "flows.announce")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module `path` imports, wherever the import stands (under TYPE_CHECKING too): `from a import b`
    counts as importing `a`, and `a.b` as well where that is a module of ours."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names
                         if _is_module(f"{node.module}.{alias.name}"))
    return names


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def sources(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "migrations" not in p.parts)


def import_graph(paths: list[Path]) -> dict[str, set[str]]:
    ours = {module_name(p) for p in paths}
    return {module_name(p): {name for name in imports_of(p) if name in ours} for p in paths}


def cycles(graph: Mapping[str, set[str]]) -> Iterator[list[str]]:
    """The strongly connected components of more than one module, or of one that imports itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    yield from found


OUTSIDE_STORE = [p for p in sources(FLOWS) if STORE not in p.parents]


@pytest.mark.parametrize("path", OUTSIDE_STORE, ids=lambda p: str(p.relative_to(ROOT)))
def test_flows_outside_the_store_import_no_storage_library(path: Path) -> None:
    offending = {name for name in imports_of(path) if name.split(".")[0] in STORAGE_LIBRARIES}
    assert not offending, f"{path.relative_to(ROOT)} imports {offending}: go through flows.ports instead"


@pytest.mark.parametrize("path", OUTSIDE_STORE, ids=lambda p: str(p.relative_to(ROOT)))
def test_flows_outside_the_store_use_no_adapter(path: Path) -> None:
    """Only the composition root picks an adapter; flows/ knows the ports."""
    offending = {name for name in imports_of(path) if name.startswith("flows.store")}
    assert not offending, f"{path.relative_to(ROOT)} imports {offending}"


@pytest.mark.parametrize("path", sources(STORE), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_store_imports_nothing_that_decides(path: Path) -> None:
    offending = {name for name in imports_of(path) if name.startswith(DECIDING)}
    assert not offending, f"{path.relative_to(ROOT)} imports {offending}"


def test_flows_have_no_import_cycle() -> None:
    assert list(cycles(import_graph(sources(FLOWS)))) == []


def test_the_checks_would_catch_a_cycle_and_a_storage_import(tmp_path: Path) -> None:
    assert list(cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})) == [["a", "b", "c"]]
    assert list(cycles({"a": {"a"}})) == [["a"]]
    assert list(cycles({"a": {"b"}, "b": set()})) == []
    sample = tmp_path / "sample.py"
    sample.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from sqlalchemy import select\n")
    assert "sqlalchemy" in imports_of(sample)
