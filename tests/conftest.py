"""Shared fixtures: a migrated SQLite database per test (copied from one migrated template), a fake clock, the desk,
real SMTP and SMS servers, and the end-to-end bot process per framework (tests/support/e2e.py)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from flows.channels import (
    ChannelRouter,
    ChannelTransport,
    SmsWebhookChannel,
    SmsWebhookSettings,
    SmtpChannel,
    SmtpSettings,
)
from flows.clock import FakeClock
from flows.store.database import SqlStore, open_database
from flows.store.migrate import upgrade_sync
from tests.support.chat import Bot
from tests.support.desk import open_desk
from tests.support.e2e import bot, desk_database, framework, server
from tests.support.postgres import TEMPLATE, PostgresServer
from tests.support.servers import Mailbox, SmsGateway, mailbox

# fixtures: e2e (the real process per framework and its database), SMTP
__all__ = ["bot", "desk_database", "framework", "mailbox", "server"]


def migrate(url: str) -> None:
    """Migrate to the newest schema. In a thread: Alembic runs its own event loop, and a session fixture may be
    set up from inside a test's (the store fixture asks for its database by name)."""
    with ThreadPoolExecutor(1) as thread:
        thread.submit(upgrade_sync, url).result()


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    migrate(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A private PostgreSQL server with a migrated template database, started for the first test that needs it.
    Its folder is under /tmp itself: the server's own user must be able to reach it."""
    folder = Path(tempfile.mkdtemp(prefix="recovery-bot-pg-"))
    folder.chmod(0o755)
    server = PostgresServer(folder)
    try:
        server.start()
        server.sql(f"CREATE DATABASE {TEMPLATE}")
        migrate(server.url(TEMPLATE))
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> str:
    """A fresh, migrated PostgreSQL database for this test."""
    return postgres.url(postgres.new_database(template=TEMPLATE))


BACKENDS = ["sqlite", "postgres"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A module marked `both_backends` runs each of its database tests on SQLite and on PostgreSQL."""
    if metafunc.definition.get_closest_marker("both_backends") and "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", BACKENDS, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The database the test runs on: SQLite unless its module is marked `both_backends`."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def db_url(backend: str, request: pytest.FixtureRequest) -> str:
    """A fresh, migrated database for this test, on the test's backend."""
    if backend == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    path = request.getfixturevalue("tmp_path") / "recovery.db"
    shutil.copy(request.getfixturevalue("migrated_template"), path)
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = open_database(db_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def two_stores(postgres_url: str) -> AsyncIterator[tuple[SqlStore, SqlStore]]:
    """Two instances' stores on one fresh PostgreSQL database, each with its own engine and pool."""
    first, second = SqlStore(open_database(postgres_url)), SqlStore(open_database(postgres_url))
    yield first, second
    await first.close()
    await second.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def desk(db: AsyncEngine, clock: FakeClock) -> AsyncIterator[Bot]:
    """The real desk and recovery methods over the test database, with two accounts (tests/support/desk.py)."""
    bot = await open_desk(db, clock)
    yield bot
    await bot.stop()


@pytest.fixture
async def gateway() -> AsyncIterator[SmsGateway]:
    server = SmsGateway()
    yield server
    await server.stop()


@pytest.fixture
async def desk_with_channels(
    db: AsyncEngine, clock: FakeClock, mailbox: Mailbox, gateway: SmsGateway
) -> AsyncIterator[Bot]:
    """The desk with codes sent by email through a real local SMTP server and by SMS through a local gateway."""
    url = await gateway.start()
    router = ChannelRouter({
        "smtp": SmtpChannel(SmtpSettings(host="127.0.0.1", port=mailbox.port, sender="desk@acme.test",
                                         security="none", timeout=2.0)),
        "sms": SmsWebhookChannel(SmsWebhookSettings(url=url, token="gateway-token")),
    })
    bot = await open_desk(db, clock, {"phone": "sms", "email": "smtp"}, ChannelTransport(router))
    yield bot
    await bot.stop()
    await router.close()
