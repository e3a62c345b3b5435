"""The shell around the engine: queue, one transaction per batch of events, then delivery.

Events from every chat go through one writer task, so two events of one chat never interleave. The writer takes
whatever has queued up (up to `batch_limit` events), decides them one after another inside a single
transaction — recording each update key as processed, saving cases, outbox entries, timers and audit lines —
commits once, and only then tells the callers and hands the replies to the dispatcher. If a batch fails, its
events are retried one per transaction so that one bad event cannot take others down with it; if the database
itself failed (`StoreUnavailable`), none is retried or recorded, and their callers hear of it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from flows import metrics
from flows.clock import Clock
from flows.delivery import Dispatcher, Transport
from flows.directory import DirectoryUnavailable
from flows.engine import Engine
from flows.events import ButtonPressed, Event, Sender, TimerFired
from flows.events_out import case_events
from flows.model import Effect
from flows.outage import Outage
from flows.ports import Store, StoreUnavailable, Tx
from flows.records import Case, Decision, Pending
from flows.replies import AnswerButton, SendMessage
from flows.texts import Text

log = logging.getLogger(__name__)
events_log = logging.getLogger("recovery_bot.events")  # a line per decided event (LOG_FORMAT=json: with fields)

ServicesFactory = Callable[[Tx, datetime], Any]
EffectHandler = Callable[[Mapping[str, Any]], Awaitable[None]]


class Companion(Protocol):
    """A long-running job that lives as long as the runner (the broadcast sender, the pruner)."""

    async def resume(self) -> Any: ...
    async def stop(self) -> None: ...
LATE_TIMER_SECONDS = 5.0
QUEUE_LIMIT = 1_000
"""Events waiting for the writer at most; past it `handle` waits, and so the poller before its next batch (and a
webhook request before its answer): a burst stays bounded in memory."""


@dataclass
class _Item:
    event: Event
    hold_answer: bool = False
    held: Pending | None = None
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Runner:
    """Feeds events to the engine durably: `await runner.handle(event)` returns once the event is committed."""

    def __init__(
        self,
        store: Store,
        engine: Engine,
        transport: Transport,
        clock: Clock,
        services: ServicesFactory | None = None,
        batch_limit: int = 256,
        channels: Transport | None = None,
        effects: Mapping[str, EffectHandler] | None = None,
        companions: Sequence[Companion] = (),
        emit_events: bool = False,
        staff: Sequence[int] = (),
    ) -> None:
        """`staff`: the user ids of the staff, whose language their messages are written in."""
        self.store = store
        self.engine = engine
        self.clock = clock
        self.services: ServicesFactory = services or (lambda tx, now: tx)
        self.batch_limit = batch_limit
        self.transport = transport
        self.outage = Outage()
        self.dispatcher = Dispatcher(store, transport, clock, channels, self.outage)
        self.effects = dict(effects or {})
        self.companions = list(companions)
        self.emit_events = emit_events
        self.staff = tuple(staff)
        self._effect_tasks: set[asyncio.Task[None]] = set()
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(QUEUE_LIMIT)
        self._timers_changed = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._timers_stopping = asyncio.Event()
        self._timer_loop: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Deliver what an earlier run left in the outbox, then accept events (and resume companions)."""
        await self.dispatcher.start()
        self._writer = asyncio.create_task(self._write_loop(), name="event-writer")
        for companion in self.companions:
            await companion.resume()

    def timers_changed(self) -> None:
        """Look again for due timers now (something outside an event has just set one)."""
        self._timers_changed.set()

    def start_timers(self) -> None:
        """Fire timers as they fall due, in the background, until `stop()` (every entry point does this, so a
        key message deletes itself and a lockout ends wherever the desk runs)."""
        self._timers_stopping.clear()
        self._timer_loop = asyncio.create_task(self.run_timers(self._timers_stopping), name="timers")

    async def stop(self) -> None:
        """Stop firing timers, finish the events already queued, then stop writing and delivering."""
        if self._timer_loop is not None:
            self._timers_stopping.set()
            await asyncio.gather(self._timer_loop, return_exceptions=True)
            self._timer_loop = None
        if self._writer is not None:
            await self._queue.join()
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
            self._writer = None
        await asyncio.gather(*self._effect_tasks, return_exceptions=True)
        for companion in self.companions:
            await companion.stop()
        await self.dispatcher.stop()

    async def handle(self, event: Event, hold_answer: bool = False) -> Pending | None:
        """Queue one event and wait until it is committed (its replies are then safe in the outbox).

        With `hold_answer`, the committed answer to the event's own button press is not delivered but returned,
        for the caller to send another way (in the webhook response) and then to hand to the dispatcher:
        `dispatcher.delivered_elsewhere` once it went out, or `dispatcher.push` if it could not.
        """
        item = _Item(event, hold_answer)
        await self._queue.put(item)
        await item.done
        return item.held

    async def settle(self) -> None:
        """Wait until every queued event is committed, its effects done and every reply delivered."""
        await self._queue.join()
        while self._effect_tasks:
            await asyncio.gather(*list(self._effect_tasks), return_exceptions=True)
        await self.dispatcher.idle()

    async def fire_due_timers(self, limit: int = 1_000) -> int:
        """Turn due timers into events (each fires once: its key is `timer:{id}`); returns how many."""
        now = self.clock.now()
        async with self.store.reading() as tx:  # a read: each fires once through its update key, in the writer
            due = await tx.timers.due(now, limit)
        for timer in due:
            lateness = (now - timer.due_at).total_seconds()
            if lateness > LATE_TIMER_SECONDS:
                log.info("timer %d (%s) fires %.0f s late", timer.id, timer.kind, lateness)
        events = [
            TimerFired(
                key=f"timer:{t.id}", sender=Sender(t.user_id, t.chat_id), timer_id=t.id, case_id=t.case_id,
                kind=t.kind, payload={**t.payload, "step": t.step},
            )
            for t in due
        ]
        await asyncio.gather(*(self.handle(event) for event in events))
        return len(events)

    async def run_timers(self, stopping: asyncio.Event, max_wait: float = 1.0) -> None:
        """Fire timers as they fall due until `stopping` is set: sleep until the next one (at most `max_wait`),
        or until an event schedules a new one."""
        while not stopping.is_set():
            try:
                await self.fire_due_timers()
                wait = await self._seconds_to_next_timer(max_wait)
            except StoreUnavailable as error:  # they fire once it is back
                self.outage.failed(error)
                wait = max_wait
            except Exception:
                log.exception("firing timers failed")
                wait = max_wait
            self._timers_changed.clear()
            waiters = [asyncio.ensure_future(e.wait()) for e in (stopping, self._timers_changed)]
            await asyncio.wait(waiters, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()

    async def _seconds_to_next_timer(self, max_wait: float) -> float:
        async with self.store.reading() as tx:
            due = await tx.timers.next_due()
        if due is None:
            return max_wait
        return min(max_wait, max(0.0, (due - self.clock.now()).total_seconds()))

    # --- the writer ---------------------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        while True:
            items = [await self._queue.get()]
            while len(items) < self.batch_limit and not self._queue.empty():
                items.append(self._queue.get_nowait())
            try:
                await self._write_each(items)
            finally:
                for _ in items:
                    self._queue.task_done()

    async def _write_each(self, items: list[_Item]) -> None:
        try:
            await self._commit(items)
        except StoreUnavailable as error:
            self._not_committed(items, error)
        except Exception as error:
            if len(items) == 1:
                await self._commit_failed(items[0], error)
                return
            for index, item in enumerate(items):
                try:
                    await self._commit([item])
                except StoreUnavailable as down:
                    self._not_committed(items[index:], down)
                    return
                except Exception as alone:
                    await self._commit_failed(item, alone)

    def _not_committed(self, items: Sequence[_Item], error: StoreUnavailable) -> None:
        """The database failed, not the events: their callers hear so and must not confirm them (Telegram then
        sends them again); nothing is recorded about them, so each is decided afresh once the database is back."""
        self.outage.failed(error)
        for item in items:
            if not item.done.done():
                item.done.set_exception(error)

    async def _commit(self, items: Sequence[_Item]) -> None:
        now = self.clock.now()
        events = [item.event for item in items]
        tally = metrics.batch()
        async with self.store.transaction() as tx:
            fresh = await tx.updates.claim([e.key for e in events], now)
            todo = [e for e in _first_of_each_key(events) if e.key in fresh]
            todo = await _without_replaced_timers(tx, todo)
            # A press in a staff group is not the user's private chat: it must not become their chat id.
            senders = [e.sender for e in todo if not isinstance(e, TimerFired) and e.sender.chat_id == e.sender.user_id]
            await tx.users.touch(senders, now)
            open_cases = await tx.cases.active({e.sender.chat_id for e in todo})
            targets = await tx.cases.by_id({t for e in todo if (t := self.engine.target_of(e))})
            people = {e.sender.user_id for e in todo} | {c.user_id for c in targets.values()} | set(self.staff)
            languages = await tx.users.languages(people)
            decisions = await self._decide_all(tx, todo, open_cases, targets, languages, now)
            pending = await self._save(tx, decisions, _timer_ids(events), now)
        metrics.committed(tally, todo, decisions)
        self.outage.ended()
        _log_decided(todo, decisions)
        if any(d.timers for d in decisions):
            self._timers_changed.set()
        self.dispatcher.push(_hold_answers(items, pending))
        for effect in (e for d in decisions for e in d.effects):
            self._run_effect(effect)
        for item in items:
            _resolve(item)

    async def _decide_all(
        self,
        tx: Tx,
        events: Sequence[Event],
        open_cases: dict[int, Case],
        targets: dict[str, Case],
        languages: Mapping[int, str],
        now: datetime,
    ) -> list[Decision]:
        services = self.services(tx, now)
        decisions = []
        for event in events:
            target_id = self.engine.target_of(event)
            target = targets.get(target_id) if target_id else None
            decision = await self.engine.decide(event, open_cases.get(event.sender.chat_id), services, now, target,
                                                languages)
            for case in decision.cases:  # later events in the batch see these cases as they now are
                targets[case.id] = case
                if case.active:
                    open_cases[case.chat_id] = case
                elif open_cases.get(case.chat_id) is not None and open_cases[case.chat_id].id == case.id:
                    del open_cases[case.chat_id]
            decisions.append(decision)
        return decisions

    async def _save(
        self, tx: Tx, decisions: Sequence[Decision], fired: Sequence[int], now: datetime
    ) -> list[Pending]:
        changed = {case.id: case for d in decisions for case in d.cases}
        await tx.cases.save(list(changed.values()))
        await tx.timers.add([t for d in decisions for t in d.timers])
        await tx.timers.mark_fired(fired, now)
        audit = [a for d in decisions for a in d.audit]
        await tx.audit.add(audit, now)
        if self.emit_events:
            await tx.events.add(case_events(audit, now))
        return await tx.outbox.add([r for d in decisions for r in d.replies], now)

    async def _commit_failed(self, item: _Item, error: Exception) -> None:
        """Record an event whose handling raised: nothing it did is kept, the user hears of it, and a redelivery
        will not loop forever. When the account directory did not answer, the user is told to try again in a few
        minutes, whatever the account."""
        event = item.event
        unavailable = isinstance(error, DirectoryUnavailable)
        if unavailable:
            log.warning("event %s (%s) waits: %s", event.key, type(event).__name__, error)
        else:
            log.error("event %s (%s) failed", event.key, type(event).__name__, exc_info=error)
        try:
            now = self.clock.now()
            async with self.store.transaction() as tx:
                await tx.timers.mark_fired(_timer_ids([event]), now)
                if not await tx.updates.claim([event.key], now):
                    _resolve(item)
                    return
                key = "directory.unavailable" if unavailable else "engine.internal_error"
                text = self.engine.say(Text(key), getattr(event.sender, "language", None))
                replies = [] if isinstance(event, TimerFired) else [SendMessage(event.sender.chat_id, text)]
                pending = await tx.outbox.add(replies, now)
        except Exception as failure:  # the database itself failed: the caller must not confirm the update
            if isinstance(failure, StoreUnavailable):
                self.outage.failed(failure)
            if not item.done.done():
                item.done.set_exception(failure)
            return
        self.dispatcher.push(pending)
        _resolve(item)


    def _run_effect(self, effect: Effect) -> None:
        handler = self.effects.get(effect.name)
        if handler is None:
            log.error("no handler for effect %s", effect.name)
            return
        task = asyncio.create_task(_logged(effect.name, handler(effect.params)))
        self._effect_tasks.add(task)
        task.add_done_callback(self._effect_tasks.discard)


async def _logged(name: str, work: Awaitable[None]) -> None:
    try:
        await work
    except Exception:
        log.exception("effect %s failed", name)


async def _without_replaced_timers(tx: Tx, events: list[Event]) -> list[Event]:
    """Drop timer events whose timer was replaced (deleted) after it was read as due."""
    ids = _timer_ids(events)
    if not ids:
        return events
    live = await tx.timers.unfired(ids)
    return [e for e in events if not isinstance(e, TimerFired) or e.timer_id in live]


def _timer_ids(events: Sequence[Event]) -> list[int]:
    """Every timer among the events, repeats included, so none stays due forever."""
    return [e.timer_id for e in events if isinstance(e, TimerFired)]


def _hold_answers(items: Sequence[_Item], pending: list[Pending]) -> list[Pending]:
    """The entries to deliver now: all but the answer to each holding item's own press, which its item keeps.

    Only an answer leaves the queue: Telegram counts it against no chat and no later reply waits for it, so the
    order of the chat's messages and edits is unchanged.
    """
    held: set[int] = set()
    for item in items:
        item.held = None
        event = item.event
        if not item.hold_answer or not isinstance(event, ButtonPressed) or not event.callback_id:
            continue
        for entry in pending:
            reply = entry.reply
            if entry.id not in held and isinstance(reply, AnswerButton) and reply.callback_id == event.callback_id:
                held.add(entry.id)
                item.held = entry
                break
    return [entry for entry in pending if entry.id not in held]


def _log_decided(events: Sequence[Event], decisions: Sequence[Decision]) -> None:
    """Where each event left its case: the update, the case, its step and status. Never what was typed."""
    if not events_log.isEnabledFor(logging.INFO):
        return
    for event, decision in zip(events, decisions, strict=True):
        for case in decision.cases:
            events_log.info("%s %s: case %s at %s (%s)", type(event).__name__, event.key, case.id, case.step,
                            case.status, extra={"case": case.id, "step": f"{case.flow}:{case.step}",
                                                "outcome": case.status, "update": event.key})


def _resolve(item: _Item) -> None:
    if not item.done.done():
        item.done.set_result(None)


def _first_of_each_key(events: Sequence[Event]) -> list[Event]:
    seen: set[str] = set()
    unique = []
    for event in events:
        if event.key not in seen:
            seen.add(event.key)
            unique.append(event)
    return unique
