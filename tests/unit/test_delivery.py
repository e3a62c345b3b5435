"""Delivery: each chat's replies in commit order, many chats at once, a chat told to wait waits alone, results
recorded in batches as they come back, and nothing committed dropped when the store fails for a moment."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from flows.chat_pace import ChatPace
from flows.clock import FakeClock
from flows.delivery import CHAT_WORKERS, Delivered, Dispatcher, RetryAfter
from flows.events import Sender
from flows.records import Pending
from flows.replies import AnswerButton, EditMessage, Reply, SendMessage
from flows.store.memory import MemoryStore, MemoryTx
from tests.support.chat import RecordingTransport


class FlakyStore(MemoryStore):
    """A store whose next `failing_reads` reads and `failing_writes` writes fail, as SQLite does when its lock
    is busy past the timeout; it counts the writes that went through."""

    def __init__(self, failing_reads: int = 0, write_delay: float = 0.0) -> None:
        super().__init__()
        self.failing_reads = failing_reads
        self.failing_writes = 0
        self.write_delay = write_delay
        self.writes_held: asyncio.Event | None = None  # writes wait until it is set
        self.writes = 0
        self.reads = 0

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[MemoryTx]:
        if self.failing_reads:
            self.failing_reads -= 1
            raise RuntimeError("database is locked")
        self.reads += 1
        async with super().reading() as tx:
            yield tx

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[MemoryTx]:
        if self.failing_writes:
            self.failing_writes -= 1
            raise RuntimeError("database is locked")
        if self.writes_held is not None:
            await self.writes_held.wait()
        async with super().transaction() as tx:
            await asyncio.sleep(self.write_delay)
            yield tx
        self.writes += 1


class SlowTransport(RecordingTransport):
    """Each send takes a little while; counts how many are in flight at once."""

    def __init__(self, seconds: float = 0.005) -> None:
        super().__init__()
        self.seconds = seconds
        self.in_flight = 0
        self.most_in_flight = 0

    async def deliver(self, reply: Reply) -> Delivered:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.seconds)
            return await super().deliver(reply)
        finally:
            self.in_flight -= 1


class WaitOnce(RecordingTransport):
    """Telegram's 429 for the first message to one chat."""

    def __init__(self, chat_id: int, seconds: float) -> None:
        super().__init__()
        self.chat_id, self.seconds, self.told = chat_id, seconds, False

    async def deliver(self, reply: Reply) -> Delivered:
        if reply.chat_id == self.chat_id and not self.told:
            self.told = True
            raise RetryAfter(self.seconds)
        return await super().deliver(reply)


class Hangs(RecordingTransport):
    """Sends `sends` replies, then hangs: a process killed at that moment."""

    def __init__(self, sends: int) -> None:
        super().__init__()
        self.sends = sends

    async def deliver(self, reply: Reply) -> Delivered:
        if len(self.log) >= self.sends:
            await asyncio.Event().wait()
        return await super().deliver(reply)


async def commit(store: FlakyStore, clock: FakeClock, replies: list[Reply]) -> list[Pending]:
    async with store.transaction() as tx:
        return await tx.outbox.add(replies, clock.now())


async def pending_ids(store: FlakyStore) -> list[int]:
    async with store.reading() as tx:
        return [entry.id for entry in await tx.outbox.pending()]


def texts(transport: RecordingTransport, chat_id: int) -> list[str]:
    return [r.text for r in transport.log if isinstance(r, SendMessage) and r.chat_id == chat_id]


async def deliver_all(store: FlakyStore, transport: RecordingTransport, clock: FakeClock,
                      replies: list[Reply]) -> None:
    """Start delivering, commit the replies, hand them over as the runner does, and wait until all are done."""
    dispatcher = Dispatcher(store, transport, clock)
    await dispatcher.start()
    dispatcher.push(await commit(store, clock, replies))
    await asyncio.wait_for(dispatcher.idle(), timeout=10)
    await dispatcher.stop()


async def test_each_chat_gets_its_replies_in_order_while_many_chats_are_served_at_once(clock: FakeClock) -> None:
    store, transport = FlakyStore(), SlowTransport()
    replies: list[Reply] = [SendMessage(chat, f"{chat}-{n}") for n in range(5) for chat in range(1, 41)]
    await deliver_all(store, transport, clock, replies)
    for chat in range(1, 41):
        assert texts(transport, chat) == [f"{chat}-{n}" for n in range(5)]
    assert 1 < transport.most_in_flight <= CHAT_WORKERS
    assert await pending_ids(store) == []


async def test_a_chat_told_to_wait_waits_alone(clock: FakeClock) -> None:
    store, transport = FlakyStore(), WaitOnce(chat_id=1, seconds=0.3)
    await deliver_all(store, transport, clock, [SendMessage(1, "first"), SendMessage(1, "second"),
                                                *[SendMessage(chat, "hello") for chat in range(2, 12)]])
    order = [r.chat_id for r in transport.log]
    assert order[-2:] == [1, 1]  # the ten other chats went while chat 1 waited out its 429
    assert set(order[:-2]) == set(range(2, 12))
    assert texts(transport, 1) == ["first", "second"]


async def test_a_long_queue_in_one_chat_does_not_hold_up_the_others(clock: FakeClock) -> None:
    store, transport = FlakyStore(), SlowTransport()
    news: list[Reply] = [SendMessage(1, f"news {n}") for n in range(100)]
    await deliver_all(store, transport, clock, [*news, SendMessage(2, "hi")])
    assert [r.chat_id for r in transport.log].index(2) < 20


async def test_results_are_recorded_in_batches_not_one_transaction_per_reply(clock: FakeClock) -> None:
    store, transport = FlakyStore(write_delay=0.01), SlowTransport(seconds=0.001)
    writes_before = store.writes
    await deliver_all(store, transport, clock, [SendMessage(chat, "hello") for chat in range(1, 201)])
    assert len(transport.log) == 200
    assert await pending_ids(store) == []
    assert store.writes - writes_before < 50  # one commit for the replies, the rest for their results


async def test_chats_served_at_once_share_one_read_of_who_blocked_the_bot(clock: FakeClock) -> None:
    store, transport = FlakyStore(), SlowTransport(seconds=0.001)
    async with store.transaction() as tx:
        await tx.users.touch([Sender(chat, chat) for chat in range(1, 201)], clock.now())
        await tx.users.set_blocked(13, True)
    reads_before = store.reads
    await deliver_all(store, transport, clock, [SendMessage(chat, "hello") for chat in range(1, 201)])
    assert {r.chat_id for r in transport.log} == set(range(1, 201)) - {13}
    assert await pending_ids(store) == []
    assert store.reads - reads_before < 50  # a read per chat would be 200


async def test_each_result_is_recorded_as_it_returns_so_a_kill_repeats_only_what_was_in_flight(
    clock: FakeClock,
) -> None:
    store, transport = FlakyStore(), Hangs(sends=2)
    dispatcher = Dispatcher(store, transport, clock)
    await dispatcher.start()
    entries = await commit(store, clock, [SendMessage(7, "one"), SendMessage(7, "two"), SendMessage(7, "three")])
    dispatcher.push(entries)
    for _ in range(200):
        if await pending_ids(store) == [entries[2].id]:
            break
        await asyncio.sleep(0.01)
    assert await pending_ids(store) == [entries[2].id]  # "three" was in flight: only it would go again
    await dispatcher.stop()


async def test_a_chat_s_next_reply_waits_for_its_last_to_be_recorded_so_a_kill_repeats_one_per_chat(
    clock: FakeClock,
) -> None:
    store, transport = FlakyStore(), RecordingTransport()
    dispatcher = Dispatcher(store, transport, clock)
    await dispatcher.start()
    entries = await commit(store, clock, [SendMessage(chat, f"{chat}-{n}") for n in range(3) for chat in (1, 2, 3)])
    store.writes_held = asyncio.Event()  # the recorder's commit does not finish: the process is killed during it
    dispatcher.push(entries)
    for _ in range(10):
        await asyncio.sleep(0.01)
    assert sorted(texts(transport, chat) for chat in (1, 2, 3)) == [["1-0"], ["2-0"], ["3-0"]]
    lane = dispatcher.chat
    for task in (*lane.tasks, lane.recorder.task):  # the kill
        assert task is not None
        task.cancel()

    store.writes_held = None
    after_restart = RecordingTransport()
    await deliver_all(store, after_restart, clock, [])
    for chat in (1, 2, 3):  # only the reply whose record was in flight goes again, right after itself
        assert texts(transport, chat) + texts(after_restart, chat) == [f"{chat}-{n}" for n in (0, 0, 1, 2)]


async def test_a_chat_over_its_burst_waits_for_its_pace_and_others_go_meanwhile(clock: FakeClock) -> None:
    class PacedTransport(RecordingTransport):
        chat_pace = ChatPace(burst=2, per_second=5)

    store, transport = FlakyStore(), PacedTransport()
    await deliver_all(store, transport, clock, [SendMessage(1, "a"), SendMessage(1, "b"), SendMessage(1, "c"),
                                                SendMessage(2, "hi")])
    assert texts(transport, 1) == ["a", "b", "c"]
    assert [r.chat_id for r in transport.log][-1] == 1  # "c" waited for chat 1's pace; chat 2 did not


def test_the_pace_allows_a_burst_then_one_message_per_interval_and_forgets_idle_chats() -> None:
    now = [0.0]
    pace = ChatPace(burst=3, per_second=1.0, now=lambda: now[0])
    assert [pace.wait(5) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert pace.wait(5) == 1.0
    assert pace.wait(6) == 0.0  # another chat has its own allowance
    now[0] = 1.0
    assert pace.wait(5) == 0.0
    assert pace.wait(5) == 1.0
    now[0] = 100.0
    pace._forget_full(now[0])
    assert len(pace) == 0


async def test_edits_and_button_answers_are_not_held_back_by_the_pace(clock: FakeClock) -> None:
    class PacedTransport(RecordingTransport):
        chat_pace = ChatPace(burst=1, per_second=0.01)

    store, transport = FlakyStore(), PacedTransport()
    await deliver_all(store, transport, clock, [SendMessage(1, "a"), EditMessage(1, 1000, "a, edited"),
                                                AnswerButton(1, "cb", "")])
    assert len(transport.log) == 3


async def test_a_failed_read_delays_delivery_but_loses_nothing(clock: FakeClock) -> None:
    store, transport = FlakyStore(), RecordingTransport()
    dispatcher = Dispatcher(store, transport, clock)
    await dispatcher.start()
    pending = await commit(store, clock, [SendMessage(7, "first"), SendMessage(7, "second")])
    store.failing_reads = 1  # the lane's next read, of whether the chat blocked the bot
    dispatcher.push(pending)
    await asyncio.wait_for(dispatcher.idle(), timeout=5)
    await dispatcher.stop()
    assert texts(transport, 7) == ["first", "second"]
    assert await pending_ids(store) == []


async def test_a_failed_record_is_retried_and_nothing_is_sent_twice(clock: FakeClock) -> None:
    store, transport = FlakyStore(), RecordingTransport()
    dispatcher = Dispatcher(store, transport, clock)
    await dispatcher.start()
    pending = await commit(store, clock, [SendMessage(7, "first"), SendMessage(8, "second")])
    store.failing_writes = 1  # the recorder's first write
    dispatcher.push(pending)
    await asyncio.wait_for(dispatcher.idle(), timeout=5)
    await dispatcher.stop()
    assert len(transport.log) == 2
    assert await pending_ids(store) == []


async def test_an_answer_sent_in_the_webhook_response_is_recorded_as_sent_without_a_call(clock: FakeClock) -> None:
    store, transport = FlakyStore(), RecordingTransport()
    dispatcher = Dispatcher(store, transport, clock)
    await dispatcher.start()
    answer, edit = await commit(store, clock, [AnswerButton(1, "q-1", "done"), EditMessage(1, 5, "✔ pressed")])
    dispatcher.push([edit])  # the runner held the answer back for the webhook response
    dispatcher.delivered_elsewhere(answer)
    await asyncio.wait_for(dispatcher.idle(), timeout=10)
    await dispatcher.stop()
    assert transport.log == [EditMessage(1, 5, "✔ pressed")]
    assert await pending_ids(store) == []
    async with store.reading() as tx:
        assert await tx.outbox.outcomes([answer.id]) == {answer.id: "sent"}


async def test_the_runner_holds_back_only_the_answer_to_the_update_s_own_press() -> None:
    from flows.events import ButtonPressed
    from flows.runner import _hold_answers, _Item

    press = ButtonPressed("cb:q-1", Sender(1, 1), "go", 5, "q-1")
    entries = [Pending(1, 1, EditMessage(1, 5, "✔ go")), Pending(2, 1, AnswerButton(1, "q-0")),
               Pending(3, 1, AnswerButton(1, "q-1")), Pending(4, 1, SendMessage(1, "next"))]
    holding, plain = _Item(press, hold_answer=True), _Item(press)
    assert _hold_answers([plain], entries) == entries and plain.held is None
    assert [e.id for e in _hold_answers([holding], entries)] == [1, 2, 4]  # the chat's messages keep their order
    assert holding.held == entries[2]
