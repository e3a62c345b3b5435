"""Delivering the outbox: replies leave only after their event committed, in order, and none is dropped.

A transport (one per front end) sends one reply and reports how it went by returning the platform's message id
(the ids, for an album) or raising one of the exceptions below. Anything else it raises counts as a passing
network fault: the reply is retried with a growing delay.

A review card (`SendCard`) keeps its buttons only if every evidence reply it names was delivered to its chat.
The evidence is queued before the card in the same chat's queue, so its outcome is known (and recorded) by the
time the card's turn comes: from this run, or from the outbox before a restart.

Each chat has its own queue; a pool of workers serves the chats in turn, many at once, so one slow chat, or
one told by Telegram to wait, holds up no other. Results are recorded in batches by one `Recorder`, each as soon
as its send returns; a chat's next reply goes only once its previous sent one is recorded (the worker serves
other chats meanwhile). So a kill repeats, in each chat, at most the one reply whose send or record was in
flight: the chat sees its last message twice, never an earlier group again after later messages.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from flows import metrics
from flows.blocked_reads import BlockedReads
from flows.chat_pace import ChatPace
from flows.clock import Clock
from flows.leases import ChatLeases
from flows.outage import Outage
from flows.ports import Store, StoreUnavailable
from flows.records import Pending
from flows.replies import (
    CopyMessage,
    EditMessage,
    Notify,
    Reply,
    SendCard,
    SendDocument,
    SendFiles,
    SendMessage,
    SendPhoto,
)

log = logging.getLogger(__name__)

GROUP = 10
"""The most replies of one chat sent in one turn before the other chats ready to go get theirs."""
CHAT_WORKERS = 16
"""Chats served at once: enough to keep the Bot API busy while each chat still sends one reply at a time."""
OUT_OF_BAND_WORKERS = 4
RECORD_BATCH = 500
MAX_BACKOFF = 60.0
STOP_GRACE = 5.0  # seconds a stop waits for the last results to be recorded
SCRUB_EVERY = 30.0  # seconds between write-ahead-log scrubs after redactions
REMEMBERED_EVIDENCE = 10_000
REMEMBERED_RESULTS = 10_000
Delivered = int | tuple[int, ...] | None


class RetryAfter(Exception):
    """The platform asks us to wait (Telegram's 429 with retry_after)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"retry after {seconds} s")
        self.seconds = seconds


class RecipientBlocked(Exception):
    """The user blocked the bot (Telegram's 403); nothing more is sent to them until they write again."""


class Undeliverable(Exception):
    """This reply can never be delivered (e.g. the message to edit is gone); it is recorded and dropped."""


class Transport(Protocol):
    async def deliver(self, reply: Reply) -> Delivered:
        """Send one reply; return the id of the message it created (the ids, for several), if any."""
        ...


@runtime_checkable
class Paced(Protocol):
    """A transport to a platform that limits how fast one chat may receive messages (Telegram)."""

    chat_pace: ChatPace


@dataclass(frozen=True)
class Delivery:
    """How one outbox entry went: sent, failed, blocked or skipped, and the messages it created."""

    entry: Pending
    outcome: str
    message_ids: tuple[int, ...] = ()

    @property
    def message_id(self) -> int | None:
        return self.message_ids[0] if self.message_ids else None


def _ids(delivered: Delivered) -> tuple[int, ...]:
    if delivered is None:
        return ()
    return (delivered,) if isinstance(delivered, int) else tuple(delivered)


class Lane:
    """A delivery queue per chat, served by a pool of workers.

    A chat's replies leave in commit order, one at a time; up to `workers` chats are served at once, each in
    turn (a chat with a long queue does not hold up the others); a chat told to wait (Telegram's 429) or whose
    send failed waits alone; with a `pace`, a chat sends no faster than Telegram allows in one chat.
    Each result is handed to the `Recorder` as soon as it returns, and a chat with a sent reply not yet
    recorded leaves the line until it is (its next reply must not go while a kill would repeat both).
    """

    def __init__(self, name: str, store: Store, transport: Transport, clock: Clock, carries: Callable[[Reply], bool],
                 *, workers: int = CHAT_WORKERS, pace: ChatPace | None = None, outage: Outage | None = None) -> None:
        self.name = name
        self.store = store
        self.transport = transport
        self.workers = workers
        self.pace = pace
        self.queues: dict[int, deque[Pending]] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self._ready: asyncio.Queue[int] = asyncio.Queue()
        self._scheduled: set[int] = set()  # chats with replies: ready, being served, or waiting out a pause
        self._paused: dict[int, asyncio.TimerHandle] = {}
        self._backoff: dict[int, float] = {}
        self._unsettled = 0  # pushed and not yet recorded
        # Ids pushed and not yet recorded, and the latest recorded: a reply read back from the outbox while its
        # result was being recorded (flows/leases.py) is not queued again.
        self._known: set[int] = set()
        self._recorded: dict[int, None] = {}
        self._unrecorded: dict[int, int] = {}  # chat -> its replies sent and not yet recorded
        self._awaiting_record: set[int] = set()  # chats out of the line until their sent replies are recorded
        self._idle = asyncio.Event()
        self._idle.set()
        self._evidence: dict[int, str] = {}  # outcomes of the latest evidence sent in this run
        self.recorder = Recorder(name, store, clock, self._settled, outage or Outage())
        self._blocked_reads = BlockedReads(store)
        self.leases = None if not store.shared else ChatLeases(name, store, clock, carries, self.push,
                                                               self.recorder.flushed)

    def start(self) -> None:
        self.recorder.start()
        if self.leases is not None:
            self.leases.start()
        self.tasks = [asyncio.create_task(self._work(), name=f"outbox-{self.name}-{n}")
                      for n in range(self.workers)]

    def accept(self, entries: Sequence[Pending]) -> None:
        """Committed entries to deliver: queued here, or, while instances share the store, once this instance
        holds their chat's lease (`flows/leases.py`; else the instance that holds it delivers them)."""
        if self.leases is None:
            self.push(entries)
        else:
            self.leases.claim(entries)

    def push(self, entries: Sequence[Pending]) -> None:
        """Queue entries for delivery from here."""
        new = []
        for entry in entries:
            if entry.id in self._known or entry.id in self._recorded:
                continue
            new.append(entry)
            self._known.add(entry.id)
            self.queues.setdefault(entry.chat_id, deque()).append(entry)
            if entry.chat_id not in self._scheduled:
                self._scheduled.add(entry.chat_id)
                self._ready.put_nowait(entry.chat_id)
        if new:
            self._unsettled += len(new)
            self._idle.clear()

    def delivered_elsewhere(self, entry: Pending) -> None:
        """Record an entry that went out another way (a button's answer in a webhook response) as sent."""
        self._unsettled += 1
        self._idle.clear()
        self._record(Delivery(entry, "sent"))

    async def idle(self) -> None:
        """Wait until everything pushed so far is delivered (or given up on) and recorded."""
        while True:
            if self.leases is not None:
                await self.leases.settled()
            await self._idle.wait()
            if self.leases is None or self.leases.quiet:
                return

    async def stop(self) -> None:
        """Stop sending, and record what was sent (a reply whose send was cut short goes again after a
        restart)."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks = []
        for handle in self._paused.values():
            handle.cancel()
        self._paused.clear()
        await self._blocked_reads.stop()
        await self.recorder.stop()
        if self.leases is not None:
            await self.leases.stop()

    def _record(self, done: Delivery) -> None:
        if done.outcome == "sent":
            self._unrecorded[done.entry.chat_id] = self._unrecorded.get(done.entry.chat_id, 0) + 1
        self.recorder.add(done)

    def _settled(self, batch: Sequence[Delivery]) -> None:
        """A batch of results is committed: chats whose sent replies are all recorded may send their next."""
        for done in batch:
            self._known.discard(done.entry.id)
            self._recorded[done.entry.id] = None
            if done.outcome != "sent":
                continue
            chat_id = done.entry.chat_id
            self._unrecorded[chat_id] -= 1
            if self._unrecorded[chat_id] == 0:
                del self._unrecorded[chat_id]
                if chat_id in self._awaiting_record:
                    self._awaiting_record.discard(chat_id)
                    self._ready.put_nowait(chat_id)
                elif chat_id not in self.queues:
                    self._drained(chat_id)
        while len(self._recorded) > REMEMBERED_RESULTS:
            del self._recorded[next(iter(self._recorded))]
        self._unsettled -= len(batch)
        if self._unsettled == 0:
            self._idle.set()

    async def _work(self) -> None:
        while True:
            chat_id = await self._ready.get()
            try:
                wait = await self._serve(chat_id)
            except Exception:  # a bug, not a delivery outcome: the chat's replies wait and go again
                log.exception("%s: delivery to a chat failed unexpectedly; retrying", self.name)
                wait = 1.0
            self._next_turn(chat_id, wait)

    def _next_turn(self, chat_id: int, wait: float | None) -> None:
        """The chat goes to the back of the line, after its pause or once its sent replies are recorded (`wait`
        None), or leaves the line once it has no replies."""
        if not self.queues.get(chat_id):
            self.queues.pop(chat_id, None)
            self._scheduled.discard(chat_id)
            if chat_id not in self._unrecorded:
                self._drained(chat_id)
        elif wait is None and chat_id in self._unrecorded:
            self._awaiting_record.add(chat_id)
        elif wait is not None and wait > 0:
            loop = asyncio.get_running_loop()
            self._paused[chat_id] = loop.call_later(wait, self._resume, chat_id)
        else:
            self._ready.put_nowait(chat_id)

    def _drained(self, chat_id: int) -> None:
        if self.leases is not None:
            self.leases.drained(chat_id)

    def _resume(self, chat_id: int) -> None:
        del self._paused[chat_id]
        self._ready.put_nowait(chat_id)

    async def _serve(self, chat_id: int) -> float | None:
        """Send the next replies of one chat; returns how long the chat must wait before its next turn, or None
        when it must wait until its sent replies are recorded. A reply leaves its queue only once it is done
        with, so whatever stops this turn leaves the rest in place."""
        if chat_id in self._unrecorded:
            return None
        if self.leases is not None and not self.leases.live():  # another instance may have taken the chat over
            return 1.0
        queue = self.queues[chat_id]
        try:
            blocked = await self._blocked(chat_id, list(itertools.islice(queue, GROUP)))
        except Exception:  # the database failed: the chat's replies wait where they are
            log.exception("%s: could not read whether a chat blocked the bot; retrying", self.name)
            return 1.0
        for _ in range(min(GROUP, len(queue))):
            if chat_id in self._unrecorded:
                return None
            wait = await self._send(queue[0], blocked)
            if wait is None:
                blocked = True
            elif wait > 0:
                return wait
            queue.popleft()
        return 0.0

    async def _send(self, entry: Pending, blocked: bool) -> float | None:
        """Send one reply and hand its result to the recorder. Returns 0.0 when it is done with, the seconds
        to wait when it must go again later, or None when the chat turned out to have blocked the bot."""
        if self.leases is not None and not self.leases.may_send(entry):
            return self._left_to_another(entry)
        if blocked and _skipped_when_blocked(entry):
            self._finished(entry, "skipped")
            return 0.0
        if self.pace is not None and _is_message(entry.reply):
            wait = self.pace.wait(entry.chat_id)
            if wait:
                return wait
        try:
            reply = await self._card(entry.reply) if isinstance(entry.reply, SendCard) else entry.reply
            delivered = await self.transport.deliver(reply)
        except RetryAfter as told:
            return max(told.seconds, 0.1)
        except RecipientBlocked:
            await self._mark_blocked(entry.chat_id)
            self._finished(entry, "blocked")
            return None
        except Undeliverable as error:
            log.warning("reply %d (%s) dropped: %s", entry.id, self.name, error)
            self._finished(entry, "failed")
            return 0.0
        except Exception as error:  # a network fault: keep the entry, wait, try again
            wait = self._back_off(entry.chat_id)
            log.warning("%s delivery failed (%s); retrying in %.1f s", self.name, type(error).__name__, wait)
            return wait
        self._backoff.pop(entry.chat_id, None)
        self._finished(entry, "sent", _ids(delivered))
        return 0.0

    def _left_to_another(self, entry: Pending) -> float:
        """Drop an entry this instance may not send (its chat's lease lapsed; or, for a moment, the lease may
        not be ours): unrecorded, it stays undelivered for the instance holding the chat, or for this one if it
        takes the chat again. Returns the wait before the chat's next turn."""
        if self.leases is not None and self.leases.holds(entry.chat_id):
            return 1.0  # still ours, but not surely: wait for the next renewal
        self._known.discard(entry.id)
        self._unsettled -= 1
        if self._unsettled == 0:
            self._idle.set()
        return 0.0

    def _back_off(self, chat_id: int) -> float:
        """A growing delay with jitter, so chats cut off together do not all try again at the same moment."""
        delay = min(MAX_BACKOFF, max(0.5, self._backoff.get(chat_id, 0.0) * 2))
        self._backoff[chat_id] = delay
        return delay * random.uniform(0.8, 1.2)

    def _finished(self, entry: Pending, outcome: str, message_ids: tuple[int, ...] = ()) -> None:
        if isinstance(entry.reply, SendFiles):
            self._evidence[entry.id] = outcome
            while len(self._evidence) > REMEMBERED_EVIDENCE:
                del self._evidence[next(iter(self._evidence))]
        self._record(Delivery(entry, outcome, message_ids))

    async def _card(self, card: SendCard) -> SendMessage:
        """The card with its buttons if all its evidence reached this chat, else its fallback without them.

        The evidence's results are recorded first, so an Approve pressed on the card finds the evidence shown.
        """
        await self.recorder.flushed()
        outcomes: dict[int, str | None] = {row: self._evidence[row] for row in card.evidence if row in self._evidence}
        earlier = [row for row in card.evidence if row not in outcomes]
        if earlier:  # delivered before a restart
            async with self.store.reading() as tx:
                outcomes.update(await tx.outbox.outcomes(earlier))
        delivered = all(outcomes.get(row) == "sent" for row in card.evidence)
        if not delivered:
            log.warning("a card to chat %d goes without its buttons: its evidence was not delivered (%s)",
                        card.chat_id, ", ".join(f"{row}: {outcomes.get(row)}" for row in card.evidence))
        return card.message(delivered)

    async def _blocked(self, chat_id: int, group: list[Pending]) -> bool:
        """Whether this chat's user blocked the bot (as the store knows it now: a user who writes again is
        unblocked by their event, and a block update or a refused send blocks them). Asked only when a block
        would skip one of the replies, so emails, SMS and button answers cost no read; the workers asking at
        the same moment share one read."""
        if not any(_skipped_when_blocked(entry) for entry in group):
            return False
        return await self._blocked_reads.blocked(chat_id)

    async def _mark_blocked(self, chat_id: int) -> None:
        try:
            async with self.store.transaction() as tx:
                await tx.users.set_blocked(chat_id, True)
        except Exception:  # the outcome "blocked" is still recorded; the next 403 tries again
            log.exception("%s: could not record that chat %d blocked the bot", self.name, chat_id)


class Recorder:
    """Records how deliveries went, in batches: what finished while one batch was being committed goes in the
    next, so under load one transaction records many replies, and when it is quiet each is recorded at once
    (the window in which a crash makes a reply go twice is one commit long)."""

    def __init__(self, name: str, store: Store, clock: Clock, settled: Callable[[Sequence[Delivery]], None],
                 outage: Outage) -> None:
        self.name = name
        self.store = store
        self.clock = clock
        self._settled = settled
        self.outage = outage
        self._waiting: list[Delivery] = []
        self._wake = asyncio.Event()
        self._added = 0
        self._recorded = 0
        self._progress = asyncio.Condition()
        self.task: asyncio.Task[None] | None = None
        self._scrubbed_at: float | None = None
        self._scrub_later: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"outbox-{self.name}-recorder")

    def add(self, done: Delivery) -> None:
        self._waiting.append(done)
        self._added += 1
        self._wake.set()

    async def flushed(self) -> None:
        """Wait until every result added so far is recorded."""
        target = self._added
        async with self._progress:
            await self._progress.wait_for(lambda: self._recorded >= target)

    async def stop(self) -> None:
        """Record what is waiting (for a few seconds at most, if the database is failing), then stop."""
        if self.task is not None:
            try:
                await asyncio.wait_for(self.flushed(), STOP_GRACE)
            except TimeoutError:
                log.warning("%s: %d deliveries were not recorded; they go again after a restart",
                            self.name, self._added - self._recorded)
        for task in (self.task, self._scrub_later):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self.task = self._scrub_later = None

    async def _run(self) -> None:
        failures = 0
        while True:
            if not self._waiting:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch, self._waiting = self._waiting[:RECORD_BATCH], self._waiting[RECORD_BATCH:]
            try:
                redacted = await self._record(batch)
            except Exception as error:  # the database failed: the batch waits and is recorded when it is back
                failures += 1
                if isinstance(error, StoreUnavailable):
                    self.outage.failed(error)
                else:
                    log.exception("%s: could not record %d deliveries; retrying", self.name, len(batch))
                self._waiting[:0] = batch
                await asyncio.sleep(min(30.0, float(failures)))
                continue
            failures = 0
            self.outage.ended()
            self._recorded += len(batch)
            metrics.delivered(self.name, batch)
            self._settled(batch)
            async with self._progress:
                self._progress.notify_all()
            if redacted:
                await self._scrub()

    async def _record(self, done: list[Delivery]) -> bool:
        """Record one batch; True if it redacted anything (the write-ahead log then needs a scrub)."""
        secrets = [d.entry for d in done if getattr(d.entry.reply, "sensitive", False)]
        now = self.clock.now()
        async with self.store.transaction() as tx:
            await tx.outbox.mark_delivered([(d.entry.id, d.outcome, d.message_id) for d in done], now)
            await tx.outbox.redact(secrets)
            await tx.timers.schedule_deletions(_to_delete(done), now)
            await tx.evidence.record(_evidence_shown(done), now)
        return bool(secrets)

    async def _scrub(self) -> None:
        """After a redaction, leave no copy of what was redacted in the write-ahead log: at once, or (within
        30 s of the last scrub) once more when that time is up."""
        loop = asyncio.get_running_loop()
        wait = 0.0 if self._scrubbed_at is None else self._scrubbed_at + SCRUB_EVERY - loop.time()
        if wait <= 0:
            self._scrubbed_at = loop.time()
            try:
                await self.store.forget_overwritten()
            except Exception:
                log.exception("%s: could not scrub the write-ahead log", self.name)
        elif self._scrub_later is None or self._scrub_later.done():
            self._scrub_later = asyncio.create_task(self._scrub_after(wait))

    async def _scrub_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self._scrub()


def _skipped_when_blocked(entry: Pending) -> bool:
    """Messages to a chat that blocked the bot are not tried (files, deletions and answers still are)."""
    return isinstance(entry.reply, SendMessage | EditMessage | SendCard)


def _is_message(reply: Reply) -> bool:
    """What Telegram counts against a chat's message rate (edits, deletions and answers it does not)."""
    return isinstance(reply, SendMessage | SendCard | SendPhoto | SendDocument | SendFiles | CopyMessage)


def _to_delete(done: list[Delivery]) -> list[tuple[int, int, int]]:
    """Delivered messages that asked to be deleted later: (chat id, message id, after seconds)."""
    return [(d.entry.chat_id, d.message_id, d.entry.reply.delete_after) for d in done
            if d.outcome == "sent" and d.message_id and isinstance(d.entry.reply, SendMessage | SendPhoto)
            and d.entry.reply.delete_after]


def _evidence_shown(done: list[Delivery]) -> list[tuple[str, int, tuple[int, ...]]]:
    """Delivered evidence of a case: (case id, chat id, message ids), so a purge can delete it."""
    return [(d.entry.reply.case_id, d.entry.chat_id, d.message_ids) for d in done
            if d.outcome == "sent" and isinstance(d.entry.reply, SendFiles) and d.entry.reply.case_id]


class Dispatcher:
    """Routes committed outbox entries to their lane: chat replies, and messages sent outside the chat.

    Separate lanes keep a slow mail server from holding up chat replies, and the other way round.
    """

    def __init__(self, store: Store, transport: Transport, clock: Clock, channels: Transport | None = None,
                 outage: Outage | None = None) -> None:
        self.store = store
        pace = transport.chat_pace if isinstance(transport, Paced) else None
        outage = outage or Outage()
        self.chat = Lane("chat", store, transport, clock, _in_chat, pace=pace, outage=outage)
        self.out_of_band = Lane("out-of-band", store, channels or _NoChannels(), clock, _out_of_band,
                                workers=OUT_OF_BAND_WORKERS, outage=outage)

    async def start(self) -> None:
        """Load what was committed but not delivered before the last stop, and start sending. While instances
        share the store, the lanes' first sweep takes only what no live instance is delivering."""
        if not self.store.shared:
            async with self.store.reading() as tx:
                left_over = await tx.outbox.pending()
            if left_over:
                log.info("delivering %d replies left from before the restart", len(left_over))
            self.push(left_over)
        for lane in (self.chat, self.out_of_band):
            lane.start()

    def push(self, entries: Sequence[Pending]) -> None:
        """Committed entries, to deliver."""
        self.chat.accept([e for e in entries if _in_chat(e.reply)])
        self.out_of_band.accept([e for e in entries if _out_of_band(e.reply)])

    def delivered_elsewhere(self, entry: Pending) -> None:
        """Record a chat reply held back from delivery that went out another way (in a webhook response)."""
        self.chat.delivered_elsewhere(entry)

    async def idle(self) -> None:
        """Wait until everything queued so far has been delivered (or given up on) and recorded."""
        await self.chat.idle()
        await self.out_of_band.idle()

    async def stop(self) -> None:
        for lane in (self.chat, self.out_of_band):
            await lane.stop()


def _in_chat(reply: Reply) -> bool:
    return not isinstance(reply, Notify)


def _out_of_band(reply: Reply) -> bool:
    return isinstance(reply, Notify)


class _NoChannels:
    """Used when no SMTP or SMS channel is configured: nothing should be routed here."""

    async def deliver(self, reply: Reply) -> Delivered:
        raise Undeliverable("no out-of-band channel is configured")
