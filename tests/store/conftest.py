"""The store contract runs over every adapter: `store` is each of them in turn, empty and migrated."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from flows.ports import Store
from flows.store.database import SqlStore, open_database
from flows.store.memory import MemoryStore


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, db_url: str) -> AsyncIterator[Store]:
    adapter: Store = MemoryStore() if request.param == "memory" else SqlStore(open_database(db_url))
    yield adapter
    await adapter.close()
