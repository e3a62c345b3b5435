"""The database fails under a running desk: the disk is full, another process holds the lock, writes are refused.

Each test runs the desk in this process on the real framework (python-telegram-bot and aiogram) with the
poller `recovery-bot run` uses, against the local Bot API server, on a SQLite file. While the fault lasts, a
user's message is not answered and its update is not confirmed (Telegram keeps it and sends it again), the log
says so in one line; once the fault clears, the desk answers it, once, and says so in one more line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from bot.app import App, open_app
from bot.config import load_settings
from bot.frontends.desk import TelegramDesk
from bot.frontends.polling import Poller
from bot.run import make_front
from flows.store.database import SqlStore
from tests.support.botapi import BotApiServer
from tests.support.desk import SECRET_KEY
from tests.support.e2e import FRAMEWORKS, TOKEN, TgUser, prepare_database, processed_count, sqlite_write_lock_held

pytestmark = pytest.mark.parametrize("framework", FRAMEWORKS)
OUTAGE = "the database is unavailable"
BACK = "the database is available again"


@pytest.fixture
async def server() -> AsyncIterator[BotApiServer]:
    async with BotApiServer(token=TOKEN) as api:
        yield api


@asynccontextmanager
async def desk_on(server: BotApiServer, framework: str, database_url: str,
                  opened: Callable[[App], None] = lambda app: None) -> AsyncIterator[App]:
    """The desk served by long polling, as `recovery-bot run` serves it, until the block ends; `opened` sees
    the desk before it starts."""
    settings = load_settings(telegram_bot_token=TOKEN, telegram_api_url=server.url, database_url=database_url,
                             secret_key=SECRET_KEY, service_name="Acme", code_delivery="chat",
                             bot_framework=framework)
    front = make_front(settings)
    await front.check_token()
    app = await open_app(settings, SECRET_KEY)
    opened(app)
    runner = await app.start(front.transport)
    desk = TelegramDesk(runner, app.store, app.limiter)
    front.attach(desk)
    stopping = asyncio.Event()
    polling = asyncio.create_task(Poller(front.fetch, front.process, desk, timeout=1).run(stopping))
    try:
        yield app
    finally:
        stopping.set()
        await polling
        await app.stop()
        await front.close()
        await app.close()


async def logged(caplog: pytest.LogCaptureFixture, fragment: str, timeout: float = 30.0) -> None:  # noqa: ASYNC109
    async with asyncio.timeout(timeout):
        while not any(fragment in record.getMessage() for record in caplog.records):  # noqa: ASYNC110 (no event to wait on)
            await asyncio.sleep(0.05)


async def through_a_fault(server: BotApiServer, caplog: pytest.LogCaptureFixture, url: str,
                          fault: Callable[[], AbstractContextManager[None]]) -> None:
    """A user is answered; then, while `fault` lasts, a message of theirs is neither answered nor confirmed; once
    it ends, it is answered once, and the log has one line for the outage and one for its end, no traceback."""
    user = TgUser(server, 4201)
    user.send("/start")
    await user.expect("Welcome")
    before = len(user.sent_texts())
    caplog.clear()
    with fault():
        update = user.send("/help")
        await logged(caplog, OUTAGE)
        await asyncio.sleep(1.5)  # the poller has tried again meanwhile
        assert len(user.sent_texts()) == before, "nothing is answered while the database fails"
        assert update["update_id"] in server.unconfirmed(), "what was not committed is not confirmed"
    await user.expect("/status shows where you are")  # the help, once the database is back
    await logged(caplog, BACK)
    await user.idle()
    assert len(user.sent_texts()) == before + 1
    assert await processed_count(url, [update["update_id"]]) == 1
    warnings = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert [line for line in warnings if OUTAGE in line or BACK in line] == [
        next(line for line in warnings if OUTAGE in line), next(line for line in warnings if BACK in line)]
    assert not [r for r in caplog.records if r.exc_info], "a failing database is one line, not a traceback"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB filesystem of its own (tmpfs), so that it can be filled without filling the machine's."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root (CI runs as root)")
    folder = tmp_path / "disk"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


@contextmanager
def filled(folder: Path) -> Iterator[None]:
    """The filesystem full to the last byte while the block runs."""
    filler = folder / "filler"
    for chunk in (b"\0" * 65536, b"\0"):
        with suppress(OSError), filler.open("ab", buffering=0) as out:
            while True:
                out.write(chunk)
    try:
        yield
    finally:
        filler.unlink()


async def test_a_full_disk_holds_updates_back_until_there_is_room(server: BotApiServer, framework: str,
                                                                  small_disk: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    url = f"sqlite+aiosqlite:///{small_disk}/desk.db"
    await prepare_database(url)
    async with desk_on(server, framework, url):
        await through_a_fault(server, caplog, url, lambda: filled(small_disk))
    assert "database or disk is full" in caplog.text


async def test_a_database_locked_by_another_process_holds_updates_back(server: BotApiServer, framework: str,
                                                                       tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    url = f"sqlite+aiosqlite:///{tmp_path}/desk.db"
    await prepare_database(url)
    async with desk_on(server, framework, url):
        await through_a_fault(server, caplog, url, lambda: sqlite_write_lock_held(tmp_path / "desk.db"))
    assert "database is locked" in caplog.text


class ReadOnly:
    """While `refusing`, SQLite refuses every write on the desk's connections ("attempt to write a readonly
    database"), as it does for a file or volume that became read-only; each transaction learns it as it begins."""

    def __init__(self) -> None:
        self.refusing = False

    def install(self, app: App) -> None:
        assert isinstance(app.store, SqlStore)
        event.listen(app.store.engine.sync_engine, "begin", self._on_begin)

    def _on_begin(self, connection: Any) -> None:
        connection.exec_driver_sql(f"PRAGMA query_only={int(self.refusing)}")

    @contextmanager
    def while_on(self) -> Iterator[None]:
        self.refusing = True
        try:
            yield
        finally:
            self.refusing = False


async def test_a_read_only_database_holds_updates_back(server: BotApiServer, framework: str, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    url = f"sqlite+aiosqlite:///{tmp_path}/desk.db"
    await prepare_database(url)
    read_only = ReadOnly()
    async with desk_on(server, framework, url, read_only.install):
        await through_a_fault(server, caplog, url, read_only.while_on)
    assert "readonly database" in caplog.text
