"""The pruner: old update keys, delivered replies and fired timers go after 48 h, a thousand rows per write
transaction; a redelivered update within the window still acts once; it runs where the timers run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest

from flows.clock import FakeClock
from flows.model import TimerSpec
from flows.records import NewTimer
from flows.replies import SendMessage
from flows.retention import BATCH, EVERY, FIRST_PASS, RETENTION, Pruner
from flows.store.memory import MemoryStore, MemoryTx
from tests.engine_flow import make_engine
from tests.support.chat import Bot, RecordingTransport, said


class CountingStore(MemoryStore):
    """Counts write transactions; the next `failing` ones fail, as a database that is away does."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.failing = 0
        self.written = asyncio.Event()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[MemoryTx]:
        if self.failing:
            self.failing -= 1
            raise RuntimeError("database is locked")
        async with super().transaction() as tx:
            yield tx
        self.writes += 1
        self.written.set()


class CountedPasses(Pruner):
    """Counts its passes; `enough` is set once it has made `wanted` of them."""

    def __init__(self, store: MemoryStore, clock: FakeClock, wanted: int, **timing: float) -> None:
        super().__init__(store, clock, **timing)
        self.passes, self.wanted, self.enough = 0, wanted, asyncio.Event()

    async def prune(self) -> dict[str, int]:
        self.passes += 1
        if self.passes >= self.wanted:
            self.enough.set()
        return await super().prune()


async def old_rows(store: MemoryStore, clock: FakeClock, keys: int) -> None:
    """`keys` update keys, two delivered replies and two fired timers, all older than the window."""
    then = clock.now()
    async with store.transaction() as tx:
        await tx.updates.claim([f"tg:{n}" for n in range(keys)], then)
        replies = await tx.outbox.add([SendMessage(7, "a"), SendMessage(7, "b")], then)
        await tx.outbox.mark_delivered([(p.id, "sent", None) for p in replies], then)
        await tx.timers.add([NewTimer("c1", 7, 7, None, TimerSpec(kind, then)) for kind in ("one", "two")])
        await tx.timers.mark_fired([t.id for t in await tx.timers.due(then, 10)], then)
    clock.advance(hours=49)


def test_the_policy() -> None:
    assert timedelta(hours=48) <= RETENTION  # twice Telegram's 24 h of redelivery
    assert (BATCH, FIRST_PASS, EVERY) == (1_000, 60.0, 3_600.0)


async def test_a_pass_deletes_a_thousand_rows_per_transaction_until_nothing_older_is_left(clock: FakeClock) -> None:
    store = CountingStore()
    await old_rows(store, clock, keys=2_500)
    async with store.transaction() as tx:
        await tx.updates.claim(["tg:young"], clock.now() - RETENTION + timedelta(minutes=1))
    store.writes = 0
    deleted = await Pruner(store, clock, pause=0).prune()
    assert deleted == {"update keys": 2_500, "delivered replies": 1, "fired timers": 1}  # the newest rows stay
    assert store.writes == 3 + 1 + 1  # 1,000 + 1,000 + 500 keys, then the replies, then the timers
    async with store.transaction() as tx:
        assert await tx.updates.claim(["tg:young", "tg:0"], clock.now()) == {"tg:0"}
    assert await Pruner(store, clock).prune() == {"update keys": 0, "delivered replies": 0, "fired timers": 0}


async def test_an_update_redelivered_within_the_window_still_acts_once(clock: FakeClock) -> None:
    bot = await Bot(MemoryStore(), make_engine(), clock).start()
    pruner = Pruner(bot.store, clock)
    try:
        chat = bot.chat()
        await chat.send("/start")
        assert await chat.send("Ada", key="tg:777") == ["Is Ada right?"]
        clock.advance(hours=47)
        await pruner.prune()
        assert await chat.send("Ada", key="tg:777") == []  # a repeat: its key survived
        clock.advance(hours=2)
        assert (await pruner.prune())["update keys"] == 2  # /start's key and tg:777
        # Telegram redelivers within 24 h, so nothing brings tg:777 back now; were it to come, it would act.
        assert said(await chat.send("Ada", key="tg:777")) == ["Please choose one of the buttons below.",
                                                              "Is Ada right?"]
    finally:
        await bot.stop()


async def test_it_waits_before_the_first_pass_then_runs_again_and_stops_at_once(clock: FakeClock) -> None:
    store = CountingStore()
    waiting = CountedPasses(store, clock, 1, first=3_600)
    await waiting.resume()
    await asyncio.sleep(0.05)
    await asyncio.wait_for(waiting.stop(), 1)
    assert waiting.passes == 0

    running = CountedPasses(store, clock, 3, first=0, every=0.01)
    await running.resume()
    await asyncio.wait_for(running.enough.wait(), 5)
    await asyncio.wait_for(running.stop(), 1)


async def test_a_failed_pass_is_logged_and_the_next_one_runs(clock: FakeClock,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    store = CountingStore()
    await old_rows(store, clock, keys=3)
    store.failing = 1
    pruner = CountedPasses(store, clock, 2, first=0, every=0.01)
    await pruner.resume()
    await asyncio.wait_for(pruner.enough.wait(), 5)
    await pruner.stop()
    assert "pruning old rows failed" in caplog.text
    async with store.transaction() as tx:
        assert await tx.updates.claim(["tg:0"], clock.now()) == {"tg:0"}


async def test_stop_ends_a_pass_between_two_batches(clock: FakeClock) -> None:
    store = CountingStore()
    await old_rows(store, clock, keys=2_500)
    store.writes = 0
    store.written.clear()
    pruner = Pruner(store, clock, first=0, pause=60)
    await pruner.resume()
    await asyncio.wait_for(store.written.wait(), 5)
    await asyncio.wait_for(pruner.stop(), 1)
    assert store.writes == 1
    async with store.transaction() as tx:
        assert len(await tx.updates.claim([f"tg:{n}" for n in range(2_500)], clock.now())) == BATCH


async def test_it_runs_where_the_timers_run(clock: FakeClock) -> None:
    bot = Bot(MemoryStore(), make_engine(), clock)
    for fire_timers in (True, False):
        runner = await bot.app.start(RecordingTransport(), fire_timers=fire_timers)
        assert any(isinstance(c, Pruner) for c in runner.companions) is fire_timers
        await asyncio.wait_for(bot.app.stop(), 5)
