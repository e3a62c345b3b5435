"""The per-user inbound limit: a flooding user is slowed down, told once, and nobody else notices."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest
import telegram
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.config import SettingsError, load_settings
from bot.frontends.desk import NOTICES_IN_FLIGHT, TelegramDesk
from flows.clock import FakeClock
from flows.inbound import InboundLimiter, Verdict
from flows.replies import AnswerButton, SendMessage
from flows.runner import Runner
from flows.store import tables
from flows.store.database import SqlStore
from tests.engine_flow import make_engine
from tests.support.chat import RecordingTransport
from tests.support.e2e import TOKEN

ADA, BOB, STAFF = 7, 8, 900
SLOW_DOWN = "You are sending messages too fast. Please wait a few seconds and try again."


def limiter(clock: FakeClock, limit: int = 3) -> InboundLimiter:
    return InboundLimiter(clock, limit, timedelta(seconds=10), is_staff={STAFF}.__contains__)


def verdicts(limits: InboundLimiter, user_id: int, count: int) -> list[Verdict]:
    return [limits.check(user_id) for _ in range(count)]


ADMIT, DROP, WARN = Verdict.ADMIT, Verdict.DROP, Verdict.DROP_AND_WARN


def test_the_excess_of_a_window_is_dropped_with_one_warning(clock: FakeClock) -> None:
    limits = limiter(clock)
    assert verdicts(limits, ADA, 6) == [ADMIT, ADMIT, ADMIT, WARN, DROP, DROP]
    assert verdicts(limits, BOB, 3) == [ADMIT, ADMIT, ADMIT]  # Ada's flood is Ada's alone


def test_the_window_slides_and_a_flood_that_goes_on_is_warned_once_per_window(clock: FakeClock) -> None:
    limits = limiter(clock)
    limits.check(ADA)
    clock.advance(seconds=4)
    assert verdicts(limits, ADA, 3) == [ADMIT, ADMIT, WARN]
    clock.advance(seconds=6)  # the first event has left the window; the other two are still in it
    assert verdicts(limits, ADA, 2) == [ADMIT, DROP]
    clock.advance(seconds=4)  # ten seconds after the warning, the flood is still going
    assert verdicts(limits, ADA, 4) == [ADMIT, ADMIT, WARN, DROP]


def test_staff_get_twice_the_limit(clock: FakeClock) -> None:
    limits = limiter(clock)
    assert verdicts(limits, STAFF, 7) == [ADMIT] * 6 + [WARN]


def test_users_silent_for_a_window_are_forgotten(clock: FakeClock) -> None:
    limits = limiter(clock)
    for user_id in range(10_000, 11_000):
        limits.check(user_id)
    assert verdicts(limits, ADA, 4) == [ADMIT, ADMIT, ADMIT, WARN]
    assert limits.tracked == 1_001
    clock.advance(seconds=10)
    assert limits.check(BOB) is ADMIT
    assert limits.tracked == 1
    assert verdicts(limits, ADA, 4) == [ADMIT, ADMIT, ADMIT, WARN]  # forgotten means a fresh window


def test_the_settings_default_to_20_in_10_seconds_and_refuse_nonsense() -> None:
    settings = load_settings(_env_file=None)
    assert (settings.inbound_limit, settings.inbound_window_seconds) == (20, 10)
    with pytest.raises(SettingsError, match=r"^INBOUND_LIMIT: "):
        load_settings(_env_file=None, inbound_limit=0)
    with pytest.raises(SettingsError, match=r"^INBOUND_WINDOW_SECONDS: "):
        load_settings(_env_file=None, inbound_window_seconds=-1)


# --- in the desk: before the runner and the database -------------------------------------------------------

_update_ids = iter(range(1_000, 100_000))


def text_from(user_id: int, text: str) -> telegram.Update:
    user = {"id": user_id, "is_bot": False, "first_name": "U", "language_code": "en"}
    chat = {"id": user_id, "type": "private", "first_name": "U"}
    update = {"update_id": next(_update_ids),
              "message": {"message_id": 1, "date": 0, "chat": chat, "from": user, "text": text}}
    return telegram.Update.de_json(update, telegram.Bot(TOKEN))


def press_from(user_id: int, query_id: str) -> telegram.Update:
    user = {"id": user_id, "is_bot": False, "first_name": "U", "language_code": "en"}
    chat = {"id": user_id, "type": "private", "first_name": "U"}
    update = {"update_id": next(_update_ids), "callback_query": {
        "id": query_id, "from": user, "chat_instance": "x", "data": "c:1:yes",
        "message": {"message_id": 5, "date": 0, "chat": chat}}}
    return telegram.Update.de_json(update, telegram.Bot(TOKEN))


@pytest.fixture
async def transport() -> RecordingTransport:
    return RecordingTransport()


@pytest.fixture
async def desk(db: AsyncEngine, clock: FakeClock, transport: RecordingTransport) -> AsyncIterator[TelegramDesk]:
    runner = Runner(SqlStore(db), make_engine(), transport, clock)
    await runner.start()
    yield TelegramDesk(runner, SqlStore(db), limiter(clock))
    await runner.stop()


async def eventually(condition: Callable[[], bool]) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


def notices(transport: RecordingTransport, kind: type[Any] = SendMessage) -> list[Any]:
    return [reply for reply in transport.log if isinstance(reply, kind) and SLOW_DOWN in reply.text]


async def processed(db: AsyncEngine, updates: list[telegram.Update]) -> int:
    keys = [f"tg:{update.update_id}" for update in updates]
    async with db.connect() as conn:
        query = select(func.count()).select_from(tables.processed).where(tables.processed.c.key.in_(keys))
        return int((await conn.execute(query)).scalar_one())


async def test_a_flood_never_reaches_the_database_and_is_answered_once(
    desk: TelegramDesk, db: AsyncEngine, transport: RecordingTransport
) -> None:
    flood = [text_from(ADA, f"spam {n}") for n in range(50)]
    for update in flood:
        await desk.handle(update)
    await desk.handle(text_from(BOB, "hello"))
    await desk.runner.settle()
    await eventually(lambda: len(notices(transport)) == 1)
    assert notices(transport)[0].chat_id == ADA
    assert await processed(db, flood) == 3
    assert desk.failed == set()  # dropped updates count as handled: the poller confirms them
    assert [shown.text for shown in transport.chats[BOB]] == ["There is no recovery in progress. Send /start to begin."]


async def test_a_dropped_press_that_warns_is_answered_with_the_notice(
    desk: TelegramDesk, transport: RecordingTransport
) -> None:
    for n in range(3):
        await desk.handle(text_from(ADA, f"hello {n}"))
    await desk.handle(press_from(ADA, "q-1"))
    await desk.handle(press_from(ADA, "q-2"))
    await eventually(lambda: bool(notices(transport, AnswerButton)))
    await asyncio.sleep(0.05)
    assert [(a.callback_id, a.text) for a in transport.answers] == [("q-1", SLOW_DOWN)]
    assert notices(transport) == []  # the toast is the notice: no message as well


class HeldNotices(RecordingTransport):
    """Holds slow-down notices until released, as a slow Telegram would."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.started = 0

    async def deliver(self, reply: Any) -> int | None:
        if SLOW_DOWN in getattr(reply, "text", ""):
            self.started += 1
            await self.release.wait()
        return await super().deliver(reply)


async def test_many_flooders_at_once_get_a_bounded_number_of_notices(db: AsyncEngine, clock: FakeClock) -> None:
    transport = HeldNotices()
    runner = Runner(SqlStore(db), make_engine(), transport, clock)
    await runner.start()
    try:
        desk = TelegramDesk(runner, SqlStore(db), limiter(clock))
        for user_id in range(500, 520):  # twenty users, each one over the limit of 3
            for index in range(4):
                await desk.handle(text_from(user_id, f"hello {index}"))
        await asyncio.sleep(0.05)
        assert transport.started == NOTICES_IN_FLIGHT
        transport.release.set()
        await eventually(lambda: len(notices(transport)) == NOTICES_IN_FLIGHT)
    finally:
        await runner.stop()
