"""The unit layer: the engine and the flows on the in-memory store — no database, no file, no network.

`desk` here is the real desk (menu, the three methods, staff) over a `MemoryStore`; the guard below fails any
test of this layer that opens a database file or a socket, so the layer stays fast and free of I/O.
"""

from __future__ import annotations

import socket
import sqlite3
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from flows.clock import FakeClock
from flows.store.memory import MemoryStore
from tests.support.chat import Bot
from tests.support.desk import open_desk


class TouchedIO(AssertionError):
    """A unit test reached for a database or the network."""


@pytest.fixture(autouse=True)
def no_database_or_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise TouchedIO("the unit layer runs on the in-memory store: no database file, no network")

    monkeypatch.setattr(sqlite3, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr("flows.store.database.open_database", refuse)
    yield


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
async def desk(store: MemoryStore, clock: FakeClock) -> AsyncIterator[Bot]:
    """The real desk over the in-memory store, with Ada's and Ben's accounts (tests/support/desk.py)."""
    bot = await open_desk(store, clock)
    yield bot
    await bot.stop()
