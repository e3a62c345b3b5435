"""The store contract runs over every adapter: `store` is each of them in turn, empty and migrated."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from flows.ports import Store
from flows.store.database import SqlStore, open_database
from flows.store.memory import MemoryStore


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    adapter: Store
    if request.param == "memory":
        adapter = MemoryStore()
    else:
        url = request.getfixturevalue("db_url" if request.param == "sqlite" else "postgres_url")
        adapter = SqlStore(open_database(url))
    yield adapter
    await adapter.close()
