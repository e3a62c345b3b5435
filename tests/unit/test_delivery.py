"""Delivery keeps going when the store fails for a moment: nothing committed is dropped or held up for good."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from flows.clock import FakeClock
from flows.delivery import Dispatcher
from flows.replies import SendMessage
from flows.store.memory import MemoryStore, MemoryTx
from tests.support.chat import RecordingTransport


class FlakyReads(MemoryStore):
    """A store whose first `failures` reads fail, as SQLite does when its lock is busy past the timeout."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[MemoryTx]:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("database is locked")
        async with super().reading() as tx:
            yield tx


async def test_a_failed_read_delays_delivery_but_loses_nothing(clock: FakeClock) -> None:
    store, transport = FlakyReads(failures=0), RecordingTransport()
    dispatcher = Dispatcher(store, transport, clock)
    await dispatcher.start()
    async with store.transaction() as tx:
        pending = await tx.outbox.add([SendMessage(7, "first"), SendMessage(7, "second")], clock.now())
    store.failures = 1  # the lane's next read, of which chats blocked the bot
    dispatcher.push(pending)
    await asyncio.wait_for(dispatcher.idle(), timeout=5)
    await dispatcher.stop()
    assert [r.text for r in transport.log if isinstance(r, SendMessage)] == ["first", "second"]
    async with store.reading() as tx:
        assert await tx.outbox.pending() == []
