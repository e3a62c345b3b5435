"""The hot path stays lean: nothing per request that could be done once (issue 11)."""

from __future__ import annotations

import asyncio
import importlib._bootstrap
import re
from importlib.metadata import requires
from typing import Any

import pytest


def count_imports_from_disk(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The modules the import system goes looking for from now on (an import already in sys.modules is not one)."""
    looked_for: list[str] = []
    find_and_load = importlib._bootstrap._find_and_load  # type: ignore[attr-defined]

    def counting(name: str, *args: Any) -> Any:
        looked_for.append(name)
        return find_and_load(name, *args)

    monkeypatch.setattr(importlib._bootstrap, "_find_and_load", counting)
    return looked_for


def test_sniffio_is_a_declared_dependency() -> None:
    declared = {re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0] for line in requires("recovery-bot") or []}
    assert "sniffio" in declared


async def test_httpcore_finds_its_async_library_without_an_import_per_request(monkeypatch: pytest.MonkeyPatch) -> None:
    from httpcore._synchronization import current_async_library

    assert current_async_library() == "asyncio"  # the first call may import sniffio
    looked_for = count_imports_from_disk(monkeypatch)
    for _ in range(100):
        assert current_async_library() == "asyncio"
    await asyncio.sleep(0)
    assert looked_for == []
