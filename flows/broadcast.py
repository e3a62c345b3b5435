"""Broadcasts: an admin's announcement to many users, run as a durable job.

A broadcast is created as a **draft**: an HTML text (sent with `SendMessage`), or a message to copy
(`CopyMessage`, so its formatting and media survive). `start` then freezes the audience in one transaction — one
`broadcast_deliveries` row per recipient, state "pending" — marks the broadcast "running", and sends it from a
background task that the service owns:

- at most `concurrency` sends are in flight, and sends start at t0 + i/rate (`rate` messages a second overall,
  by the clock and the injected `sleep`; a backlog over `MAX_LAG` seconds is forgiven, not sent in a burst);
- each row is committed "sending" before its send and "sent", "blocked" or "failed" after it. A crash therefore
  leaves at most `concurrency` rows "sending"; `resume()` at the next start marks them "uncertain" (they may or
  may not have arrived, and are never sent again) and continues with the pending ones: no gap, no duplicate;
- a 429 (`RetryAfter`) pauses the whole broadcast for `retry_after` and retries the same recipient; a 403
  (`RecipientBlocked`) marks the row "blocked" and the user blocked, so later broadcasts skip them; an
  `Undeliverable` message marks the row "failed"; any other error is retried with backoff, at most
  `MAX_ATTEMPTS` attempts in all, then "failed".

**One broadcast runs at a time**: `start` refuses (`BroadcastBusy`) while another broadcast is "running"; the
check is made in the transaction that starts it. Each recipient gets one message per broadcast, so no chat gets
more than one message a second from a broadcast. (Broadcasts found running by `resume()` are run one after the
other.)

The admin's status message is edited with the progress at most every `PROGRESS_EVERY` seconds, and a report is
sent to the same chat when the broadcast ends (all rows done, or cancelled). Message texts are never logged.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, func, literal, or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from flows.clock import Clock
from flows.delivery import RecipientBlocked, RetryAfter, Transport, Undeliverable
from flows.durations import format_duration
from flows.records import ACTIVE
from flows.replies import CopyMessage, EditMessage, Reply, SendMessage
from flows.store import tables
from flows.store.tables import BroadcastDeliveryRow, BroadcastRow
from flows.store.updates import SqlUsers
from flows.texts import Text, translate

log = logging.getLogger(__name__)

broadcasts = BroadcastRow.__table__  # type: ignore[attr-defined]
deliveries = BroadcastDeliveryRow.__table__  # type: ignore[attr-defined]

AUDIENCES = ("all", "open", "language")

DRAFT, RUNNING, FINISHED, CANCELLED = "draft", "running", "finished", "cancelled"
PENDING, SENDING, SENT, FAILED, BLOCKED, UNCERTAIN = "pending", "sending", "sent", "failed", "blocked", "uncertain"
STATES = (PENDING, SENDING, SENT, FAILED, BLOCKED, UNCERTAIN)

PROGRESS_EVERY = 3.0
"""Seconds between two edits of the status message."""
MAX_ATTEMPTS = 3
"""Attempts per recipient when sends fail with passing (network) errors."""
BACKOFF = 1.0
"""Seconds before the second attempt after a passing error; doubled for each further one."""
MAX_LAG = 1.0
"""How far (seconds) the pace may fall behind its schedule and still catch up; beyond, the schedule restarts."""
PAGE = 500
"""Pending recipients read per query."""
BAR_CELLS = 10

_LANGUAGE_CODE = re.compile(r"[a-z]{2,8}(-[a-z0-9]{1,8})*")


class BroadcastError(Exception):
    """The broadcast does not exist, or is not in a status that allows what was asked."""


class BroadcastBusy(BroadcastError):
    """Another broadcast is running; only one runs at a time."""


@dataclass(frozen=True)
class BroadcastView:
    """A broadcast as stored (its text is left out of the repr, so that it cannot end up in a log by accident)."""

    id: int
    status: str
    audience: str
    language: str | None
    created_by: int
    created_at: datetime
    text: str | None = field(repr=False)
    copy_from: tuple[int, int] | None
    total: int
    status_chat_id: int | None
    status_message_id: int | None
    started_at: datetime | None
    finished_at: datetime | None

    def reply(self, chat_id: int) -> Reply:
        """The message this broadcast sends to `chat_id`."""
        if self.copy_from is not None:
            return CopyMessage(chat_id, self.copy_from[0], self.copy_from[1])
        return SendMessage(chat_id, self.text or "")


@dataclass(frozen=True)
class Progress:
    """Where a broadcast stands; `rate` is messages a second so far in the current run."""

    broadcast_id: int
    total: int
    sent: int = 0
    failed: int = 0
    blocked: int = 0
    uncertain: int = 0
    rate: float = 0.0

    @property
    def done(self) -> int:
        return self.sent + self.failed + self.blocked + self.uncertain

    @property
    def percent(self) -> int:
        """Whole percent done, rounded down (100 only when every recipient is done)."""
        return 100 if self.total <= 0 else min(100, self.done * 100 // self.total)

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate, or None while the rate is unknown."""
        remaining = max(0, self.total - self.done)
        if remaining == 0:
            return 0.0
        return remaining / self.rate if self.rate > 0 else None


def progress_bar(progress: Progress) -> str:
    """A 10-cell bar, e.g. "▓▓▓▓░░░░░░" at 40 %."""
    filled = BAR_CELLS if progress.total <= 0 else min(BAR_CELLS, progress.done * BAR_CELLS // progress.total)
    return "▓" * filled + "░" * (BAR_CELLS - filled)


def duration_text(seconds: float | None) -> str:
    """A short human duration: "45s", "3m", "1h 5m" (see flows.durations)."""
    return format_duration(seconds)


def progress_text(p: Progress) -> str:
    """The text of the status message."""
    return translate(Text("broadcast.progress", {
        "id": p.broadcast_id, "bar": progress_bar(p), "percent": p.percent, "sent": p.sent, "failed": p.failed,
        "blocked": p.blocked, "uncertain": p.uncertain, "rate": f"{p.rate:.1f}", "eta": duration_text(p.eta),
    }))


def report_text(view: BroadcastView, counts: dict[str, int], took: float) -> str:
    """The final report: how many of each outcome, and how long it took."""
    return translate(Text("broadcast.report", {
        "id": view.id, "outcome": Text(f"broadcast.outcome_{view.status}"), "total": view.total,
        "sent": counts[SENT], "blocked": counts[BLOCKED], "failed": counts[FAILED], "uncertain": counts[UNCERTAIN],
        "unsent": counts[PENDING] + counts[SENDING], "took": duration_text(took),
    }))


def check_audience(audience: str, language: str | None) -> str | None:
    """Validate an audience; returns the language code normalised (lower case), or None when none applies."""
    if audience not in AUDIENCES:
        raise ValueError(f"unknown audience {audience!r}; one of {', '.join(AUDIENCES)}")
    if audience != "language":
        if language is not None:
            raise ValueError("a language is given only with the 'language' audience")
        return None
    code = (language or "").strip().lower()
    if not _LANGUAGE_CODE.fullmatch(code):
        raise ValueError(f"the 'language' audience needs a language code like 'en' or 'pt-br', not {language!r}")
    return code


def audience_rule(audience: str, language: str | None) -> ColumnElement[bool]:
    """Which `users` rows an audience takes. Blocked users never.

    - "all": every user;
    - "open": users with an active case (status "open" or "review");
    - "language": users whose language is the code or a variant of it ("en" takes "en" and "en-us", not "eo").
    """
    users = tables.users
    rule: ColumnElement[bool] = true()
    if audience == "open":
        rule = users.c.id.in_(select(tables.cases.c.user_id).where(tables.cases.c.status.in_(ACTIVE)))
    elif audience == "language":
        spoken = func.lower(users.c.language)
        rule = or_(spoken == language, spoken.like(f"{language}-%"))
    return and_(users.c.blocked.is_(False), rule)


def _view(row: Any) -> BroadcastView:
    copy_from = None if row.from_chat_id is None else (row.from_chat_id, row.from_message_id)
    return BroadcastView(
        id=row.id, status=row.status, audience=row.audience, language=row.language, created_by=row.created_by,
        created_at=row.created_at, text=row.text, copy_from=copy_from, total=row.total,
        status_chat_id=row.status_chat_id, status_message_id=row.status_message_id, started_at=row.started_at,
        finished_at=row.finished_at,
    )


async def load_broadcast(conn: AsyncConnection, broadcast_id: int) -> BroadcastView | None:
    row = (await conn.execute(select(broadcasts).where(broadcasts.c.id == broadcast_id))).first()
    return _view(row) if row else None


async def _counts(conn: AsyncConnection, broadcast_id: int) -> dict[str, int]:
    query = (
        select(deliveries.c.state, func.count()).where(deliveries.c.broadcast_id == broadcast_id)
        .group_by(deliveries.c.state)
    )
    found: dict[str, int] = {state: count for state, count in await conn.execute(query)}
    return {state: int(found.get(state, 0)) for state in (*STATES, *found)}


async def _freeze_audience(conn: AsyncConnection, view: BroadcastView, now: datetime) -> int:
    """One pending delivery row per recipient chat, in one statement; returns how many."""
    users = tables.users
    recipients = (
        select(literal(view.id), users.c.chat_id, literal(PENDING), literal(0),
               literal(now, deliveries.c.updated_at.type))
        .where(audience_rule(view.audience, view.language)).distinct()
    )
    columns = ["broadcast_id", "chat_id", "state", "attempts", "updated_at"]
    await conn.execute(deliveries.insert().from_select(columns, recipients))
    count = select(func.count()).where(deliveries.c.broadcast_id == view.id)
    return int((await conn.execute(count)).scalar_one())


async def count_audience(conn: AsyncConnection, audience: str, language: str | None = None) -> int:
    """How many chats the audience takes now."""
    code = check_audience(audience, language)
    query = select(func.count(tables.users.c.chat_id.distinct())).where(audience_rule(audience, code))
    return int((await conn.execute(query)).scalar_one())


async def create_draft(
    conn: AsyncConnection,
    now: datetime,
    created_by: int,
    audience: str,
    *,
    text: str | None = None,
    copy_from: tuple[int, int] | None = None,
    language: str | None = None,
) -> int:
    """Insert a draft broadcast in the caller's transaction; returns its id."""
    code = check_audience(audience, language)
    if (text is None) == (copy_from is None):
        raise ValueError("give exactly one of text and copy_from")
    if text is not None and not text.strip():
        raise ValueError("the text is empty")
    row = {
        "created_by": created_by, "created_at": now, "text": text, "audience": audience,
        "language": code, "status": DRAFT, "total": 0,
        "from_chat_id": copy_from[0] if copy_from else None, "from_message_id": copy_from[1] if copy_from else None,
    }
    result = await conn.execute(broadcasts.insert().returning(broadcasts.c.id), row)
    broadcast_id = int(result.scalar_one())
    log.info("broadcast %d drafted by %d for audience %s", broadcast_id, created_by, audience)
    return broadcast_id


async def set_draft_audience(conn: AsyncConnection, broadcast_id: int, audience: str, language: str | None) -> bool:
    """Change a draft's audience; False if it is no longer a draft."""
    code = check_audience(audience, language)
    result = await conn.execute(update(broadcasts).where(broadcasts.c.id == broadcast_id, broadcasts.c.status == DRAFT)
                                .values(audience=audience, language=code))
    return bool(result.rowcount)


class BroadcastService:
    """Creates, starts, resumes and cancels broadcasts, and owns the tasks that send them.

    `on_blocked(chat_id)` is called after a recipient's 403 was recorded (e.g. the outbox dispatcher's `block`).
    """

    def __init__(
        self,
        db: AsyncEngine,
        transport: Transport,
        clock: Clock,
        rate: float = 25.0,
        concurrency: int = 5,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        *,
        on_blocked: Callable[[int], None] | None = None,
    ) -> None:
        if rate <= 0 or concurrency < 1:
            raise ValueError("rate must be positive and concurrency at least 1")
        self.db = db
        self.transport = transport
        self.clock = clock
        self.rate = rate
        self.concurrency = concurrency
        self.sleep = sleep
        self.on_blocked = on_blocked
        self._runs: dict[int, _Run] = {}
        self._one_at_a_time = asyncio.Lock()

    async def audience_size(self, audience: str, language: str | None = None) -> int:
        """How many chats the audience takes now."""
        async with self.db.connect() as conn:
            return await count_audience(conn, audience, language)

    async def create(
        self,
        created_by: int,
        audience: str,
        *,
        text: str | None = None,
        copy_from: tuple[int, int] | None = None,
        language: str | None = None,
    ) -> int:
        """A draft broadcast of an HTML `text`, or of a copy of the message `copy_from` = (chat id, message id)."""
        async with self.db.begin() as conn:
            return await create_draft(conn, self.clock.now(), created_by, audience, text=text,
                                      copy_from=copy_from, language=language)

    async def start(self, broadcast_id: int, status_chat_id: int, status_message_id: int) -> None:
        """Freeze the audience and start sending; progress goes to the given message.

        Raises `BroadcastError` unless the broadcast is a draft, and `BroadcastBusy` while another one runs.
        """
        now = self.clock.now()
        async with self.db.begin() as conn:
            view = await load_broadcast(conn, broadcast_id)
            if view is None or view.status != DRAFT:
                status = view.status if view else "unknown"
                raise BroadcastError(f"broadcast {broadcast_id} is {status}; only a draft can be started")
            running = (await conn.execute(select(broadcasts.c.id).where(broadcasts.c.status == RUNNING))).first()
            if running is not None:
                raise BroadcastBusy(f"broadcast {running.id} is running; one broadcast runs at a time")
            total = await _freeze_audience(conn, view, now)
            await conn.execute(update(broadcasts).where(broadcasts.c.id == broadcast_id).values(
                status=RUNNING, total=total, started_at=now, status_chat_id=status_chat_id,
                status_message_id=status_message_id,
            ))
        log.info("broadcast %d started: %d recipients", broadcast_id, total)
        self._launch(broadcast_id)

    async def resume(self) -> list[int]:
        """At process start: continue every running broadcast; rows left "sending" become "uncertain"."""
        async with self.db.begin() as conn:
            found = (await conn.execute(
                select(broadcasts.c.id).where(broadcasts.c.status == RUNNING).order_by(broadcasts.c.id)
            )).scalars()
            ids = [int(i) for i in found if i not in self._runs]
            if ids:
                marked = await conn.execute(
                    update(deliveries).where(deliveries.c.broadcast_id.in_(ids), deliveries.c.state == SENDING)
                    .values(state=UNCERTAIN, updated_at=self.clock.now())
                )
                if marked.rowcount:
                    log.warning("%d broadcast messages were in flight at the last stop: marked uncertain",
                                marked.rowcount)
        for broadcast_id in ids:
            log.info("resuming broadcast %d", broadcast_id)
            self._launch(broadcast_id)
        return ids

    async def cancel(self, broadcast_id: int) -> bool:
        """Cancel a draft or a running broadcast: nothing more is sent (sends in flight finish first).

        Pending rows stay pending. Returns False when there was nothing to cancel.
        """
        async with self.db.begin() as conn:
            view = await load_broadcast(conn, broadcast_id)
            if view is None or view.status not in (DRAFT, RUNNING):
                return False
            await conn.execute(update(broadcasts).where(broadcasts.c.id == broadcast_id)
                               .values(status=CANCELLED, finished_at=self.clock.now()))
        log.info("broadcast %d cancelled", broadcast_id)
        run = self._runs.get(broadcast_id)
        if run is not None:
            run.cancel()
            await self.join(broadcast_id)
        elif view.status == RUNNING:
            await self._report(broadcast_id)
        return True

    async def stop(self, grace: float = 30.0) -> None:
        """At shutdown: stop every run without marking anything; sends in flight finish (for up to `grace`
        seconds, after which they are cut off like a crash and become "uncertain" at the next `resume`)."""
        runs = list(self._runs.values())
        for run in runs:
            run.stopping.set()
        tasks = [run.task for run in runs if run.task is not None]
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=grace)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    async def get(self, broadcast_id: int) -> BroadcastView | None:
        async with self.db.connect() as conn:
            return await load_broadcast(conn, broadcast_id)

    async def counts(self, broadcast_id: int) -> dict[str, int]:
        """How many recipients are in each state (every state is present, zero included)."""
        async with self.db.connect() as conn:
            return await _counts(conn, broadcast_id)

    def task(self, broadcast_id: int) -> asyncio.Task[None] | None:
        """The task sending this broadcast in this process, if any."""
        run = self._runs.get(broadcast_id)
        return run.task if run else None

    async def join(self, broadcast_id: int) -> None:
        """Wait until this process stops sending the broadcast (it ended, was cancelled, or the service stopped)."""
        task = self.task(broadcast_id)
        if task is not None:
            await asyncio.wait([task])

    def _launch(self, broadcast_id: int) -> None:
        run = _Run(self, broadcast_id)
        run.task = asyncio.create_task(self._serve(run), name=f"broadcast-{broadcast_id}")
        self._runs[broadcast_id] = run

    async def _serve(self, run: _Run) -> None:
        try:
            async with self._one_at_a_time:
                await run.run()
        except Exception:
            log.exception("broadcast %d stopped by an error; it continues at the next resume", run.id)
        finally:
            if self._runs.get(run.id) is run:
                del self._runs[run.id]

    async def _report(self, broadcast_id: int) -> None:
        """Send the final report to the status chat."""
        async with self.db.connect() as conn:
            view = await load_broadcast(conn, broadcast_id)
            counts = await _counts(conn, broadcast_id)
        if view is None or view.status_chat_id is None:
            return
        began = view.started_at or view.created_at
        took = ((view.finished_at or self.clock.now()) - began).total_seconds()
        await self._tell(SendMessage(view.status_chat_id, report_text(view, counts, took)), attempts=3)

    async def _tell(self, reply: Reply, attempts: int = 1) -> None:
        """Best effort to the admin: a status edit or report that cannot be delivered is logged and dropped."""
        for attempt in range(1, attempts + 1):
            try:
                await self.transport.deliver(reply)
                return
            except RetryAfter as wait:
                if attempt == attempts:
                    log.warning("broadcast status to the admin not delivered (rate limited)")
                    return
                await self.sleep(wait.seconds)
            except Exception as error:
                log.warning("broadcast status to the admin not delivered (%s)", type(error).__name__)
                return


class _Pace:
    """Start slots at t0 + i/rate. A pause moves t0 to its end; a backlog beyond `MAX_LAG` restarts the schedule
    instead of being caught up in a burst."""

    def __init__(self, clock: Clock, rate: float) -> None:
        self.clock = clock
        self.rate = rate
        self._t0: datetime | None = None
        self._next = 0

    def _due(self) -> datetime | None:
        return None if self._t0 is None else self._t0 + timedelta(seconds=self._next / self.rate)

    def claim(self) -> float:
        """Seconds until the next slot; 0.0 means the slot was free and is now taken."""
        now = self.clock.now()
        due = self._due()
        if due is None or due < now - timedelta(seconds=MAX_LAG):
            self._t0, self._next, due = now, 0, now
        if due > now:
            return (due - now).total_seconds()
        self._next += 1
        return 0.0

    def pause(self, seconds: float) -> None:
        """No slot before `seconds` from now."""
        until = self.clock.now() + timedelta(seconds=seconds)
        due = self._due()
        if due is None or due < until:
            self._t0, self._next = until, 0


class _Run:
    """One run of one broadcast in this process: a dispatcher loop and the sends in flight."""

    def __init__(self, service: BroadcastService, broadcast_id: int) -> None:
        self.service = service
        self.id = broadcast_id
        self.stopping = asyncio.Event()
        self.cancelled = False
        self.task: asyncio.Task[None] | None = None
        self.inflight: set[asyncio.Task[None]] = set()
        self.pace = _Pace(service.clock, service.rate)
        self.view: BroadcastView | None = None
        self.began = service.clock.now()
        self.done_here = 0
        self.last_edit: datetime | None = None
        self.last_text = ""
        self.editing = asyncio.Lock()

    def cancel(self) -> None:
        self.cancelled = True
        self.stopping.set()

    async def run(self) -> None:
        if self.stopping.is_set():  # cancelled or stopped while waiting for another broadcast to end
            if self.cancelled:
                await self.service._report(self.id)
            return
        self.view = await self.service.get(self.id)
        if self.view is None or self.view.status != RUNNING:
            return
        self.began = self.service.clock.now()
        try:
            await self._show_progress(force=True)
            await self._dispatch()
            await self._drain()
        except BaseException:  # cut off (a crash, in effect): what is in flight stays "sending"
            await self._abort()
            raise
        await self._finish()

    # -- the dispatcher ------------------------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        after: int | None = None
        while not self.stopping.is_set():
            page = await self._pending(after)
            if not page:
                return
            for chat_id in page:
                if not await self._room() or not await self._turn():
                    return
                if await self._claim(chat_id):
                    self._spawn(chat_id)
            after = page[-1]

    async def _pending(self, after: int | None) -> Sequence[int]:
        query = select(deliveries.c.chat_id).where(deliveries.c.broadcast_id == self.id,
                                                   deliveries.c.state == PENDING)
        if after is not None:
            query = query.where(deliveries.c.chat_id > after)
        async with self.service.db.connect() as conn:
            return list((await conn.execute(query.order_by(deliveries.c.chat_id).limit(PAGE))).scalars())

    async def _claim(self, chat_id: int) -> bool:
        """Commit the row as "sending"; False if it is no longer pending."""
        async with self.service.db.begin() as conn:
            result = await conn.execute(
                update(deliveries).where(deliveries.c.broadcast_id == self.id, deliveries.c.chat_id == chat_id,
                                         deliveries.c.state == PENDING)
                .values(state=SENDING, updated_at=self.service.clock.now())
            )
        return bool(result.rowcount)

    def _spawn(self, chat_id: int) -> None:
        self.inflight.add(asyncio.create_task(self._send(chat_id), name=f"broadcast-{self.id}-send"))

    async def _room(self) -> bool:
        """Wait until fewer than `concurrency` sends are in flight; False if told to stop first."""
        self._reap()
        while len(self.inflight) >= self.service.concurrency and not self.stopping.is_set():
            waker = asyncio.ensure_future(self.stopping.wait())
            try:
                await asyncio.wait({*self.inflight, waker}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waker.cancel()
            self._reap()
        return not self.stopping.is_set()

    async def _turn(self) -> bool:
        """Wait for the next start slot; False if told to stop first."""
        while (delay := self.pace.claim()) > 0:
            if not await self._sleep(delay):
                return False
        return not self.stopping.is_set()

    async def _sleep(self, seconds: float) -> bool:
        """Sleep with the service's `sleep`, unless told to stop first (then False)."""
        if self.stopping.is_set():
            return False
        sleeper = asyncio.ensure_future(self.service.sleep(seconds))
        waker = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()
        return not self.stopping.is_set()

    def _reap(self) -> None:
        """Forget finished sends, logging any that failed outside the transport (e.g. the database)."""
        for task in [t for t in self.inflight if t.done()]:
            self.inflight.discard(task)
            if not task.cancelled() and task.exception() is not None:
                log.error("broadcast %d: a send failed to record (%s); it becomes uncertain at the next resume",
                          self.id, type(task.exception()).__name__)

    async def _drain(self) -> None:
        """Let the sends in flight finish."""
        while self.inflight:
            await asyncio.wait(set(self.inflight))
            self._reap()

    async def _abort(self) -> None:
        for task in self.inflight:
            task.cancel()
        await asyncio.gather(*self.inflight, return_exceptions=True)
        self.inflight.clear()

    async def _finish(self) -> None:
        if self.stopping.is_set() and not self.cancelled:
            return  # shutdown: the broadcast stays running and continues at the next resume
        async with self.service.db.begin() as conn:
            await conn.execute(update(broadcasts).where(broadcasts.c.id == self.id, broadcasts.c.status == RUNNING)
                               .values(status=FINISHED, finished_at=self.service.clock.now()))
        log.info("broadcast %d ended", self.id)
        await self.service._report(self.id)

    # -- one recipient -------------------------------------------------------------------------------------------

    async def _send(self, chat_id: int) -> None:
        state, attempts = await self._deliver(chat_id)
        await self._record(chat_id, state, attempts)
        await self._show_progress()

    async def _deliver(self, chat_id: int) -> tuple[str, int]:
        """Send to one recipient; returns the row's new state and how many attempts it took.

        "pending" means it was told to stop while waiting to retry a send that did not go out.
        """
        assert self.view is not None
        reply = self.view.reply(chat_id)
        attempts = failures = 0
        while True:
            attempts += 1
            try:
                await self.service.transport.deliver(reply)
                return SENT, attempts
            except RetryAfter as wait:
                log.info("broadcast %d: rate limited, pausing %.1f s", self.id, wait.seconds)
                self.pace.pause(wait.seconds)
                if not await self._turn():
                    return PENDING, attempts
            except RecipientBlocked:
                return BLOCKED, attempts
            except Undeliverable as error:
                log.info("broadcast %d: undeliverable to %d (%s)", self.id, chat_id, type(error).__name__)
                return FAILED, attempts
            except Exception as error:
                failures += 1
                log.warning("broadcast %d: send failed (%s), attempt %d of %d", self.id, type(error).__name__,
                            failures, MAX_ATTEMPTS)
                if failures >= MAX_ATTEMPTS:
                    return FAILED, attempts
                if not await self._sleep(BACKOFF * 2 ** (failures - 1)) or not await self._turn():
                    return PENDING, attempts

    async def _record(self, chat_id: int, state: str, attempts: int) -> None:
        async with self.service.db.begin() as conn:
            await conn.execute(
                update(deliveries).where(deliveries.c.broadcast_id == self.id, deliveries.c.chat_id == chat_id)
                .values(state=state, attempts=deliveries.c.attempts + attempts, updated_at=self.service.clock.now())
            )
            if state == BLOCKED:
                await SqlUsers(conn).set_blocked(chat_id, True)
        if state == BLOCKED and self.service.on_blocked is not None:
            self.service.on_blocked(chat_id)
        if state != PENDING:
            self.done_here += 1

    # -- progress ------------------------------------------------------------------------------------------------

    async def _show_progress(self, force: bool = False) -> None:
        """Edit the status message, at most every `PROGRESS_EVERY` seconds."""
        view = self.view
        if view is None or view.status_chat_id is None or view.status_message_id is None:
            return
        if self.editing.locked() and not force:
            return  # another send is editing right now
        async with self.editing:  # one edit at a time, so two sends finishing together cannot both edit
            now = self.service.clock.now()
            if not force and self.last_edit is not None and (now - self.last_edit).total_seconds() < PROGRESS_EVERY:
                return
            text = progress_text(await self._progress(now))
            if text == self.last_text:
                return
            self.last_text = text
            await self.service._tell(EditMessage(view.status_chat_id, view.status_message_id, text))
            self.last_edit = self.service.clock.now()  # the spacing counts from when the edit went out

    async def _progress(self, now: datetime) -> Progress:
        async with self.service.db.connect() as conn:
            counts = await _counts(conn, self.id)
        elapsed = (now - self.began).total_seconds()
        rate = self.done_here / elapsed if elapsed > 0 else 0.0
        total = self.view.total if self.view else sum(counts.values())
        return Progress(self.id, total, counts[SENT], counts[FAILED], counts[BLOCKED], counts[UNCERTAIN], rate)
