"""Delivering the outbox: replies leave only after their event committed, in order, and none is dropped.

A transport (one per front end) sends one reply and reports how it went by returning the platform's message id
(the ids, for an album) or raising one of the exceptions below. Anything else it raises counts as a passing
network fault: the reply is retried with a growing delay.

A review card (`SendCard`) keeps its buttons only if every evidence reply it names was delivered to its chat.
The evidence is queued before the card in the same chat lane, so its outcome is known by the time the card's
turn comes: from this run, or recorded in the outbox before a restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from flows.clock import Clock
from flows.ports import Store
from flows.records import Pending
from flows.replies import EditMessage, Notify, Reply, SendCard, SendFiles, SendMessage, SendPhoto

log = logging.getLogger(__name__)

GROUP = 50
MAX_BACKOFF = 60.0
SCRUB_EVERY = 30.0  # seconds between write-ahead-log scrubs after redactions
REMEMBERED_EVIDENCE = 10_000
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
    """One delivery queue with its own worker: replies leave in commit order, one at a time."""

    def __init__(self, name: str, store: Store, transport: Transport, clock: Clock) -> None:
        self.name = name
        self.store = store
        self.transport = transport
        self.clock = clock
        self.queue: deque[Pending] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._backoff = 0.0
        self._scrubbed_at: float | None = None
        self._scrub_later: asyncio.Task[None] | None = None
        self._evidence: dict[int, str] = {}  # outcomes of the latest evidence sent in this run

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"outbox-{self.name}")

    def push(self, entries: Sequence[Pending]) -> None:
        if entries:
            self.queue.extend(entries)
            self._idle.clear()
            self._wake.set()

    async def idle(self) -> None:
        await self._idle.wait()

    async def stop(self) -> None:
        for task in (self._task, self._scrub_later):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._task = self._scrub_later = None

    async def _run(self) -> None:
        while True:
            if not self.queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            group = self._next_group()
            try:
                blocked = await self._blocked(group)
            except Exception:  # the database failed: the group waits at the front of the queue
                log.exception("%s: could not read which chats blocked the bot; retrying", self.name)
                self.queue.extendleft(reversed(group))
                await asyncio.sleep(1.0)
                continue
            done, pause = await self._send_group(group, blocked)
            try:
                await self._record(done)
            except Exception:  # the database failed: keep going; unrecorded replies go again after a restart
                log.exception("%s: could not record %d deliveries", self.name, len(done))
                pause = max(pause, 1.0)
            if pause:
                await asyncio.sleep(pause)

    def _next_group(self) -> list[Pending]:
        """Up to GROUP entries; a review card starts a group of its own, so the evidence before it is recorded
        (and an Approve pressed on it finds the evidence shown) before the card goes out."""
        group = [self.queue.popleft()]
        while self.queue and len(group) < GROUP and not isinstance(self.queue[0].reply, SendCard):
            group.append(self.queue.popleft())
        return group

    async def _send_group(self, group: list[Pending], blocked: set[int]) -> tuple[list[Delivery], float]:
        done: list[Delivery] = []
        for index, entry in enumerate(group):
            if entry.chat_id in blocked and _skipped_when_blocked(entry):
                done.append(self._finished(entry, "skipped"))
                continue
            try:
                reply = await self._card(entry.reply) if isinstance(entry.reply, SendCard) else entry.reply
                delivered = await self.transport.deliver(reply)
            except RetryAfter as wait:
                self.queue.extendleft(reversed(group[index:]))
                return done, wait.seconds
            except RecipientBlocked:
                blocked.add(entry.chat_id)
                await self._mark_blocked(entry.chat_id)
                done.append(self._finished(entry, "blocked"))
            except Undeliverable as error:
                log.warning("reply %d (%s) dropped: %s", entry.id, self.name, error)
                done.append(self._finished(entry, "failed"))
            except Exception as error:  # a network fault: keep the entry, wait, try again
                self._backoff = min(MAX_BACKOFF, max(0.5, self._backoff * 2))
                log.warning("%s delivery failed (%s); retrying in %.1f s", self.name, type(error).__name__,
                            self._backoff)
                self.queue.extendleft(reversed(group[index:]))
                return done, self._backoff
            else:
                self._backoff = 0.0
                done.append(self._finished(entry, "sent", _ids(delivered)))
        return done, 0.0

    def _finished(self, entry: Pending, outcome: str, message_ids: tuple[int, ...] = ()) -> Delivery:
        if isinstance(entry.reply, SendFiles):
            self._evidence[entry.id] = outcome
            while len(self._evidence) > REMEMBERED_EVIDENCE:
                del self._evidence[next(iter(self._evidence))]
        return Delivery(entry, outcome, message_ids)

    async def _card(self, card: SendCard) -> SendMessage:
        """The card with its buttons if all its evidence reached this chat, else its fallback without them."""
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

    async def _record(self, done: list[Delivery]) -> None:
        if done:
            secrets = [d.entry for d in done if getattr(d.entry.reply, "sensitive", False)]
            now = self.clock.now()
            async with self.store.transaction() as tx:
                await tx.outbox.mark_delivered([(d.entry.id, d.outcome, d.message_id) for d in done], now)
                await tx.outbox.redact(secrets)
                await tx.timers.schedule_deletions(_to_delete(done), now)
                await tx.evidence.record(_evidence_shown(done), now)
            if secrets:
                await self._scrub()

    async def _scrub(self) -> None:
        """After a redaction, leave no copy of what was redacted in the write-ahead log: at once, or (within
        30 s of the last scrub) once more when that time is up."""
        loop = asyncio.get_running_loop()
        wait = 0.0 if self._scrubbed_at is None else self._scrubbed_at + SCRUB_EVERY - loop.time()
        if wait <= 0:
            self._scrubbed_at = loop.time()
            await self.store.forget_overwritten()
        elif self._scrub_later is None or self._scrub_later.done():
            self._scrub_later = asyncio.create_task(self._scrub_after(wait))

    async def _scrub_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        try:
            await self._scrub()
        except Exception:
            log.exception("%s: could not scrub the write-ahead log", self.name)

    async def _blocked(self, group: list[Pending]) -> set[int]:
        """The chats of this group whose users blocked the bot (as the store knows it now: a user who writes
        again is unblocked by their event, and a block update or a refused send blocks them). Asked only for the
        chats of replies a block would skip, so a group of emails and SMS costs no read."""
        chats = {entry.chat_id for entry in group if _skipped_when_blocked(entry)}
        if not chats:
            return set()
        async with self.store.reading() as tx:
            return await tx.users.blocked_among(chats)

    async def _mark_blocked(self, chat_id: int) -> None:
        try:
            async with self.store.transaction() as tx:
                await tx.users.set_blocked(chat_id, True)
        except Exception:  # the outcome "blocked" is still recorded with the group; the next 403 tries again
            log.exception("%s: could not record that chat %d blocked the bot", self.name, chat_id)


def _skipped_when_blocked(entry: Pending) -> bool:
    """Messages to a chat that blocked the bot are not tried (files, deletions and answers still are)."""
    return isinstance(entry.reply, SendMessage | EditMessage | SendCard)


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

    def __init__(self, store: Store, transport: Transport, clock: Clock, channels: Transport | None = None) -> None:
        self.store = store
        self.chat = Lane("chat", store, transport, clock)
        self.out_of_band = Lane("out-of-band", store, channels or _NoChannels(), clock)

    async def start(self) -> None:
        """Load what was committed but not delivered before the last stop, and start sending."""
        async with self.store.reading() as tx:
            left_over = await tx.outbox.pending()
        if left_over:
            log.info("delivering %d replies left from before the restart", len(left_over))
        self.push(left_over)
        for lane in (self.chat, self.out_of_band):
            lane.start()

    def push(self, entries: Sequence[Pending]) -> None:
        self.chat.push([e for e in entries if not isinstance(e.reply, Notify)])
        self.out_of_band.push([e for e in entries if isinstance(e.reply, Notify)])

    async def idle(self) -> None:
        """Wait until everything queued so far has been delivered (or given up on)."""
        await self.chat.idle()
        await self.out_of_band.idle()

    async def stop(self) -> None:
        for lane in (self.chat, self.out_of_band):
            await lane.stop()


class _NoChannels:
    """Used when no SMTP or SMS channel is configured: nothing should be routed here."""

    async def deliver(self, reply: Reply) -> Delivered:
        raise Undeliverable("no out-of-band channel is configured")
