"""Broadcasts on the real migrated database: audiences, pacing, crash and resume, Telegram's 429 and 403, progress."""

from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from flows.broadcast import BroadcastBusy, BroadcastError, BroadcastService
from flows.clock import FakeClock
from flows.delivery import RecipientBlocked, RetryAfter, Undeliverable
from flows.events import Sender
from flows.leases import LEASE
from flows.progress import Progress, progress_text
from flows.records import BLOCKED, CANCELLED, FAILED, FINISHED, PENDING, RUNNING, SENDING, SENT, UNCERTAIN
from flows.replies import CopyMessage, EditMessage, Reply, SendMessage
from flows.store.database import SqlStore, SqlTx, open_database
from flows.store.memory import MemoryStore
from flows.store.tables import broadcast_deliveries as deliveries
from flows.store.tables import broadcasts, cases, users
from tests.support.chat import RecordingTransport

pytestmark = pytest.mark.both_backends  # the engine's guarantees must hold on either database

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
ADMIN = 1
STATUS_CHAT, STATUS_MESSAGE = 999_000, 7
SECRET = "<b>Maintenance</b> tonight — secret-announcement-text"


# -- helpers ---------------------------------------------------------------------------------------------------


async def add_users(db: AsyncEngine, ids: range | list[int], language: str | None = "en",
                    blocked: bool = False) -> None:
    rows = [{"id": i, "chat_id": i, "language": language, "blocked": blocked, "first_seen": NOW, "last_seen": NOW}
            for i in ids]
    async with db.begin() as conn:
        await conn.execute(users.insert(), rows)


async def add_case(db: AsyncEngine, user_id: int, status: str) -> None:
    row = {"id": f"c{user_id}", "user_id": user_id, "chat_id": user_id, "account_id": None, "flow": "phone",
           "step": "start", "data": {}, "status": status, "turn": 0, "created_at": NOW, "updated_at": NOW,
           "closed_at": None}
    async with db.begin() as conn:
        await conn.execute(cases.insert(), row)


async def is_blocked(db: AsyncEngine, chat_id: int) -> bool:
    async with db.connect() as conn:
        return bool((await conn.execute(select(users.c.blocked).where(users.c.chat_id == chat_id))).scalar_one())


def fake_sleep(clock: FakeClock) -> Callable[[float], Awaitable[None]]:
    """Sleeping moves the fake clock to the end of the sleep (sleepers that overlap move it only once)."""

    async def sleep(seconds: float) -> None:
        until = clock.now() + timedelta(seconds=seconds)
        await asyncio.sleep(0)
        if clock.now() < until:
            clock.advance(seconds=(until - clock.now()).total_seconds())

    return sleep


@dataclass
class Telegram:
    """A transport that timestamps every attempt, can fail chosen chats, and can hang from the Nth recipient on."""

    clock: FakeClock
    attempts: list[tuple[datetime, Reply]] = field(default_factory=list)
    delivered: list[Reply] = field(default_factory=list)
    errors: dict[int, list[Exception]] = field(default_factory=dict)
    hang_from: int | None = None  # this recipient attempt (1-based) and every later one hang until `gate` opens
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    hang_seen: asyncio.Event = field(default_factory=asyncio.Event)
    hanging: int = 0
    in_flight: int = 0
    max_in_flight: int = 0

    async def deliver(self, reply: Reply) -> int | None:
        self.attempts.append((self.clock.now(), reply))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0)  # let other sends overlap with this one
            if reply.chat_id != STATUS_CHAT:
                await self._misbehave(reply)
            self.delivered.append(reply)
            return 1
        finally:
            self.in_flight -= 1

    async def _misbehave(self, reply: Reply) -> None:
        if self.errors.get(reply.chat_id):
            raise self.errors[reply.chat_id].pop(0)
        if self.hang_from is not None and len(self.recipient_attempts()) >= self.hang_from:
            self.hanging += 1
            self.hang_seen.set()
            await self.gate.wait()

    def recipient_attempts(self) -> list[tuple[datetime, int]]:
        return [(when, r.chat_id) for when, r in self.attempts if r.chat_id != STATUS_CHAT]

    def to_admin(self, kind: type[Reply]) -> list[tuple[datetime, Reply]]:
        return [(when, r) for when, r in self.attempts if r.chat_id == STATUS_CHAT and isinstance(r, kind)]


    async def hung(self, count: int) -> None:
        """Wait until `count` sends hang."""
        async with asyncio.timeout(10):
            while self.hanging < count:
                await self.hang_seen.wait()
                self.hang_seen.clear()


async def run_to_end(service: BroadcastService, broadcast_id: int) -> None:
    await service.start(broadcast_id, STATUS_CHAT, STATUS_MESSAGE)
    await service.join(broadcast_id)


@pytest.fixture
def telegram(clock: FakeClock) -> Telegram:
    return Telegram(clock)


@pytest.fixture
def service(db: AsyncEngine, telegram: Telegram, clock: FakeClock) -> BroadcastService:
    return BroadcastService(SqlStore(db), telegram, clock, sleep=fake_sleep(clock))


# -- audiences and drafts --------------------------------------------------------------------------------------


async def test_audiences_take_the_right_users_and_never_blocked_ones(db: AsyncEngine, clock: FakeClock) -> None:
    await add_users(db, [1, 2], language="en")
    await add_users(db, [3], language="en-US")
    await add_users(db, [4], language="de")
    await add_users(db, [5], language=None)
    await add_users(db, [6], language="eo")
    await add_users(db, [7, 8], language="en", blocked=True)
    for user_id, status in ((1, "open"), (4, "review"), (5, "closed"), (7, "open")):
        await add_case(db, user_id, status)
    service = BroadcastService(SqlStore(db), RecordingTransport(), clock)

    assert await service.audience_size("all") == 6
    assert await service.audience_size("open") == 2
    assert await service.audience_size("language", "en") == 3
    assert await service.audience_size("language", "EN") == 3
    assert await service.audience_size("language", "de") == 1
    assert await service.audience_size("language", "fr") == 0


async def test_starting_freezes_exactly_the_audience(db: AsyncEngine, telegram: Telegram,
                                                     service: BroadcastService) -> None:
    await add_users(db, [1, 2, 3])
    await add_users(db, [4], blocked=True)
    await add_case(db, 2, "open")
    await add_case(db, 4, "open")
    broadcast_id = await service.create(ADMIN, "open", text=SECRET)

    await run_to_end(service, broadcast_id)
    await add_users(db, [5])  # joins after the start: not in this broadcast

    view = await service.get(broadcast_id)
    assert view is not None and view.total == 1 and view.status == FINISHED
    assert [chat for _, chat in telegram.recipient_attempts()] == [2]


@pytest.mark.parametrize(("audience", "language"), [("everyone", None), ("language", None), ("language", "e n"),
                                                     ("all", "en")])
async def test_bad_audiences_are_refused(service: BroadcastService, audience: str, language: str | None) -> None:
    with pytest.raises(ValueError):
        await service.audience_size(audience, language)
    with pytest.raises(ValueError):
        await service.create(ADMIN, audience, text="hi", language=language)


async def test_a_draft_has_exactly_one_of_text_and_copy(service: BroadcastService) -> None:
    with pytest.raises(ValueError):
        await service.create(ADMIN, "all")
    with pytest.raises(ValueError):
        await service.create(ADMIN, "all", text="hi", copy_from=(ADMIN, 5))
    with pytest.raises(ValueError):
        await service.create(ADMIN, "all", text="  ")


async def test_a_text_goes_as_html_and_a_copy_as_a_copy(db: AsyncEngine, clock: FakeClock) -> None:
    await add_users(db, [10, 11])
    transport = RecordingTransport()
    service = BroadcastService(SqlStore(db), transport, clock, sleep=fake_sleep(clock))

    text_id = await service.create(ADMIN, "all", text=SECRET)
    await run_to_end(service, text_id)
    copy_id = await service.create(ADMIN, "all", copy_from=(ADMIN, 321))
    await run_to_end(service, copy_id)

    to_users = [r for r in transport.log if r.chat_id != STATUS_CHAT]
    assert to_users == [SendMessage(10, SECRET), SendMessage(11, SECRET),
                        CopyMessage(10, ADMIN, 321), CopyMessage(11, ADMIN, 321)]
    copy = await service.get(copy_id)
    assert copy is not None and copy.copy_from == (ADMIN, 321) and copy.text is None


async def test_get_and_counts(db: AsyncEngine, service: BroadcastService) -> None:
    await add_users(db, range(1, 4))
    broadcast_id = await service.create(ADMIN, "language", text=SECRET, language="EN")
    draft = await service.get(broadcast_id)
    assert draft is not None
    assert (draft.status, draft.audience, draft.language, draft.total, draft.created_by) == ("draft", "language",
                                                                                            "en", 0, ADMIN)
    assert SECRET not in repr(draft)
    assert await service.get(broadcast_id + 100) is None

    await run_to_end(service, broadcast_id)

    counts = await service.counts(broadcast_id)
    assert counts == {PENDING: 0, SENDING: 0, SENT: 3, FAILED: 0, BLOCKED: 0, UNCERTAIN: 0}
    done = await service.get(broadcast_id)
    assert done is not None and done.started_at == NOW and done.finished_at == NOW + timedelta(seconds=2 / 25)


# -- starting rules --------------------------------------------------------------------------------------------


async def test_only_a_draft_can_be_started_and_one_runs_at_a_time(db: AsyncEngine, telegram: Telegram,
                                                                  service: BroadcastService) -> None:
    await add_users(db, range(1, 21))
    telegram.hang_from = 3
    first = await service.create(ADMIN, "all", text=SECRET)
    second = await service.create(ADMIN, "all", text=SECRET)
    await service.start(first, STATUS_CHAT, STATUS_MESSAGE)

    with pytest.raises(BroadcastError):
        await service.start(first, STATUS_CHAT, STATUS_MESSAGE)
    with pytest.raises(BroadcastBusy):
        await service.start(second, STATUS_CHAT, STATUS_MESSAGE)
    with pytest.raises(BroadcastError):
        await service.start(12345, STATUS_CHAT, STATUS_MESSAGE)

    telegram.gate.set()
    await service.join(first)
    await run_to_end(service, second)  # the first one ended: now the second may run
    assert (await service.counts(second))[SENT] == 20


async def test_the_database_itself_refuses_a_second_running_broadcast(db: AsyncEngine,
                                                                     service: BroadcastService) -> None:
    """Even a writer that did not see the first running row (PostgreSQL's READ COMMITTED) cannot add a second."""
    first = await service.create(ADMIN, "all", text=SECRET)
    second = await service.create(ADMIN, "all", text=SECRET)
    await service.start(first, STATUS_CHAT, STATUS_MESSAGE)
    with pytest.raises(IntegrityError):
        async with db.begin() as conn:
            await conn.execute(update(broadcasts).where(broadcasts.c.id == second).values(status=RUNNING))
    await service.join(first)


# -- pacing ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [25.0, 100.0])
async def test_the_pace_is_the_rate_and_no_chat_gets_two_messages(db: AsyncEngine, clock: FakeClock,
                                                                  telegram: Telegram, rate: float) -> None:
    await add_users(db, range(1, 201))
    service = BroadcastService(SqlStore(db), telegram, clock, rate=rate, concurrency=5, sleep=fake_sleep(clock))
    broadcast_id = await service.create(ADMIN, "all", text=SECRET)

    await run_to_end(service, broadcast_id)

    sends = telegram.recipient_attempts()
    assert len(sends) == 200
    assert max(Counter(chat for _, chat in sends).values()) == 1
    elapsed = (sends[-1][0] - sends[0][0]).total_seconds()
    measured = (len(sends) - 1) / elapsed
    assert abs(measured - rate) <= 0.05 * rate, measured
    assert telegram.max_in_flight <= 5
    assert (await service.counts(broadcast_id))[SENT] == 200


async def test_no_second_holds_more_than_the_rate_even_after_a_slow_commit(
    db: AsyncEngine, clock: FakeClock, telegram: Telegram,
) -> None:
    """After one commit that took half a second, the pace catches up on the slots it missed (less than
    `MAX_LAG` behind); the sends themselves still never come closer than 1/rate."""

    class OneSlowCommit(SqlStore):
        commits = 0

        @asynccontextmanager
        async def transaction(self) -> AsyncIterator[SqlTx]:
            async with super().transaction() as tx:
                yield tx
            OneSlowCommit.commits += 1
            if OneSlowCommit.commits == 40:
                clock.advance(seconds=0.5)

    await add_users(db, range(1, 121))
    service = BroadcastService(OneSlowCommit(db), telegram, clock, rate=25.0, concurrency=5,
                               sleep=fake_sleep(clock))
    broadcast_id = await service.create(ADMIN, "all", text=SECRET)

    await run_to_end(service, broadcast_id)

    stamps = sorted(when for when, _ in telegram.recipient_attempts())
    assert len(stamps) == 120
    most = max(bisect.bisect_left(stamps, t + timedelta(seconds=1)) - i for i, t in enumerate(stamps))
    assert most <= 25, most
    measured = (len(stamps) - 1) / (stamps[-1] - stamps[0]).total_seconds()
    assert measured >= 0.9 * 25.0, measured


async def test_sends_overlap_but_never_beyond_the_concurrency(db: AsyncEngine, clock: FakeClock,
                                                              telegram: Telegram) -> None:
    await add_users(db, range(1, 41))
    telegram.hang_from = 10
    service = BroadcastService(SqlStore(db), telegram, clock, concurrency=3, sleep=fake_sleep(clock))
    broadcast_id = await service.create(ADMIN, "all", text=SECRET)
    await service.start(broadcast_id, STATUS_CHAT, STATUS_MESSAGE)

    await telegram.hung(3)
    await asyncio.sleep(0.05)
    assert telegram.hanging == 3
    assert (await service.counts(broadcast_id))[SENDING] == 3

    telegram.gate.set()
    await service.join(broadcast_id)
    assert telegram.max_in_flight == 3
    assert (await service.counts(broadcast_id))[SENT] == 40


# -- a crash in the middle, and resuming -----------------------------------------------------------------------


async def test_a_killed_broadcast_resumes_with_no_gap_and_no_duplicate(db: AsyncEngine, clock: FakeClock) -> None:
    await add_users(db, range(1, 61))
    first_telegram = Telegram(clock, hang_from=20)
    first = BroadcastService(SqlStore(db), first_telegram, clock, concurrency=5, sleep=fake_sleep(clock))
    broadcast_id = await first.create(ADMIN, "all", text=SECRET)
    await first.start(broadcast_id, STATUS_CHAT, STATUS_MESSAGE)
    await first_telegram.hung(5)
    assert (await first.counts(broadcast_id))[SENDING] == 5

    task = first.task(broadcast_id)
    assert task is not None
    task.cancel()  # the process dies: nothing more is recorded
    await asyncio.wait([task])
    assert (await first.counts(broadcast_id))[SENDING] == 5
    if first.store.shared:  # PostgreSQL: another instance takes the broadcast over once its lease expired
        clock.advance(seconds=LEASE.total_seconds())

    second_telegram = Telegram(clock)
    second = BroadcastService(SqlStore(db), second_telegram, clock, concurrency=5, sleep=fake_sleep(clock))
    assert await second.resume() == [broadcast_id]
    await second.join(broadcast_id)

    counts = await second.counts(broadcast_id)
    assert counts[SENT] + counts[UNCERTAIN] == 60
    assert counts[UNCERTAIN] == 5 <= second.concurrency
    first_chats = [chat for _, chat in first_telegram.recipient_attempts()]
    second_chats = [chat for _, chat in second_telegram.recipient_attempts()]
    assert max(Counter(first_chats + second_chats).values()) == 1
    assert set(first_chats + second_chats) == set(range(1, 61))
    async with db.connect() as conn:
        query = select(deliveries.c.chat_id).where(deliveries.c.state == UNCERTAIN)
        uncertain = set((await conn.execute(query)).scalars())
    assert uncertain == set(first_chats[-5:])
    assert not uncertain & set(second_chats)
    view = await second.get(broadcast_id)
    assert view is not None and view.status == FINISHED
    [(_, report)] = second_telegram.to_admin(SendMessage)
    assert isinstance(report, SendMessage)
    assert "Uncertain (in flight at a restart, not sent again): 5" in report.text
    assert "Sent: 55" in report.text
    assert await second.resume() == []


async def test_an_instance_leaves_a_broadcast_another_live_one_sends_alone(
    postgres_url: str, clock: FakeClock
) -> None:
    """Two instances on one PostgreSQL: the second's resume takes nothing (and marks nothing uncertain) while
    the first sends; so each recipient gets one copy, at the one broadcast's rate."""
    db = open_database(postgres_url)
    await add_users(db, range(1, 31))
    first_telegram, second_telegram = Telegram(clock, hang_from=10), Telegram(clock)
    first = BroadcastService(SqlStore(db), first_telegram, clock, sleep=fake_sleep(clock))
    second = BroadcastService(SqlStore(open_database(postgres_url)), second_telegram, clock, sleep=fake_sleep(clock))
    broadcast_id = await first.create(ADMIN, "all", text=SECRET)
    await first.start(broadcast_id, STATUS_CHAT, STATUS_MESSAGE)
    await first_telegram.hung(5)
    assert await second.resume() == []
    assert (await first.counts(broadcast_id))[SENDING] == 5  # not marked uncertain
    first_telegram.gate.set()
    await first.join(broadcast_id)
    assert (await first.counts(broadcast_id))[SENT] == 30
    assert second_telegram.attempts == []
    await first.stop()
    await second.stop()
    await second.store.close()
    await db.dispose()


async def test_an_instance_back_from_a_pause_longer_than_the_lease_stops_sending_the_broadcast(
    postgres_url: str, clock: FakeClock
) -> None:
    """The first instance stalls (its sends hang) past the broadcast's lease; the second takes the broadcast over.
    Back, the first finds the lease is not its own and stops: no recipient gets two copies, and none is sent by
    both at once."""
    db = open_database(postgres_url)
    await add_users(db, range(1, 41))
    first_telegram, second_telegram = Telegram(clock, hang_from=10), Telegram(clock, hang_from=10)
    first = BroadcastService(SqlStore(db), first_telegram, clock, sleep=fake_sleep(clock))
    second = BroadcastService(SqlStore(open_database(postgres_url)), second_telegram, clock, sleep=fake_sleep(clock))
    broadcast_id = await first.create(ADMIN, "all", text=SECRET)
    await first.start(broadcast_id, STATUS_CHAT, STATUS_MESSAGE)
    await first_telegram.hung(5)
    clock.advance(seconds=LEASE.total_seconds() + 1)
    assert await second.resume() == [broadcast_id]  # the first's sends in flight become uncertain, not sent again
    await second_telegram.hung(5)
    first_telegram.gate.set()
    await first.join(broadcast_id)  # back while the second sends: it stops at its next claim
    assert len(first_telegram.recipient_attempts()) == 14  # the 9 sent and the 5 in flight at the pause
    second_telegram.gate.set()
    await second.join(broadcast_id)
    every = [chat for _, chat in first_telegram.recipient_attempts() + second_telegram.recipient_attempts()]
    assert sorted(every) == list(range(1, 41))
    counts = await second.counts(broadcast_id)
    assert counts[SENT] + counts[UNCERTAIN] == 40
    await first.stop()
    await second.stop()
    await second.store.close()
    await db.dispose()


async def test_stop_leaves_the_broadcast_running_for_the_next_start(db: AsyncEngine, clock: FakeClock,
                                                                    telegram: Telegram) -> None:
    await add_users(db, range(1, 31))
    telegram.hang_from = 10
    service = BroadcastService(SqlStore(db), telegram, clock, sleep=fake_sleep(clock))
    broadcast_id = await service.create(ADMIN, "all", text=SECRET)
    await service.start(broadcast_id, STATUS_CHAT, STATUS_MESSAGE)
    await telegram.hung(5)

    stopping = asyncio.create_task(service.stop())
    await asyncio.sleep(0.01)
    assert not stopping.done()  # the sends in flight finish first
    telegram.gate.set()
    await stopping

    counts = await service.counts(broadcast_id)
    assert (counts[SENT], counts[SENDING], counts[PENDING]) == (14, 0, 16)
    view = await service.get(broadcast_id)
    assert view is not None and view.status == RUNNING
    assert telegram.to_admin(SendMessage) == []

    later = Telegram(clock)
    restarted = BroadcastService(SqlStore(db), later, clock, sleep=fake_sleep(clock))
    assert await restarted.resume() == [broadcast_id]
    await restarted.join(broadcast_id)
    assert (await restarted.counts(broadcast_id))[SENT] == 30
    every = [chat for _, chat in telegram.recipient_attempts() + later.recipient_attempts()]
    assert sorted(every) == list(range(1, 31))


# -- Telegram's answers ----------------------------------------------------------------------------------------


async def test_a_429_pauses_the_whole_broadcast_and_retries_the_same_recipient(
        db: AsyncEngine, telegram: Telegram, service: BroadcastService) -> None:
    await add_users(db, range(1, 21))
    telegram.errors[8] = [RetryAfter(5)]
    broadcast_id = await service.create(ADMIN, "all", text=SECRET)

    await run_to_end(service, broadcast_id)

    sends = telegram.recipient_attempts()
    [limited, retried] = [when for when, chat in sends if chat == 8]
    assert retried >= limited + timedelta(seconds=5)
    assert not [chat for when, chat in sends if limited < when < limited + timedelta(seconds=5)]
    assert [r.chat_id for r in telegram.delivered if r.chat_id != STATUS_CHAT].count(8) == 1
    assert (await service.counts(broadcast_id))[SENT] == 20


async def test_a_403_marks_the_user_blocked_and_later_broadcasts_skip_them(
        db: AsyncEngine, clock: FakeClock, telegram: Telegram) -> None:
    await add_users(db, range(1, 6))
    telegram.errors[3] = [RecipientBlocked()]
    service = BroadcastService(SqlStore(db), telegram, clock, sleep=fake_sleep(clock))
    first = await service.create(ADMIN, "all", text=SECRET)

    await run_to_end(service, first)

    counts = await service.counts(first)
    assert (counts[SENT], counts[BLOCKED]) == (4, 1)
    assert await is_blocked(db, 3)
    assert await service.audience_size("all") == 4
    second = await service.create(ADMIN, "all", text=SECRET)
    await run_to_end(service, second)
    view = await service.get(second)
    assert view is not None and view.total == 4
    assert [chat for _, chat in telegram.recipient_attempts()].count(3) == 1


async def test_the_service_runs_over_the_in_memory_store_too(clock: FakeClock, telegram: Telegram) -> None:
    store = MemoryStore()
    async with store.transaction() as tx:
        await tx.users.touch([Sender(i, i, "en") for i in range(1, 6)], NOW)
    telegram.errors[3] = [RecipientBlocked()]
    service = BroadcastService(store, telegram, clock, sleep=fake_sleep(clock))
    first = await service.create(ADMIN, "all", text=SECRET)

    await run_to_end(service, first)

    counts = await service.counts(first)
    assert (counts[SENT], counts[BLOCKED]) == (4, 1)
    async with store.reading() as tx:
        assert await tx.users.blocked_among([3, 4]) == {3}
    assert await service.audience_size("all") == 4
    [(_, report)] = telegram.to_admin(SendMessage)
    assert isinstance(report, SendMessage) and "Sent: 4" in report.text


async def test_undeliverable_fails_at_once_and_network_errors_are_retried_three_times(
        db: AsyncEngine, telegram: Telegram, service: BroadcastService) -> None:
    await add_users(db, range(1, 6))
    telegram.errors[1] = [Undeliverable("chat not found")]
    telegram.errors[2] = [ConnectionError("reset")]
    telegram.errors[3] = [ConnectionError("reset"), TimeoutError(), OSError("down")]
    broadcast_id = await service.create(ADMIN, "all", text=SECRET)

    await run_to_end(service, broadcast_id)

    tries = Counter(chat for _, chat in telegram.recipient_attempts())
    assert (tries[1], tries[2], tries[3], tries[4]) == (1, 2, 3, 1)
    counts = await service.counts(broadcast_id)
    assert (counts[SENT], counts[FAILED]) == (3, 2)
    second_try = [when for when, chat in telegram.recipient_attempts() if chat == 2]
    assert second_try[1] - second_try[0] >= timedelta(seconds=1)


# -- progress, report, cancel ----------------------------------------------------------------------------------


def test_the_progress_text_has_a_bar_counts_rate_and_eta() -> None:
    text = progress_text(Progress(7, total=100, sent=35, failed=2, blocked=2, uncertain=1, rate=20.0))
    assert "▓▓▓▓░░░░░░ 40%" in text
    assert "Sent: 35" in text and "Failed: 2" in text and "Blocked: 2" in text and "Uncertain: 1" in text
    assert "20.0 msg/s" in text and "ETA: 3s" in text
    assert "░░░░░░░░░░ 0%" in progress_text(Progress(7, total=10))
    assert "ETA: —" in progress_text(Progress(7, total=10))
    assert "▓▓▓▓▓▓▓▓▓▓ 100%" in progress_text(Progress(7, total=3, sent=3, rate=1.0))
    assert "▓▓▓▓▓▓▓▓▓░ 99%" in progress_text(Progress(7, total=1000, sent=999, rate=1.0))


async def test_progress_is_edited_at_most_every_3_seconds_then_a_report(
        db: AsyncEngine, clock: FakeClock, telegram: Telegram) -> None:
    await add_users(db, range(1, 101))
    service = BroadcastService(SqlStore(db), telegram, clock, rate=10, sleep=fake_sleep(clock))
    broadcast_id = await service.create(ADMIN, "all", text=SECRET)

    await run_to_end(service, broadcast_id)

    edits = telegram.to_admin(EditMessage)
    times = [when for when, _ in edits]
    assert len(edits) >= 3
    assert all(later - earlier >= timedelta(seconds=3) for earlier, later in itertools.pairwise(times))
    assert all(isinstance(e, EditMessage) and e.message_id == STATUS_MESSAGE and "%" in e.text for _, e in edits)
    last_edit = edits[-1][1]
    assert isinstance(last_edit, EditMessage) and "msg/s" in last_edit.text
    [(reported, report)] = telegram.to_admin(SendMessage)
    assert reported >= telegram.recipient_attempts()[-1][0]
    assert isinstance(report, SendMessage)
    assert "finished" in report.text and "Recipients: 100" in report.text and "Sent: 100" in report.text


async def test_the_progress_and_the_report_are_in_the_admins_language(
        db: AsyncEngine, clock: FakeClock, telegram: Telegram) -> None:
    await add_users(db, range(1, 31), language="en")
    await add_users(db, [STATUS_CHAT], language="ru")  # the status chat is a Russian admin's private chat
    service = BroadcastService(SqlStore(db), telegram, clock, rate=10, sleep=fake_sleep(clock))
    broadcast_id = await service.create(ADMIN, "language", text=SECRET, language="en")

    await run_to_end(service, broadcast_id)

    edits = [e.text for _, e in telegram.to_admin(EditMessage) if isinstance(e, EditMessage)]
    [(_, report)] = telegram.to_admin(SendMessage)
    assert edits and all(f"Рассылка #{broadcast_id}" in edit for edit in edits)
    assert isinstance(report, SendMessage) and f"Рассылка #{broadcast_id}" in report.text
    assert "Получателей: 30" in report.text and "Recipients" not in report.text
    assert re.search(r"Время: \d+ [а-я]", report.text)  # how long it took, in Russian units


async def test_cancel_stops_sending_and_leaves_the_rest_pending(db: AsyncEngine, telegram: Telegram,
                                                               service: BroadcastService) -> None:
    await add_users(db, range(1, 41))
    telegram.hang_from = 10
    broadcast_id = await service.create(ADMIN, "all", text=SECRET)
    await service.start(broadcast_id, STATUS_CHAT, STATUS_MESSAGE)
    await telegram.hung(5)

    cancelling = asyncio.create_task(service.cancel(broadcast_id))
    await asyncio.sleep(0.01)
    telegram.gate.set()
    assert await cancelling

    counts = await service.counts(broadcast_id)
    assert (counts[SENT], counts[PENDING], counts[SENDING]) == (14, 26, 0)
    assert len(telegram.recipient_attempts()) == 14
    view = await service.get(broadcast_id)
    assert view is not None and view.status == CANCELLED and view.finished_at is not None
    [(_, report)] = telegram.to_admin(SendMessage)
    assert isinstance(report, SendMessage) and "cancelled" in report.text and "Not sent: 26" in report.text
    assert not await service.cancel(broadcast_id)
    with pytest.raises(BroadcastError):
        await service.start(broadcast_id, STATUS_CHAT, STATUS_MESSAGE)


async def test_a_draft_can_be_cancelled_and_then_not_started(service: BroadcastService,
                                                             telegram: Telegram) -> None:
    broadcast_id = await service.create(ADMIN, "all", text=SECRET)
    assert await service.cancel(broadcast_id)
    with pytest.raises(BroadcastError):
        await service.start(broadcast_id, STATUS_CHAT, STATUS_MESSAGE)
    assert not await service.cancel(12345)
    assert telegram.attempts == []


async def test_message_texts_are_never_logged(db: AsyncEngine, telegram: Telegram, service: BroadcastService,
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="flows")
    await add_users(db, range(1, 6))
    telegram.errors[1] = [Undeliverable(SECRET)]
    telegram.errors[2] = [ConnectionError(SECRET)]
    telegram.errors[3] = [RetryAfter(1)]
    broadcast_id = await service.create(ADMIN, "all", text=SECRET)

    await run_to_end(service, broadcast_id)

    ours = [r.getMessage() for r in caplog.records if r.name.startswith("flows")]
    assert ours
    assert not [line for line in ours if "secret-announcement-text" in line]


# -- the report and the refusal go through the outbox ------------------------------------------------------------


async def test_the_report_is_committed_in_the_outbox_with_the_finish_and_delivered_after_a_restart(
        db: AsyncEngine, clock: FakeClock, telegram: Telegram) -> None:
    from flows.delivery import Dispatcher
    from flows.records import Pending

    await add_users(db, range(1, 6))
    handed: list[Pending] = []
    crashed = BroadcastService(SqlStore(db), telegram, clock, sleep=fake_sleep(clock), dispatch=handed.extend)
    broadcast_id = await crashed.create(ADMIN, "all", text=SECRET)
    await run_to_end(crashed, broadcast_id)  # the process dies before the dispatcher sends what it was handed

    assert telegram.to_admin(SendMessage) == []
    [entry] = handed
    async with SqlStore(db).reading() as tx:
        [waiting] = await tx.outbox.pending()
        view = await tx.broadcasts.get(broadcast_id)
    assert waiting.id == entry.id and waiting.chat_id == STATUS_CHAT
    assert isinstance(waiting.reply, SendMessage) and "finished" in waiting.reply.text
    assert "Sent: 5" in waiting.reply.text
    assert view is not None and view.status == FINISHED

    later = Telegram(clock)
    dispatcher = Dispatcher(SqlStore(db), later, clock)
    await dispatcher.start()  # the next start delivers what the outbox holds
    await dispatcher.idle()
    await dispatcher.stop()
    [(_, report)] = later.to_admin(SendMessage)
    assert isinstance(report, SendMessage) and "Sent: 5" in report.text
    async with SqlStore(db).reading() as tx:
        assert await tx.outbox.pending() == []  # delivered once: a further restart sends nothing


async def test_a_second_start_while_one_runs_tells_the_admin_and_starts_nothing(
        db: AsyncEngine, telegram: Telegram, service: BroadcastService) -> None:
    await add_users(db, range(1, 21))
    telegram.hang_from = 3
    first = await service.create(ADMIN, "all", text=SECRET)
    second = await service.create(ADMIN, "all", text=SECRET)
    await service.start(first, STATUS_CHAT, STATUS_MESSAGE)
    await telegram.hung(1)

    with pytest.raises(BroadcastBusy):
        await service.start(second, STATUS_CHAT, STATUS_MESSAGE)

    told = [r.text for _, r in telegram.to_admin(SendMessage) if isinstance(r, SendMessage)]
    assert len(told) == 1
    assert f"Broadcast #{second} was not started" in told[0] and f"broadcast #{first} is still running" in told[0]
    assert "of 20 done" in told[0]
    view = await service.get(second)
    assert view is not None and view.status == "draft" and (await service.counts(second))[PENDING] == 0
    telegram.gate.set()
    await service.join(first)
