"""Two instances delivering one outbox on PostgreSQL: each reply goes once, each chat's in commit order, a
starting instance leaves alone what a live one is sending, and a dead one's chats are taken over."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from datetime import timedelta

import pytest

import flows.leases
from flows.clock import FakeClock
from flows.delivery import Delivered, Dispatcher
from flows.leases import LEASE
from flows.replies import AnswerButton, Reply, SendMessage
from flows.store.database import SqlStore
from tests.support.chat import kill_delivery


@dataclass
class Telegram:
    """What every chat received, and from which instance."""

    log: list[tuple[str, Reply]] = field(default_factory=list)
    hold: dict[int, asyncio.Event] = field(default_factory=dict)  # chats whose sends hang until set
    hanging: dict[int, str] = field(default_factory=dict)  # chat -> the instance whose send to it hangs
    hung: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # set at each delivery

    async def sending_to(self, chat_id: int) -> str:
        """The instance that delivers the chat: the one whose send to it hangs."""
        while chat_id not in self.hanging:
            self.hung.clear()
            await self.hung.wait()
        return self.hanging[chat_id]

    def texts(self, chat_id: int) -> list[str]:
        return [r.text for _, r in self.log if isinstance(r, SendMessage) and r.chat_id == chat_id]


@dataclass
class Instance:
    name: str
    telegram: Telegram

    async def deliver(self, reply: Reply) -> Delivered:
        gate = self.telegram.hold.get(reply.chat_id)
        if gate is not None:
            self.telegram.hanging[reply.chat_id] = self.name
            self.telegram.hung.set()
            await gate.wait()
        await asyncio.sleep(random.uniform(0, 0.003))
        self.telegram.log.append((self.name, reply))
        self.telegram.arrived.set()
        return len(self.telegram.log)


@pytest.fixture(autouse=True)
def quick_sweeps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flows.leases, "SWEEP_EVERY", 0.1)


async def started(two_stores: tuple[SqlStore, SqlStore], telegram: Telegram, clock: FakeClock) -> dict[str, Dispatcher]:
    """Instances "a" and "b", each on its own store (engine, pool) on one database."""
    pairs = zip(two_stores, "ab", strict=True)
    instances = {name: Dispatcher(store, Instance(name, telegram), clock) for store, name in pairs}
    for dispatcher in instances.values():
        await dispatcher.start()
    return instances


async def queue(store: SqlStore, dispatcher: Dispatcher, replies: list[Reply], clock: FakeClock) -> None:
    """Commit replies, as an event's transaction does, and hand them to this instance's dispatcher."""
    async with store.transaction() as tx:
        pending = await tx.outbox.add(replies, clock.now())
    dispatcher.push(pending)


async def test_replies_committed_on_either_instance_reach_each_chat_once_and_in_order(
    two_stores: tuple[SqlStore, SqlStore], clock: FakeClock
) -> None:
    telegram = Telegram()
    pairs = zip(two_stores, "ab", strict=True)
    instances = [Dispatcher(store, Instance(name, telegram), clock) for store, name in pairs]
    for dispatcher in instances:
        await dispatcher.start()
    pick = random.Random(7)
    chats = range(1, 9)
    for n in range(200):
        at = pick.randrange(2)
        await queue(two_stores[at], instances[at], [SendMessage(pick.choice(chats), f"{n}")], clock)
        if n % 25 == 0:
            await asyncio.sleep(0.01)
    for dispatcher in instances * 2:  # a reply left for the other instance goes before the other is idle
        await dispatcher.idle()
    for dispatcher in instances:
        await dispatcher.stop()
    assert len(telegram.log) == 200, [r for _, r in telegram.log]
    for chat in chats:
        texts = telegram.texts(chat)
        assert texts == sorted(texts, key=int), chat  # commit order
    assert {name for name, _ in telegram.log} == {"a", "b"}  # both delivered some


async def test_a_starting_instance_leaves_alone_what_a_live_one_is_sending_and_takes_over_a_dead_ones(
    two_stores: tuple[SqlStore, SqlStore], clock: FakeClock
) -> None:
    telegram = Telegram(hold={1: asyncio.Event()})
    doomed = Dispatcher(two_stores[0], Instance("a", telegram), clock)
    await doomed.start()
    await queue(two_stores[0], doomed, [SendMessage(1, "one"), SendMessage(1, "two"), SendMessage(2, "other")], clock)
    await telegram.sending_to(1)
    survivor = Dispatcher(two_stores[1], Instance("b", telegram), clock)
    await survivor.start()
    await asyncio.sleep(0.3)  # several sweeps
    assert [(name, r.text) for name, r in telegram.log if isinstance(r, SendMessage)] == [("a", "other")]

    assert kill_delivery(doomed)  # the kill: its tasks die where they stand, its leases held
    del telegram.hold[1]
    clock.advance(seconds=LEASE.total_seconds())
    await asyncio.sleep(0.3)
    await survivor.idle()
    assert telegram.texts(1) == ["one", "two"]  # "one" was in flight when "a" died: "b" sends it, once
    assert [name for name, r in telegram.log if r.chat_id == 1] == ["b", "b"]
    await survivor.stop()


async def test_an_instance_back_from_a_pause_longer_than_its_lease_leaves_the_chat_to_the_one_that_took_it(
    two_stores: tuple[SqlStore, SqlStore], clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(flows.leases, "LEASE", timedelta(seconds=1))  # a pause longer than this, in real time
    monkeypatch.setattr(flows.leases, "RENEW_EVERY", 0.3)
    gate = asyncio.Event()
    telegram = Telegram(hold={1: gate})
    instances = await started(two_stores, telegram, clock)
    await queue(two_stores[0], instances["a"], [SendMessage(1, "one"), SendMessage(1, "two")], clock)
    holder = await telegram.sending_to(1)
    other = "b" if holder == "a" else "a"
    paused = instances[holder].chat.leases
    assert paused is not None and paused.task is not None
    paused.task.cancel()  # the pause: no renewal; its send of "one" hangs meanwhile
    await asyncio.sleep(1.2)
    clock.advance(seconds=2)  # the lease expired: the other's sweep takes the chat
    del telegram.hold[1]
    async with asyncio.timeout(10):
        while telegram.texts(1) != ["one", "two"]:
            telegram.arrived.clear()
            await telegram.arrived.wait()
    paused.start()  # back: its renewal finds the chat is not its own any more
    gate.set()  # and the send in flight at the pause returns
    for dispatcher in instances.values():
        await dispatcher.idle()
    await asyncio.sleep(0.3)
    sent = [(name, r.text) for name, r in telegram.log if isinstance(r, SendMessage)]
    assert sent[:2] == [(other, "one"), (other, "two")]
    assert sent[2:] in ([], [(holder, "one")])  # only the send in flight at the pause may go twice
    for dispatcher in instances.values():
        await dispatcher.stop()


async def test_a_stopping_instance_hands_its_chats_over_at_once(
    two_stores: tuple[SqlStore, SqlStore], clock: FakeClock
) -> None:
    telegram = Telegram(hold={1: asyncio.Event()})
    instances = await started(two_stores, telegram, clock)
    await queue(two_stores[0], instances["a"], [SendMessage(1, "one"), SendMessage(1, "two")], clock)
    holder = await telegram.sending_to(1)
    await instances[holder].stop()  # cancels the hanging send: "one" was not delivered
    del telegram.hold[1]
    await asyncio.sleep(0.3)  # no lease to wait out: the next sweep of the other takes the chat
    other = "b" if holder == "a" else "a"
    await instances[other].idle()
    sent = [(name, r.text) for name, r in telegram.log if isinstance(r, SendMessage)]
    assert sent == [(other, "one"), (other, "two")]
    await instances[other].stop()


async def test_an_answer_goes_from_the_instance_that_committed_it_while_the_chat_is_anothers(
    two_stores: tuple[SqlStore, SqlStore], clock: FakeClock
) -> None:
    gate = asyncio.Event()
    telegram = Telegram(hold={1: gate})
    instances = await started(two_stores, telegram, clock)
    await queue(two_stores[0], instances["a"], [SendMessage(1, "question")], clock)
    holder = await telegram.sending_to(1)
    other = "b" if holder == "a" else "a"
    del telegram.hold[1]
    await queue(two_stores[1] if other == "b" else two_stores[0], instances[other],
                [AnswerButton(1, "cb1"), SendMessage(1, "thanks")], clock)
    await asyncio.sleep(0.1)
    assert [(name, type(r).__name__) for name, r in telegram.log] == [(other, "AnswerButton")]  # the rest waits
    gate.set()
    await asyncio.sleep(0.3)
    for dispatcher in instances.values():
        await dispatcher.idle()
    assert [(name, getattr(r, "text", "")) for name, r in telegram.log] == [
        (other, ""), (holder, "question"), (holder, "thanks")]
    for dispatcher in instances.values():
        await dispatcher.stop()

