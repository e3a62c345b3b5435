"""End-to-end harness: the real `recovery-bot run` process against the local Bot API server.

`BotProcess` starts and stops (or kills) the process; `TgUser` plays one person in a private chat through the
server — typing, tapping buttons by label, sending photos — and waits for the bot's answers.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from flows.accounts_csv import import_accounts
from flows.directory import SecretBox
from flows.ports import Store
from flows.store import tables
from flows.store.database import SqlStore, open_database
from flows.store.migrate import upgrade
from tests.support.botapi import BotApiServer, Call
from tests.support.desk import ACCOUNTS_CSV, SECRET_KEY

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "123456:TEST-token"
ADMIN, SILENT_ADMIN = 900, 901


async def prepare_database(url: str, accounts_csv: str = ACCOUNTS_CSV) -> None:
    """Migrate and import the test accounts (or those of `accounts_csv`), as an operator would before the first
    start."""
    await upgrade(url)
    engine: AsyncEngine = open_database(url)
    try:
        async with SqlStore(engine).transaction() as tx:
            from datetime import UTC, datetime

            report = await import_accounts(tx.accounts, accounts_csv, SecretBox(SECRET_KEY), datetime.now(UTC))
            assert not report.errors
    finally:
        await engine.dispose()


async def processed_count(database_url: str, update_ids: list[int]) -> int:
    """How many of these Telegram updates the desk on this database recorded as acted on."""
    engine = open_database(database_url)
    try:
        async with engine.connect() as conn:
            keys = [f"tg:{update_id}" for update_id in update_ids]
            query = select(func.count()).select_from(tables.processed).where(tables.processed.c.key.in_(keys))
            return int((await conn.execute(query)).scalar_one())
    finally:
        await engine.dispose()


STARTUP_SECONDS = 90


class BotProcess:
    """`python -m bot.cli run` with the test server as its Bot API, a framework and a database."""

    def __init__(self, server: BotApiServer, framework: str, folder: Path, *args: str, database_url: str | None = None,
                 **env: str) -> None:
        self.server = server
        self.args = args
        self.log = folder / f"bot-{framework}.log"
        self.database_url = database_url or f"sqlite+aiosqlite:///{folder}/desk.db"
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT),
            "TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_API_URL": server.url, "DATABASE_URL": self.database_url,
            "SECRET_KEY": SECRET_KEY, "BOT_FRAMEWORK": framework, "SERVICE_NAME": "Acme", "LOG_LEVEL": "INFO",
            "ADMIN_IDS": f"{ADMIN},{SILENT_ADMIN}", "CODE_DELIVERY": "chat",
            **env,
        }
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, ready_method: str = "getUpdates") -> None:
        mark = len(self.server.calls)
        with self.log.open("a") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot.cli", "run", *self.args, env=self.env, cwd=str(ROOT),
                stdout=log, stderr=log,
            )
        # A fresh process imports its framework first: a few seconds, but 30 s and more on a loaded 2-core machine
        await self.server.wait_for(lambda c: c.method == ready_method, timeout=STARTUP_SECONDS, since=mark,
                                   finished=False)

    async def stop(self, signum: int = signal.SIGTERM) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signum)
        code = await asyncio.wait_for(self.process.wait(), timeout=30)
        self.process = None
        return code

    async def kill(self) -> None:
        await self.stop(signal.SIGKILL)

    async def run_once(self) -> tuple[int, str]:
        """Run to completion (for start-up failures); returns the exit code and what it printed."""
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli", "run", *self.args, env=self.env, cwd=str(ROOT),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), timeout=60)
        return int(process.returncode or 0), (out + err).decode()


class TgUser:
    """One person in a private chat with the bot, acting through the test server."""

    def __init__(self, server: BotApiServer, user_id: int, patience: float = 15.0) -> None:
        self.server = server
        self.user_id = user_id
        self.patience = patience  # how long to wait for an answer unless told (longer where the bot restarts)
        self.mark = 0
        self.query_id = ""  # the callback query of the last tap or press

    def _begin(self) -> None:
        self.mark = len(self.server.calls)

    def send(self, text: str) -> dict[str, Any]:
        self._begin()
        return self.server.user_sends_text(self.user_id, text, language_code="en")

    def tap(self, label: str) -> dict[str, Any]:
        """Tap the button labelled `label` in the newest of the bot's messages showing one (usually its last; a
        broadcast may have come in after the prompt)."""
        shown = [m for m in self.server.chat_messages(self.user_id) if m.from_bot and label in m.labels()]
        if not shown:
            raise LookupError(f"no message in chat {self.user_id} shows a button {label!r}")
        return self.press(shown[-1].message_id, shown[-1].button(label)["callback_data"])

    def press(self, message_id: int, data: str) -> dict[str, Any]:
        self._begin()
        update = self.server.user_presses(self.user_id, message_id, data)
        self.query_id = str(update["callback_query"]["id"])
        return update

    def send_photo(self) -> dict[str, Any]:
        self._begin()
        return self.server.user_sends_photo(self.user_id)

    def replay(self, update: dict[str, Any]) -> None:
        """Telegram delivers the same update again."""
        self._begin()
        self.server.enqueue(update)

    def _mine(self, call: Call, method: str) -> bool:
        return call.method == method and call.ok and str(call.params.get("chat_id")) == str(self.user_id)

    async def expect(self, fragment: str, timeout: float | None = None) -> str:  # noqa: ASYNC109
        """Wait for a message from the bot (since the last action) containing `fragment`; returns its text."""
        call = await self.server.wait_for(
            lambda c: self._mine(c, "sendMessage") and fragment in str(c.result.get("text", "")),
            timeout or self.patience, since=self.mark,
        )
        return str(call.result["text"])

    async def answered(self, timeout: float | None = None) -> str:  # noqa: ASYNC109
        """Wait for the answer to the last button press; returns its text ('' when silent)."""
        query_id = self.query_id
        call = await self.server.wait_for(
            lambda c: c.method == "answerCallbackQuery" and c.ok and str(c.params.get("callback_query_id")) == query_id,
            timeout or self.patience, since=self.mark,
        )
        return str(call.params.get("text") or "")

    def sent_texts(self) -> list[str]:
        """Every message the bot has sent to this chat, in order (each delivery counts)."""
        return [str(c.result["text"]) for c in self.server.calls if self._mine(c, "sendMessage")]

    def last_code(self, factor: str = "SMS") -> str:
        for text in reversed(self.sent_texts()):
            found = re.search(rf"{factor} to \S+: (\d{{6}})", text)
            if found:
                return found.group(1)
        raise AssertionError(f"no {factor} code sent to {self.user_id}")

    async def idle(self) -> None:
        """Wait until the bot polls again after the last action, plus a moment for deliveries."""
        await self.server.wait_for(lambda c: c.method == "getUpdates", timeout=15, since=self.mark, finished=False)
        await asyncio.sleep(0.5)


FRAMEWORKS = ["ptb", "aiogram"]


@pytest.fixture
async def server() -> AsyncIterator[BotApiServer]:
    async with BotApiServer(token=TOKEN, username="acme_desk_bot", first_name="Acme Desk") as api:
        yield api


@pytest.fixture(params=FRAMEWORKS)
def framework(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def desk_database(backend: str, request: pytest.FixtureRequest) -> str | None:
    """The bot process's database: a fresh PostgreSQL one when the test module is marked `both_backends` and this
    is its PostgreSQL run (tests/conftest.py), else None (a SQLite file in the test's folder)."""
    return str(request.getfixturevalue("postgres_url")) if backend == "postgres" else None


@pytest.fixture
async def bot(server: BotApiServer, framework: str, tmp_path: Path,
              desk_database: str | None) -> AsyncIterator[BotProcess]:
    process = BotProcess(server, framework, tmp_path, database_url=desk_database)
    await prepare_database(process.database_url)
    await process.start()
    yield process
    if process.process is not None:
        assert await process.stop() == 0, process.log.read_text()[-3000:]


async def greet(user: TgUser) -> None:
    user.send("/start")
    await user.expect("Welcome to the official Acme account recovery desk.")


async def walk_backup_key_to_the_code(user: TgUser, email: str = "ada@example.com") -> None:
    """Method 3 from /start to the step that asks for the authenticator's code."""
    await greet(user)
    user.tap("Reset with my backup key")
    await user.expect("Which email address")
    user.send(email)
    await user.expect("install the authenticator app again")
    user.tap("The app is installed")
    await user.expect("Never send this key to anyone, this bot included.")
    user.tap("I added it")
    await user.expect("send me the 6-digit code")


async def walk_phone_switch_to_the_codes(user: TgUser, email: str = "ada@example.com") -> None:
    """Method 1 from /start until both codes were sent (the SMS code is asked for first)."""
    await greet(user)
    user.tap("Switch to phone verification")
    await user.expect("Which email address")
    user.send(email)
    await user.expect("Press Get Code")
    user.tap("Get Code")
    await user.expect("Send me the 6-digit code from the SMS")


async def walk_method_two_through_the_codes(user: TgUser, email: str) -> None:
    """Method 2 from /start through both codes, restoring the authenticator; ends pressing Send."""
    await greet(user)
    user.tap("Security Check Not Available")
    await user.expect("withdrawals will be disabled for 48 hours")
    user.tap("Continue")
    await user.expect("Which email address")
    user.send(email)
    await user.expect("Select what you need to restore")
    user.tap("☐ Authenticator app")
    await user.answered()
    await user.server.wait_for(lambda c: c.method == "editMessageText" and c.ok and "☑" in str(c.params)
                               and str(c.params.get("chat_id")) == str(user.user_id), user.patience, since=user.mark)
    user.tap("Confirm Restore")
    await user.expect("Press Get Code")
    user.tap("Get Code")
    await user.expect("Send me the code from the SMS first.")
    user.send(user.last_code("SMS"))
    await user.expect("Now send me the code from the email.")
    user.send(user.last_code("Email"))
    await user.expect("Both codes are right.")
    user.tap("Send")


async def walk_method_two_to_country(user: TgUser, email: str = "ada@example.com", answer: str = "rex") -> None:
    """Method 2 for an account like Ada's (a security question, not verified) up to the document's country."""
    await walk_method_two_through_the_codes(user, email)
    await user.expect("the security question")
    user.tap("Start answering questions")
    await user.expect("What was your first pet's name?")
    user.send(answer)
    await user.expect("check your identity")
    user.tap("Next")
    await user.expect("Which country issued your document?")


async def walk_method_two_to_review(user: TgUser, email: str = "ada@example.com") -> None:
    """Ada's Method 2 to the staff review: a German national ID card, front, back and a selfie."""
    await walk_method_two_to_country(user, email)
    user.send("germany")
    await user.expect("Which document will you use?")
    user.tap("National ID card")
    await user.expect("front")
    user.send_photo()
    await user.expect("back")
    user.send_photo()
    await user.expect("selfie")
    user.send_photo()
    await user.expect("Everything is ready.")
    user.tap("Submit for review")
    await user.expect("Your request is now with our staff")


@contextmanager
def sqlite_write_lock_held(path: Path) -> Iterator[None]:
    """Another process (here, another connection) holds SQLite's write lock (past the desk's 10 s busy timeout,
    while it lasts)."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


async def submit_ben_with_a_selfie(admin: TgUser, user: TgUser, email: str = "ben@example.com") -> None:
    """Ben's account is verified and has no security question: after the codes, only a selfie is asked."""
    admin.send("/start")
    await admin.expect("Welcome")
    await walk_method_two_through_the_codes(user, email)
    await user.expect("check your identity")
    user.tap("Next")
    await user.expect("selfie")
    user.send_photo()
    await user.expect("Everything is ready.")
    admin.mark = len(user.server.calls)
    user.tap("Submit for review")
    await user.expect("Your request is now with our staff")


async def schedule_deletion_now(store: Store, chat_id: int, message_id: int) -> None:
    """A timer, due at once, that deletes one message (as the new-key message's timer does after 10 minutes)."""
    from datetime import UTC, datetime

    async with store.transaction() as tx:
        await tx.timers.schedule_deletions([(chat_id, message_id, 0)], datetime.now(UTC))


async def make_timers_due(database_url: str, kind: str, chat_ids: Collection[int] | None = None) -> int:
    """Bring every pending timer of `kind` (in these chats, if given) forward to now, as if its time had passed;
    returns how many."""
    from datetime import UTC, datetime

    from sqlalchemy import update

    from flows.store.tables import timers

    pending = [timers.c.kind == kind, timers.c.fired_at.is_(None)]
    if chat_ids is not None:
        pending.append(timers.c.chat_id.in_(list(chat_ids)))
    engine = open_database(database_url)
    try:
        async with engine.begin() as conn:
            moved = await conn.execute(update(timers).where(*pending).values(due_at=datetime.now(UTC)))
        return int(moved.rowcount)
    finally:
        await engine.dispose()


async def end_lockouts_now(database_url: str) -> int:
    """Bring every pending lockout's end forward to now (as if its 15 minutes had passed); returns how many."""
    return await make_timers_due(database_url, "lockout_end")


async def lock_out_with_wrong_codes(user: TgUser, wrong: str = "000000") -> None:
    """At Method 1's SMS code step, enter wrong codes until the desk pauses the recovery."""
    for _ in range(5):
        user.send(wrong)
        await user.expect("")
    await user.expect("Too many wrong codes")
