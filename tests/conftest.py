"""Shared fixtures: a migrated SQLite database per test (copied from one migrated template), a fake clock."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from flows.clock import FakeClock
from flows.store.database import open_database
from flows.store.migrate import upgrade_sync
from tests.support.chat import Bot
from tests.support.desk import open_desk
from tests.support.servers import mailbox

__all__ = ["mailbox"]


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade_sync(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture
def db_url(tmp_path: Path, migrated_template: Path) -> str:
    path = tmp_path / "recovery.db"
    shutil.copy(migrated_template, path)
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = open_database(db_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def desk(db: AsyncEngine, clock: FakeClock) -> AsyncIterator[Bot]:
    """The real desk and recovery methods over the test database, with two accounts (tests/support/desk.py)."""
    bot = await open_desk(db, clock)
    yield bot
    await bot.stop()
