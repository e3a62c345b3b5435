"""Broadcasts: an admin's announcement to many users, run as a durable job.

A broadcast is created as a **draft**: an HTML text (sent with `SendMessage`), or a message to copy
(`CopyMessage`, so its formatting and media survive). `start` then freezes the audience in one transaction — one
`broadcast_deliveries` row per recipient, state "pending" — marks the broadcast "running", and sends it from a
background task that the service owns:

- at most `concurrency` sends are in flight, and sends start at t0 + i/rate (`rate` messages a second overall,
  by the clock and the injected `sleep`; a backlog over `MAX_LAG` seconds is forgiven, not sent in a burst:
  flows/pace.py), and each send leaves at least 1/rate after the one before it, however long its commit took,
  so that no second ever holds more than `rate` sends;
- each row is committed "sending" before its send and "sent", "blocked" or "failed" after it. A crash therefore
  leaves at most `concurrency` rows "sending"; `resume()` at the next start marks them "uncertain" (they may or
  may not have arrived, and are never sent again) and continues with the pending ones: no gap, no duplicate;
- a 429 (`RetryAfter`) pauses the whole broadcast for `retry_after` and retries the same recipient; a 403
  (`RecipientBlocked`) marks the row "blocked" and the user blocked, so later broadcasts skip them (and the
  outbox, which reads blocked chats from the users table, too); an `Undeliverable` message marks the row
  "failed"; any other error is retried with backoff, at most `MAX_ATTEMPTS` attempts in all, then "failed".

**One broadcast runs at a time**: `start` refuses (`BroadcastBusy`) while another broadcast is "running". The
rows decide it, not this process: the store's `start` changes the row from draft to running only while no row is
running (flows/store/broadcasts.py), so two processes on one database agree. Each recipient gets one message per
broadcast, so no chat gets more than one message a second from a broadcast. (Broadcasts found running by
`resume()` are run one after the other.)

The admin's status message is edited with the progress at most every `PROGRESS_EVERY` seconds (best effort), and
a report to the same chat is queued in the outbox in the transaction that ends the broadcast (all rows done, or
cancelled; texts in flows/progress.py), so it is delivered like every reply: once, after the commit, and after a
restart too. A start refused because another broadcast runs tells the admin so, through the outbox too. Message
texts are never logged. Storage is reached only through the `Broadcasts` port (`tx.broadcasts`).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

from flows.audience import check_audience
from flows.clock import Clock
from flows.delivery import RecipientBlocked, RetryAfter, Transport, Undeliverable
from flows.leases import LEASE, RENEW_EVERY, claim_rows
from flows.pace import Pace, Spacing
from flows.ports import Broadcasts, Store, Tx
from flows.progress import Progress, busy_text, progress_text, report_text
from flows.records import (
    BLOCKED,
    CANCELLED,
    DRAFT,
    FAILED,
    PENDING,
    RUNNING,
    SENT,
    UNCERTAIN,
    BroadcastView,
    Pending,
)
from flows.replies import EditMessage, Reply, SendMessage

log = logging.getLogger(__name__)

LEASED = "broadcast"  # the lane of broadcast leases (flows/leases.py): keyed by broadcast id, not chat

PROGRESS_EVERY = 3.0
"""Seconds between two edits of the status message."""
MAX_ATTEMPTS = 3
"""Attempts per recipient when sends fail with passing (network) errors."""
BACKOFF = 1.0
"""Seconds before the second attempt after a passing error; doubled for each further one."""
PAGE = 500
"""Pending recipients read per query."""


class BroadcastError(Exception):
    """The broadcast does not exist, or is not in a status that allows what was asked."""


class BroadcastBusy(BroadcastError):
    """Another broadcast is running; only one runs at a time."""


async def count_audience(broadcasts: Broadcasts, audience: str, language: str | None = None) -> int:
    """How many chats the audience takes now."""
    return await broadcasts.audience_size(audience, check_audience(audience, language))


async def create_draft(
    broadcasts: Broadcasts,
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
    broadcast_id = await broadcasts.create(now, created_by, audience, code, text=text, copy_from=copy_from)
    log.info("broadcast %d drafted by %d for audience %s", broadcast_id, created_by, audience)
    return broadcast_id


async def set_draft_audience(broadcasts: Broadcasts, broadcast_id: int, audience: str,
                             language: str | None) -> bool:
    """Change a draft's audience; False if it is no longer a draft."""
    return await broadcasts.set_audience(broadcast_id, audience, check_audience(audience, language))


class BroadcastService:
    """Creates, starts, resumes and cancels broadcasts, and owns the tasks that send them."""

    def __init__(
        self,
        store: Store,
        transport: Transport,
        clock: Clock,
        rate: float = 25.0,
        concurrency: int = 5,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        dispatch: Callable[[Sequence[Pending]], None] | None = None,
    ) -> None:
        if rate <= 0 or concurrency < 1:
            raise ValueError("rate must be positive and concurrency at least 1")
        self.store = store
        self.transport = transport
        self.clock = clock
        self.rate = rate
        self.concurrency = concurrency
        self.sleep = sleep
        self.dispatch = dispatch
        """Hands committed outbox entries to delivery (the runner's `Dispatcher.push`). Without it (a service
        used on its own) the service delivers its own outbox entries once, through its transport."""
        self._runs: dict[int, _Run] = {}
        self._one_at_a_time = asyncio.Lock()
        self.owner = uuid.uuid4().hex  # while instances share the store, the one holding its lease sends it
        self._keeper: asyncio.Task[None] | None = None

    async def audience_size(self, audience: str, language: str | None = None) -> int:
        """How many chats the audience takes now."""
        async with self.store.reading() as tx:
            return await count_audience(tx.broadcasts, audience, language)

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
        async with self.store.transaction() as tx:
            return await create_draft(tx.broadcasts, self.clock.now(), created_by, audience, text=text,
                                      copy_from=copy_from, language=language)

    async def start(self, broadcast_id: int, status_chat_id: int, status_message_id: int) -> None:
        """Freeze the audience and start sending; progress goes to the given message.

        Raises `BroadcastError` unless the broadcast is a draft, and `BroadcastBusy` while another one runs.
        """
        now = self.clock.now()
        async with self.store.transaction() as tx:
            view = await tx.broadcasts.get(broadcast_id)
            if view is None or view.status != DRAFT:
                status = view.status if view else "unknown"
                raise BroadcastError(f"broadcast {broadcast_id} is {status}; only a draft can be started")
            total = await tx.broadcasts.start(broadcast_id, status_chat_id, status_message_id, now)
            if total is not None and self.store.shared:
                await tx.leases.hold(LEASED, [broadcast_id], self.owner, now + LEASE)
        if total is None:
            await self._refuse(broadcast_id, status_chat_id)
        log.info("broadcast %d started: %d recipients", broadcast_id, total)
        self._launch(broadcast_id)

    async def _refuse(self, broadcast_id: int, chat_id: int) -> None:
        """Tell the admin, through the outbox, that another broadcast runs (and how far it is); raise
        `BroadcastBusy`. The draft stays a draft."""
        now = self.clock.now()
        async with self.store.transaction() as tx:
            running = await tx.broadcasts.running()
            progress = await running_progress(tx.broadcasts, running[0]) if running else None
            refusal = busy_text(broadcast_id, progress, await language_of(tx, chat_id))
            pending = await tx.outbox.add([SendMessage(chat_id, refusal)], now)
        await self._hand_over(pending)
        others = ", ".join(f"{i}" for i in running) or "another"
        raise BroadcastBusy(f"broadcast {others} is running; one broadcast runs at a time")

    async def resume(self) -> list[int]:
        """At process start: continue every running broadcast; rows left "sending" become "uncertain".

        While instances share the store, only broadcasts no live instance sends (no live lease) are taken, and
        this is looked for again every `RENEW_EVERY` seconds, when this instance's leases are renewed: a broadcast
        whose instance died goes on here once its lease expired."""
        now = self.clock.now()
        async with self.store.transaction() as tx:
            ids = [i for i in await tx.broadcasts.running() if i not in self._runs]
            if self.store.shared:
                mine = await claim_rows(tx, LEASED, ids, self.owner, now)
                ids = [i for i in ids if i in mine]
            marked = await tx.broadcasts.mark_uncertain(ids, now)
        if self.store.shared and self._keeper is None:
            self._keeper = asyncio.create_task(self._keep_leases(), name="broadcast-leases")
        if marked:
            log.warning("%d broadcast messages were in flight at the last stop: marked uncertain", marked)
        for broadcast_id in ids:
            log.info("resuming broadcast %d", broadcast_id)
            self._launch(broadcast_id)
        return ids

    async def cancel(self, broadcast_id: int) -> bool:
        """Cancel a draft or a running broadcast: nothing more is sent (sends in flight finish first).

        Pending rows stay pending. Returns False when there was nothing to cancel.
        """
        run = self._runs.get(broadcast_id)
        report: list[Pending] = []
        async with self.store.transaction() as tx:
            view = await tx.broadcasts.get(broadcast_id)
            if view is None or not await tx.broadcasts.cancel(broadcast_id, self.clock.now()):
                return False
            if run is None and view.status == RUNNING:  # no run here to report it: the report goes with the cancel
                report = await self._queue_report(tx, broadcast_id)
        log.info("broadcast %d cancelled", broadcast_id)
        await self._hand_over(report)
        if run is not None:
            run.cancel()
            await self.join(broadcast_id)
        return True

    async def stop(self, grace: float = 30.0) -> None:
        """At shutdown: stop every run without marking anything; sends in flight finish (for up to `grace`
        seconds, after which they are cut off like a crash and become "uncertain" at the next `resume`). While
        instances share the store, the leases are given up: another instance goes on at once."""
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)
            self._keeper = None
        runs = list(self._runs.values())
        for run in runs:
            run.stopping.set()
        tasks = [run.task for run in runs if run.task is not None]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self.store.shared:
            try:
                async with self.store.transaction() as tx:
                    await tx.leases.release(LEASED, self.owner)
            except Exception:  # they expire by themselves
                log.exception("could not give up the broadcast leases")

    async def _keep_leases(self) -> None:
        """Renew this instance's broadcast leases, and take over broadcasts nobody sends, every `RENEW_EVERY`."""
        while True:
            await asyncio.sleep(RENEW_EVERY)
            try:
                async with self.store.transaction() as tx:
                    await tx.leases.renew(LEASED, self.owner, self.clock.now() + LEASE)
                await self.resume()
            except Exception:
                log.exception("broadcast leases could not be renewed; retrying")

    async def get(self, broadcast_id: int) -> BroadcastView | None:
        async with self.store.reading() as tx:
            return await tx.broadcasts.get(broadcast_id)

    async def counts(self, broadcast_id: int) -> dict[str, int]:
        """How many recipients are in each state (every state is present, zero included)."""
        async with self.store.reading() as tx:
            return await tx.broadcasts.counts(broadcast_id)

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

    async def _queue_report(self, tx: Tx, broadcast_id: int) -> list[Pending]:
        """Queue the final report to the status chat in the caller's transaction (the one that ended the
        broadcast), so it is delivered like every reply: once, after the commit, and after a restart too."""
        view = await tx.broadcasts.get(broadcast_id)
        if view is None or view.status_chat_id is None:
            return []
        counts = await tx.broadcasts.counts(broadcast_id)
        now = self.clock.now()
        took = ((view.finished_at or now) - (view.started_at or view.created_at)).total_seconds()
        report = report_text(view, counts, took, await language_of(tx, view.status_chat_id))
        return await tx.outbox.add([SendMessage(view.status_chat_id, report)], now)

    async def _hand_over(self, pending: Sequence[Pending]) -> None:
        """Deliver committed outbox entries: through the runner's dispatcher, or (a service on its own) here,
        recording what went like the dispatcher would; what did not go stays in the outbox for the next start."""
        if not pending:
            return
        if self.dispatch is not None:
            self.dispatch(pending)
            return
        sent = [(entry.id, "sent", None) for entry in pending if await self._tell(entry.reply, attempts=3)]
        if sent:
            async with self.store.transaction() as tx:
                await tx.outbox.mark_delivered(sent, self.clock.now())

    async def _tell(self, reply: Reply, attempts: int = 1) -> bool:
        """Best effort to the admin: a status edit that cannot be delivered is logged and dropped (False)."""
        for attempt in range(1, attempts + 1):
            try:
                await self.transport.deliver(reply)
                return True
            except RetryAfter as wait:
                if attempt == attempts:
                    log.warning("broadcast status to the admin not delivered (rate limited)")
                    return False
                await self.sleep(wait.seconds)
            except Exception as error:
                log.warning("broadcast status to the admin not delivered (%s)", type(error).__name__)
                return False
        return False


class _Run:
    """One run of one broadcast in this process: a dispatcher loop and the sends in flight."""

    def __init__(self, service: BroadcastService, broadcast_id: int) -> None:
        self.service = service
        self.id = broadcast_id
        self.stopping = asyncio.Event()
        self.cancelled = False
        self.task: asyncio.Task[None] | None = None
        self.inflight: set[asyncio.Task[None]] = set()
        self.pace = Pace(service.clock, service.rate)
        self.spacing = Spacing(service.clock, service.rate)
        self.view: BroadcastView | None = None
        self.language: str | None = None  # the status chat's: the admin's, when it is their private chat
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
                await self._report_cancelled()
            return
        self.view = await self.service.get(self.id)
        if self.view is None or self.view.status != RUNNING:
            return
        if self.view.status_chat_id is not None:
            async with self.service.store.reading() as tx:
                self.language = await language_of(tx, self.view.status_chat_id)
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
        async with self.service.store.reading() as tx:
            return await tx.broadcasts.pending(self.id, after, PAGE)

    async def _claim(self, chat_id: int) -> bool:
        """Commit the row as "sending"; False if it is no longer pending. While instances share the store, the
        run stops (the broadcast stays running) once its lease is not this instance's: after a pause longer than
        the lease, another instance goes on with it, and two must never send it at once."""
        service = self.service
        now = service.clock.now()
        async with service.store.transaction() as tx:
            if service.store.shared and (await tx.leases.owners(LEASED, [self.id], now)).get(self.id) != service.owner:
                log.warning("broadcast %d: its lease lapsed; another instance goes on with it", self.id)
                self.stopping.set()
                return False
            return await tx.broadcasts.claim(self.id, chat_id, now)

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

    async def _spaced(self) -> bool:
        """Wait until this send is 1/rate after the last one; False if told to stop first."""
        while (delay := self.spacing.claim()) > 0:
            if not await self._sleep(delay):
                return False
        return True

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
        if self.cancelled:
            await self._report_cancelled()
            return
        async with self.service.store.transaction() as tx:
            await tx.broadcasts.finish(self.id, self.service.clock.now())
            report = await self.service._queue_report(tx, self.id)
        log.info("broadcast %d ended", self.id)
        await self.service._hand_over(report)

    async def _report_cancelled(self) -> None:
        """The report of a broadcast cancelled while this run had it (the cancel committed before)."""
        async with self.service.store.transaction() as tx:
            view = await tx.broadcasts.get(self.id)
            report = await self.service._queue_report(tx, self.id) if view and view.status == CANCELLED else []
        await self.service._hand_over(report)

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
            if not await self._spaced():
                return PENDING, attempts
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
        async with self.service.store.transaction() as tx:
            await tx.broadcasts.record(self.id, chat_id, state, attempts, self.service.clock.now())
            if state == BLOCKED:
                await tx.users.set_blocked(chat_id, True)
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
            text = progress_text(await self._progress(now), self.language)
            if text == self.last_text:
                return
            self.last_text = text
            await self.service._tell(EditMessage(view.status_chat_id, view.status_message_id, text))
            self.last_edit = self.service.clock.now()  # the spacing counts from when the edit went out

    async def _progress(self, now: datetime) -> Progress:
        async with self.service.store.reading() as tx:
            counts = await tx.broadcasts.counts(self.id)
        elapsed = (now - self.began).total_seconds()
        rate = self.done_here / elapsed if elapsed > 0 else 0.0
        total = self.view.total if self.view else sum(counts.values())
        return Progress(self.id, total, counts[SENT], counts[FAILED], counts[BLOCKED], counts[UNCERTAIN], rate)


async def language_of(tx: Tx, chat_id: int) -> str | None:
    """The language of the user whose private chat `chat_id` is (a group's texts are in the default language)."""
    return (await tx.users.languages([chat_id])).get(chat_id)


async def running_progress(broadcasts: Broadcasts, broadcast_id: int) -> Progress:
    """How far a running broadcast is, from its rows (no rate: that is known only to the process sending it)."""
    view = await broadcasts.get(broadcast_id)
    counts = await broadcasts.counts(broadcast_id)
    total = view.total if view else sum(counts.values())
    return Progress(broadcast_id, total, counts[SENT], counts[FAILED], counts[BLOCKED], counts[UNCERTAIN], 0.0)
