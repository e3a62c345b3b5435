"""Delivering the outbox: replies leave only after their event committed, in order, and none is dropped.

A transport (one per front end) sends one reply and reports how it went by returning the platform's message id
or raising one of the exceptions below. Anything else it raises counts as a passing network fault: the reply is
retried with a growing delay.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from flows.clock import Clock
from flows.replies import EditMessage, Notify, Reply, SendMessage, SendPhoto
from flows.store import batch
from flows.store.batch import Pending
from flows.store.database import scrub_wal

log = logging.getLogger(__name__)

GROUP = 50
MAX_BACKOFF = 60.0
SCRUB_EVERY = 30.0  # seconds between write-ahead-log scrubs after redactions


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
    async def deliver(self, reply: Reply) -> int | None:
        """Send one reply; return the id of the message it created, if any."""
        ...


class Lane:
    """One delivery queue with its own worker: replies leave in commit order, one at a time."""

    def __init__(self, name: str, db: AsyncEngine, transport: Transport, clock: Clock, blocked: set[int]) -> None:
        self.name = name
        self.db = db
        self.transport = transport
        self.clock = clock
        self.blocked = blocked
        self.queue: deque[Pending] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._backoff = 0.0
        self._scrubbed_at: float | None = None
        self._scrub_later: asyncio.Task[None] | None = None

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
            group = [self.queue.popleft() for _ in range(min(GROUP, len(self.queue)))]
            done, pause = await self._send_group(group)
            try:
                await self._record(done, group)
            except Exception:  # the database failed: keep going; unrecorded replies go again after a restart
                log.exception("%s: could not record %d deliveries", self.name, len(done))
                pause = max(pause, 1.0)
            if pause:
                await asyncio.sleep(pause)

    async def _send_group(self, group: list[Pending]) -> tuple[list[tuple[int, str, int | None]], float]:
        done: list[tuple[int, str, int | None]] = []
        for index, entry in enumerate(group):
            if entry.chat_id in self.blocked and isinstance(entry.reply, SendMessage | EditMessage):
                done.append((entry.id, "skipped", None))
                continue
            try:
                message_id = await self.transport.deliver(entry.reply)
            except RetryAfter as wait:
                self.queue.extendleft(reversed(group[index:]))
                return done, wait.seconds
            except RecipientBlocked:
                await self._mark_blocked(entry.chat_id)
                done.append((entry.id, "blocked", None))
            except Undeliverable as error:
                log.warning("reply %d (%s) dropped: %s", entry.id, self.name, error)
                done.append((entry.id, "failed", None))
            except Exception as error:  # a network fault: keep the entry, wait, try again
                self._backoff = min(MAX_BACKOFF, max(0.5, self._backoff * 2))
                log.warning("%s delivery failed (%s); retrying in %.1f s", self.name, type(error).__name__,
                            self._backoff)
                self.queue.extendleft(reversed(group[index:]))
                return done, self._backoff
            else:
                self._backoff = 0.0
                done.append((entry.id, "sent", message_id))
        return done, 0.0

    async def _record(self, done: list[tuple[int, str, int | None]], group: list[Pending]) -> None:
        if done:
            finished = {row_id for row_id, _, _ in done}
            secrets = [e for e in group if e.id in finished and getattr(e.reply, "sensitive", False)]
            async with self.db.begin() as conn:
                await batch.mark_delivered(conn, done, self.clock.now())
                await batch.redact(conn, secrets)
                await batch.schedule_deletions(conn, _to_delete(done, group), self.clock.now())
            if secrets:
                await self._scrub()

    async def _scrub(self) -> None:
        """After a redaction, leave no copy of what was redacted in the write-ahead log: at once, or (within
        30 s of the last scrub) once more when that time is up."""
        loop = asyncio.get_running_loop()
        wait = 0.0 if self._scrubbed_at is None else self._scrubbed_at + SCRUB_EVERY - loop.time()
        if wait <= 0:
            self._scrubbed_at = loop.time()
            await scrub_wal(self.db)
        elif self._scrub_later is None or self._scrub_later.done():
            self._scrub_later = asyncio.create_task(self._scrub_after(wait))

    async def _scrub_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        try:
            await self._scrub()
        except Exception:
            log.exception("%s: could not scrub the write-ahead log", self.name)

    async def _mark_blocked(self, chat_id: int) -> None:
        self.blocked.add(chat_id)
        async with self.db.begin() as conn:
            await batch.set_blocked(conn, chat_id, True)


def _to_delete(done: list[tuple[int, str, int | None]], group: list[Pending]) -> list[tuple[int, int, int]]:
    """Delivered messages that asked to be deleted later: (chat id, message id, after seconds)."""
    sent = {row_id: message_id for row_id, outcome, message_id in done if outcome == "sent" and message_id}
    return [(e.chat_id, sent[e.id], e.reply.delete_after) for e in group
            if e.id in sent and isinstance(e.reply, SendMessage | SendPhoto) and e.reply.delete_after]


class Dispatcher:
    """Routes committed outbox entries to their lane: chat replies, and messages sent outside the chat.

    Separate lanes keep a slow mail server from holding up chat replies, and the other way round.
    """

    def __init__(self, db: AsyncEngine, transport: Transport, clock: Clock, channels: Transport | None = None) -> None:
        self.db = db
        self.blocked: set[int] = set()
        self.chat = Lane("chat", db, transport, clock, self.blocked)
        self.out_of_band = Lane("out-of-band", db, channels or _NoChannels(), clock, self.blocked)

    async def start(self) -> None:
        """Load what was committed but not delivered before the last stop, and start sending."""
        async with self.db.begin() as conn:
            self.blocked.update(await batch.blocked_chats(conn))
            left_over = await batch.pending_outbox(conn)
        if left_over:
            log.info("delivering %d replies left from before the restart", len(left_over))
        self.push(left_over)
        for lane in (self.chat, self.out_of_band):
            lane.start()

    def push(self, entries: Sequence[Pending]) -> None:
        self.chat.push([e for e in entries if not isinstance(e.reply, Notify)])
        self.out_of_band.push([e for e in entries if isinstance(e.reply, Notify)])

    def unblock(self, chat_id: int) -> None:
        self.blocked.discard(chat_id)

    def block(self, chat_id: int) -> None:
        self.blocked.add(chat_id)

    async def idle(self) -> None:
        """Wait until everything queued so far has been delivered (or given up on)."""
        await self.chat.idle()
        await self.out_of_band.idle()

    async def stop(self) -> None:
        for lane in (self.chat, self.out_of_band):
            await lane.stop()


class _NoChannels:
    """Used when no SMTP or SMS channel is configured: nothing should be routed here."""

    async def deliver(self, reply: Reply) -> int | None:
        raise Undeliverable("no out-of-band channel is configured")
