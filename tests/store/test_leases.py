"""The contract of delivery leases (flows/leases.py) on every adapter: who holds a chat, until when, and which
chats have replies waiting that nobody delivers."""

from __future__ import annotations

from datetime import timedelta

from flows.ports import Store
from flows.replies import SendMessage
from tests.store.test_core import NOW

LATER = NOW + timedelta(seconds=60)


async def test_a_lease_is_held_until_it_expires_then_it_is_anybodys(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.leases.hold("chat", [1, 2], "a", LATER)
        await tx.leases.hold("out-of-band", [1], "b", LATER)
    async with store.reading() as tx:
        assert await tx.leases.owners("chat", [1, 2, 3], NOW) == {1: "a", 2: "a"}
        assert await tx.leases.owners("out-of-band", [1, 2], NOW) == {1: "b"}  # each lane has its own
        assert await tx.leases.owners("chat", [1, 2], LATER) == {}  # expired
    async with store.transaction() as tx:
        await tx.leases.hold("chat", [2], "b", LATER)  # taken over
        assert await tx.leases.renew("chat", "a", LATER + timedelta(seconds=60)) == {1}  # 2 is no longer a's
    async with store.reading() as tx:
        assert await tx.leases.owners("chat", [1, 2], LATER) == {1: "a"}
        assert await tx.leases.owners("chat", [1, 2], NOW) == {1: "a", 2: "b"}


async def test_an_owner_gives_up_some_or_all_of_its_leases_and_only_its_own(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.leases.hold("chat", [1, 2, 3], "a", LATER)
        await tx.leases.hold("chat", [4], "b", LATER)
        await tx.leases.release("chat", "a", [1])
        await tx.leases.release("chat", "b", [2])  # not b's
        await tx.leases.release("chat", "a", [])
    async with store.reading() as tx:
        assert await tx.leases.owners("chat", [1, 2, 3, 4], NOW) == {2: "a", 3: "a", 4: "b"}
    async with store.transaction() as tx:
        await tx.leases.release("chat", "a")
    async with store.reading() as tx:
        assert await tx.leases.owners("chat", [1, 2, 3, 4], NOW) == {4: "b"}


async def test_chats_with_undelivered_replies_and_no_live_lease(store: Store) -> None:
    async with store.transaction() as tx:
        queued = await tx.outbox.add([SendMessage(chat, "hi") for chat in (1, 2, 3, 4)], NOW)
        await tx.outbox.mark_delivered([(queued[3].id, "sent", 99)], NOW)  # chat 4 has nothing waiting
        await tx.leases.hold("chat", [1], "a", LATER)
        await tx.leases.hold("chat", [2], "a", NOW)  # expires at once
    async with store.reading() as tx:
        assert await tx.leases.unleased("chat", NOW, 100) == [2, 3]
        assert await tx.leases.unleased("chat", NOW, 1) == [2]
        assert await tx.leases.unleased("chat", NOW, 1, after=2) == [3]  # a sweep goes on where the last stopped
        assert await tx.leases.unleased("out-of-band", NOW, 100) == [1, 2, 3]
        waiting = await tx.outbox.pending(chat_ids=[1, 3])
    assert [(p.chat_id, p.queued_at) for p in waiting] == [(1, NOW), (3, NOW)]
