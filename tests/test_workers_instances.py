"""The queued work two instances on one PostgreSQL share: each due event is posted, and each due account change
sent to the service, by one of them, never by both; a claim given up (a retry later) is anybody's again."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import cast

from flows.change_worker import ChangeWorker
from flows.changes import change_to_json
from flows.clock import FakeClock
from flows.directory import RESET_TWO_FACTOR, Change, DirectoryUnavailable, SecretBox
from flows.events_out import EventSender
from flows.http_directory import DirectoryClient
from flows.records import OutgoingEvent, QueuedChange, StoredAccount
from flows.store.database import SqlStore
from tests.support.desk import SECRET_KEY
from tests.support.events_receiver import EventsReceiver

KEY = "events-signing-key-" + "e" * 32


async def test_each_due_event_is_posted_by_one_instance(
    two_stores: tuple[SqlStore, SqlStore], clock: FakeClock
) -> None:
    async with two_stores[0].transaction() as tx:
        await tx.events.add([OutgoingEvent(str(uuid.uuid4()), "case.opened", clock.now(), {"n": n})
                             for n in range(30)])
    async with EventsReceiver(KEY) as receiver:
        senders = [EventSender(store, receiver.url, KEY, clock) for store in two_stores]
        posted = await asyncio.gather(*(sender.send_due() for sender in senders))
        for sender in senders:
            await sender.stop()
    assert sum(posted) == 30 and len(receiver.events) == 30
    assert max(Counter(event_id for event_id, _ in receiver.deliveries).values()) == 1


class CountingService:
    """The account system's side of `DirectoryClient.apply`: counts calls by idempotency key; the first call of
    each key finds the service down."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    async def apply(self, remote_id: str, change: Change, key: str) -> StoredAccount | None:
        self.calls[key] += 1
        await asyncio.sleep(0.01)
        if self.calls[key] == 1:
            raise DirectoryUnavailable("the service did not answer")
        return StoredAccount(id=1, email="ada@example.com", two_factor="none")


async def test_each_due_change_is_sent_by_one_instance_and_a_retry_by_either(
    two_stores: tuple[SqlStore, SqlStore], clock: FakeClock
) -> None:
    box = SecretBox(SECRET_KEY)
    change = change_to_json(Change(RESET_TWO_FACTOR), box)
    async with two_stores[0].transaction() as tx:
        ids = await tx.directory_ids.local_ids([f"remote-{n}" for n in range(10)], clock.now())
        await tx.directory_changes.queue([QueuedChange(f"key-{n}", ids[f"remote-{n}"], f"remote-{n}", change)
                                          for n in range(10)], clock.now())
    service = CountingService()
    client = cast(DirectoryClient, service)
    workers = [ChangeWorker(store, client, box, clock) for store in two_stores]
    assert sum(await asyncio.gather(*(worker.send_due() for worker in workers))) == 10
    assert set(service.calls.values()) == {1}  # each sent once, and put off: the service was down
    clock.advance(minutes=10)
    assert sum(await asyncio.gather(*(worker.send_due() for worker in workers))) == 10
    assert set(service.calls.values()) == {2}
    async with two_stores[1].reading() as tx:
        assert await tx.directory_changes.due(clock.now(), 100) == []  # every one applied
